"""LWIQ ranks against uniform, Frobenius-error and searched ranks on a small GPT-2 (MLPs).

The language-model half of the LWIQ experiment (see ``bench_lwiq.py``): a small GPT-2 teacher is
trained on the built-in corpus with the built-in tokenizer (like ``tqla demo``), its MLP matrices
(``c_fc``, ``c_proj`` of every block) are compressed so that the MLP weights shrink by each
``--ratios`` factor, with ranks chosen by
(a) LWIQ (classes = the 64 most frequent next tokens of the training text), κ rule, scored on
each matrix's output (``lwiq``) or on its transformer block's output (``lwiq_block``);
(b) uniform ranks; (c) each matrix's Frobenius error curve; (d) a search baseline that evaluates
``--candidates`` ranks per matrix (validation perplexity with only that matrix compressed);
then every student is distilled from the teacher with the same short schedule and evaluated
(perplexity on the built-in validation split).

Run: ``PYTHONPATH=. python benchmarks/bench_lwiq_gpt2.py --family lowrank``
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lwiq import _machine  # noqa: E402

from tqla_torch._atomic import atomic_write_json, atomic_write_text  # noqa: E402
from tqla_torch.compression.ranks import allocate_by_error, plan_ranks  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("lwiq", "lwiq_block", "uniform", "frobenius", "search")


def _dense_weight(module: nn.Module) -> torch.Tensor:
    """(out, in) weight of an nn.Linear or a GPT-2 Conv1D (stored in × out)."""
    w = module.weight.detach()
    return w if isinstance(module, nn.Linear) else w.T


class LowRankFamily:
    """Truncated SVD (tqla_torch.layers.LowRankLinear)."""

    label = "low-rank SVD MLP matrices"

    def r_max(self, m: nn.Module) -> int:
        return min(_dense_weight(m).shape)

    def params_fn(self, m: nn.Module) -> Callable[[int], int]:
        out_f, in_f = _dense_weight(m).shape
        return lambda r: r * (out_f + in_f)

    def errors(self, m: nn.Module) -> list[float]:
        s2 = torch.linalg.svdvals(_dense_weight(m).double()) ** 2
        tail = torch.flip(torch.cumsum(torch.flip(s2, [0]), 0), [0])
        return (torch.cat([tail[1:], tail.new_zeros(1)]) / s2.sum()).tolist()

    def compress(self, m: nn.Module, rank: int) -> nn.Module:
        from tqla_torch.nn import LowRankLinear

        return LowRankLinear.from_linear(m, rank)


class TTFamily:
    """The project's ``TTLinear`` (3 cores, modes from ``tt_modes``), uniform TT rank."""

    label = "tensor-train MLP matrices (tqla_torch.nn.TTLinear)"

    def __init__(self) -> None:
        self._tables: dict[int, list[int]] = {}

    def _table(self, m: nn.Module) -> list[int]:
        """Parameters at ranks 1, 2, ... while they stay below the dense weight's."""
        from tqla_torch import CompressionConfig
        from tqla_torch.nn import TTLinear

        if id(m) not in self._tables:
            bias = 0 if m.bias is None else m.bias.numel()
            counts: list[int] = []
            for r in range(1, 10_000):
                st = CompressionConfig(target_modules=["x"], method="tt", rank=r).settings_for("x")
                n = TTLinear.plan(m, st).params_after - bias
                if n >= m.weight.numel() or (counts and n == counts[-1]):
                    break
                counts.append(n)
            self._tables[id(m)] = counts
        return self._tables[id(m)]

    def r_max(self, m: nn.Module) -> int:
        return len(self._table(m))

    def params_fn(self, m: nn.Module) -> Callable[[int], int]:
        table = self._table(m)
        return lambda r: table[r - 1]

    def errors(self, m: nn.Module) -> list[float]:
        return [self.compress(m, r).approximation_error ** 2 for r in range(1, self.r_max(m) + 1)]

    def compress(self, m: nn.Module, rank: int) -> nn.Module:
        from tqla_torch import CompressionConfig
        from tqla_torch.nn import TTLinear

        st = CompressionConfig(target_modules=["x"], method="tt", rank=rank).settings_for("x")
        return TTLinear.from_module(m, st)


FAMILIES: dict[str, Callable[[], object]] = {"lowrank": LowRankFamily, "tt": TTFamily}


def mlp_names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_modules() if n.endswith(("mlp.c_fc", "mlp.c_proj"))]


def replaced(model: nn.Module, family: object, ranks: dict[str, int]) -> nn.Module:
    new = copy.deepcopy(model)
    for name, rank in ranks.items():
        parent, _, child = name.rpartition(".")
        holder = new.get_submodule(parent)
        setattr(holder, child, family.compress(getattr(holder, child), rank))
    return new


def ppl(model: nn.Module, ids: torch.Tensor, window: int) -> float:
    from tqla_torch.training.evaluate import perplexity

    return float(perplexity(model, ids, window=window, batch_size=16).ppl)


def choose(
    method: str,
    teacher: nn.Module,
    family: object,
    budget: float,
    blocks: torch.Tensor,
    val: torch.Tensor,
    args: argparse.Namespace,
) -> tuple[dict[str, int], float, object]:
    names = mlp_names(teacher)
    mods = {n: teacher.get_submodule(n) for n in names}
    params = {n: family.params_fn(m) for n, m in mods.items()}
    r_max = {n: family.r_max(m) for n, m in mods.items()}
    t0 = time.perf_counter()
    scores = None
    if method in ("lwiq", "lwiq_block", "uniform"):
        data = [blocks[i : i + 16] for i in range(0, min(len(blocks), args.lwiq_blocks), 16)]
        # lwiq_block: score the transformer block (the residual stream) for its MLP matrices
        at = {n: n.rsplit(".mlp.", 1)[0] for n in names} if method == "lwiq_block" else None
        alloc, scores = plan_ranks(
            teacher,
            params,
            budget,
            r_max=r_max,
            method="uniform" if method == "uniform" else "lwiq",
            data=data,
            n_classes=64,
            seed=args.seed,
            score_at=at,
        )
    elif method == "frobenius":
        alloc, _ = plan_ranks(
            teacher,
            params,
            budget,
            r_max=r_max,
            method="frobenius",
            errors={n: family.errors(m) for n, m in mods.items()},
        )
    else:  # search: validation NLL increase with one matrix compressed at a candidate rank
        base = math.log(ppl(teacher, val, args.window))
        curves = {}
        for n in names:
            grid = sorted({int(round(v)) for v in np.geomspace(1, r_max[n], args.candidates)})
            loss = {
                r: math.log(ppl(replaced(teacher, family, {n: r}), val, args.window)) - base
                for r in grid
            }
            curves[n] = [loss[max(g for g in grid if g <= r)] for r in range(1, r_max[n] + 1)]
        from tqla_torch.compression.ranks import weight_params

        total, fixed = weight_params(teacher, names)
        alloc = allocate_by_error(curves, params, budget, fixed_params=fixed, total_params=total)
    return alloc.ranks, time.perf_counter() - t0, scores


def main(argv: list[str] | None = None) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    from tqla_torch.training import DistillConfig, distill
    from tqla_torch.training.data import PackedDataset, builtin_tokenizer
    from tqla_torch.training.teacher import train_teacher

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", choices=sorted(FAMILIES), default="lowrank")
    p.add_argument(
        "--ratios",
        type=float,
        nargs="+",
        default=[2.0, 4.0],
        help="how many times smaller the MLP weights get",
    )
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--teacher-steps", type=int, default=200)
    p.add_argument("--distill-steps", type=int, default=40)
    p.add_argument("--candidates", type=int, default=5)
    p.add_argument("--lwiq-blocks", type=int, default=64)
    p.add_argument("--val-tokens", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    family = FAMILIES[args.family]()
    load0 = " ".join(f"{v:.2f}" for v in os.getloadavg())
    tok = builtin_tokenizer(vocab_size=args.vocab)
    train = PackedDataset.from_source("builtin", tok, block_size=args.window, split="train").blocks
    val = PackedDataset.from_source("builtin", tok, block_size=args.window, split="validation")
    val_ids = val.blocks.flatten()[: args.val_tokens]
    torch.manual_seed(args.seed)
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_embd=args.n_embd,
        n_layer=args.n_layer,
        n_head=4,
        n_positions=args.window,
        bos_token_id=0,
        eos_token_id=0,
    )
    teacher = GPT2LMHeadModel(cfg)
    t0 = time.perf_counter()
    train_teacher(
        teacher,
        train,
        steps=args.teacher_steps,
        batch_size=16,
        lr=2e-3,
        seed=args.seed,
        progress=False,
    )
    teacher.eval()
    t_teacher = time.perf_counter() - t0
    names = mlp_names(teacher)
    total = sum(p.numel() for p in teacher.parameters())
    mlp = sum(teacher.get_submodule(n).weight.numel() for n in names)
    dcfg = DistillConfig(
        max_steps=args.distill_steps,
        batch_size=16,
        lr=1e-3,
        seed=args.seed,
        progress=False,
        log_every=10**6,
    )
    dense_ppl = ppl(teacher, val_ids, args.window)
    rows = [
        {
            "ratio": 1.0,
            "method": "teacher",
            "params": total,
            "before": dense_ppl,
            "after": dense_ppl,
            "seconds": 0.0,
            "ranks": {},
        }
    ]
    tables: dict[str, str] = {}
    for ratio in args.ratios:
        budget = (total - mlp + mlp / ratio) / total
        for method in METHODS:
            ranks, seconds, scores = choose(method, teacher, family, budget, train, val_ids, args)
            if scores is not None:
                tables[method] = scores.table()
            student = replaced(teacher, family, ranks)
            before = ppl(student, val_ids, args.window)
            distill(student, teacher, train, dcfg)
            student.eval()
            rows.append(
                {
                    "ratio": ratio,
                    "method": method,
                    "params": sum(p.numel() for p in student.parameters()),
                    "before": before,
                    "after": ppl(student, val_ids, args.window),
                    "seconds": seconds,
                    "ranks": ranks,
                }
            )
            print(
                f"{ratio}x {method:9s} params {rows[-1]['params']} ppl before {before:.2f} "
                f"after {rows[-1]['after']:.2f} choose {seconds:.2f}s",
                flush=True,
            )
    load1 = " ".join(f"{v:.2f}" for v in os.getloadavg())
    machine = _machine()
    lines = [
        f"# LWIQ rank allocation on a small GPT-2 — {family.label}",
        "",
        f"Written by `benchmarks/bench_lwiq_gpt2.py` (command: `PYTHONPATH=. python "
        f"benchmarks/bench_lwiq_gpt2.py {' '.join(sys.argv[1:])}`). Teacher: GPT-2 "
        f"{args.n_layer} blocks × {args.n_embd}, vocabulary {len(tok)} (built-in BPE), "
        f"{total:,} parameters, trained {args.teacher_steps} steps of 16×{args.window} tokens "
        f"({t_teacher:.0f} s). The {len(names)} MLP matrices ({mlp:,} parameters) are compressed "
        f"so that they get `ratio` times smaller in total; every student is then distilled "
        f"{args.distill_steps} steps (16×{args.window} tokens, lr 1e-3, same seed). Perplexity: "
        f"the first {len(val_ids):,} tokens of the built-in validation split, windows of "
        f"{args.window}. One seed.",
        "",
        "| machine | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in machine.items()],
        f"| load average at start / end | {load0} / {load1} |",
        "",
        "| MLP ratio | method | parameters | ppl one-shot | ppl after distillation "
        "| rank choice s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['ratio']:g}× | {r['method']} | {r['params']:,} | {r['before']:.2f} | "
            f"{r['after']:.2f} | {r['seconds']:.2f} |"
        )
    t = {m: np.mean([r["seconds"] for r in rows if r["method"] == m]) for m in ("lwiq", "search")}
    lines += [
        "",
        f"Rank choice: LWIQ {t['lwiq']:.2f} s, search baseline {t['search']:.2f} s "
        f"({100 * (1 - t['lwiq'] / t['search']):.1f}% less time).",
    ]
    for method, table in tables.items():
        lines += ["", f"LWIQ scores ({method}, last budget):", "", "```", table, "```"]
    lines += [
        "",
        "Ranks:",
        "",
        "| ratio | method | "
        + " | ".join(n.replace("transformer.h.", "h").replace(".mlp.", ".") for n in names)
        + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for r in rows[1:]:
        lines.append(
            f"| {r['ratio']:g}× | {r['method']} | "
            + " | ".join(str(r["ranks"][n]) for n in names)
            + " |"
        )
    stem = args.out or f"lwiq_{args.family}_gpt2"
    atomic_write_text(ROOT / "benchmarks" / "results" / f"{stem}.md", "\n".join(lines) + "\n")
    atomic_write_json(
        ROOT / "benchmarks" / "results" / f"{stem}.json",
        {"machine": machine, "args": vars(args), "rows": rows},
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
