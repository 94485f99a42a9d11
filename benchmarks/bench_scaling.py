"""Compression past one process and past memory (issue 14): speed-up, peak RSS, fit costs.

``spread``: the ``tq_gpt2`` plan on a randomly initialised GPT-2 (``--size medium``:
n_embd 1024, 24 layers) compressed by ``tqla_torch.compress`` in fresh subprocesses,
interleaved over ``--rounds``; ``--runs`` picks among

- ``threaded``: one process, default threading (modules fitted side by side on all cores);
- ``serial``: one process, ``n_jobs=1`` (one module at a time, BLAS on all cores);
- ``torchrun``: ``torchrun --nproc-per-node N`` (gloo), unpinned, sharing the cores;
- ``pinned1`` / ``pinnedN``: the parallel efficiency of spreading itself — one process on
  one core against N processes on one core each, every process with one thread
  (``OMP/OPENBLAS/MKL/NUMBA_NUM_THREADS=1``, each process binds itself to the
  ``LOCAL_RANK``-th usable CPU with ``sched_setaffinity`` before importing torch).

Reports wall time of the compress call (rank 0), compress CPU seconds of every rank (robust
under load), CPU time of all processes with start-up (``getrusage`` of the children), a
per-rank timeline (import, model build, modules, estimated and measured fit time, exchange)
and checks that all runs reach the same per-module errors.

``costs``: one-thread fit times (thread CPU time, one core) of the modules of ``--plans``
on GPT-2-shaped models of ``--widths``, and the constants of the cost model
(``tqla_torch.compression.distributed.estimated_cost``) fitted to them by least squares on
the relative error, next to the model's current predictions.

``memory``: a randomly initialised GPT-2 (``--size large``: n_embd 1280, 36 layers, ~3.1 GB
of float32) saved with transformers' ``save_pretrained`` into a temporary folder, then
``tqla compress FOLDER --preset tq_gpt2`` module by module (the default for a folder) and
with ``--in-memory``, each in a subprocess whose peak RSS (``ru_maxrss``) is recorded; the
two outputs are loaded and their logits compared.  Everything under the temporary folder is
deleted afterwards.

    python benchmarks/bench_scaling.py spread --size medium --nproc 2
    python benchmarks/bench_scaling.py spread --size medium --runs pinned1,pinnedN
    python benchmarks/bench_scaling.py costs --repeats 2
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
import json, os, sys, time
if os.environ.get("TQLA_BENCH_PIN"):  # one core per process: the LOCAL_RANK-th usable one
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[int(os.environ.get("LOCAL_RANK", 0)) % len(cores)]})
t_start, c_start = time.perf_counter(), time.process_time()
import logging, torch
import torch.distributed as dist
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    dist.init_process_group("gloo")
from transformers import GPT2Config, GPT2LMHeadModel
import tqla_torch
from tqla_torch.compression import presets
t_import, c_import = time.perf_counter(), time.process_time()
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(**json.loads(sys.argv[1])))
t_build, c_build = time.perf_counter(), time.process_time()
timeline = {}
class Grab(logging.Handler):
    def emit(self, record):
        timeline.update(getattr(record, "tqla_timeline", {}))
log = logging.getLogger("tqla_torch.compression.distributed")
log.addHandler(Grab()); log.setLevel(logging.INFO)
if dist.is_initialized():
    dist.barrier()
t0, c0 = time.perf_counter(), time.process_time()
kw = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
rep = tqla_torch.compress(model, presets.tq_gpt2(), **kw)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
mine = {"cpu": cpu, "wall": wall, "import_s": t_import - t_start, "import_cpu": c_import - c_start,
        "build_s": t_build - t_import, "build_cpu": c_build - c_import,
        "affinity": sorted(os.sched_getaffinity(0)), "threads": torch.get_num_threads(), **timeline}
ranks = [mine]
if dist.is_initialized():
    ranks = [None] * dist.get_world_size()
    dist.all_gather_object(ranks, mine)
if not dist.is_initialized() or dist.get_rank() == 0:
    print("RESULT " + json.dumps({"wall": wall, "cpus": [r["cpu"] for r in ranks], "ranks": ranks,
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


COSTS_CHILD = r"""
import json, os, sys, time
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from tqla_torch.compression import apply, presets
widths, names, repeats = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
def plan(name, model):
    if name == "svd_gpt2":
        return presets.svd_gpt2(model.config, blocks=[1])
    return getattr(presets, name)(blocks=[1])
def fits(d, name, warm=False):
    torch.manual_seed(0)
    cfg = GPT2Config(n_embd=d, n_layer=2, n_head=d // 64, vocab_size=512 if warm else 50257)
    model = GPT2LMHeadModel(cfg)
    items, _ = apply._resolve(model, plan(name, model))
    for it in items:
        best = float("inf")
        for _ in range(repeats):
            c0 = time.thread_time()
            apply._fit(it)
            best = min(best, time.thread_time() - c0)
        if not warm:
            r = it.report
            print("RESULT " + json.dumps({"plan": name, "method": r.method, "kind": r.kind,
                  "name": r.name, "rows": r.out_features, "cols": r.in_features,
                  "repeat": it.settings.repeat, "b_shape": it.settings.b_shape,
                  "seconds": best}), flush=True)
for name in names:
    fits(128, name, warm=True)  # first calls: imports, compiled kernels loaded
    for d in widths:
        fits(d, name)
"""


ONE_THREAD = {v: "1" for v in (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
)}  # fmt: skip


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **(extra or {})}


def _run(cmd: list[str], extra_env: dict[str, str] | None = None) -> tuple[str, float]:
    """Run ``cmd``; its first ``RESULT`` line and the CPU seconds it and its children used."""
    lines, cpu = _run_all(cmd, extra_env)
    return lines[0], cpu


def _run_all(cmd: list[str], extra_env: dict[str, str] | None = None) -> tuple[list[str], float]:
    """Run ``cmd``; all its ``RESULT`` lines and the CPU seconds it and its children used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, env=_env(extra_env), capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        sys.stderr.write(out.stdout[-3000:] + out.stderr[-5000:])
        raise SystemExit(f"failed: {' '.join(cmd)}")
    lines = [
        ln.removeprefix("RESULT").strip()
        for ln in out.stdout.splitlines()
        if ln.startswith("RESULT")
    ]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return lines, cpu


def _load() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def _spread_runs(args: argparse.Namespace, child: Path) -> dict[str, tuple[list[str], dict]]:
    """The runs of ``spread``: label → (command, extra environment)."""
    size = json.dumps(SIZES[args.size])
    torchrun = [str(Path(sys.executable).with_name("torchrun")), "--standalone",
                f"--nproc-per-node={args.nproc}", str(child), size]  # fmt: skip
    pinned = {**ONE_THREAD, "TQLA_BENCH_PIN": "1"}
    runs = {
        "threaded": ("1 process (default: modules side by side, all cores)",
                     [sys.executable, str(child), size], {}),
        "serial": ("1 process, n_jobs=1 (one module at a time, all cores for BLAS)",
                   [sys.executable, str(child), size, json.dumps({"n_jobs": 1})], {}),
        "torchrun": (f"torchrun {args.nproc} processes (unpinned)", torchrun, {}),
        "pinned1": ("pinned: 1 process on 1 core, 1 thread",
                    [sys.executable, str(child), size], pinned),
        "pinnedN": (f"pinned: torchrun {args.nproc} processes, 1 core and 1 thread each",
                    torchrun, pinned),
    }  # fmt: skip
    chosen = args.runs.split(",")
    unknown = set(chosen) - set(runs)
    if unknown:
        raise SystemExit(f"--runs: unknown {sorted(unknown)}; choose from {sorted(runs)}")
    return {k: runs[k] for k in runs if k in chosen}


def spread(args: argparse.Namespace) -> list[str]:
    child = Path(tempfile.mkdtemp(prefix="tqla_spread_")) / "child.py"
    child.write_text(SPREAD_CHILD)
    runs = _spread_runs(args, child)
    rows, timeline, results = [], [], {}
    for r in range(args.rounds):
        for key, (label, cmd, extra) in runs.items():
            load0 = _load()
            text, cpu = _run(cmd, extra)
            res = json.loads(text)
            results.setdefault(key, []).append(res)
            threads = "/".join(str(x.get("cpus", x["threads"])) for x in res["ranks"])
            rows.append(
                f"| {r} | {label} | {res['wall']:.1f} | "
                f"{' / '.join(f'{c:.1f}' for c in res['cpus'])} | {cpu:.1f} | "
                f"{threads} | {load0} → {_load()} |"
            )
            print(rows[-1], flush=True)
            for x in res["ranks"] if len(res["ranks"]) > 1 else []:
                timeline.append(
                    f"| {r} | {label} | {x['rank']} | {x['affinity']} | {x['import_cpu']:.1f} "
                    f"| {x['build_cpu']:.1f} | {x['modules']} | {x['estimated_s']:.1f} "
                    f"| {x['fit_cpu_s']:.1f} | {x['fit_s']:.1f} | {x['exchange_s']:.2f} "
                    f"| {x['cpu']:.1f} | {x['wall']:.1f} |"
                )
    return [
        f"## spread: tq_gpt2 on GPT-2 {args.size} {SIZES[args.size]}, 1 vs {args.nproc} processes",
        "",
        "| round | run | compress wall (s, rank 0) | compress CPU s per rank "
        "| CPU s (all processes, incl. start-up) | threads per process while fitting "
        "| load avg 1/5/15 before → after |",
        "|---|---|---:|---:|---:|---:|---|",
        *rows,
        "",
        "Per-rank timeline of the multi-process runs (CPU s unless marked wall; `estimated`: "
        "the cost model's one-thread seconds of the rank's share):",
        "",
        "| round | run | rank | CPUs | import CPU | model build CPU | modules | estimated "
        "| fit CPU | fit wall | exchange wall | compress CPU | compress wall |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *timeline,
        "",
        *_spread_summary(args, runs, results),
    ]


def _spread_summary(args: argparse.Namespace, runs: dict, results: dict) -> list[str]:
    """Speed-ups (best wall of each run) and CPU-bound estimates, where both runs were made."""
    wall = {k: min(x["wall"] for x in v) for k, v in results.items()}
    busiest = {k: min(max(x["cpus"]) for x in v) for k, v in results.items()}
    cores = {k: max(1, min(len(x["affinity"]) for x in v[0]["ranks"])) for k, v in results.items()}
    out = []
    for one, many, what in (
        ("pinned1", "pinnedN", f"**parallel efficiency** ({args.nproc} pinned processes on "
         f"{args.nproc} cores against 1 pinned process on 1 core, 1 thread each; ideal "
         f"{args.nproc}×)"),
        ("threaded", "torchrun", "over one process with its default side-by-side threads"),
        ("serial", "torchrun", "over one process fitting one module at a time (`n_jobs=1`)"),
    ):  # fmt: skip
        if one in wall and many in wall:
            # on an idle machine the one process needs at least its CPU / its cores
            floor = busiest[one] / cores[one]
            out.append(
                f"- {what}: wall **{wall[one] / wall[many]:.2f}×** ({wall[one]:.1f} s → "
                f"{wall[many]:.1f} s); CPU-bound estimate (what the wall ratio tends to on an "
                f"idle machine: the one process's compress CPU over the {cores[one]} core(s) "
                f"it may use, {busiest[one]:.1f} s / {cores[one]}, against the busiest rank's "
                f"{busiest[many]:.1f} s): **{floor / busiest[many]:.2f}×**"
            )
    errs = [v[0]["errors"] for v in results.values()]
    ref = errs[0]
    worst = max(abs(ref[k] - e[k]) / max(ref[k], 1e-30) for e in errs for k in ref)
    out.append(f"- largest relative difference of a module's error between the runs: {worst:.2e}")
    return out


def _features(row: dict) -> list[float]:
    """The three work terms of ``distributed.estimated_cost`` for one measured fit."""
    from types import SimpleNamespace

    from tqla_torch.compression import distributed as dist_mod

    report = SimpleNamespace(**{k: row[k] for k in ("kind", "method")},
                             out_features=row["rows"], in_features=row["cols"])
    settings = SimpleNamespace(repeat=row["repeat"], n_restarts=1, b_shape=row["b_shape"])
    saved = dist_mod._COSTS
    try:
        out = []
        for unit in ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)):
            dist_mod._COSTS = {row["method"]: unit, "permuted_kron": unit}
            out.append(dist_mod.estimated_cost(report, settings))
        return out
    finally:
        dist_mod._COSTS = saved


def _fit_constants(rows: list[dict]) -> dict[str, tuple[float, float, float]]:
    """Per method: the constants minimising the squared relative error of the model."""
    import numpy as np

    out = {}
    for method in sorted({r["method"] for r in rows}):
        mat = [r for r in rows if r["method"] == method and r["kind"] != "Embedding"]
        emb = [r for r in rows if r["method"] == method and r["kind"] == "Embedding"]
        c = [0.0, 0.0, 0.0]
        if mat:
            x = np.array([_features(r)[0] / r["seconds"] for r in mat])
            c[0] = float(x.sum() / (x * x).sum())
        if emb:
            A = np.array([[f / r["seconds"] for f in _features(r)[1:]] for r in emb])
            sol = np.linalg.lstsq(A, np.ones(len(emb)), rcond=None)[0]
            if (sol < 0).any() or len(emb) < 2:  # one term alone, the better of the two
                fits = []
                for j in range(2):
                    a = float(A[:, j].sum() / (A[:, j] ** 2).sum())
                    fits.append((float(((a * A[:, j] - 1) ** 2).sum()), j, a))
                _, j, a = min(fits)
                sol = np.zeros(2)
                sol[j] = a
            c[1], c[2] = float(sol[0]), float(sol[1])
        out[method] = (c[0], c[1], c[2])
    return out


def costs(args: argparse.Namespace) -> list[str]:
    """Measure one-thread fit times of GPT-2-shaped modules and fit the cost model."""
    from tqla_torch.compression import distributed as dist_mod

    widths = [int(w) for w in args.widths.split(",")]
    plans = args.plans.split(",")
    load0 = _load()
    lines, cpu = _run_all(
        [sys.executable, "-c", COSTS_CHILD, json.dumps(widths), json.dumps(plans),
         str(args.repeats)], ONE_THREAD,
    )  # fmt: skip
    rows = [json.loads(ln) for ln in lines]
    fitted = _fit_constants(rows)
    table = [
        f"## costs: one-thread fit times (thread CPU s, best of {args.repeats}) of "
        f"GPT-2-shaped modules, widths {widths}, vocabulary 50257; load {load0} → {_load()}, "
        f"{cpu:.0f} CPU s in all",
        "",
        "| plan | module | method | shape (out×in) | measured s | model fitted here (s) "
        "| model in distributed.py (s) |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        f = _features(r)
        here = sum(a * b for a, b in zip(fitted[r["method"]], f))
        shipped = dist_mod._COSTS.get(r["method"], dist_mod._COSTS["permuted_kron"])
        table.append(
            f"| {r['plan']} | {r['name']} | {r['method']} | {r['rows']}×{r['cols']} "
            f"| {r['seconds']:.2f} | {here:.2f} | {sum(a * b for a, b in zip(shipped, f)):.2f} |"
        )
    table += [
        "",
        "Constants fitted here (`_COSTS` of `tqla_torch/compression/distributed.py`: "
        "matrix · M·N·(M+N), rows · V·w, gram · V·w² per repetition):",
        "",
        "```",
        *(f'"{m}": ({a:.3g}, {b:.3g}, {c:.3g}),' for m, (a, b, c) in fitted.items()),
        "```",
    ]
    return table


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
    p.add_argument("what", choices=["spread", "memory", "costs"])
    p.add_argument("--size", choices=sorted(SIZES), default=None)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--runs", default="threaded,serial,torchrun,pinned1,pinnedN",
                   help="spread: which runs (comma-separated)")
    p.add_argument("--widths", default="512,768,1024,1280", help="costs: model widths")
    p.add_argument("--plans", default="tq_gpt2,kron_gpt2,svd_gpt2", help="costs: presets")
    p.add_argument("--repeats", type=int, default=1, help="costs: fits per module (best)")
    p.add_argument("--tmp", default=None, help="folder for the temporary checkpoint (memory)")
    p.add_argument("--out", default=None, help="result file (default benchmarks/results/...)")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args()
    args.size = args.size or ("medium" if args.what == "spread" else "large")
    head = [f"# bench_scaling {args.what} ({' '.join(sys.argv[1:])})", "", *machine_lines(), ""]
    body = {"spread": spread, "memory": memory, "costs": costs}[args.what](args)
    text = "\n".join([*head, *body, "", f"- load average at the end: {_load()}", ""])
    print(text)
    if not args.no_write:
        name = f"scaling_{args.what}" + ("" if args.what == "costs" else f"_{args.size}")
        out = Path(args.out or HERE / "results" / f"{name}_cpu.md")
        out.write_text(text)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
