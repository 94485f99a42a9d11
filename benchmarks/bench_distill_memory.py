"""Peak memory and speed of the distillation loss at GPT-2's vocabulary: chunked vs naive.

Measures, in one process, with GPT-2 small shapes (``GPT2Config()``: 12 layers, width 768,
vocabulary 50,257; random weights) and a batch of ``--batch`` x ``--seq`` tokens:

1. **The loss alone.** :func:`tqla_torch.training.distillation_loss` forward + backward on
   random ``[batch, seq, 50257]`` float32 logits, the fused chunked path (default) against the
   unfused reference (``chunk_size=0``): peak memory torch allocates during the call (the torch
   profiler's allocation events, :mod:`benchmarks._memory`; the student and teacher logits exist
   before and are not counted, the student logits' gradient is), equal loss and gradients
   asserted, and CPU time.
2. **A distillation step.** Teacher forward (fused: under ``torch.inference_mode``; naive: under
   ``torch.no_grad`` as before), student forward, loss, backward: its peak memory (same
   accounting, models and inputs not counted); then tokens/s and CPU seconds of whole steps
   (with the AdamW update) for the plain cross-entropy step of the same student, the naive and
   the fused distillation step, in interleaved rounds (least time over rounds).

Usage::

    python benchmarks/bench_distill_memory.py            # GPT-2 small, 2 x 1024, CPU
    python benchmarks/bench_distill_memory.py --no-write --seq 256 --rounds 1   # quick look

Results go to ``benchmarks/results/distill_memory_<device>.json`` and ``.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

sys.path.insert(0, str(Path(__file__).parent))
from _memory import peak_allocated  # noqa: E402

from tqla_torch.training.losses import distillation_loss  # noqa: E402

MIB = 2**20
ALPHA, TEMPERATURE = 0.5, 2.0


def _labels(batch: torch.Tensor) -> torch.Tensor:
    labels = torch.full_like(batch, -100)
    labels[:, :-1] = batch[:, 1:]
    return labels


def loss_only(args) -> dict:
    """Peak memory, CPU time and agreement of the loss alone, reference vs fused."""
    gen = torch.Generator().manual_seed(0)
    shape = (args.batch, args.seq, args.vocab)
    student = (torch.randn(shape, generator=gen) * 3).requires_grad_()
    teacher = torch.randn(shape, generator=gen) * 3
    labels = torch.randint(0, args.vocab, shape[:2], generator=gen)
    labels[:, -1] = -100
    out = {"logits_mib": student.numel() * student.element_size() / MIB}
    grads = {}
    for name, chunk in (("naive", 0), ("chunked", None)):

        def run(chunk=chunk):
            terms = distillation_loss(
                student, teacher, labels, ALPHA, TEMPERATURE, chunk_size=chunk
            )
            terms.loss.backward()
            return terms

        student.grad = None  # freed before the measured call, not inside it
        peak, terms = peak_allocated(run)
        grads[name] = (terms, student.grad.clone())
        cpu = math.inf
        for _ in range(args.rounds):
            student.grad = None
            t0 = time.process_time()
            run()
            cpu = min(cpu, time.process_time() - t0)
        student.grad = None
        out[name] = {"peak_mib": peak / MIB, "cpu_s": cpu, "loss": float(terms.loss.detach())}
        print(f"loss alone, {name:8s}: peak {peak / MIB:8.1f} MiB, {cpu:.3f} CPU s")
    (t_naive, g_naive), (t_fused, g_fused) = grads["naive"], grads["chunked"]
    torch.testing.assert_close(t_fused.loss, t_naive.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_fused, g_naive, rtol=1e-4, atol=1e-9)
    out["max_abs_grad_difference"] = float((g_fused - g_naive).abs().max())
    out["peak_ratio"] = out["chunked"]["peak_mib"] / out["naive"]["peak_mib"]
    return out


def _distill_forward_backward(student, teacher, batch, fused: bool) -> None:
    labels = _labels(batch)
    if fused:
        with torch.inference_mode():
            t_logits = teacher(batch, use_cache=False).logits
    else:
        with torch.no_grad():
            t_logits = teacher(batch, use_cache=False).logits
    s_logits = student(batch, use_cache=False).logits
    terms = distillation_loss(
        s_logits, t_logits, labels, ALPHA, TEMPERATURE, chunk_size=None if fused else 0
    )
    terms.loss.backward()


def _plain_forward_backward(student, batch) -> None:
    logits = student(batch, use_cache=False).logits
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)
    )
    loss.backward()


def full_step(args) -> dict:
    """Peak memory of a distillation step's forward/backward; tokens/s of whole steps."""
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=args.vocab, n_positions=max(1024, args.seq))
    teacher = GPT2LMHeadModel(config).eval().requires_grad_(False)
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)
    batch = torch.randint(0, args.vocab, (args.batch, args.seq), generator=torch.Generator())
    out: dict = {"parameters": sum(p.numel() for p in student.parameters())}
    for name, fused in (("naive", False), ("chunked", True)):
        student.zero_grad(set_to_none=True)
        peak, _ = peak_allocated(
            lambda f=fused: _distill_forward_backward(student, teacher, batch, f)
        )
        out[name] = {"peak_mib": peak / MIB}
        print(f"distillation step, {name:8s}: peak {peak / MIB:8.1f} MiB (forward + backward)")
    student.zero_grad(set_to_none=True)
    kinds = {
        "plain": lambda: _plain_forward_backward(student, batch),
        "naive": lambda: _distill_forward_backward(student, teacher, batch, False),
        "chunked": lambda: _distill_forward_backward(student, teacher, batch, True),
    }
    best = {k: (math.inf, math.inf) for k in kinds}
    for round_ in range(args.rounds):
        for kind, step in kinds.items():
            w0, c0 = time.perf_counter(), time.process_time()
            step()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            best[kind] = (min(best[kind][0], wall), min(best[kind][1], cpu))
            print(f"round {round_ + 1}: {kind:8s} step {wall:7.2f} s wall, {cpu:7.2f} CPU s")
    tokens = args.batch * args.seq
    for kind, (wall, cpu) in best.items():
        out.setdefault(kind, {}).update(
            {"wall_s": wall, "cpu_s": cpu, "tokens_per_s": tokens / wall}
        )
    out["peak_ratio"] = out["chunked"]["peak_mib"] / out["naive"]["peak_mib"]
    out["ratio_chunked_over_plain_cpu"] = best["plain"][1] / best["chunked"][1]
    out["ratio_naive_over_plain_cpu"] = best["plain"][1] / best["naive"][1]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds (least time kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--skip-step", action="store_true", help="measure the loss alone")
    parser.add_argument("--out", default=None, help="output path without suffix")
    parser.add_argument("--no-write", action="store_true", help="print only, write no files")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    results = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="minutes"),
        "command": "python benchmarks/bench_distill_memory.py " + " ".join(sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "shape": {"batch": args.batch, "seq": args.seq, "vocab": args.vocab},
        "loss_only": loss_only(args),
    }
    if not args.skip_step:
        results["step"] = full_step(args)
    results["machine"]["load_average_before"] = load_before
    results["machine"]["load_average_after"] = os.getloadavg()
    print(json.dumps({k: results[k] for k in ("loss_only", "step") if k in results}, indent=1))
    if args.no_write:
        return
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / "distill_memory_cpu"
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(_markdown(results))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _loads(values) -> str:
    return ", ".join(f"{x:.2f}" for x in values)


def _markdown(r: dict) -> str:
    m, v, sh, lo = r["machine"], r["versions"], r["shape"], r["loss_only"]
    lines = [
        "# Distillation loss at GPT-2's vocabulary: chunked vs naive",
        "",
        f"Measured with `{r['command']}` on {r['date']}.",
        "",
        f"- machine: {m['cpu']}, {m['cpu_count']} CPUs, torch threads {m['torch_threads']}, "
        f"{m['platform']}",
        f"- load average (1, 5, 15 min) before: {_loads(m['load_average_before'])}; after: "
        f"{_loads(m['load_average_after'])} (shared machine: timings are noisy, memory is not)",
        f"- versions: Python {v['python']}, torch {v['torch']}, transformers {v['transformers']}",
        f"- batch {sh['batch']} x {sh['seq']} tokens, vocabulary {sh['vocab']}, alpha {ALPHA}, "
        f"T {TEMPERATURE}",
        "- memory: peak of the bytes torch allocates during the measured call above what existed "
        "before (torch profiler allocation events replayed in time order, "
        "`benchmarks/_memory.py`)",
        "",
        "## The loss alone (forward + backward)",
        "",
        f"Logits: {lo['logits_mib']:.0f} MiB each (student and teacher exist before the call and "
        "are not counted; the student logits' gradient, which any backward pass creates, is).",
        "",
        "| loss | peak MiB | x logits | CPU s |",
        "|---|---:|---:|---:|",
    ]
    for name in ("naive", "chunked"):
        x = lo[name]
        lines.append(
            f"| {name} | {x['peak_mib']:.0f} | {x['peak_mib'] / lo['logits_mib']:.2f} | "
            f"{x['cpu_s']:.3f} |"
        )
    lines += [
        "",
        f"Chunked / naive peak: **{lo['peak_ratio']:.3f}**; loss equal to rounding, largest "
        f"gradient difference {lo['max_abs_grad_difference']:.2e} (asserted).",
    ]
    if "step" in r:
        st = r["step"]
        lines += [
            "",
            f"## A distillation step of GPT-2 small ({st['parameters'] / 1e6:.1f}M parameters, "
            "random weights)",
            "",
            "Peak: forward (teacher, then student) + loss + backward, the models' weights not "
            "counted. Time: whole steps with the AdamW update, least over rounds.",
            "",
            "| step | peak MiB | wall s | CPU s | tokens/s (wall) | tokens per CPU s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name in ("plain", "naive", "chunked"):
            x = st[name]
            peak = f"{x['peak_mib']:.0f}" if "peak_mib" in x else "—"
            per_cpu = sh["batch"] * sh["seq"] / x["cpu_s"]
            lines.append(
                f"| {name} | {peak} | {x['wall_s']:.2f} | {x['cpu_s']:.2f} | "
                f"{x['tokens_per_s']:.0f} | {per_cpu:.1f} |"
            )
        lines += [
            "",
            "plain: cross-entropy training step of the student alone; naive: teacher under "
            "`no_grad`, unfused loss (`chunk_size=0`); chunked: teacher under `inference_mode`, "
            "fused chunked loss (the default). With one torch thread the process CPU time is "
            "the work done, whatever the load; wall times on a loaded machine are not. The "
            "plain step runs first and also pays the lazy creation of AdamW's state.",
            "",
            f"Step peak chunked / naive: **{st['peak_ratio']:.3f}**. CPU-time ratio to the "
            f"plain step: chunked **{st['ratio_chunked_over_plain_cpu']:.2f}**, naive "
            f"{st['ratio_naive_over_plain_cpu']:.2f}.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
