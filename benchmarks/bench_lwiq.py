"""LWIQ ranks against uniform, Frobenius-error and searched ranks on the digits residual CNN.

The experiment of LWIQ (arXiv 2408.01534; ResNet-56 on CIFAR-10: 3.2× smaller at −0.86 points,
6.8× at −0.87, rank search 63.2% faster than a search baseline) at this machine's scale:

1. train :class:`digits_cnn.ResNetDigits` on scikit-learn's bundled digits (per seed);
2. for each budget (the whole model 3.2× and 6.8× smaller) choose per-layer ranks of the
   3×3 convolutions in the residual blocks with
   (a) LWIQ importance → κ rule (:func:`tqla_torch.compression.ranks.allocate_ranks`), scored
       on each
       convolution's output (``lwiq``) or on each residual block's output, every convolution
       of a block taking its block's importance (``lwiq_block``);
   (b) uniform ranks (:func:`tqla_torch.compression.ranks.uniform_ranks`),
   (c) each layer's Frobenius error curve (:func:`tqla_torch.compression.ranks.allocate_by_error`),
   (d) a search baseline: compress one layer at a time at each of ``--candidates`` ranks,
       measure the validation accuracy, allocate greedily on those measured curves;
3. replace the convolutions, fine-tune every variant with the same schedule, report test
   accuracy against the dense model, parameters, and the time each method took to choose ranks.

The compressed layer is pluggable (``--family``): ``lowrank`` factors a k×k convolution into a
k×k convolution to r channels followed by a 1×1 convolution (truncated SVD of the kernel
unfolded as out × (in·k·k)). ``tt`` (when ``tqla_torch.nn.TTConv2d`` exists) uses tensor-train
convolutions.

Run: ``PYTHONPATH=. python benchmarks/bench_lwiq.py --seeds 0 1 2 --family lowrank``; on a
shared machine the seeds can run as separate processes (``--seeds 3 --out tmp_s3`` ...) and
``--merge benchmarks/results/tmp_s*.json --out lwiq_tt_digits`` writes the report of all of them;
``--no-write`` prints the report only.
"""

from __future__ import annotations

# Over ~600 lines: one runnable experiment (three layer families, five rank choices, per-seed
# runs and their merge, the report and the plot), kept in one file so that it can be re-run
# as is; the CNN and its training are in digits_cnn.py.

import argparse
import copy
import datetime
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits_cnn import DigitsData, ResNetDigits, accuracy, load_digits_data, train  # noqa: E402

from tqla_torch._atomic import atomic_write_json, atomic_write_text  # noqa: E402
from tqla_torch.compression.importance import lwiq  # noqa: E402
from tqla_torch.compression.ranks import allocate_by_error, allocate_ranks, uniform_ranks  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("lwiq", "lwiq_block", "uniform", "frobenius", "search")


# --------------------------------------------------------------------------------------------
# Compressed convolution families
# --------------------------------------------------------------------------------------------


class LowRankConv(nn.Sequential):
    """k×k convolution to ``rank`` channels, then a 1×1 convolution to the output channels."""

    def __init__(self, conv: nn.Conv2d, rank: int) -> None:
        out_c, in_c, kh, kw = conv.weight.shape
        first = nn.Conv2d(in_c, rank, (kh, kw), conv.stride, conv.padding, bias=False)
        second = nn.Conv2d(rank, out_c, 1, bias=conv.bias is not None)
        with torch.no_grad():
            w = conv.weight.reshape(out_c, -1).double()
            u, s, vh = torch.linalg.svd(w, full_matrices=False)
            root = s[:rank].sqrt()
            first.weight.copy_((root[:, None] * vh[:rank]).reshape(rank, in_c, kh, kw))
            second.weight.copy_((u[:, :rank] * root).reshape(out_c, rank, 1, 1))
            if conv.bias is not None:
                second.bias.copy_(conv.bias)
        super().__init__(first, second)


class LowRankFamily:
    """Truncated-SVD factorisation of a convolution kernel (out × in·k·k)."""

    label = "low-rank SVD convolutions"

    def r_max(self, conv: nn.Conv2d) -> int:
        out_c, in_c, kh, kw = conv.weight.shape
        return min(out_c, in_c * kh * kw)

    def params_fn(self, conv: nn.Conv2d) -> Callable[[int], int]:
        out_c, in_c, kh, kw = conv.weight.shape
        return lambda r: r * (in_c * kh * kw + out_c)

    def errors(self, conv: nn.Conv2d) -> list[float]:
        """Relative squared Frobenius error at ranks 1..r_max (one SVD gives all)."""
        s2 = torch.linalg.svdvals(conv.weight.detach().reshape(conv.out_channels, -1).double()) ** 2
        tail = torch.flip(torch.cumsum(torch.flip(s2, [0]), 0), [0])
        rel = torch.cat([tail[1:], tail.new_zeros(1)]) / s2.sum()
        return rel[: self.r_max(conv)].tolist()

    def compress(self, conv: nn.Conv2d, rank: int) -> nn.Module:
        return LowRankConv(conv, rank)


def _split2(n: int) -> tuple[int, int]:
    """n = a·b with a <= b as balanced as possible."""
    a = max(d for d in range(1, int(n**0.5) + 1) if n % d == 0)
    return a, n // a


class _TTConvStandIn(nn.Module):
    """Stand-in TT convolution: kernel (o1·o2, i1·i2, k) as a 3-core TT over the modes
    (o1·i1, o2·i2, kh·kw); the forward rebuilds the kernel from the cores and convolves."""

    def __init__(self, conv: nn.Conv2d, rank: int) -> None:
        super().__init__()
        out_c, in_c, kh, kw = conv.weight.shape
        (o1, o2), (i1, i2) = _split2(out_c), _split2(in_c)
        self.dims = (o1, o2, i1, i2, kh, kw)
        self.conv_args = {
            "stride": conv.stride,
            "padding": conv.padding,
            "dilation": conv.dilation,
            "groups": conv.groups,
        }
        t = conv.weight.detach().double().reshape(o1, o2, i1, i2, kh * kw)
        t = t.permute(0, 2, 1, 3, 4).reshape(o1 * i1, o2 * i2, kh * kw)
        self.cores = nn.ParameterList(
            nn.Parameter(c.to(conv.weight.dtype)) for c in tt_svd3(t, rank)
        )
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())

    def weight(self) -> torch.Tensor:
        o1, o2, i1, i2, kh, kw = self.dims
        g1, g2, g3 = self.cores
        w = torch.einsum("ar,rbs,sk->abk", g1[0], g2, g3[..., 0])
        w = w.reshape(o1, i1, o2, i2, kh * kw).permute(0, 2, 1, 3, 4)
        return w.reshape(o1 * o2, i1 * i2, kh, kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.weight(), self.bias, **self.conv_args)


def _tt_bounds(shape: tuple[int, int, int]) -> tuple[int, int]:
    n1, n2, n3 = shape
    return min(n1, n2 * n3), min(n1 * n2, n3)


def tt_svd3(t: torch.Tensor, rank: int) -> list[torch.Tensor]:
    """TT-SVD of a 3-way tensor with every bond rank min(rank, its bound)."""
    n1, n2, n3 = t.shape
    r1, r2 = (min(rank, b) for b in _tt_bounds((n1, n2, n3)))
    u, s, vh = torch.linalg.svd(t.reshape(n1, n2 * n3), full_matrices=False)
    g1 = u[:, :r1].reshape(1, n1, r1)
    rest = (s[:r1, None] * vh[:r1]).reshape(r1 * n2, n3)
    u, s, vh = torch.linalg.svd(rest, full_matrices=False)
    g2 = u[:, :r2].reshape(r1, n2, r2)
    g3 = (s[:r2, None] * vh[:r2]).reshape(r2, n3, 1)
    return [g1, g2, g3]


class TTStandInFamily:
    """3-core tensor-train convolutions (stand-in until tqla_torch.nn.TTConv2d exists)."""

    label = "tensor-train convolutions (stand-in TT-SVD, 3 cores: o1·i1, o2·i2, window)"

    def _shape(self, conv: nn.Conv2d) -> tuple[int, int, int]:
        out_c, in_c, kh, kw = conv.weight.shape
        (o1, o2), (i1, i2) = _split2(out_c), _split2(in_c)
        return o1 * i1, o2 * i2, kh * kw

    def r_max(self, conv: nn.Conv2d) -> int:
        return max(_tt_bounds(self._shape(conv)))

    def params_fn(self, conv: nn.Conv2d) -> Callable[[int], int]:
        n1, n2, n3 = self._shape(conv)
        b1, b2 = _tt_bounds((n1, n2, n3))
        return lambda r: n1 * min(r, b1) + min(r, b1) * n2 * min(r, b2) + min(r, b2) * n3

    def errors(self, conv: nn.Conv2d) -> list[float]:
        """Relative squared Frobenius error of the TT-SVD at ranks 1..r_max."""
        n1, n2, n3 = self._shape(conv)
        out_c, in_c, kh, kw = conv.weight.shape
        (o1, o2), (i1, i2) = _split2(out_c), _split2(in_c)
        t = conv.weight.detach().double().reshape(o1, o2, i1, i2, kh * kw)
        t = t.permute(0, 2, 1, 3, 4).reshape(n1, n2, n3)
        norm2 = float((t**2).sum())
        out = []
        for r in range(1, self.r_max(conv) + 1):
            g1, g2, g3 = tt_svd3(t, r)
            approx = torch.einsum("ar,rbs,sk->abk", g1[0], g2, g3[..., 0])
            out.append(float(((t - approx) ** 2).sum()) / norm2)
        return out

    def compress(self, conv: nn.Conv2d, rank: int) -> nn.Module:
        return _TTConvStandIn(conv, rank)


class TTFamily:
    """The project's ``TTConv2d``: channels as a 2-core TT-matrix, the window one more core."""

    label = "tensor-train convolutions (tqla_torch.nn.TTConv2d)"

    def __init__(self) -> None:
        self._tables: dict[int, list[int]] = {}

    def _table(self, conv: nn.Conv2d) -> list[int]:
        """Parameters at ranks 1, 2, ... until every bond is at its bound."""
        from tqla_torch import CompressionConfig
        from tqla_torch.nn import TTConv2d

        if id(conv) not in self._tables:
            bias = 0 if conv.bias is None else conv.bias.numel()
            counts: list[int] = []
            for r in range(1, 10_000):
                st = CompressionConfig(target_modules=["x"], method="tt", rank=r).settings_for("x")
                n = TTConv2d.plan(conv, st).params_after - bias
                if counts and n == counts[-1]:
                    break
                counts.append(n)
            self._tables[id(conv)] = counts
        return self._tables[id(conv)]

    def r_max(self, conv: nn.Conv2d) -> int:
        return len(self._table(conv))

    def params_fn(self, conv: nn.Conv2d) -> Callable[[int], int]:
        table = self._table(conv)
        return lambda r: table[r - 1]

    def errors(self, conv: nn.Conv2d) -> list[float]:
        """Relative squared Frobenius error of the TT-SVD at ranks 1..r_max."""
        return [
            self.compress(conv, r).approximation_error ** 2 for r in range(1, self.r_max(conv) + 1)
        ]

    def compress(self, conv: nn.Conv2d, rank: int) -> nn.Module:
        from tqla_torch.nn import TTConv2d

        return TTConv2d.from_conv2d(conv, ranks=rank)


FAMILIES: dict[str, Callable[[], object]] = {
    "tt": TTFamily,
    "lowrank": LowRankFamily,
    "tt_standin": TTStandInFamily,
}


# --------------------------------------------------------------------------------------------
# Rank selection
# --------------------------------------------------------------------------------------------


def target_convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    """The 3×3 convolutions inside the residual blocks (stem and 1×1 shortcuts stay dense)."""
    return {
        n: m
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and n.startswith("layers.") and m.kernel_size == (3, 3)
    }


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def replaced(model: nn.Module, family: object, ranks: dict[str, int]) -> nn.Module:
    """A copy of ``model`` with the named convolutions compressed at the given ranks."""
    new = copy.deepcopy(model)
    for name, rank in ranks.items():
        parent_name, _, child = name.rpartition(".")
        parent = new.get_submodule(parent_name)
        setattr(parent, child, family.compress(getattr(parent, child), rank))
    return new


def choose_ranks(
    method: str,
    model: nn.Module,
    family: object,
    data: DigitsData,
    budget: float,
    seed: int,
    candidates: int,
    temperature: float = 0.1,
) -> tuple[dict[str, int], float, dict]:
    """(ranks, seconds spent choosing them, extra info) for one method."""
    convs = target_convs(model)
    params = {n: family.params_fn(c) for n, c in convs.items()}
    r_max = {n: family.r_max(c) for n, c in convs.items()}
    total = n_params(model)
    fixed = total - sum(
        c.weight.numel() + (0 if c.bias is None else c.bias.numel()) for c in convs.values()
    )
    kw = {"fixed_params": fixed, "total_params": total}
    t0 = time.perf_counter()
    info: dict = {}
    if method == "lwiq":
        res = lwiq(
            model,
            data.batches("train", 256),
            layers=list(convs),
            seed=seed,
            temperature=temperature,
        )
        alloc = allocate_ranks(res.weights, params, budget, r_max=r_max, r_ref=r_max, **kw)
        info = {"lwiq": res, "kappa": alloc.kappa}
    elif method == "lwiq_block":
        # score the residual blocks' outputs (the representation, not a residual branch's
        # increment) and give each convolution its block's importance
        blocks = sorted({n.rsplit(".", 1)[0] for n in convs}, key=lambda b: int(b.split(".")[1]))
        res = lwiq(
            model, data.batches("train", 256), layers=blocks, seed=seed, temperature=temperature
        )
        weights = {n: res.weights[n.rsplit(".", 1)[0]] for n in convs}
        alloc = allocate_ranks(weights, params, budget, r_max=r_max, r_ref=r_max, **kw)
        info = {"lwiq_block": res, "kappa": alloc.kappa}
    elif method == "uniform":
        alloc = uniform_ranks(params, budget, r_max=r_max, **kw)
    elif method == "frobenius":
        errors = {n: family.errors(c) for n, c in convs.items()}
        alloc = allocate_by_error(errors, params, budget, **kw)
    elif method == "search":
        base = accuracy(model, data.x_val, data.y_val)
        curves = {}
        for n in convs:
            grid = sorted({int(round(v)) for v in np.linspace(1, r_max[n], candidates)})
            measured = {
                r: base - accuracy(replaced(model, family, {n: r}), data.x_val, data.y_val)
                for r in grid
            }
            # a rank between candidates is charged the loss of the candidate below it
            curves[n] = [measured[max(g for g in grid if g <= r)] for r in range(1, r_max[n] + 1)]
        alloc = allocate_by_error(curves, params, budget, **kw)
        info = {
            "evaluations": sum(
                len({int(round(v)) for v in np.linspace(1, r_max[n], candidates)}) for n in convs
            )
        }
    else:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return alloc.ranks, time.perf_counter() - t0, info


# --------------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------------


def run_seed(seed: int, args: argparse.Namespace, family: object) -> tuple[list[dict], dict]:
    """Train the dense CNN for one seed, then every (ratio, method) variant."""
    torch.manual_seed(seed)
    data = load_digits_data(seed=seed)
    model = train(ResNetDigits(), data, epochs=args.epochs, seed=seed)
    base = accuracy(model, data.x_test, data.y_test)
    total = n_params(model)
    dense_ft = train(copy.deepcopy(model), data, epochs=args.ft_epochs, lr=args.ft_lr, seed=seed)
    rows = [
        {
            "seed": seed,
            "ratio": 1.0,
            "method": "dense",
            "params": total,
            "base": base,
            "oneshot": base,
            "test": accuracy(dense_ft, data.x_test, data.y_test),
            "seconds": 0.0,
            "ranks": {},
        }
    ]
    extra: dict = {}
    for ratio in args.ratios:
        for method in METHODS:
            ranks, seconds, info = choose_ranks(
                method, model, family, data, 1.0 / ratio, seed, args.candidates, args.temperature
            )
            small = replaced(model, family, ranks)
            oneshot = accuracy(small, data.x_test, data.y_test)
            train(small, data, epochs=args.ft_epochs, lr=args.ft_lr, seed=seed)
            rows.append(
                {
                    "seed": seed,
                    "ratio": ratio,
                    "method": method,
                    "params": n_params(small),
                    "base": base,
                    "oneshot": oneshot,
                    "test": accuracy(small, data.x_test, data.y_test),
                    "seconds": seconds,
                    "ranks": ranks,
                }
            )
            for key in ("lwiq", "lwiq_block"):
                if key in info:
                    extra[key] = info[key]
            if "evaluations" in info:
                extra["evaluations"] = info["evaluations"]
            print(
                f"seed {seed} {ratio}x {method:9s} params {rows[-1]['params']:7d} "
                f"one-shot {oneshot:6.2f} tuned {rows[-1]['test']:6.2f} (dense {base:.2f}) "
                f"choose {seconds:.3f}s",
                flush=True,
            )
    return rows, extra


def _machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import sklearn

    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cpu": f"{cpu}, {os.cpu_count()} logical cores",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
        "threads": torch.get_num_threads(),
    }


def _stats(values: list[float]) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.2f} ± {a.std(ddof=1):.2f}" if len(a) > 1 else f"{a.mean():.2f}"


def report(
    rows: list[dict],
    extra: dict,
    args: argparse.Namespace,
    family: object,
    machine: dict,
    load: tuple[str, str],
) -> str:
    base = {r["seed"]: r["base"] for r in rows}
    total = next(r["params"] for r in rows if r["method"] == "dense")
    lines = [
        f"# LWIQ rank allocation on the digits residual CNN — {family.label}",
        "",
        "Written by `benchmarks/bench_lwiq.py` (command: `PYTHONPATH=. python "
        f"benchmarks/bench_lwiq.py "
        f"{' '.join(sys.argv[1:])}`). Seeds {args.seeds}; the dense model trains {args.epochs} "
        f"epochs, every variant (dense included) is then fine-tuned {args.ft_epochs} epochs at "
        f"lr {args.ft_lr} with the same schedule and seed. Accuracy is on the held-out test split "
        f"(360 images; one image = 0.28 points), mean ± standard deviation over the cell's seeds "
        f"('seeds' column). "
        f"'drop' is the dense model's test accuracy minus the variant's after fine-tuning. "
        f"LWIQ softmax temperature {args.temperature}; LWIQ data: the training split.",
        "",
        "| machine | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in machine.items()],
        f"| load average at start / end | {load[0]} / {load[1]} |",
        "",
        f"Dense model: {total:,} parameters, test accuracy {_stats(list(base.values()))}%. "
        f"Compressed: the {len(next(r['ranks'] for r in rows if r['ranks']))} 3×3 convolutions of "
        f"the residual blocks; budget = whole model parameters / ratio.",
        "",
        "| ratio | method | seeds | parameters | × smaller | one-shot acc. | fine-tuned acc. "
        "| drop (points) | rank choice s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["ratio"], r["method"]), []).append(r)
    for (ratio, method), rs in groups.items():
        params = int(np.mean([r["params"] for r in rs]))
        drops = [base[r["seed"]] - r["test"] for r in rs]
        lines.append(
            f"| {ratio:g}× | {method} | {len(rs)} | {params:,} | {total / params:.2f} | "
            f"{_stats([r['oneshot'] for r in rs])} | {_stats([r['test'] for r in rs])} | "
            f"{_stats(drops)} | {np.mean([r['seconds'] for r in rs]):.3f} |"
        )
    both = {r["seed"] for r in rows if r["method"] == "search"}  # same seeds, same machine load
    t = {
        m: np.mean([r["seconds"] for r in rows if r["method"] == m and r["seed"] in both])
        for m in ("lwiq", "search")
    }
    lines += [
        "",
        f"Rank choice time: LWIQ {t['lwiq']:.3f} s against {t['search']:.3f} s for the search "
        f"baseline ({extra.get('evaluations', '?')} single-layer evaluations of "
        f"{args.candidates} candidate ranks per layer on the validation split): "
        f"{100 * (1 - t['lwiq'] / t['search']):.1f}% less time "
        f"({t['search'] / t['lwiq']:.1f}× faster). LWIQ's time is one pass over the training "
        f"split plus the bisection; a new budget costs only the bisection.",
    ]
    if "lwiq" in extra:
        lines += [
            "",
            "LWIQ scores of the convolutions (`lwiq`, first seed):",
            "",
            "```",
            extra["lwiq"].table(),
            "```",
        ]
    if "lwiq_block" in extra:
        lines += [
            "",
            "LWIQ scores of the residual blocks (`lwiq_block`, first seed):",
            "",
            "```",
            extra["lwiq_block"].table(),
            "```",
        ]
    first = [r for r in rows if r["seed"] == rows[0]["seed"] and r["ranks"]]
    names = list(first[0]["ranks"])
    lines += [
        "",
        "Ranks per layer (first seed):",
        "",
        "| ratio | method | " + " | ".join(n.replace("layers.", "") for n in names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for r in first:
        lines.append(
            f"| {r['ratio']:g}× | {r['method']} | "
            + " | ".join(str(r["ranks"][n]) for n in names)
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], extra: dict, path: Path, family: object, r_max: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = [r for r in rows if r["seed"] == rows[0]["seed"] and r["ranks"]]
    ratios = sorted({r["ratio"] for r in first})
    names = list(first[0]["ranks"])
    x = np.arange(len(names))
    fig, axes = plt.subplots(len(ratios) + 1, 1, figsize=(10, 3.0 * (len(ratios) + 1)), sharex=True)
    width = 0.8 / len(METHODS)
    for ax, ratio in zip(axes, ratios):
        for i, method in enumerate(METHODS):
            r = next(v for v in first if v["ratio"] == ratio and v["method"] == method)
            ax.bar(
                x + (i - (len(METHODS) - 1) / 2) * width,
                [r["ranks"][n] for n in names],
                width,
                label=method,
            )
        ax.plot(x, [r_max[n] for n in names], "k_", markersize=18, label="max rank")
        ax.set_ylabel("rank")
        ax.set_title(f"{family.label}: ranks at {ratio:g}× fewer parameters")
        ax.legend(fontsize=8, ncol=5)
    res = extra["lwiq"]
    axes[-1].bar(x - 0.2, [res.weights[n] for n in names], 0.4, label="lwiq (conv outputs)")
    if "lwiq_block" in extra:
        blk = extra["lwiq_block"].weights
        axes[-1].bar(
            x + 0.2,
            [blk[n.rsplit(".", 1)[0]] for n in names],
            0.4,
            label="lwiq_block (block outputs)",
        )
    axes[-1].legend(fontsize=8)
    axes[-1].set_ylabel("LWIQ importance")
    axes[-1].set_xticks(x, [n.replace("layers.", "") for n in names], rotation=45, ha="right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    os.replace(tmp, path)
    plt.close(fig)


class _StoredScores:
    """LWIQ scores read back from a result file (the table and the weights)."""

    def __init__(self, table: str, weights: dict) -> None:
        self._table, self.weights = table, weights

    def table(self) -> str:
        return self._table


_LOG_ROW = re.compile(
    r"seed (\d+) ([\d.]+)x (\w+)\s+params\s+(\d+) one-shot\s+([\d.]+) tuned\s+([\d.]+) "
    r"\(dense ([\d.]+)\) choose ([\d.]+)s"
)


def _rows_from_log(path: str) -> list[dict]:
    """The variant rows a run printed (a run stopped before its result file was written):
    everything but the ranks and the dense model's fine-tuned accuracy."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        m = _LOG_ROW.fullmatch(line.strip())
        if m:
            seed, ratio, method, params, oneshot, test, base, secs = m.groups()
            rows.append(
                {
                    "seed": int(seed),
                    "ratio": float(ratio),
                    "method": method,
                    "params": int(params),
                    "base": float(base),
                    "oneshot": float(oneshot),
                    "test": float(test),
                    "seconds": float(secs),
                    "ranks": {},
                }
            )
    return rows


def _merged(paths: list[str]) -> tuple[list[dict], dict, dict, dict, tuple[str, str], dict]:
    """Rows, first-seed extras, machine, args, loads and scores of per-seed result files
    (``.json``), completed by the rows printed in the logs (``.log``) of unfinished runs."""
    parts = [json.loads(Path(p).read_text(encoding="utf-8")) for p in paths if p.endswith(".json")]
    parts.sort(key=lambda d: d["rows"][0]["seed"])
    rows = [r for d in parts for r in d["rows"]]
    rows += [r for p in paths if p.endswith(".log") for r in _rows_from_log(p)]
    first = parts[0]
    extra = {
        k: _StoredScores(first["lwiq_tables"][k], first["lwiq_weights"][str(first["rows"][0]["seed"])][k])
        for k in first.get("lwiq_tables", {})
    }
    if "evaluations" in first:
        extra["evaluations"] = first["evaluations"]
    loads = (first["load"][0], parts[-1]["load"][1]) if "load" in first else ("?", "?")
    scores = {k: v for d in parts for k, v in d["lwiq_weights"].items()}
    return rows, extra, first["machine"], first["args"], loads, scores


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", choices=sorted(FAMILIES), default="lowrank")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--ratios", type=float, nargs="+", default=[3.2, 6.8])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--ft-epochs", type=int, default=8)
    p.add_argument("--ft-lr", type=float, default=0.01)
    p.add_argument("--candidates", type=int, default=6)
    p.add_argument("--temperature", type=float, default=0.1, help="LWIQ softmax temperature")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="result stem (default lwiq_<family>_digits)")
    p.add_argument("--no-write", action="store_true", help="print the report only")
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="no training: one report from the result files of runs with other seeds (the same "
        "settings), e.g. seeds run as separate processes on a shared machine",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    family = FAMILIES[args.family]()
    stem = args.out or f"lwiq_{args.family}_digits"
    if args.merge:
        rows, extra, machine, run_args, (load0, load1), scores = _merged(args.merge)
        for key in ("seeds", "ratios", "epochs", "ft_epochs", "ft_lr", "candidates", "temperature"):
            setattr(args, key, run_args[key])
        args.seeds = sorted({r["seed"] for r in rows})
    else:
        load0 = " ".join(f"{v:.2f}" for v in os.getloadavg())
        machine = _machine()
        rows, extra, scores = [], {}, {}
        for seed in args.seeds:
            r, e = run_seed(seed, args, family)
            rows += r
            extra = extra or e  # the scores shown and plotted are the first seed's, like the ranks
            scores[seed] = {k: e[k].weights for k in ("lwiq", "lwiq_block") if k in e}
        load1 = " ".join(f"{v:.2f}" for v in os.getloadavg())
    text = report(rows, extra, args, family, machine, (load0, load1))
    print(text)
    if args.no_write:
        return
    atomic_write_text(ROOT / "benchmarks" / "results" / f"{stem}.md", text)
    # the rows of every seed (merged runs included)
    atomic_write_json(
        ROOT / "benchmarks" / "results" / f"{stem}.json",
        {
            "machine": machine,
            "args": vars(args),
            "rows": rows,
            "lwiq_weights": scores,
            "lwiq_tables": {k: extra[k].table() for k in ("lwiq", "lwiq_block") if k in extra},
            "evaluations": extra.get("evaluations"),
            "load": [load0, load1],
        },
    )
    model = ResNetDigits()
    r_max = {n: family.r_max(c) for n, c in target_convs(model).items()}
    plot(rows, extra, ROOT / "docs" / "img" / f"{stem}_ranks.png", family, r_max)


if __name__ == "__main__":
    main()
