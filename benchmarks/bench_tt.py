"""Benchmarks of tensor trains: tqla against tensorly in the same run, TT products against dense.

Run from the repository root::

    python benchmarks/bench_tt.py            # CPU, writes benchmarks/results/tt_cpu.md
    python benchmarks/bench_tt.py --quick    # fewer repeats (a smoke test)
    python benchmarks/bench_tt.py --device cuda   # torch CUDA inputs -> tt_cuda.md
    python benchmarks/bench_tt.py --no-write --threads 2   # re-run on a quiet machine, print only

What is measured
----------------
(a) ``tqla.tt_matrix`` at GPT-2's c_fc size (768×3072, row modes 8·8·12, column modes
    8·8·48, ranks 16, 32, 64) against tensorly's ``tensor_train_matrix`` on the same matrix
    and ranks: time (NumPy and torch inputs for tqla) and the Frobenius errors, which must
    agree to 1e-9 relative (asserted).
(b) ``tqla.tt_svd`` against tensorly's ``tensor_train`` on a 4-way tensor with as many
    entries (48×32×32×48).
(c) Products of a TT-matrix with 8×128 = 1024 token vectors against the dense product
    ``X @ W.T`` (W: 3072×768, c_fc in nn.Linear's out×in orientation), with the
    multiply-adds of both contraction orders; the TT shapes are the one with the fewest
    MACs among those that halve the parameters (``tqla.tt_matrix_shapes``), and the 3-core
    8·8·48 × 8·8·12 train at ranks 16–64.
(d) With ``tqla_torch`` installed: ``TTLinear`` forward against ``nn.Linear`` (same
    shapes as (c)).

Every time is the minimum over repeats; the candidates of one comparison run interleaved
(one call of each per round) because the machine may be shared; ratios are the robust
numbers.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

import tqla  # noqa: E402
from tqla import tt_matrix, tt_matrix_shapes, tt_svd  # noqa: E402


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, sync: Callable = lambda: None):
    """{name: (min s, median s)} with one call of each per round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up
        fn()
    for i in range(repeats):
        names = list(fns)
        names = names[i % len(names) :] + names[: i % len(names)]
        for name in names:
            sync()
            t0 = time.perf_counter()
            fns[name]()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {k: (min(v), float(np.median(v))) for k, v in times.items()}


def machine() -> list[str]:
    try:
        model = next(
            ln.split(":", 1)[1].strip()
            for ln in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
            if ln.startswith("Model name")
        )
    except (StopIteration, OSError):
        model = platform.processor() or "unknown"
    import scipy

    vers = [
        f"python {platform.python_version()}",
        f"numpy {np.__version__}",
        f"scipy {scipy.__version__}",
    ]
    for mod in ("tensorly", "torch"):
        try:
            vers.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            vers.append(f"{mod} not installed")
    vers.append(f"tqla {tqla.__version__}")
    return [
        f"- date: {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- machine: {platform.machine()}, model name: {model}, os.cpu_count() = {os.cpu_count()}",
        f"- load average at start (1, 5, 15 min): {', '.join(f'{v:.2f}' for v in os.getloadavg())}",
        f"- versions: {', '.join(vers)}",
        f"- threads: {_threads()}",
        f"- command: `python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}`",
    ]


# --------------------------------------------------------------------------------------
# (a), (b): decompositions against tensorly
# --------------------------------------------------------------------------------------
def bench_decompositions(repeats: int, device: str) -> list[str]:
    import tensorly as tl
    from tensorly.decomposition import tensor_train, tensor_train_matrix

    torch = _torch()
    rng = np.random.default_rng(0)
    W = rng.standard_normal((768, 3072))
    rm, cm = (8, 8, 12), (8, 8, 48)
    Wt = torch.from_numpy(W).to(device) if torch is not None else None
    sync = _sync(torch, device)
    out = [
        "## (a) tt_matrix vs tensorly.tensor_train_matrix, 768×3072, modes 8·8·12 × 8·8·48",
        "",
        "float64. Errors are ‖W − TT‖_F/‖W‖_F; the two libraries' errors agree to the digits shown "
        "(asserted to 1e-9).",
        "",
        "| ranks | tensorly ms | tqla NumPy ms | speed-up | tqla torch ms | speed-up | "
        "torch/NumPy time | error tensorly | error tqla |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    nrm = np.linalg.norm(W)
    for r in (16, 32, 64):
        ranks = [1, r, r, 1]
        fns = {
            "tensorly": lambda rk=ranks: tensor_train_matrix(W.reshape(*rm, *cm), list(rk)),
            "numpy": lambda rk=ranks: tt_matrix(W, rm, cm, ranks=rk),
        }
        if Wt is not None:
            fns["torch"] = lambda rk=ranks: tt_matrix(Wt, rm, cm, ranks=rk)
        t = interleaved(fns, repeats, sync)
        ref = tl.tt_matrix_to_tensor(fns["tensorly"]()).reshape(768, 3072)
        e_tl = np.linalg.norm(W - ref) / nrm
        e_np = np.linalg.norm(W - fns["numpy"]().to_dense()) / nrm
        assert abs(e_tl - e_np) <= 1e-9, (e_tl, e_np)
        row = f"| {r}, {r} | {1e3 * t['tensorly'][0]:.1f} | {1e3 * t['numpy'][0]:.1f} | "
        row += f"**{t['tensorly'][0] / t['numpy'][0]:.1f}×** | "
        if Wt is not None:
            e_t = np.linalg.norm(W - fns["torch"]().to_dense().cpu().numpy()) / nrm
            assert abs(e_tl - e_t) <= 1e-9, (e_tl, e_t)
            row += f"{1e3 * t['torch'][0]:.1f} | **{t['tensorly'][0] / t['torch'][0]:.1f}×** | "
            row += f"{t['torch'][0] / t['numpy'][0]:.2f} | "
        else:
            row += "– | – | – | "
        out.append(row + f"{e_tl:.10f} | {e_np:.10f} |")

    X = rng.standard_normal((48, 32, 32, 48))
    out += [
        "",
        "## (b) tt_svd vs tensorly.tensor_train, 48×32×32×48 (float64)",
        "",
        "| ranks | tensorly ms | tqla NumPy ms | speed-up | error tensorly | error tqla |",
        "|---|---|---|---|---|---|",
    ]
    nx = np.linalg.norm(X)
    for r in (16, 32):
        ranks = [1, r, r, r, 1]
        fns = {
            "tensorly": lambda rk=ranks: tensor_train(X, list(rk)),
            "numpy": lambda rk=ranks: tt_svd(X, ranks=rk),
        }
        t = interleaved(fns, repeats)
        e_tl = np.linalg.norm(X - tl.tt_to_tensor(fns["tensorly"]())) / nx
        e_np = np.linalg.norm(X - fns["numpy"]().to_dense()) / nx
        assert abs(e_tl - e_np) <= 1e-9, (e_tl, e_np)
        out.append(
            f"| {r}, {r}, {r} | {1e3 * t['tensorly'][0]:.1f} | {1e3 * t['numpy'][0]:.1f} | "
            f"**{t['tensorly'][0] / t['numpy'][0]:.1f}×** | {e_tl:.10f} | {e_np:.10f} |"
        )
    return out


# --------------------------------------------------------------------------------------
# (c), (d): products
# --------------------------------------------------------------------------------------
def half_params_shape(M: int, N: int) -> tuple:
    """The (row_modes, col_modes, ranks) with the fewest matvec MACs at ≤ half the params."""
    best = None
    for d in (2, 3):
        for rank in range(1, 129):
            rows = [s for s in tt_matrix_shapes(M, N, rank, d=d) if s.n_params <= M * N // 2]
            if not rows:
                break
            cand = min(rows, key=lambda s: (-s.n_params, s.matvec_macs))
            if cand.n_params >= 0.9 * (M * N // 2) and (
                best is None or cand.matvec_macs < best.matvec_macs
            ):
                best = cand
    return best.row_modes, best.col_modes, best.ranks


def low_rank_form(M: int, N: int) -> tuple:
    """The 2-core train with modes (M, 1) × (1, N) at the largest rank within half the
    parameters: W = G1·G2 is a rank-r product, and its MACs are parameters × tokens, the
    least any TT-matrix with these parameters can need (docs/tt.md)."""
    r = (M * N // 2) // (M + N)
    return (M, 1), (1, N), (1, r, 1)


def product_shapes(M: int, N: int) -> list[tuple]:
    rm, cm, ranks = half_params_shape(M, N)
    shapes = [(*low_rank_form(M, N), "low-rank form, half the parameters")]
    shapes.append((rm, cm, ranks, "fewest MACs at half the parameters, all modes ≥ 2"))
    for r in (16, 64):
        shapes.append(((8, 8, 48), (8, 8, 12), (1, r, r, 1), "3 cores"))
    return shapes


def bench_products(repeats: int, device: str) -> list[str]:
    torch = _torch()
    M, N, b = 3072, 768, 8 * 128
    rng = np.random.default_rng(1)
    W = rng.standard_normal((M, N)).astype(np.float32)
    X = rng.standard_normal((b, N)).astype(np.float32)
    out = [
        "",
        "## (c) TT-matrix products vs dense at c_fc size (W 3072×768, 8×128 tokens, float32)",
        "",
        f"Dense: {M * N:,} parameters, {b * M * N / 1e9:.3f} G multiply-adds (`X @ W.T`). "
        "The TT product is `X @ T.T` (tqla contracts core by core in the cheaper order; the MACs "
        "of both orders are listed).",
        "",
        "| row modes | col modes | ranks | params (× dense) | GMAC left-first | GMAC right-first | "
        "library | dense ms | TT ms | TT/dense time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    sync = _sync(torch, device)
    for rm, cm, ranks, _note in product_shapes(M, N):
        T = tt_matrix(W, rm, cm, ranks=ranks)
        a, c = T.matmat_costs(b)  # X @ T.T costs what T @ X.T does
        libs = [("numpy", W, X, T)]
        if torch is not None:
            Wt = torch.from_numpy(W).to(device)
            Xt = torch.from_numpy(X).to(device)
            Tt = tt_matrix(Wt, rm, cm, ranks=ranks)
            libs.append((f"torch {device}", Wt, Xt, Tt))
        for name, Wl, Xl, Tl in libs:
            WT, TT = Wl.T, Tl.T
            fns = {
                "dense": lambda Xl=Xl, WT=WT: Xl @ WT,
                "tt": lambda Xl=Xl, TT=TT: TT.rmatmat(Xl),
            }
            t = interleaved(fns, repeats, sync)
            out.append(
                f"| {_dots(rm)} | {_dots(cm)} | {_ranks(ranks)} | "
                f"{T.n_params:,} ({T.n_params / (M * N):.2f}) | {a / 1e9:.3f} | {c / 1e9:.3f} | "
                f"{name} | {1e3 * t['dense'][0]:.2f} | {1e3 * t['tt'][0]:.2f} | "
                f"**{t['tt'][0] / t['dense'][0]:.2f}** |"
            )
    return out


def bench_layers(repeats: int, device: str) -> list[str]:
    torch = _torch()
    try:
        from tqla_torch import TTLinear  # noqa: F401
    except ImportError:
        return [
            "",
            "## (d) TTLinear vs nn.Linear",
            "",
            "tqla_torch.TTLinear not available in this checkout.",
        ]
    from tqla_torch import TTLinear

    M, N, b = 3072, 768, 8 * 128
    torch.manual_seed(0)
    lin = torch.nn.Linear(N, M).to(device)
    x = torch.randn(8, 128, N, device=device)
    out = [
        "",
        "## (d) TTLinear forward vs nn.Linear (c_fc: 768 → 3072, x of shape 8×128×768, float32)",
        "",
        "| row modes | col modes | ranks | params (× dense) | GMAC left-first | GMAC right-first | "
        "order used | nn.Linear ms | TTLinear ms | TT/dense time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    sync = _sync(torch, device)
    for rm, cm, ranks, _note in product_shapes(M, N):
        layer = TTLinear.from_linear(lin, row_modes=rm, col_modes=cm, ranks=list(ranks[1:-1])).to(
            device
        )
        a, c = layer.matmat_costs(b)
        with torch.inference_mode():
            fns = {"dense": lambda: lin(x), "tt": lambda layer=layer: layer(x)}
            t = interleaved(fns, repeats, sync)
        ratio = layer.n_params / (lin.weight.numel() + lin.bias.numel())
        out.append(
            f"| {_dots(rm)} | {_dots(cm)} | {_ranks(ranks)} | "
            f"{layer.n_params:,} ({ratio:.2f}) | {a / 1e9:.3f} | {c / 1e9:.3f} | "
            f"{layer.order(b)} | {1e3 * t['dense'][0]:.2f} | {1e3 * t['tt'][0]:.2f} | "
            f"**{t['tt'][0] / t['dense'][0]:.2f}** |"
        )
    return out


def _threads() -> str:
    from threadpoolctl import threadpool_info

    blas = sorted({f"{i['internal_api']} {i['num_threads']}" for i in threadpool_info()})
    torch = _torch()
    tt = f", torch {torch.get_num_threads()}" if torch is not None else ""
    return ", ".join(blas) + tt


def _dots(modes) -> str:
    return "·".join(map(str, modes))


def _ranks(ranks) -> str:
    return ", ".join(map(str, ranks[1:-1]))


def _torch():
    try:
        import torch

        return torch
    except ImportError:  # pragma: no cover
        return None


def _sync(torch: Any, device: str) -> Callable[[], None]:
    if torch is not None and device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None)
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per comparison")
    p.add_argument("--only", choices=["decompositions", "products", "layers"], default=None)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS/OpenMP threads of NumPy, SciPy and torch (default 1: a shared machine's "
        "idle threads spin and distort ratios; use os.cpu_count() on a quiet machine)",
    )
    p.add_argument("--no-write", action="store_true", help="print the results only")
    args = p.parse_args()
    import scipy.linalg  # noqa: F401  (load SciPy's own BLAS before limiting its threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    torch = _torch()
    if torch is not None:
        torch.set_num_threads(args.threads)
    p_repeats = args.repeats
    repeats = 2 if args.quick else p_repeats
    head = [f"# Tensor-train benchmarks ({args.device})", "", *machine()]
    if args.device.startswith("cuda"):
        import torch

        head.append(f"- device: {torch.cuda.get_device_name(0)}")
    lines = head + [""]
    print("\n".join(lines), flush=True)
    for part, fn in (
        ("decompositions", bench_decompositions),
        ("products", bench_products),
        ("layers", bench_layers),
    ):
        if args.only in (None, part):
            new = fn(repeats, args.device)
            print("\n".join(new), flush=True)
            lines += new
    lines += ["", f"- load average at end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}", ""]
    text = "\n".join(lines)
    dev = "cpu" if args.device == "cpu" else args.device.split(":")[0]
    path = Path(args.out) if args.out else ROOT / "results" / f"tt_{dev}.md"
    if not args.no_write and (not args.quick or args.out):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
