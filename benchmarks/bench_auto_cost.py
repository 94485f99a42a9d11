"""Cost of the automatic plan's curves per candidate family, side by side in one process.

Times :func:`tqla_torch.compression.budget_plan.layer_curves` on one GPT-2-MLP-like
matrix (out×in, inputs with a decaying spectrum) for the SVD curve alone, SVD + the 14
default Kronecker shapes, and SVD + Kronecker + permuted Kronecker candidates on 1, 2 and 4
B shapes (one permutation search each), then the same with a warm ``cache`` (no search).
Prints the least CPU seconds of 3 runs and ratios to the SVD + Kronecker curves (ratios are robust to load).

Usage::

    PYTHONPATH=$PWD python benchmarks/bench_auto_cost.py --out benchmarks/results/auto_cost_cpu.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before NumPy loads: CPU time of one thread

import torch  # noqa: E402

from tqla_torch.compression.budget_plan import default_b_shapes, layer_curves  # noqa: E402


def cpu(fn, repeat=3):
    """Least CPU time of ``repeat`` calls, and the last result."""
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t)
    return best, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None)
    p.add_argument("--rows", type=int, default=512)
    p.add_argument("--cols", type=int, default=128)
    args = p.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    W = torch.randn(args.rows, args.cols, generator=g, dtype=torch.float64)
    X = torch.randn(4 * args.cols, args.cols, generator=g, dtype=torch.float64)
    X = X * torch.linspace(2.0, 0.05, args.cols)
    C = X.T @ X / X.shape[0]
    shapes = [(2, 4), (4, 2), (2, 2), (4, 4)]
    rows = []
    base_t, base = cpu(lambda: layer_curves(W, C, bias=0, methods=["svd"]))
    rows.append(("svd", base_t, len(base)))
    kt, kc = cpu(lambda: layer_curves(W, C, bias=0, methods=["svd", "kron"]))
    rows.append((f"svd + kron ({len(default_b_shapes(*W.shape))} shapes)", kt, len(kc)))
    for k in (1, 2, 4):
        cache: dict = {}
        pt, pc = cpu(lambda: layer_curves(W, C, bias=0, methods=["svd", "kron", "permuted_kron"],
                                          permuted_b_shapes=shapes[:k], cache={}, key="m"))
        layer_curves(W, C, bias=0, methods=["permuted_kron"], permuted_b_shapes=shapes[:k],
                     cache=cache, key="m")
        rows.append((f"svd + kron + permuted_kron ({k} shape{'s' * (k > 1)})", pt, len(pc)))
        wt, _ = cpu(lambda: layer_curves(W, C, bias=0, methods=["svd", "kron", "permuted_kron"],
                                         permuted_b_shapes=shapes[:k], cache=cache, key="m"))
        rows.append((f"  same, permutations from the cache", wt, len(pc)))
    lines = [
        "# Cost of the plan's curves per candidate family (benchmarks/bench_auto_cost.py)",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; load average "
        f"{os.getloadavg()} (CPU times, 1 thread; ratios are what to compare)",
        f"- command: `PYTHONPATH=$PWD python benchmarks/bench_auto_cost.py {' '.join(sys.argv[1:])}`",
        f"- matrix {args.rows}×{args.cols} (out×in), moment of {4 * args.cols} inputs",
        "",
        "| candidates | curves | CPU s | × svd + kron |",
        "|---|---:|---:|---:|",
    ]
    for name, t, n in rows:
        lines.append(f"| {name} | {n:,} | {t:.3f} | {t / kt:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        from tqla_torch._atomic import atomic_write_text

        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
