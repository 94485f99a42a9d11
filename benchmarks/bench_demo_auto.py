"""The demo's automatic row against the fixed presets, on the demo's own teacher, in one process.

``tqla demo`` trains its GPT-2 teacher (minutes), then compresses and distils six rows.  This
script reuses a teacher saved by an earlier demo run (``--teacher-dir``, the ``teacher/``
folder of a demo output; trained here into ``--cache`` if not given), computes each row's
plan exactly as the demo does (:func:`tqla_torch.training.demo.method_plans`, the demo's
calibration batches), evaluates every row one-shot (all stages applied, no training) and
distils the rows named by ``--distill`` with the demo's settings (:class:`DemoConfig`
defaults: 196,608 tokens in three equal stages, the same optimiser, loss and seed) — so with
the same teacher, machine and thread count its numbers are the demo's.  Extra ``auto-*``
rows are variants of the automatic plan: ``auto-<sensitivity>[-<schedule>]`` with
sensitivity fisher / uniform / lwiq and schedule front / split
(:func:`tqla_torch.compression.auto_gpt2.auto_gpt2_steps`).

Run: ``PYTHONPATH=. python benchmarks/bench_demo_auto.py --teacher-dir tqla-demo/teacher
--distill auto,svd --out benchmarks/results/demo_auto_cpu.md`` (``--no-write`` prints only).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tqla_torch._atomic import atomic_write_text  # noqa: E402
from tqla_torch.training.demo import (  # noqa: E402
    DemoConfig,
    _auto_calibration,
    _calibration_batches,
    _evaluate,
    _MethodRun,
    method_plans,
)

PRESETS = ("permuted_kron", "kron", "svd", "tt", "auto")


def _teacher(args, cfg):
    from tqla_torch.training.optim import seed_everything
    from tqla_torch.training.teacher import build_demo_teacher

    cache = Path(args.cache)
    if args.teacher_dir:
        cache.mkdir(parents=True, exist_ok=True)
        if not (cache / "teacher").exists():
            shutil.copytree(args.teacher_dir, cache / "teacher")
    seed_everything(cfg.seed)  # as run_demo does before the teacher
    return build_demo_teacher(cfg, cache, torch.device("cpu"))


def _variant_stages(name, teacher, calib, plans):
    """Stages of ``auto-<sensitivity>[-<schedule>]``; one plan per sensitivity (``plans``
    caches the full plan, the first stage of the "front" schedule, which the demo's
    ``auto`` row also fills for "fisher")."""
    from tqla_torch.compression.auto_gpt2 import auto_gpt2_steps, schedule_stages

    parts = name.split("-")[1:]
    sens = parts[0] if parts else "fisher"
    schedule = parts[1] if len(parts) > 1 else "front"
    if sens not in plans:
        plans[sens] = auto_gpt2_steps(teacher, calib, seed=0, sensitivity=sens)[0]
    return schedule_stages(plans[sens], schedule)


def _distill(run, name, stages, stage_tokens, out):
    from tqla_torch.training.distill import Stage, distill_stages

    student = copy.deepcopy(run.teacher)
    st = [Stage(n, compress=c, tokens=stage_tokens) for n, c in stages]
    cfg = run._distill_config(name, stage_tokens)  # checkpoints under out/checkpoints/name
    t0 = time.perf_counter()
    distill_stages(student, run.teacher, run.train, st, cfg)
    ppl = run.evaluate(student).ppl
    return ppl, time.perf_counter() - t0


def _plan_table(stages) -> str:
    for _, cfg in stages:
        plan = getattr(cfg, "auto_plan", None)
        if plan is not None:
            rows = [r for _, c in stages if c is not None for r in c.auto_plan.rows]
            plan = copy.copy(plan)
            plan.rows = rows
            return plan.table()
    return ""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher-dir", help="teacher/ folder of an earlier `tqla demo` output")
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "tqla_demo_auto"))
    p.add_argument("--rows", default="permuted_kron,kron,svd,tt,auto",
                   help="demo rows and auto-<sensitivity>[-<schedule>] variants")
    p.add_argument("--distill", default="", help="rows to distil (comma-separated)")
    p.add_argument("--out", default="benchmarks/results/demo_auto_cpu.md")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    from tqla_torch._models import count_parameters
    from tqla_torch.compression.apply import compress
    from tqla_torch.training.data import PackedDataset, builtin_documents, tokenize_texts

    load0 = os.getloadavg()
    cfg = DemoConfig(progress=False, save_models=False)
    built = _teacher(args, cfg)
    teacher, tok = built["model"], built["tokenizer"]
    block = int(built["block_size"])
    train = PackedDataset.from_source("builtin", tok, block, split="train")
    val = tokenize_texts(builtin_documents("validation"), tok)
    out = Path(tempfile.mkdtemp(prefix="bench_demo_auto_"))
    run = _MethodRun(teacher, tok, train, val, block, cfg, torch.device("cpu"), out)
    stage_tokens = max(run.tokens_per_step, cfg.distill_tokens // 3)
    teacher_ppl = _evaluate(teacher, val, block, cfg, "cpu").ppl
    print(f"teacher {count_parameters(teacher):,} params, ppl {teacher_ppl:.2f}", flush=True)
    calib, auto_calib = _calibration_batches(train, cfg.distill_batch_size), _auto_calibration(
        train, cfg.seed)
    distill = {r for r in args.distill.split(",") if r}
    rows, plans, full = [], {}, {}
    for name in [r for r in args.rows.split(",") if r]:
        t0 = time.perf_counter()
        if name in PRESETS:
            data = auto_calib if name == "auto" else calib
            stages = method_plans(teacher, (name,), data, seed=cfg.seed)[name]
            if name == "auto" and stages[1][1] is None:  # the front schedule: the full plan
                full["fisher"] = stages[0][1]
        else:
            stages = list(zip(("stage-1", "stage-2", "stage-3"),
                              _variant_stages(name, teacher, auto_calib, full)))
        plan_s = time.perf_counter() - t0
        one = copy.deepcopy(teacher)
        for _, c in stages:
            if c is not None:
                compress(one, c)
        n, before = count_parameters(one), run.evaluate(one).ppl
        after, dist_s = (_distill(run, name, stages, stage_tokens, out) if name in distill
                         else (math.nan, 0.0))
        rows.append((name, n, before, after, plan_s, dist_s))
        plans[name] = _plan_table(stages)
        print(f"{name}: {n:,} params, one-shot {before:.2f}, after {after:.2f} "
              f"(plan {plan_s:.1f} s, distil {dist_s:.1f} s)", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    _report(args, argv, rows, plans, teacher, teacher_ppl, load0, stage_tokens)


def _report(args, argv, rows, plans, teacher, teacher_ppl, load0, stage_tokens) -> None:
    import numpy as np
    import transformers

    from tqla_torch._models import count_parameters

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                if ln.startswith("model name")), platform.processor())
    lines = [
        "# The demo's automatic row vs the fixed presets (benchmarks/bench_demo_auto.py)", "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; "
        f"load average at start {tuple(round(v, 2) for v in load0)}, at end "
        f"{tuple(round(v, 2) for v in os.getloadavg())} (shared: wall times are noisy, the "
        "perplexities are not — the run is deterministic for a machine and thread count)",
        f"- python {platform.python_version()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, numpy {np.__version__}",
        f"- command: `PYTHONPATH=$PWD python benchmarks/bench_demo_auto.py "
        f"{' '.join(argv if argv is not None else sys.argv[1:])}`", "",
        f"Teacher: the demo's (DemoConfig defaults), {count_parameters(teacher):,} parameters, "
        f"validation perplexity {teacher_ppl:.2f}. Distillation: the demo's, 3 stages of "
        f"{stage_tokens:,} tokens. One-shot: every stage applied, no training.", "",
        "| row | parameters | ppl one-shot | ppl after distillation | plan s | distil s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, n, before, after, plan_s, dist_s in rows:
        a = "—" if math.isnan(after) else f"{after:.2f}"
        lines.append(f"| {name} | {n:,} | {before:.2f} | {a} | {plan_s:.1f} | {dist_s:.0f} |")
    for name, table in plans.items():
        if table:
            lines += ["", f"Plan `{name}`:", "", "```", table, "```"]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        atomic_write_text(Path(args.out), text)


if __name__ == "__main__":
    main()
