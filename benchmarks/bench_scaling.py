"""Compression past one process and past memory (issue 14): speed-up and peak RSS.

``spread``: the ``tq_gpt2`` plan on a randomly initialised GPT-2 (``--size medium``:
n_embd 1024, 24 layers) compressed by ``tqla_torch.compress`` in one process and under
``torchrun --nproc-per-node N`` (gloo; each rank fits its share and receives the others'),
in fresh subprocesses, interleaved over ``--rounds``.  Reports wall time of the compress call
(rank 0), CPU time summed over all processes (``getrusage`` of the children), and checks
that both runs reach the same per-module errors.

``memory``: a randomly initialised GPT-2 (``--size large``: n_embd 1280, 36 layers, ~3.1 GB
of float32) saved with transformers' ``save_pretrained`` into a temporary folder, then
``tqla compress FOLDER --preset tq_gpt2`` module by module (the default for a folder) and
with ``--in-memory``, each in a subprocess whose peak RSS (``ru_maxrss``) is recorded; the
two outputs are loaded and their logits compared.  Everything under the temporary folder is
deleted afterwards.

    python benchmarks/bench_scaling.py spread --size medium --nproc 2
    python benchmarks/bench_scaling.py memory --size large
    python benchmarks/bench_scaling.py memory --size small --no-write   # quick check

Timings on a shared machine are noisy: the load average is recorded before and after, and
the CPU times show how much of the machine each run had.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_kron import machine_lines  # noqa: E402

SIZES = {
    "tiny": {"n_embd": 64, "n_layer": 4, "n_head": 4},
    "small": {},
    "medium": {"n_embd": 1024, "n_layer": 24, "n_head": 16},
    "large": {"n_embd": 1280, "n_layer": 36, "n_head": 20},
}

SPREAD_CHILD = r"""
import json, os, sys, time, torch
import torch.distributed as dist
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    dist.init_process_group("gloo")
from transformers import GPT2Config, GPT2LMHeadModel
import tqla_torch
from tqla_torch.compression import presets
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(**json.loads(sys.argv[1])))
if dist.is_initialized():
    dist.barrier()
t0, c0 = time.perf_counter(), time.process_time()
kw = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
rep = tqla_torch.compress(model, presets.tq_gpt2(), **kw)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
cpus = [cpu]
if dist.is_initialized():
    cpus = [None] * dist.get_world_size()
    dist.all_gather_object(cpus, cpu)
if not dist.is_initialized() or dist.get_rank() == 0:
    print("RESULT " + json.dumps({"wall": wall, "cpus": cpus, "threads": torch.get_num_threads(),
          "errors": {m.name: m.error for m in rep.modules}}))
if dist.is_initialized():
    dist.destroy_process_group()
"""

SAVE_CHILD = r"""
import json, sys, torch
from transformers import GPT2Config, GPT2LMHeadModel
torch.manual_seed(0)
GPT2LMHeadModel(GPT2Config(**json.loads(sys.argv[1]))).save_pretrained(sys.argv[2])
"""

RSS_CHILD = r"""
import resource, sys, time
from tqla_torch.cli import main
t0 = time.perf_counter()
rc = main(sys.argv[1:])
print("RESULT", time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, rc)
"""

COMPARE_CHILD = r"""
import sys, torch, tqla_torch
ids = torch.randint(0, 50257, (1, 64), generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    a = tqla_torch.from_pretrained(sys.argv[1])(ids).logits
    b = tqla_torch.from_pretrained(sys.argv[2])(ids).logits
print("RESULT", torch.equal(a, b), float((a - b).abs().max()), float(a.abs().max()))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _run(cmd: list[str]) -> tuple[str, float]:
    """Run ``cmd``; its ``RESULT`` line and the CPU seconds it and its children used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        sys.stderr.write(out.stdout[-3000:] + out.stderr[-5000:])
        raise SystemExit(f"failed: {' '.join(cmd)}")
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT"))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return line.removeprefix("RESULT").strip(), cpu


def _load() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def spread(args: argparse.Namespace) -> list[str]:
    size = json.dumps(SIZES[args.size])
    child = Path(tempfile.mkdtemp(prefix="tqla_spread_")) / "child.py"
    child.write_text(SPREAD_CHILD)
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    runs = {
        "1 process": [sys.executable, str(child), size],
        "1 process, n_jobs=1 (one module at a time)": [
            sys.executable, str(child), size, json.dumps({"n_jobs": 1}),
        ],
        f"torchrun {args.nproc} processes": [
            torchrun, "--standalone", f"--nproc-per-node={args.nproc}", str(child), size,
        ],
    }  # fmt: skip
    rows, results = [], {}
    for r in range(args.rounds):
        for label, cmd in runs.items():
            load0 = _load()
            text, cpu = _run(cmd)
            res = json.loads(text)
            results.setdefault(label, []).append(res)
            rows.append(
                f"| {r} | {label} | {res['wall']:.1f} | "
                f"{' / '.join(f'{c:.1f}' for c in res['cpus'])} | {cpu:.1f} | "
                f"{res['threads']} | {load0} → {_load()} |"
            )
            print(rows[-1], flush=True)
    ref, serial, other = (results[k][0]["errors"] for k in runs)
    worst = max(abs(ref[k] - o[k]) / max(ref[k], 1e-30) for o in (serial, other) for k in ref)
    walls = {k: min(x["wall"] for x in v) for k, v in results.items()}
    one, one_serial, many = walls.values()
    cpu_one, _, cpu_many = (min(max(x["cpus"]) for x in v) for v in results.values())
    return [
        f"## spread: tq_gpt2 on GPT-2 {args.size} {SIZES[args.size]}, 1 vs {args.nproc} processes",
        "",
        "| round | run | compress wall (s, rank 0) | compress CPU s per rank "
        "| CPU s (all processes, incl. start-up) | torch threads/process "
        "| load avg 1/5/15 before → after |",
        "|---|---|---:|---:|---:|---:|---|",
        *rows,
        "",
        f"- speed-up (best wall of each) over one process with its default side-by-side "
        f"threads: **{one / many:.2f}×** ({one:.1f} s → {many:.1f} s); over one process "
        f"fitting one module at a time (`n_jobs=1`): **{one_serial / many:.2f}×** "
        f"({one_serial:.1f} s → {many:.1f} s)",
        f"- CPU-bound estimate (1-process compress CPU / busiest rank's compress CPU; "
        f"what the wall ratio tends to on an otherwise idle machine): "
        f"**{cpu_one / cpu_many:.2f}×** ({cpu_one:.1f} s → {cpu_many:.1f} s)",
        f"- largest relative difference of a module's error between the runs: {worst:.2e}",
    ]


def memory(args: argparse.Namespace) -> list[str]:
    tmp = Path(tempfile.mkdtemp(prefix="tqla_memory_", dir=args.tmp))
    try:
        src = tmp / "src"
        t0 = time.perf_counter()
        save = SAVE_CHILD + "\nprint('RESULT')"
        _run([sys.executable, "-c", save, json.dumps(SIZES[args.size]), str(src)])
        size = sum(p.stat().st_size for p in src.glob("*.safetensors"))
        lines = [
            f"## memory: tq_gpt2 on GPT-2 {args.size} {SIZES[args.size]} saved by "
            f"save_pretrained ({size / 1e9:.2f} GB of safetensors, written in "
            f"{time.perf_counter() - t0:.0f} s)",
            "",
            "| path | command | wall (s) | CPU s | peak RSS (GiB) | load avg before → after |",
            "|---|---|---:|---:|---:|---|",
        ]
        outs = {}
        for label, extra in (("module by module", []), ("in memory", ["--in-memory"])):
            out = tmp / label.replace(" ", "_")
            cmd = ["compress", str(src), "--preset", "tq_gpt2", "-o", str(out), *extra]
            load0 = _load()
            text, cpu = _run([sys.executable, "-c", RSS_CHILD, *cmd])
            wall, rss_kb, _rc = text.split()
            lines.append(
                f"| {label} | `tqla compress SRC --preset tq_gpt2 -o OUT {' '.join(extra)}` "
                f"| {float(wall):.1f} | {cpu:.1f} | {int(rss_kb) / 2**20:.2f} "
                f"| {load0} → {_load()} |"
            )
            print(lines[-1], flush=True)
            outs[label] = out
        text, _ = _run([sys.executable, "-c", COMPARE_CHILD, *(str(p) for p in outs.values())])
        equal, diff, scale = text.split()
        lines += [
            "",
            f"- logits of the two saved models on 64 tokens: equal = {equal}, max |Δ| = "
            f"{float(diff):.3g} (max |logit| {float(scale):.3g})",
        ]
        return lines
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("what", choices=["spread", "memory"])
    p.add_argument("--size", choices=sorted(SIZES), default=None)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--tmp", default=None, help="folder for the temporary checkpoint (memory)")
    p.add_argument("--out", default=None, help="result file (default benchmarks/results/...)")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args()
    args.size = args.size or ("medium" if args.what == "spread" else "large")
    head = [f"# bench_scaling {args.what} ({' '.join(sys.argv[1:])})", "", *machine_lines(), ""]
    body = spread(args) if args.what == "spread" else memory(args)
    text = "\n".join([*head, *body, "", f"- load average at the end: {_load()}", ""])
    print(text)
    if not args.no_write:
        out = Path(args.out or HERE / "results" / f"scaling_{args.what}_{args.size}_cpu.md")
        out.write_text(text)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
