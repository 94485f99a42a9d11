"""TTConv2d: settings reach the fit, the forward runs the route it names, messages name the
argument (found by mutation testing; listed in benchmarks/results/mutation_2026-11-30.md)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from hypothesis import assume, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from tqla_torch.nn import TTConv2d  # noqa: E402
from tqla_torch.nn._tt_forward import _costs, tt_forward  # noqa: E402


def _settings(**kw):
    base = {"tt_cores": None, "tt_modes": None, "eps": None, "tt_ranks": None, "rank": None,
            "n_params": None}  # fmt: skip
    return SimpleNamespace(**{**base, **kw})


def test_plan_takes_the_stated_tt_ranks_and_default_mode_count():
    conv = torch.nn.Conv2d(4, 8, 3, padding=1)
    p = TTConv2d.plan(conv, _settings(tt_ranks=[2, 3]))
    assert p.rank == 3 and p.factors == "TT 2·4 × 2·2 × window 3×3, ranks 1-2-3-1"
    # cores (1,2,2,2), (2,4,2,3), (3,1,9,1) and the bias
    assert p.params_after == 8 + 2 * 4 * 2 * 3 + 3 * 9 + 8
    layer = TTConv2d.from_conv2d(conv.double(), ranks=[2, 3])
    assert (layer.row_modes, layer.col_modes) == ((2, 4), (2, 2))  # d = 2 by default


@pytest.mark.parametrize("implementation", ["factorized", "reconstructed"])
def test_forward_runs_the_route_it_names(implementation, monkeypatch):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 8, 3, padding=1).double()
    layer = TTConv2d.from_conv2d(conv, ranks=[2, 3], implementation=implementation)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    want = torch.nn.functional.conv2d(x, layer.to_dense(), layer.bias, 1, 1)
    groups: list[int] = []
    real = torch.nn.functional.conv2d

    def spy(*args, **kwargs):
        groups.append(kwargs.get("groups", args[6] if len(args) > 6 else 1))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "conv2d", spy)
    y = layer(x)
    # reconstructed: one dense convolution; factorized: the depthwise window convolution
    assert groups == ([1] if implementation == "reconstructed" else [4])
    torch.testing.assert_close(y, want, rtol=1e-10, atol=1e-10)


def test_constructors_name_the_bad_argument():
    with pytest.raises(ValueError, match=r"^padding must be an int or a pair of ints, got "
                                         r"\(1, 2, 3\)$"):  # fmt: skip
        TTConv2d(4, 8, 3, (2, 4), (2, 2), [2, 3], padding=(1, 2, 3))
    conv = torch.nn.Conv2d(4, 8, 3, groups=2)
    with pytest.raises(ValueError, match=r"^TTConv2d supports groups=1, padding_mode='zeros' "
                                         r"and numeric padding, got groups=2"):  # fmt: skip
        TTConv2d.from_conv2d(conv, ranks=[2, 3])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_to_conv2d_stays_on_the_layer_device():
    layer = TTConv2d(4, 8, 3, (2, 4), (2, 2), [2, 3], device="cuda")
    assert layer.to_conv2d().weight.device == layer.cores[0].device


def _flops(cores, x, order=None) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        tt_forward(cores, x, order)
    return int(counter.get_total_flops())


@given(
    modes=st.lists(st.tuples(st.integers(1, 5), st.integers(1, 5)), min_size=2, max_size=3),
    rank=st.integers(1, 3),
    b=st.integers(1, 6),
)
@example(modes=[(1, 6), (6, 1)], rank=2, b=3)  # left first far cheaper
@example(modes=[(6, 1), (1, 6)], rank=2, b=3)  # right first far cheaper
@example(modes=[(2, 3), (4, 2), (3, 5)], rank=3, b=4)
@settings(max_examples=10)  # FlopCounterMode is slow to enter; the examples decide the order
def test_tt_forward_runs_the_cheaper_order_and_its_cost_is_the_counted_one(modes, rank, b):
    """Both orders compute x·Wᵀ; only the multiply-adds tell them apart (counted)."""
    rm, cm = tuple(m for m, _ in modes), tuple(n for _, n in modes)
    d = len(modes)
    ranks = (1, *[rank] * (d - 1), 1)
    g = torch.Generator().manual_seed(0)
    cores = [torch.randn(ranks[t], rm[t], cm[t], ranks[t + 1], dtype=torch.float64, generator=g)
             for t in range(d)]  # fmt: skip
    x = torch.randn(b, math.prod(cm), dtype=torch.float64, generator=g)
    left, right = _costs(rm, cm, ranks, b)
    assert _flops(cores, x, "left_first") == 2 * left
    assert _flops(cores, x, "right_first") == 2 * right
    assume(left != right)
    assert _flops(cores, x) == 2 * min(left, right)


# Found by a fresh sample (seed 6) of tqla_torch/nn/tt.py's mutants
def test_every_modes_argument_is_checked_against_its_dimension_by_name():
    """Each side's modes must multiply to that side's dimension, in the constructors and in
    the plans of both TT layers, and the message names the argument and the dimension."""
    from tqla_torch.nn import TTLinear

    def fails(msg, fn, *args, **kw):
        with pytest.raises(ValueError, match="^" + msg):
            fn(*args, **kw)

    prod = r"must multiply to the dimension {}, but their product is {}$"
    # TTLinear(in, out, row_modes (of out), col_modes (of in), ranks)
    fails(r"row_modes \(2, 2\) " + prod.format(6, 4), TTLinear, 8, 6, (2, 2), (2, 4), [1])
    fails(r"col_modes \(2, 2\) " + prod.format(8, 4), TTLinear, 8, 6, (2, 3), (2, 2), [1])
    # TTConv2d(in, out, kernel, row_modes (of out), col_modes (of in), ranks)
    fails(r"row_modes \(2, 2\) " + prod.format(6, 4), TTConv2d, 8, 6, 3, (2, 2), (2, 4), [1, 1])
    fails(r"col_modes \(2, 2\) " + prod.format(8, 4), TTConv2d, 8, 6, 3, (2, 3), (2, 2), [1, 1])
    lin, conv = torch.nn.Linear(8, 6), torch.nn.Conv2d(8, 6, 3)
    for cls, mod in ((TTLinear, lin), (TTConv2d, conv)):
        fails(r"module 'x': tt_modes rows \(2, 2\) " + prod.format(6, 4),
              cls.plan, mod, _settings(tt_modes=[[2, 2], [2, 4]], rank=1, repeat=1), name="x")  # fmt: skip
        fails(r"module 'x': tt_modes cols \(2, 2\) " + prod.format(8, 4),
              cls.plan, mod, _settings(tt_modes=[[2, 3], [2, 2]], rank=1, repeat=1), name="x")  # fmt: skip
    for arg in ("kernel_size", "stride", "padding", "dilation"):
        kw = {"kernel_size": 3, arg: "x"}
        fails(f"{arg} must be an int or a pair of ints, got 'x'$",
              TTConv2d, 8, 6, row_modes=(2, 3), col_modes=(2, 4), ranks=[1, 1], **kw)  # fmt: skip


def test_from_linear_passes_the_core_count_on():
    from tqla_torch.nn import TTLinear

    lin = torch.nn.Linear(16, 8).double()
    for d, rows, cols in ((2, (2, 4), (4, 4)), (3, (2, 2, 2), (2, 2, 4))):
        layer = TTLinear.from_linear(lin, ranks=[1] * (d - 1), d=d)
        assert (layer.row_modes, layer.col_modes) == (rows, cols)
    assert len(TTLinear.from_linear(lin, ranks=[1, 1]).row_modes) == 3  # the default d = 3


# Found by a fresh sample (seed 6) of tqla_torch/nn/_tt_forward.py's mutants
@given(
    pairs=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=1, max_size=4),
    budget=st.integers(1, 600),
)
@example(pairs=[(3, 4)], budget=100)  # one core: no bond, rank 1 whatever the budget
@example(pairs=[(2, 2), (2, 2)], budget=1)  # nothing fits: still rank 1
@settings(max_examples=40, deadline=None)
def test_tt_rank_for_budget_is_the_largest_uniform_rank_that_fits(pairs, budget):
    from tqla.tt import check_ranks, rank_bounds
    from tqla_torch.nn._tt_forward import tt_rank_for_budget

    rows, cols = [m for m, _ in pairs], [n for _, n in pairs]
    modes = [m * n for m, n in pairs]

    def params(r):  # Σ_t r_t·m_t·n_t·r_{t+1}, ranks capped at the bounds
        full = check_ranks(r, modes)
        return sum(full[t] * modes[t] * full[t + 1] for t in range(len(modes)))

    top = max(rank_bounds(modes), default=1)  # beyond it every rank is capped
    fitting = [r for r in range(1, top + 1) if params(r) <= budget]
    assert tt_rank_for_budget(rows, cols, budget) == max(fitting, default=1)


def test_tt_modes_names_its_arguments():
    from tqla_torch.nn._tt_forward import tt_modes

    with pytest.raises(ValueError, match=r"^n must be a positive integer, got 0$"):
        tt_modes(0, 3)
    with pytest.raises(ValueError, match=r"^d must be a positive integer, got 0$"):
        tt_modes(8, 0)


# Found by a fresh sample (seed 7) of tqla_torch/nn/tt.py's mutants
def test_conv_budget_counts_the_bias_only_when_there_is_one():
    """Budgets that the cores of rank 2, 3, 4 fill exactly (58, 111, 180 parameters for a
    4→8 channel 3×3 kernel): met exactly without a bias, and with one when it is added."""
    for with_bias in (False, True):
        conv = torch.nn.Conv2d(4, 8, 3, bias=with_bias)
        for rank, cores in ((2, 58), (3, 111), (4, 180)):
            n = cores + (8 if with_bias else 0)
            p = TTConv2d.plan(conv, _settings(n_params=n, repeat=1))
            assert (p.rank, p.params_after) == (rank, n)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tt_linear_fit_stays_on_the_weight_device():
    from tqla_torch.nn import TTLinear

    layer = TTLinear.from_dense(torch.randn(8, 16, device="cuda"), None, ranks=[2, 2])
    assert {t.device.type for t in layer.state_dict().values()} == {"cuda"}
