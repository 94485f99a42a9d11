"""First call in a fresh process against the warm call (issue 12, target 2).

Each sample is a fresh ``python -c`` subprocess that imports tqla, makes one call (the
"first call": kernel loading, compilation or cache loading, lazy imports, BLAS start-up),
then the same call again five times (the "warm" calls, their median).  Configurations run
interleaved (one subprocess of each per round) because the machine may be shared; the
table reports medians over the rounds of wall time and of the subprocess's CPU time
(``time.process_time``: all its threads; the better measure on a loaded machine).

    python benchmarks/bench_coldstart.py            # writes results/coldstart_cpu.md
    python benchmarks/bench_coldstart.py --rounds 3 --no-write

Configurations: ``kron_svd`` at GPT-2's c_fc shape (768×3072, 384×768 ⊗ 2×4, rank 4,
float64) with ``kernel="auto"`` (the default), ``"numpy"`` and ``"numba"``, and
``tqla.rearrange`` of the same matrix.  Target: first call − warm call <= 0.2 s for the
default kernels.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_kron import machine_lines  # noqa: E402

CHILD = r"""
import json, sys, time
c0, t0 = time.process_time(), time.perf_counter()
import numpy as np
import tqla
c1, t1 = time.process_time(), time.perf_counter()
W = np.random.default_rng(0).standard_normal((768, 3072))
what, kernel = sys.argv[1], sys.argv[2]
if what == "kron_svd":
    call = lambda: tqla.kron_svd(W, ((384, 768), (2, 4)), 4, kernel=kernel)
else:
    call = lambda: tqla.rearrange(W, ((384, 768), (2, 4)))
c2, t2 = time.process_time(), time.perf_counter()
first = call()
c3, t3 = time.process_time(), time.perf_counter()
warm_w, warm_c = [], []
for _ in range(5):
    a, b = time.process_time(), time.perf_counter()
    again = call()
    warm_c.append(time.process_time() - a)
    warm_w.append(time.perf_counter() - b)
if what == "kron_svd":  # the same code path twice: bit-identical
    assert all(np.array_equal(x, y) for x, y in ((first.A, again.A), (first.B, again.B)))
else:
    assert np.array_equal(first, again)
print(json.dumps({
    "import_w": t1 - t0, "import_c": c1 - c0,
    "first_w": t3 - t2, "first_c": c3 - c2,
    "warm_w": sorted(warm_w)[2], "warm_c": sorted(warm_c)[2],
    "numba_loaded": "numba" in sys.modules,
}))
"""

CONFIGS = {
    "kron_svd, kernel='auto' (default)": ("kron_svd", "auto"),
    "kron_svd, kernel='numpy'": ("kron_svd", "numpy"),
    "kron_svd, kernel='numba'": ("kron_svd", "numba"),
    "rearrange (default)": ("rearrange", "auto"),
}


def run(rounds: int, threads: int) -> dict[str, list[dict]]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OPENBLAS_NUM_THREADS": str(threads),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "NUMBA_NUM_THREADS": str(threads),
    }
    out: dict[str, list[dict]] = {k: [] for k in CONFIGS}
    for r in range(rounds):
        names = list(CONFIGS)
        names = names[r % len(names) :] + names[: r % len(names)]
        for name in names:
            what, kernel = CONFIGS[name]
            res = subprocess.run(
                [sys.executable, "-c", CHILD, what, kernel],
                capture_output=True, text=True, env=env, check=True,
            )  # fmt: skip
            out[name].append(json.loads(res.stdout.strip().splitlines()[-1]))
    return out


def table(samples: dict[str, list[dict]]) -> list[str]:
    rows = [
        "| configuration | import tqla s (wall / CPU) | first call s (wall / CPU) | "
        "warm call s (wall / CPU) | first − warm s (wall / CPU) | Numba imported |",
        "|---|---|---|---|---|---|",
    ]
    for name, ss in samples.items():
        med = {k: float(np.median([s[k] for s in ss])) for k in ss[0] if k != "numba_loaded"}
        dw = float(np.median([s["first_w"] - s["warm_w"] for s in ss]))
        dc = float(np.median([s["first_c"] - s["warm_c"] for s in ss]))
        rows.append(
            f"| {name} | {med['import_w']:.3f} / {med['import_c']:.3f} | "
            f"{med['first_w']:.3f} / {med['first_c']:.3f} | "
            f"{med['warm_w']:.4f} / {med['warm_c']:.4f} | **{dw:.3f}** / **{dc:.3f}** | "
            f"{ss[0]['numba_loaded']} |"
        )
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="BLAS/Numba threads of the children")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    lines = ["# First call in a fresh process (CPU)", "", *machine_lines(), ""]
    lines += [
        f"- command: python benchmarks/bench_coldstart.py {' '.join(argv or sys.argv[1:])}",
        f"- {args.rounds} rounds, configurations interleaved; children run with "
        f"{args.threads} BLAS/Numba thread(s); medians over the rounds",
        "- the Numba kernels are cached on disk (`cache=True`), and the cache is warm: "
        "the rows show loading, not compiling",
        "",
    ]
    lines += table(run(args.rounds, args.threads))
    try:
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "n/a"
    lines += ["", f"Load average at the end: {load} ({_dt.datetime.now():%H:%M})."]
    text = "\n".join(lines) + "\n"
    if not args.no_write:
        path = HERE / "results" / "coldstart_cpu.md"
        path.write_text(text)
        print("wrote", path)


if __name__ == "__main__":
    main()
