"""Throughput of tqla_torch distillation and evaluation.

Measures, in one process and on the same data:

1. a plain training step of the dense teacher (cross-entropy only, AdamW), tokens/s;
2. a distillation step (:func:`tqla_torch.distill.distill`: teacher forward + student forward and
   backward + CE/KL loss, AdamW, clipping), tokens/s, and its ratio to (1);
3. evaluation (:func:`tqla_torch.training.evaluate.perplexity`, non-overlapping windows), tokens/s.

The two training measurements run in interleaved rounds (each round: a few warm-up steps, then
timed steps), so that a change in machine load hits both alike. Per-step throughput is the median
over the timed steps, so that a short stall of a shared machine does not dominate; the mean over
all timed steps (total tokens / total time) is reported too. The ratio is the median over rounds
of (median distillation rate / median plain rate) within the round.
The student is a dense copy of the teacher (the same shapes), so the ratio isolates the cost of
distillation itself.

Usage::

    python benchmarks/bench_distill.py                       # small GPT-2, CPU, about a minute
    python benchmarks/bench_distill.py --gpt2-small --device cuda --mixed-precision bf16

Results go to ``benchmarks/results/distill_<device>.json`` and ``.md`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

from tqla_torch.data import PackedDataset, builtin_documents, builtin_tokenizer, tokenize_texts
from tqla_torch.distill import DistillConfig, distill
from tqla_torch.training.evaluate import perplexity

SMALL = dict(n_layer=4, n_embd=256, n_head=4, n_positions=256)
GPT2_SMALL = dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_plain_training(model, optimizer, blocks, generator, args, device):
    """Tokens/s of each of ``args.warmup + args.steps`` CE-only AdamW steps (warm-up dropped),
    and the process CPU seconds per step over all of them."""
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if args.mixed_precision == "bf16"
        else contextlib.nullcontext()
    )
    model.train()
    rates = []
    cpu0 = time.process_time()
    for _ in range(args.warmup + args.steps):
        idx = torch.randint(0, blocks.shape[0], (args.batch_size,), generator=generator)
        batch = blocks[idx].to(device)
        _sync(device)
        t0 = time.perf_counter()
        with amp:
            logits = model(batch, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        rates.append(batch.numel() / (time.perf_counter() - t0))
    cpu = (time.process_time() - cpu0) / (args.warmup + args.steps)
    return rates[args.warmup :], cpu


def bench_teacher_forward(teacher, blocks, generator, args, device) -> float:
    """Process CPU seconds of one teacher forward pass in inference mode (the least of a few):
    the work a distillation step adds to a plain step besides the KL term."""
    best = math.inf
    for _ in range(args.steps):
        idx = torch.randint(0, blocks.shape[0], (args.batch_size,), generator=generator)
        batch = blocks[idx].to(device)
        cpu0 = time.process_time()
        with torch.inference_mode():
            teacher(batch, use_cache=False)
        _sync(device)
        best = min(best, time.process_time() - cpu0)
    return best


def bench_distill(student, teacher, data, seed, args, device):
    """Tokens/s of each step of :func:`distill` (from its per-step history, warm-up dropped),
    and the process CPU seconds per step of the whole call (its set-up included)."""
    config = DistillConfig(
        max_steps=args.warmup + args.steps,
        batch_size=args.batch_size,
        lr=1e-4,
        log_every=1,
        device=str(device),
        mixed_precision=args.mixed_precision,
        progress=False,
        seed=seed,
    )
    cpu0 = time.process_time()
    result = distill(student, teacher, data, config)
    cpu = (time.process_time() - cpu0) / (args.warmup + args.steps)
    return [h["tokens_per_s"] for h in result.history][args.warmup :], cpu


def _summary(rates: list[float]) -> dict[str, float]:
    return {
        "median_tokens_per_s": statistics.median(rates),
        # harmonic mean of per-step rates == total tokens / total time
        "mean_tokens_per_s": len(rates) / sum(1 / r for r in rates),
    }


def _git_commit() -> str:
    """HEAD's hash, marked when the working tree differs from it."""

    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", *argv], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=normal")
    except (OSError, subprocess.SubprocessError):
        return "unknown (no commit)"
    return f"{head} + uncommitted changes" if dirty else head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpt2-small", action="store_true", help="GPT-2 small shapes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--block-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16"])
    parser.add_argument("--out", default=None, help="output path without suffix")
    parser.add_argument(
        "--no-write", action="store_true", help="print the results, write no result files"
    )
    args = parser.parse_args()

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = GPT2_SMALL if args.gpt2_small else SMALL
    vocab = 50257 if args.gpt2_small else 4096
    args.block_size = args.block_size or shapes["n_positions"]
    args.batch_size = args.batch_size or (8 if args.gpt2_small else 4)
    args.steps = args.steps or (10 if device.type == "cuda" else 3)

    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    tok = builtin_tokenizer(vocab_size=4096)  # ids < 4096 are valid for either vocabulary
    data = PackedDataset.from_source("builtin", tok, block_size=args.block_size)
    eval_ids = tokenize_texts(builtin_documents("validation"), tok)

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocab, bos_token_id=0, eos_token_id=0, **shapes)
    teacher = GPT2LMHeadModel(config).to(device)
    student = copy.deepcopy(teacher)
    plain_model = copy.deepcopy(teacher)
    n_params = sum(p.numel() for p in teacher.parameters())

    print(f"model: {shapes}, vocab {vocab}, {n_params / 1e6:.1f}M parameters; device {device}")
    # Interleave rounds of both measurements so that a change in machine load hits both alike.
    optimizer = torch.optim.AdamW(plain_model.parameters(), lr=1e-4, weight_decay=0.01)
    generator = torch.Generator().manual_seed(0)
    plain_rates: list[float] = []
    distill_rates: list[float] = []
    round_ratios: list[float] = []
    plain_cpu, distill_cpu, teacher_cpu = math.inf, math.inf, math.inf
    for round_ in range(args.rounds):
        plain, p_cpu = bench_plain_training(
            plain_model, optimizer, data.blocks, generator, args, device
        )
        dist, d_cpu = bench_distill(student, teacher, data, round_, args, device)
        teacher_cpu = min(
            teacher_cpu, bench_teacher_forward(teacher, data.blocks, generator, args, device)
        )
        plain_cpu, distill_cpu = min(plain_cpu, p_cpu), min(distill_cpu, d_cpu)
        plain_rates += plain
        distill_rates += dist
        round_ratios.append(statistics.median(dist) / statistics.median(plain))
        print(
            f"round {round_ + 1}/{args.rounds}: distill / plain = {round_ratios[-1]:.3f} (wall), "
            f"{p_cpu / d_cpu:.3f} (CPU time)"
        )
    del plain_model, optimizer
    eval_windows = max(8, args.batch_size * 4)
    eval_tokens = eval_ids[: eval_windows * args.block_size]
    perplexity(teacher, eval_tokens[: 2 * args.block_size], window=args.block_size)  # warm-up
    evaluation = perplexity(
        teacher, eval_tokens, window=args.block_size, batch_size=args.batch_size
    )

    plain_s, distill_s = _summary(plain_rates), _summary(distill_rates)
    ratio = statistics.median(round_ratios)
    # the best step of each kind over all rounds: the least disturbed by other jobs
    best_ratio = max(distill_rates) / max(plain_rates)
    cpu_ratio = plain_cpu / distill_cpu
    ceiling = plain_cpu / (plain_cpu + teacher_cpu)
    print(f"plain training : {plain_s['median_tokens_per_s']:10.0f} tokens/s (median)")
    print(f"distillation   : {distill_s['median_tokens_per_s']:10.0f} tokens/s (median)")
    print(f"ratio distill / plain (median over rounds): {ratio:.3f}")
    print(f"ratio distill / plain (best step of each):  {best_ratio:.3f}")
    print(f"ratio distill / plain (CPU time per step, least over rounds): {cpu_ratio:.3f}")
    print(f"estimate plain / (plain + teacher forward), CPU time: {ceiling:.3f}")
    print(f"evaluation     : {evaluation.tokens_per_s:10.0f} tokens/s")

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    results = {
        "date": dt.date.today().isoformat(),
        "commit": _git_commit(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_before": load_before,
            "load_average_after": load,
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        },
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "model": {**shapes, "vocab_size": vocab, "parameters": n_params},
        "settings": {
            "batch_size": args.batch_size,
            "block_size": args.block_size,
            "rounds": args.rounds,
            "timed_steps_per_round": args.steps,
            "warmup_steps_per_round": args.warmup,
            "mixed_precision": args.mixed_precision,
        },
        "plain_training": plain_s,
        "distillation": distill_s,
        "ratio_distill_over_plain": ratio,
        "ratio_best_step": best_ratio,
        "cpu_seconds_per_step": {
            "plain": plain_cpu,
            "distillation": distill_cpu,
            "teacher_forward": teacher_cpu,
        },
        "ratio_cpu_time": cpu_ratio,
        "ratio_ceiling_cpu_time": ceiling,
        "ratio_per_round": round_ratios,
        "evaluation": {
            "tokens_per_s": evaluation.tokens_per_s,
            "tokens": evaluation.n_tokens,
            "windows": evaluation.n_windows,
        },
    }
    if args.no_write:
        return
    out = (
        Path(args.out) if args.out else Path(__file__).parent / "results" / f"distill_{device.type}"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(_markdown(results, " ".join(sys.argv[1:])))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")


def _markdown(r: dict, argv: str) -> str:
    m, v, s = r["machine"], r["versions"], r["settings"]
    model = r["model"]

    def loads(values):
        return ", ".join(f"{x:.2f}" for x in values) if values else "n/a"

    return f"""# Distillation and evaluation throughput

Measured with `python benchmarks/bench_distill.py {argv}`.

- date: {r["date"]}, commit: {r["commit"]}
- machine: {m["platform"]}, {m["processor"]}, {m["cpu_count"]} CPUs, torch threads \
{m["torch_threads"]}, device {m["device"]}{f" ({m['device_name']})" if m["device_name"] else ""}
- load average (1, 5, 15 min) before the run: {loads(m["load_average_before"])}; after: \
{loads(m["load_average_after"])} (values above the number of CPUs mean other jobs competed \
for them)
- versions: Python {v["python"]}, torch {v["torch"]}, transformers {v["transformers"]}
- model: GPT-2, {model["n_layer"]} layers, width {model["n_embd"]}, {model["n_head"]} heads, \
vocab {model["vocab_size"]}, {model["parameters"] / 1e6:.1f}M parameters, random weights
- batch {s["batch_size"]} x {s["block_size"]} tokens; {s["rounds"]} interleaved rounds of \
{s["warmup_steps_per_round"]} warm-up + {s["timed_steps_per_round"]} timed steps of each kind; \
mixed precision: {s["mixed_precision"]}

| measurement | median tokens/s | mean tokens/s |
|---|---:|---:|
| plain training step of the dense teacher (CE, AdamW) | \
{r["plain_training"]["median_tokens_per_s"]:.0f} | {r["plain_training"]["mean_tokens_per_s"]:.0f} |
| distillation step (`distill`, dense student of the same shape) | \
{r["distillation"]["median_tokens_per_s"]:.0f} | {r["distillation"]["mean_tokens_per_s"]:.0f} |
| evaluation (`perplexity`, non-overlapping windows) | \
{r["evaluation"]["tokens_per_s"]:.0f} | |

Distillation / plain training: **{r["ratio_distill_over_plain"]:.2f}** (median over rounds of
the ratio of the rounds' median step rates; per round: \
{", ".join(f"{x:.2f}" for x in r["ratio_per_round"])}); the fastest distillation step over the
fastest plain step (the least disturbed by other jobs): **{r["ratio_best_step"]:.2f}**.

By process CPU time per step (least over rounds; robust to other jobs when torch runs one
thread): plain {r["cpu_seconds_per_step"]["plain"]:.3f} s, distillation \
{r["cpu_seconds_per_step"]["distillation"]:.3f} s, ratio **{r["ratio_cpu_time"]:.2f}**. One
teacher forward pass in inference mode alone takes \
{r["cpu_seconds_per_step"]["teacher_forward"]:.3f} s: the extra work a distillation step cannot
avoid. Estimated from these separately timed parts, a step with a free KL term would run at
plain / (plain + teacher forward) = {r["ratio_ceiling_cpu_time"]:.2f} of a plain step (an
estimate, not a bound: the parts are timed apart).

A distillation step does everything a training step does plus a teacher forward pass and the KL
term, so the ratio is below 1. On a shared machine the numbers move with the load; compare runs
only on the same machine under similar load.
"""


if __name__ == "__main__":
    main()
