"""Forward speed of tqla_torch's compressed layers against dense ones.

Measures, for GPT-2's published TQCompressedGPT-2 shapes (c_fc 768→3072 and c_proj 3072→768,
rank 4, with and without permutations):

* forward time of :class:`tqla_torch.KroneckerLinear` (``factorized`` and ``reconstructed``)
  against ``torch.nn.Linear`` for batch×sequence 8×128 and 1×1;
* multiply-adds per token of both association orders and of the dense layer;
* ``factorized`` is the layer's default forward (chunks of tokens whose temporaries stay
  under half the output, ``tqla_torch/nn/_kron_forward.py``); ``one pass`` is the same
  forward with chunking switched off (``layer.memory_fraction = None``), to show what the
  memory bound costs in time;
* peak memory of one forward (bytes allocated during the call above what was allocated
  before it: CPU from the torch profiler's memory events, CUDA from
  ``torch.cuda.max_memory_allocated``);
* the whole GPT-2 small (random weights) compressed with the tq_gpt2 preset against the dense
  model.

Timing: every variant runs once per round, rounds interleave the variants (so a background
load hits them alike), and the table shows the minimum over rounds (and the median).  Run::

    python benchmarks/bench_layers.py                 # CPU, writes benchmarks/results/layers_cpu.md
    python benchmarks/bench_layers.py --device cuda   # writes layers_cuda.md
    python benchmarks/bench_layers.py --no-write --no-model --rounds 5   # quick, print only
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tqla_torch.layers import KroneckerEmbedding, KroneckerLinear, forward_costs  # noqa: E402

LAYERS = {
    # name: (in, out, factor shapes in the layer's (out, in) orientation)
    "c_fc 768→3072": (768, 3072, ((768, 384), (4, 2))),
    "c_proj 3072→768": (3072, 768, ((384, 768), (2, 4))),
}
RANK = 4


# --------------------------------------------------------------------------------------
# Measurement helpers
# --------------------------------------------------------------------------------------
def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# "wall": wall-clock time with torch's threads; "thread": CPU time of the calling thread
# with torch.set_num_threads(1) — insensitive to other processes taking turns on the cores.
TIMERS = {"wall": time.perf_counter, "thread": time.thread_time}


def time_variants(
    fns: dict[str, Callable[[], Any]], device: str, rounds: int, inner: int, timer: str = "wall"
) -> dict[str, tuple[float, float]]:
    """(min, median) seconds per call of each function, rounds interleaved."""
    clock = TIMERS[timer]
    for f in fns.values():  # warm-up
        for _ in range(max(2, inner)):
            f()
    _sync(device)
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            _sync(device)
            t0 = clock()
            for _ in range(inner):
                f()
            _sync(device)
            samples[k].append((clock() - t0) / inner)
    return {k: (min(v), statistics.median(v)) for k, v in samples.items()}


def peak_memory(fn: Callable[[], Any], device: str) -> int:
    """Bytes allocated at the peak of one call, above what was allocated before it."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        del out
        return int(peak)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
        del out
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]"
    )
    cur = peak = 0
    for _, nbytes in events:
        cur += nbytes
        peak = max(peak, cur)
    return int(peak)


def machine(device: str) -> dict[str, str]:
    info = {
        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": str(torch.get_num_threads()),
        "platform": platform.platform(),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["cpu"] = f"{cpu}, {os.cpu_count()} logical cores"
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    try:
        info["load average at start"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        pass
    return info


# --------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------
def make_layer(in_f: int, out_f: int, shape, permuted: bool, device: str, dtype) -> KroneckerLinear:
    g = torch.Generator().manual_seed(0)
    (m1, n1), (m2, n2) = shape
    A = torch.randn(RANK, m1, n1, generator=g) * 0.05
    B = torch.randn(RANK, m2, n2, generator=g) * 0.05
    rp = torch.randperm(out_f, generator=g) if permuted else None
    cp = torch.randperm(in_f, generator=g) if permuted else None
    layer = KroneckerLinear.from_factors(A, B, rp, cp, torch.zeros(out_f))
    return layer.to(device=device, dtype=dtype)


def bench_layers(device: str, dtype, rounds: int, timer: str = "wall") -> list[dict[str, Any]]:
    rows = []
    for name, (in_f, out_f, shape) in LAYERS.items():
        dense = torch.nn.Linear(in_f, out_f, device=device, dtype=dtype)
        costs = forward_costs(shape, RANK)
        for permuted in (True, False):
            layer = make_layer(in_f, out_f, shape, permuted, device, dtype)
            for batch, seq in ((8, 128), (1, 1)):
                x = torch.randn(batch, seq, in_f, device=device, dtype=dtype)
                tokens = batch * seq
                inner = 1 if tokens > 64 else 50
                recon = copy.deepcopy(layer)
                recon.implementation = "reconstructed"
                single = copy.deepcopy(layer)
                single.memory_fraction = None  # chunking off: one pass over the tokens
                fns = {
                    "dense": lambda d=dense, x=x: d(x),
                    "factorized": lambda m=layer, x=x: m(x),
                    "one pass": lambda m=single, x=x: m(x),
                    "reconstructed": lambda m=recon, x=x: m(x),
                }
                with torch.inference_mode():
                    ref = x @ layer.to_dense().T + layer.bias
                    for k in ("factorized", "one pass"):  # same outputs, to float rounding
                        y = fns[k]()
                        scale = float(ref.abs().max())
                        torch.testing.assert_close(y, ref, rtol=0, atol=1e-4 * scale)
                    times = time_variants(fns, device, rounds, inner, timer)
                    mem = {k: peak_memory(f, device) for k, f in fns.items()}
                rows.append(
                    {
                        "layer": name,
                        "permuted": permuted,
                        "shape": f"{batch}×{seq}",
                        "times": times,
                        "memory": mem,
                        "costs": costs,
                        "params": layer.n_params,
                        "dense_params": in_f * out_f + out_f,
                    }
                )
                print(
                    f"{name:16s} perm={permuted!s:5s} {batch}×{seq:<4d} "
                    + "  ".join(
                        f"{k} {v[0] * 1e3:.3f} ms ({v[0] / times['dense'][0]:.2f}×)"
                        for k, v in times.items()
                    ),
                    flush=True,
                )
    return rows


# --------------------------------------------------------------------------------------
# Whole model
# --------------------------------------------------------------------------------------
def _randomize_permutations(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every permutation buffer a random permutation (n_iter=0 leaves identities,
    which tqla drops; a trained model has real ones, whose gathers cost time), then fold
    each MLP's inner pair through its activation as ``compress`` does (one gather per MLP)."""
    from tqla_torch.compression.apply import fold_mlp_permutations

    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, KroneckerLinear):
            dev = m.A.device
            m.register_buffer("input_perm", torch.randperm(m.in_features, generator=g).to(dev))
            m.register_buffer("output_perm", torch.randperm(m.out_features, generator=g).to(dev))
        elif isinstance(m, KroneckerEmbedding):
            d = m.table.shape[1]
            for level, k in enumerate(m.level_factors):
                d *= k
                m.register_buffer(
                    f"col_perm_{level}", torch.randperm(d, generator=g).to(m.table.device)
                )
    fold_mlp_permutations(model)


def bench_model(device: str, dtype, rounds: int, timer: str = "wall") -> list[dict[str, Any]]:
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.initialization import no_init_weights

    from tqla_torch import compress, count_parameters, presets

    with no_init_weights():
        dense = GPT2LMHeadModel(GPT2Config())
    dense.tie_weights()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in dense.parameters():
            p.normal_(0.0, 0.02, generator=g)
    dense.eval()
    tq = copy.deepcopy(dense)
    compress(tq, presets.tq_gpt2(n_iter=0))
    _randomize_permutations(tq)
    tq_recon = copy.deepcopy(tq)
    for m in tq_recon.modules():
        if hasattr(m, "implementation"):
            m.implementation = "reconstructed"
    models = {
        "dense": dense.to(device=device, dtype=dtype),
        "tq factorized": tq.to(device=device, dtype=dtype),
        "tq reconstructed": tq_recon.to(device=device, dtype=dtype),
    }
    params = {k: count_parameters(m) for k, m in models.items()}
    rows = []
    for batch, seq in ((8, 128), (1, 1)):
        ids = torch.randint(0, 50257, (batch, seq), generator=g).to(device)
        inner = 1 if batch * seq > 64 else 10
        fns = {k: (lambda m=m, ids=ids: m(ids).logits) for k, m in models.items()}
        with torch.inference_mode():
            times = time_variants(fns, device, max(3, rounds // 3), inner, timer)
            mem = {k: peak_memory(f, device) for k, f in fns.items()}
        rows.append(
            {
                "shape": f"{batch}×{seq}",
                "times": times,
                "memory": mem,
                "params": params,
                "timer": timer,
                "threads": torch.get_num_threads(),
            }
        )
        print(
            f"GPT-2 small {batch}×{seq} ({timer}): "
            + "  ".join(
                f"{k} {v[0] * 1e3:.1f} ms ({v[0] / times['dense'][0]:.2f}×)"
                for k, v in times.items()
            ),
            flush=True,
        )
    return rows


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------
def _ms(t: tuple[float, float]) -> str:
    return f"{t[0] * 1e3:.3f} ({t[1] * 1e3:.3f})"


def _mib(b: int) -> str:
    return f"{b / 2**20:.1f}"


def _layer_table(title: str, layer_rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"## {title}",
        "",
        "| layer | perms | tokens | dense ms | factorized ms | × | one pass ms | × "
        "| reconstructed ms | × | MACs/token fact. | MACs/token dense "
        "| peak MiB dense / fact. / one pass / recon. |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in layer_rows:
        t = r["times"]
        d = t["dense"][0]
        lines.append(
            f"| {r['layer']} | {'yes' if r['permuted'] else 'no'} | {r['shape']} | "
            f"{_ms(t['dense'])} | {_ms(t['factorized'])} | {t['factorized'][0] / d:.2f} | "
            f"{_ms(t['one pass'])} | {t['one pass'][0] / d:.2f} | "
            f"{_ms(t['reconstructed'])} | {t['reconstructed'][0] / d:.2f} | "
            f"{r['costs']['factorized']:,} | {r['costs']['dense']:,} | "
            f"{_mib(r['memory']['dense'])} / {_mib(r['memory']['factorized'])} / "
            f"{_mib(r['memory']['one pass'])} / {_mib(r['memory']['reconstructed'])} |"
        )
    return lines + [""]


def report(info, layer_tables, model_rows, device, dtype) -> str:
    lines = [
        f"# KroneckerLinear forward speed — {device}, {str(dtype).removeprefix('torch.')}",
        "",
        "Written by `benchmarks/bench_layers.py`. Times are the minimum over interleaved rounds "
        "(median in parentheses), in milliseconds; `×` is relative to the dense layer's "
        "minimum. Memory is the peak allocated during one forward above the inputs, in MiB "
        "(CPU: the torch profiler's memory events; CUDA: max_memory_allocated).",
        "",
        "| machine | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in info.items()],
        "",
        "Published shapes, rank 4. Multiply-adds per token: c_fc dense 2,359,296; factorized "
        "(A first) 2,383,872 (1.01×); the other order (B first, as in the published "
        "implementation) 4,730,880 (2.01×). c_proj: the same numbers with the orders swapped. "
        "Parameters: c_fc 1,182,752 of 2,362,368 dense; c_proj 1,180,448 of 2,360,064.",
        "",
    ]
    for title, rows in layer_tables:
        lines += _layer_table(title, rows)
    if model_rows:
        p = model_rows[0]["params"]
        lines += [
            "",
            "## GPT-2 small, random weights, tq_gpt2 preset (head tied)",
            "",
            f"Parameters: dense {p['dense']:,}; compressed {p['tq factorized']:,}. Permutation "
            "buffers hold random permutations (as after training), folded through each MLP's "
            "activation as `compress` does (one gather per MLP), so every gather is paid. "
            "Logits for all positions (the tied head runs through the embedding's factors).",
            "",
            "| timer | tokens | dense ms | tq factorized ms | × | tq reconstructed ms | × "
            "| peak MiB dense / fact. / recon. |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in model_rows:
            t = r["times"]
            d = t["dense"][0]
            clock = f"wall, {r['threads']} threads" if r["timer"] == "wall" else "CPU, 1 thread"
            lines.append(
                f"| {clock} | {r['shape']} | {_ms(t['dense'])} | {_ms(t['tq factorized'])} | "
                f"{t['tq factorized'][0] / d:.2f} | {_ms(t['tq reconstructed'])} | "
                f"{t['tq reconstructed'][0] / d:.2f} | {_mib(r['memory']['dense'])} / "
                f"{_mib(r['memory']['tq factorized'])} / {_mib(r['memory']['tq reconstructed'])} |"
            )
    try:
        lines += ["", f"Load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}."]
    except OSError:
        pass
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--rounds", type=int, default=25, help="interleaved timing rounds")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument(
        "--timer",
        default="both",
        choices=["wall", "thread", "both"],
        help="layer timings: wall clock (torch threads), CPU time of one thread, or both",
    )
    p.add_argument("--no-model", action="store_true", help="skip the whole-model benchmark")
    p.add_argument("--no-layers", action="store_true", help="skip the single-layer benchmark")
    p.add_argument(
        "--output", "--out", default=None, help="markdown file (default results/layers_<device>.md)"
    )
    p.add_argument("--no-write", action="store_true", help="print the results only")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    info = machine(args.device)
    info["command"] = "python benchmarks/bench_layers.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    timers = ["wall", "thread"] if args.timer == "both" else [args.timer]
    if args.device == "cuda":
        timers = ["wall"]
    tables = []
    model_rows: list[dict[str, Any]] = []
    for timer in timers:
        threads = torch.get_num_threads()
        if timer == "thread":
            torch.set_num_threads(1)
        rows = [] if args.no_layers else bench_layers(args.device, dtype, args.rounds, timer)
        if not args.no_model:
            model_rows += bench_model(args.device, dtype, args.rounds, timer)
        torch.set_num_threads(threads)
        title = (
            f"Layers, wall clock, {threads} threads"
            if timer == "wall"
            else "Layers, CPU time of one thread (torch.set_num_threads(1), time.thread_time)"
        )
        if rows:
            tables.append((title, rows))
    text = report(info, tables, model_rows, args.device, dtype)
    if args.no_write:
        print(text)
        return 0
    out = (
        Path(args.output)
        if args.output
        else ROOT / "benchmarks" / "results" / f"layers_{args.device}.md"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
