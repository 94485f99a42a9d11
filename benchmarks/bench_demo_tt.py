"""What the demo's tensor-train row adds to ``tqla demo``'s run time, measured in one process.

The full demo takes minutes on a quiet machine and much longer on a shared one, so this script
measures the parts the ``tt`` row adds, side by side with the low-rank (``svd``) row it shares
its parameter count and embedding stages with: the rank plan (LWIQ on the teacher) and one
distillation step of each student (forward, backward and an AdamW step on 16×128 tokens), timed
interleaved on the demo's default GPT-2 (4 blocks, 256 wide, vocabulary 4096; weights random:
speed does not depend on them).  The row's cost is then about ``plan + ratio × the svd row's
time`` (64.9 s on a quiet 2-core machine, ``benchmarks/results/demo_cpu.md``).  CPU seconds
(one thread) are reported next to wall seconds: they move less with the machine's load.

Run: ``PYTHONPATH=. python benchmarks/bench_demo_tt.py`` (writes
``benchmarks/results/demo_tt_row_cpu.md``; ``--no-write`` prints only).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tqla_torch._atomic import atomic_write_text  # noqa: E402
from tqla_torch.training.demo import DemoConfig, method_plans  # noqa: E402


def _timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="interleaved training steps per student")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers import GPT2Config, GPT2LMHeadModel

    from tqla_torch.compression.apply import compress

    load0 = os.getloadavg()
    cfg = DemoConfig()
    torch.manual_seed(0)
    teacher = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=cfg.vocab_size,
            n_embd=cfg.n_embd,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            n_positions=cfg.block_size,
            bos_token_id=0,
            eos_token_id=0,
        )
    ).eval()
    g = torch.Generator().manual_seed(0)
    shape = (cfg.distill_batch_size, cfg.block_size)
    calib = [torch.randint(0, cfg.vocab_size, shape, generator=g) for _ in range(2)]
    plans, plan_wall, plan_cpu = {}, {}, {}
    for m in ("svd", "tt"):
        out, plan_wall[m], plan_cpu[m] = _timed(lambda m=m: method_plans(teacher, (m,), calib)[m])
        plans[m] = out
    students, opts = {}, {}
    for m, stages in plans.items():
        s = copy.deepcopy(teacher).train()
        for _, c in stages:
            compress(s, c)
        students[m] = s
        opts[m] = torch.optim.AdamW(s.parameters(), lr=1e-4)
    x = torch.randint(0, cfg.vocab_size, shape, generator=g)

    def step(m: str) -> None:
        out = students[m](x, labels=x)
        out.loss.backward()
        opts[m].step()
        opts[m].zero_grad(set_to_none=True)

    wall = {m: [] for m in students}
    cpu = {m: [] for m in students}
    for m in students:
        step(m)  # warm-up
    for i in range(args.rounds):
        for m in (("svd", "tt") if i % 2 == 0 else ("tt", "svd")):
            _, w, c = _timed(lambda m=m: step(m))
            wall[m].append(w)
            cpu[m].append(c)
    load1 = os.getloadavg()
    params = {m: sum(p.numel() for p in s.parameters()) for m, s in students.items()}
    ratio_cpu = min(cpu["tt"]) / min(cpu["svd"])
    ratio_wall = min(wall["tt"]) / min(wall["svd"])
    modes = plans["tt"][1][1].overrides
    lines = [
        "# The demo's tensor-train row: what it adds to `tqla demo`",
        "",
        f"Written by `benchmarks/bench_demo_tt.py` (command: `PYTHONPATH=. python "
        f"benchmarks/bench_demo_tt.py {' '.join(sys.argv[1:] if argv is None else argv)}`).",
        "",
        f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- machine: {platform.machine()}, {_cpu()}, os.cpu_count() = {os.cpu_count()}",
        f"- torch {torch.__version__}, {torch.get_num_threads()} thread(s)",
        f"- load average at start / end: {_load(load0)} / {_load(load1)}",
        "",
        f"Students (demo default GPT-2): svd {params['svd']:,} parameters, "
        f"tt {params['tt']:,}.  TT MLP stage: {modes}.",
        "",
        "| | svd row | tt row |",
        "|---|---|---|",
        f"| rank plan, wall s / CPU s | {plan_wall['svd']:.2f} / {plan_cpu['svd']:.2f} | "
        f"{plan_wall['tt']:.2f} / {plan_cpu['tt']:.2f} |",
        f"| distillation step (min of {args.rounds}), wall s / CPU s | "
        f"{min(wall['svd']):.3f} / {min(cpu['svd']):.3f} | "
        f"{min(wall['tt']):.3f} / {min(cpu['tt']):.3f} |",
        "",
        f"tt / svd step time: {ratio_cpu:.2f} (CPU), {ratio_wall:.2f} (wall).  On the quiet "
        f"machine of `demo_cpu.md` the svd row took 64.9 s of the demo's 323 s, so the tt row "
        f"adds about {ratio_cpu * 64.9 + plan_cpu['tt']:.0f} s "
        f"({100 * (ratio_cpu * 64.9 + plan_cpu['tt']) / 323:.0f}% of the demo) there.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        atomic_write_text(ROOT / "benchmarks" / "results" / "demo_tt_row_cpu.md", text)


def _load(v) -> str:
    return ", ".join(f"{x:.2f}" for x in v)


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
