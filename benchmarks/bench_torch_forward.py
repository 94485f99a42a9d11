"""KroneckerLinear's torch-fused forward against the core's KroneckerSum.matmat, side by side.

The layer keeps its own forward (``tqla_torch/nn/_kron_forward.py``) only where it is faster
than the core's product (:meth:`tqla.KroneckerSum.matmat`) with the permutations applied as
separate gathers; this script measures both in one process, interleaved, for GPT-2's
published shapes (c_fc 768→3072, c_proj 3072→768, rank 4, permuted on both sides), one
token and 8×128 tokens, and prints the ratio core / fused (> 1: the fused path is faster).
Timing is CPU time of the calling thread with ``torch.set_num_threads(1)`` (robust against
other processes on a shared machine); the minimum over rounds is reported.  Run::

    python benchmarks/bench_torch_forward.py    # writes benchmarks/results/torch_forward_cpu.md
    python benchmarks/bench_torch_forward.py --no-write     # print only
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tqla.kron import KroneckerSum  # noqa: E402
from tqla_torch.nn import KroneckerLinear  # noqa: E402

SHAPES = {
    # name: factor shapes in the layer's (out, in) orientation
    "c_fc 768→3072": ((768, 384), (4, 2)),
    "c_proj 3072→768": ((384, 768), (2, 4)),
}
RANK = 4
TOKENS = (1, 1024)
ROUNDS = 15


def _core_forward(K: KroneckerSum, inv_cp: torch.Tensor, rp: torch.Tensor, x: torch.Tensor):
    return K.matmat(x.index_select(-1, inv_cp).T).T.index_select(-1, rp)


def _time(fn, reps: int) -> float:
    t0 = time.thread_time()
    for _ in range(reps):
        fn()
    return (time.thread_time() - t0) / reps


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        lines = out.splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if "Model name" in line)
    except (OSError, StopIteration, subprocess.CalledProcessError):
        return platform.processor() or "unknown"


def _breakdown(g: torch.Generator, rounds: int) -> list[str]:
    """CPU time of each step of the one-pass factorized forward at 1024 tokens, against the
    dense GEMM: where the time above dense goes (the order each layer runs)."""
    from tqla_torch.nn._kron_forward import _output_index

    T, lines = 1024, []
    for name, shape in SHAPES.items():
        (m1, n1), (m2, n2) = shape
        r = RANK
        A = torch.randn(r, m1, n1, generator=g)
        B = torch.randn(r, m2, n2, generator=g)
        W = torch.randn(m1 * m2, n1 * n2, generator=g)
        x = torch.randn(T, n1 * n2, generator=g)
        idx = torch.randperm(n1 * n2, generator=g).view(n1, n2).t().reshape(-1)
        oidx = _output_index(torch.randperm(m1 * m2, generator=g), m1, m2)
        if m1 * n2 * (n1 + m2) <= n1 * m2 * (m1 + n2):  # A first (c_fc)
            Xt = x.index_select(-1, idx).view(T * n2, n1)
            Z = torch.mm(Xt, A.reshape(r * m1, n1).t()).view(T, n2 * r, m1)
            BvT = B.permute(1, 2, 0).reshape(m2, n2 * r)
            Y = torch.matmul(BvT, Z).view(T, m2 * m1)
            steps = {
                "input gather": lambda: x.index_select(-1, idx),
                "GEMM against A": lambda: torch.mm(Xt, A.reshape(r * m1, n1).t()),
                "contraction with B": lambda: torch.matmul(BvT, Z),
                "output gather": lambda: Y.index_select(-1, oidx),
            }
        else:  # B first (c_proj)
            Xt = x.index_select(-1, idx).view(T, n2, n1)
            Bs = B.permute(1, 0, 2).reshape(m2 * r, n2)
            Z = torch.matmul(Bs, Xt).view(T, m2, r, n1)
            Y = torch.mm(Z[:, :, 0].reshape(T * m2, n1), A[0].t()).view(T, m2 * m1)

            def gemms():
                Yt = torch.mm(Z[:, :, 0].reshape(T * m2, n1), A[0].t())
                for k in range(1, r):
                    torch.addmm(Yt, Z[:, :, k].reshape(T * m2, n1), A[k].t(), out=Yt)

            steps = {
                "input gather": lambda: x.index_select(-1, idx),
                "contraction with B": lambda: torch.matmul(Bs, Xt),
                "GEMMs against A": gemms,
                "output gather": lambda: Y.index_select(-1, oidx),
            }
        fns = {"dense GEMM": lambda: torch.mm(x, W.t()), **steps}
        with torch.no_grad():
            best = {k: min(_time(f, 1) for _ in range(rounds)) for k, f in fns.items()}
        dense = best["dense GEMM"]
        parts = ", ".join(f"{k} {v / dense:.3f}" for k, v in best.items() if k != "dense GEMM")
        total = sum(v for k, v in best.items() if k != "dense GEMM") / dense
        lines.append(f"| {name} | {dense * 1e3:.2f} | {parts} | {total:.3f} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    ap.add_argument(
        "--out", default=None, help="markdown file (default results/torch_forward_cpu.md)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    rows = []
    for name, shape in SHAPES.items():
        (m1, n1), (m2, n2) = shape
        A = torch.randn(RANK, m1, n1, generator=g)
        B = torch.randn(RANK, m2, n2, generator=g)
        rp, cp = torch.randperm(m1 * m2, generator=g), torch.randperm(n1 * n2, generator=g)
        layer = KroneckerLinear.from_factors(A, B, rp, cp)
        K, inv_cp = KroneckerSum(A, B), torch.argsort(cp)
        for tokens in TOKENS:
            x = torch.randn(tokens, n1 * n2, generator=g)
            with torch.no_grad():
                ref, got = _core_forward(K, inv_cp, rp, x), layer(x)
                torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
                reps = 200 if tokens == 1 else 3
                fused, core = [], []
                for _ in range(ROUNDS):  # interleaved: a background load hits both alike
                    fused.append(_time(lambda L=layer, x=x: L(x), reps))
                    core.append(
                        _time(lambda K=K, i=inv_cp, r=rp, x=x: _core_forward(K, i, r, x), reps)
                    )
            rows.append((name, tokens, min(fused), min(core)))
    lines = [
        "# KroneckerLinear fused forward vs tqla.KroneckerSum.matmat (+ gathers)",
        "",
        f"- date: {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {_cpu_model()}, torch {torch.__version__}, 1 thread, float32",
        f"- load average at the end: {os.getloadavg()} (shared machine: absolute times are "
        "noisy, the ratio is the robust number)",
        "- command: `python benchmarks/bench_torch_forward.py` "
        f"(min of {ROUNDS} interleaved rounds)",
        "",
        "| layer | tokens | fused (ms) | core + gathers (ms) | core / fused |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, tokens, f, c in rows:
        lines.append(f"| {name} | {tokens} | {f * 1e3:.3f} | {c * 1e3:.3f} | {c / f:.2f} |")
    lines += [
        "",
        "## Where the time above dense goes (1024 tokens, both sides permuted, one pass)",
        "",
        "Each step of the layer's forward timed alone (min of the rounds, CPU time of one",
        "thread), as a fraction of the dense layer's GEMM; their sum is the one-pass",
        "forward's time relative to dense, up to the bias add and Python overhead.",
        "",
        "| layer | dense GEMM ms | steps / dense | sum |",
        "|---|---:|---|---:|",
        *_breakdown(g, ROUNDS),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        default = ROOT / "benchmarks" / "results" / "torch_forward_cpu.md"
        out = Path(args.out) if args.out else default
        out.write_text(text, encoding="utf-8")
        print("wrote", out)


if __name__ == "__main__":
    main()
