"""LSAP solvers of tqla.lsap against SciPy's linear_sum_assignment (cold and warm solves).

Families of square cost matrices, n = 384, 768, 1536, 3072:

* ``uniform``   — i.i.d. U(0, 1);
* ``lowrank``   — −X·Yᵀ with Gaussian X, Y of rank 32 (the GEMM costs tqla builds);
* ``geometric`` — squared distances between two clouds of random points in the plane;
* ``slots``     — real ``slots``-rule cost matrices of :func:`tqla.permuted_kron` (candidate
  rows of a Gaussian matrix with std 0.02, n1·n2 = 1536, rank 4, as in GPT-2's MLP plan).

Every solver runs on the same matrix, interleaved, ``--repeats`` times; the table reports the
minimum time (other processes share the machine) and the ratio to SciPy.  Warm starts: the
matrix is perturbed (C + 1e-3·std(C)·noise) and solved from the previous ``"jv"`` solution's
prices and assignment, against SciPy's cold solve of the perturbed matrix.  Every solver's
total cost is checked against SciPy's.

    python benchmarks/bench_lsap.py                    # all sizes, writes results/lsap_*.md
    python benchmarks/bench_lsap.py --sizes 384 768 --repeats 2 --no-write
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import time
from importlib import metadata

import numpy as np
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tqla.assignment import available_solvers, lsap, slots_cost  # noqa: E402
from tqla.kron import KroneckerShape, kron_svd  # noqa: E402

FAMILIES = ("uniform", "lowrank", "geometric", "slots")


def make_cost(family: str, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if family == "uniform":
        return rng.random((n, n))
    if family == "lowrank":
        return -(rng.standard_normal((n, 32)) @ rng.standard_normal((32, n)))
    if family == "geometric":
        p, q = rng.random((n, 2)), rng.random((n, 2))
        return ((p[:, None, :] - q[None, :, :]) ** 2).sum(-1)
    if family == "slots":
        s = KroneckerShape((n, 384), (2, 4))
        W = (0.02 * rng.standard_normal(s.matrix_shape)).astype(np.float32)
        K = kron_svd(W, s, 4)
        cost = slots_cost(W, s, K, 1)  # the public builder permuted_kron's sweeps use
        return np.asarray(cost, dtype=np.float64)
    raise ValueError(family)


def _time(fn, C):
    t0 = time.perf_counter()
    res = fn(C)
    return time.perf_counter() - t0, res


def _opt(C):
    r, c = linear_sum_assignment(C)
    return float(C[r, c].sum())


def run(sizes, repeats, families):
    solvers = [s for s in ("scipy", "lap", "lapx", "jv") if s in available_solvers()]
    rows = []
    for family in families:
        for n in sizes:
            C = make_cost(family, n)
            C2 = C + 1e-3 * C.std() * np.random.default_rng(1).standard_normal(C.shape)
            ref, ref2 = _opt(C), _opt(C2)
            best = {}
            for _ in range(repeats):  # interleave solvers, keep the minimum
                for s in solvers:
                    t, res = _time(lambda c, s=s: lsap(c, solver=s), C)
                    assert abs(res.cost - ref) <= 1e-9 * max(1.0, abs(ref)), (family, n, s)
                    best[s] = min(best.get(s, np.inf), t)
                if "jv" in solvers:
                    first = lsap(C, solver="jv")
                    t, res = _time(lambda c, first=first: lsap(c, solver="jv", init=first), C2)
                    assert abs(res.cost - ref2) <= 1e-9 * max(1.0, abs(ref2))
                    best["jv warm"] = min(best.get("jv warm", np.inf), t)
                    best["warm aug"] = res.n_augment
                    t, _ = _time(lambda c: lsap(c, solver="scipy"), C2)
                    best["scipy pert."] = min(best.get("scipy pert.", np.inf), t)
            rows.append((family, n, best))
            line = "  ".join(
                f"{k} {v * 1e3:8.1f} ms" if k != "warm aug" else f"aug {v}" for k, v in best.items()
            )
            print(f"{family:9s} {n:5d}  {line}", flush=True)
    return solvers, rows


def table(solvers, rows) -> str:
    head = ["family", "n"] + [f"{s} ms" for s in solvers] + [f"{s}/scipy" for s in solvers[1:]]
    warm = "jv" in solvers
    if warm:
        head += ["scipy (perturbed) ms", "jv warm ms", "warm/scipy", "warm augmentations"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for family, n, b in rows:
        cells = [family, str(n)] + [f"{b[s] * 1e3:.1f}" for s in solvers]
        cells += [f"{b[s] / b['scipy']:.2f}" for s in solvers[1:]]
        if warm:
            cells += [
                f"{b['scipy pert.'] * 1e3:.1f}",
                f"{b['jv warm'] * 1e3:.1f}",
                f"{b['jv warm'] / b['scipy pert.']:.2f}",
                str(b["warm aug"]),
            ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def machine() -> str:
    vers = []
    for pkg in ("numpy", "scipy", "lap", "lapx", "numba"):
        try:
            vers.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            vers.append(f"{pkg} (not installed)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"- date: {_dt.date.today().isoformat()}\n"
        f"- machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average at start {load:.1f}\n"
        f"- python {platform.python_version()}; " + ", ".join(vers)
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[384, 768, 1536, 3072])
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    info = machine()
    print(info)
    lsap(np.random.default_rng(0).random((8, 8)), solver="jv")  # compile outside the timing
    solvers, rows = run(args.sizes, args.repeats, args.families)
    md = table(solvers, rows)
    print(md)
    if not args.no_write:
        path = os.path.join(
            os.path.dirname(__file__), "results", f"lsap_{_dt.date.today().isoformat()}.md"
        )
        with open(path, "w") as f:
            f.write(
                "# tqla.lsap solvers vs SciPy (cold solves; warm start on a perturbed copy)\n\n"
                f"{info}\n- command: python benchmarks/bench_lsap.py "
                f"{' '.join(argv if argv is not None else sys.argv[1:])}\n"
                f"- minimum of {args.repeats} interleaved repeats; every total cost equals "
                "SciPy's\n\n" + md + "\n"
            )
        print("wrote", path)


if __name__ == "__main__":
    main()
