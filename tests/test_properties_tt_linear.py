"""tqla_torch.nn.tt stated whole: each constructor's structure, initial scale and messages;
every argument each construction step hands to the next (spies); the plans as whole
LayerPlans; spec, repr and the forward route of TTLinear and TTConv2d (fifth pass of
issue 15)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import tqla  # noqa: E402
from tqla_torch.nn import tt as tt_mod  # noqa: E402
from tqla_torch.nn._tt_forward import _costs, _dense, tt_modes, tt_rank_for_budget  # noqa: E402
from tqla_torch.nn.base import LayerPlan  # noqa: E402
from tqla_torch.nn.tt import TTConv2d, TTLinear  # noqa: E402


def _settings(**kw):
    base = {"tt_cores": None, "tt_modes": None, "eps": None, "tt_ranks": None, "rank": None,
            "n_params": None, "repeat": 1, "implementation": "factorized"}  # fmt: skip
    return SimpleNamespace(**{**base, **kw})


def _raises(exc, msg, fn, *args, **kw):
    with pytest.raises(exc) as info:
        fn(*args, **kw)
    assert str(info.value) == msg


def _spy_classmethod(monkeypatch, cls, name):
    calls = []
    real = getattr(cls, name).__func__

    def spy(klass, *args, **kw):
        calls.append((args, kw))
        return real(klass, *args, **kw)

    monkeypatch.setattr(cls, name, classmethod(spy))
    return calls


# --------------------------------------------------------------------------------------
# TTLinear
# --------------------------------------------------------------------------------------
def test_tt_linear_constructor_states_its_structure_and_hands_on_its_options():
    layer = TTLinear(12, 8, [2, 4], (3, 4), 5, bias=False, implementation="reconstructed",
                     source="conv1d", approximation_error=1, dtype=torch.float64)  # fmt: skip
    assert (layer.in_features, layer.out_features) == (12, 8)
    assert (layer.row_modes, layer.col_modes) == ((2, 4), (3, 4))
    assert layer.ranks == (1, 5, 1)  # below the bound min(6, 16)
    assert [tuple(G.shape) for G in layer.cores] == [(1, 2, 3, 5), (5, 4, 4, 1)]
    assert all(G.dtype == torch.float64 and G.requires_grad for G in layer.cores)
    assert layer.bias is None
    assert layer.implementation == "reconstructed" and layer.source == "conv1d"
    assert layer.approximation_error == 1.0 and type(layer.approximation_error) is float
    assert layer.n_params == 30 + 80
    meta = TTLinear(12, 8, (2, 4), (3, 4), 100, device="meta")
    assert meta.ranks == (1, 6, 1)  # an int rank is capped at the bond's bound
    assert all(t.device.type == "meta" for t in meta.state_dict().values())
    assert tuple(meta.bias.shape) == (8,) and meta.bias.dtype == torch.get_default_dtype()
    d = TTLinear(12, 8, (2, 4), (3, 4), [3])
    assert (d.implementation, d.source, d.approximation_error) == ("factorized", "linear", None)
    assert d.bias is not None


def test_tt_linear_constructor_names_every_bad_argument():
    _raises(ValueError, "in_features must be a positive integer, got 0", TTLinear, 0, 8,
            (2, 4), (3, 4), 2)  # fmt: skip
    _raises(ValueError, "out_features must be a positive integer, got 8.0", TTLinear, 12, 8.0,
            (2, 4), (3, 4), 2)  # fmt: skip
    _raises(ValueError, "row_modes (2, 2) must multiply to the dimension 8, but their product "
            "is 4", TTLinear, 12, 8, (2, 2), (3, 4), 2)  # fmt: skip
    _raises(ValueError, "col_modes (3, 3) must multiply to the dimension 12, but their product "
            "is 9", TTLinear, 12, 8, (2, 4), (3, 3), 2)  # fmt: skip
    _raises(ValueError, "row_modes (2, 4) and col_modes (12,) must have the same length (one "
            "pair per core)", TTLinear, 12, 8, (2, 4), (12,), 2)  # fmt: skip
    _raises(ValueError, "ranks[0] = 7 is above the bound r_k <= min(r_(k-1)·n_k, "
            "n_(k+1)·r_(k+1)) = min(1·6, 16·1) = 6 for modes (6, 16) (largest useful ranks: "
            "(6,))", TTLinear, 12, 8, (2, 4), (3, 4), [7])  # fmt: skip
    _raises(ValueError, "source must be 'linear' or 'conv1d', got 'conv2d'", TTLinear, 12, 8,
            (2, 4), (3, 4), 2, source="conv2d")  # fmt: skip


def _init_spies(monkeypatch):
    stds, bounds = [], []
    real_n, real_u = nn.init.normal_, nn.init.uniform_
    monkeypatch.setattr(nn.init, "normal_", lambda t, mean=0.0, std=1.0, **kw: stds.append(
        (tuple(t.shape), mean, std)) or real_n(t, mean, std, **kw))  # fmt: skip
    monkeypatch.setattr(nn.init, "uniform_", lambda t, a=0.0, b=1.0, **kw: bounds.append(
        (tuple(t.shape), a, b)) or real_u(t, a, b, **kw))  # fmt: skip
    return stds, bounds


@pytest.mark.parametrize("bias", [True, False])
def test_initial_cores_have_linear_and_conv_weight_variance(bias, monkeypatch):
    """Each core ~ N(0, σ²) with σ = (1/(3·fan_in) / Π inner ranks)^(1/(2d)), so the weight has
    nn.Linear's variance 1/(3·fan_in); the bias is U(±1/√fan_in)."""
    stds, bounds = _init_spies(monkeypatch)
    TTLinear(12, 8, (2, 2, 2), (2, 3, 2), [2, 3], bias=bias)
    s = (1 / (3 * 12) / 6) ** (0.5 / 3)
    assert stds == [((1, 2, 2, 2), 0.0, pytest.approx(s, rel=1e-15)),
                    ((2, 2, 3, 3), 0.0, pytest.approx(s, rel=1e-15)),
                    ((3, 2, 2, 1), 0.0, pytest.approx(s, rel=1e-15))]  # fmt: skip
    b = 1 / math.sqrt(12)
    assert bounds == ([((8,), pytest.approx(-b), pytest.approx(b))] if bias else [])
    stds.clear()
    bounds.clear()
    conv = TTConv2d(4, 6, (3, 2), (2, 3), (2, 2), [2, 3], bias=bias)
    fan = 4 * 3 * 2
    s = (1 / (3 * fan) / 6) ** (0.5 / 3)
    assert [x[2] for x in stds] == [pytest.approx(s, rel=1e-15)] * 3
    assert [x[0] for x in stds] == [tuple(G.shape) for G in conv.cores]
    b = 1 / math.sqrt(fan)
    assert bounds == ([((6,), pytest.approx(-b), pytest.approx(b))] if bias else [])
    if not bias:
        return
    # and statistically: the weight's variance is 1/(3·fan_in) (mean over resets)
    monkeypatch.undo()
    torch.manual_seed(0)
    lin = TTLinear(64, 64, (8, 8), (8, 8), 8)
    v = sum(
        float(lin.to_dense().detach().var()) for _ in range(30) if lin.reset_parameters() is None
    )
    assert v / 30 * 3 * 64 == pytest.approx(1.0, rel=0.2)


def test_from_dense_hands_every_argument_to_the_fit_and_the_layer(monkeypatch):
    fits = []
    real = tt_mod._fit_cores
    monkeypatch.setattr(tt_mod, "_fit_cores", lambda *a: fits.append(a) or real(*a))
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 16, generator=g, dtype=torch.float64)
    b = torch.randn(8, generator=g, dtype=torch.float64)
    C = torch.eye(16, dtype=torch.float64)
    layer = TTLinear.from_dense(w, b, (2, 4), [4, 4], ranks=[3], implementation="reconstructed",
                                source="conv1d", moment=C, damp=0.5)  # fmt: skip
    ((W, rm, cm, ranks, eps, moment, damp),) = fits
    assert W is w and (rm, cm, ranks, eps) == ((2, 4), [4, 4], [3], None)
    assert moment is C and damp == 0.5
    cores, err = real(w, (2, 4), (4, 4), [3], None, C, 0.5)
    assert (layer.row_modes, layer.col_modes, layer.ranks) == ((2, 4), (4, 4), (1, 3, 1))
    for P, G in zip(layer.cores, cores, strict=True):
        torch.testing.assert_close(P.detach(), G, rtol=0, atol=0)
    assert layer.bias is not b and torch.equal(layer.bias.detach(), b)
    assert layer.approximation_error == err and err > 0
    assert (layer.implementation, layer.source) == ("reconstructed", "conv1d")
    assert layer.cores[0].dtype == torch.float64 and layer.bias.dtype == torch.float64
    fits.clear()
    layer = TTLinear.from_dense(w.float(), None, eps=0.6)
    ((W, rm, cm, ranks, eps, moment, damp),) = fits
    assert (rm, cm) == (tt_modes(8, 3), tt_modes(16, 3)) == ((2, 2, 2), (2, 2, 4))
    assert (ranks, eps, moment, damp) == (None, 0.6, None, 0.0)
    assert layer.bias is None and layer.cores[0].dtype == torch.float32
    assert (layer.implementation, layer.source) == ("factorized", "linear")
    fits.clear()
    TTLinear.from_dense(w, None, ranks=1, d=2)
    assert fits[0][1:3] == ((2, 4), (4, 4))


def test_from_linear_hands_the_weight_view_and_every_option_on(monkeypatch):
    calls = _spy_classmethod(monkeypatch, TTLinear, "from_dense")
    lin = nn.Linear(16, 8).double()
    C = torch.eye(16, dtype=torch.float64)
    TTLinear.from_linear(lin, (2, 4), (4, 4), ranks=[2], eps=None, d=2,
                         implementation="reconstructed", moment=C, damp=0.25)  # fmt: skip
    ((args, kw),) = calls
    assert args[0].shape == (8, 16) and torch.equal(args[0], lin.weight) and args[1] is lin.bias
    assert args[2:] == ((2, 4), (4, 4))
    assert kw == {"ranks": [2], "eps": None, "d": 2, "implementation": "reconstructed",
                  "source": "linear", "moment": C, "damp": 0.25}  # fmt: skip
    calls.clear()
    Conv1D = pytest.importorskip("transformers.pytorch_utils").Conv1D
    c1 = Conv1D(8, 16).double()  # (nf=out, nx=in): weight stored in × out
    layer = TTLinear.from_conv1d(c1, eps=0.5)
    ((args, kw),) = calls
    assert torch.equal(args[0], c1.weight.T) and args[1] is c1.bias and args[2:] == (None, None)
    assert kw == {"ranks": None, "eps": 0.5, "d": 3, "implementation": "factorized",
                  "source": "conv1d", "moment": None, "damp": 0.0}  # fmt: skip
    assert layer.source == "conv1d" and TTLinear.from_conv1d == TTLinear.from_linear
    _raises(TypeError, "TTLinear compresses Linear and Conv1D layers, not embeddings",
            TTLinear.from_linear, nn.Embedding(8, 4), ranks=1)  # fmt: skip


def _plan(layer, rm, cm, ranks, bias, in_f, out_f, window=None):
    modes = lambda ms: "·".join(map(str, ms))  # noqa: E731
    extra = f" × window {window[0]}×{window[1]}" if window else ""
    frm, fcm = ((*rm, 1), (*cm, window[0] * window[1])) if window else (rm, cm)
    params = sum(ranks[k] * frm[k] * fcm[k] * ranks[k + 1] for k in range(len(frm)))
    return LayerPlan(layer=layer, in_features=in_f, out_features=out_f,
                     factors=f"TT {modes(rm)} × {modes(cm)}{extra}, ranks "
                     f"{'-'.join(map(str, ranks))}", shape=None, rank=max(ranks),
                     permute="none", repeat=1, params_after=params + bias)  # fmt: skip


def test_tt_linear_plan_resolves_each_setting_whole():
    lin = nn.Linear(16, 8)
    P = TTLinear.plan
    assert P(lin, _settings(rank=2)) == _plan("TTLinear", (2, 2, 2), (2, 2, 4), (1, 2, 2, 1),
                                              8, 16, 8)  # fmt: skip
    assert P(lin, _settings(tt_ranks=[3, 2], rank=1)) == _plan(
        "TTLinear", (2, 2, 2), (2, 2, 4), (1, 3, 2, 1), 8, 16, 8)  # fmt: skip
    assert P(lin, _settings(tt_cores=2, rank=100)) == _plan(
        "TTLinear", (2, 4), (4, 4), (1, 8, 1), 8, 16, 8)  # fmt: skip
    assert P(lin, _settings(tt_modes=[[8], [16]], rank=2)) == _plan(
        "TTLinear", (8,), (16,), (1, 1), 8, 16, 8)  # fmt: skip
    nb = nn.Linear(16, 8, bias=False)
    r = tt_rank_for_budget((2, 2, 2), (2, 2, 4), 60)
    assert P(nb, _settings(n_params=60)) == _plan("TTLinear", (2, 2, 2), (2, 2, 4),
                                                  (1, r, r, 1), 0, 16, 8)  # fmt: skip
    r = tt_rank_for_budget((2, 2, 2), (2, 2, 4), 60 - 8)
    assert P(lin, _settings(n_params=60)).rank == r
    ranks = tqla.tt_matrix(lin.weight.detach().double(), (2, 2, 2), (2, 2, 4), eps=0.5).ranks
    assert P(lin, _settings(eps=0.5)) == _plan("TTLinear", (2, 2, 2), (2, 2, 4), ranks, 8, 16, 8)


def test_tt_linear_plan_and_from_module_messages():
    lin = nn.Linear(16, 8)
    _raises(ValueError, "module 'x': repeat=2 applies to embeddings only", TTLinear.plan, lin,
            _settings(rank=1, repeat=2), name="x")  # fmt: skip
    _raises(ValueError, "module 'module': method 'tt' needs rank, tt_ranks, n_params or eps",
            TTLinear.plan, lin, _settings())  # fmt: skip
    _raises(ValueError, "module 'module': method 'tt' needs rank, tt_ranks, n_params or eps",
            TTLinear.from_module, lin, _settings())  # fmt: skip
    _raises(ValueError, "module 'q': tt_modes rows (8,) and cols (4, 4) differ in length",
            TTLinear.from_module, lin, _settings(tt_modes=[[8], [4, 4]], rank=1),
            name="q")  # fmt: skip
    _raises(ValueError, "module 'q': ranks[0] = 9 is above the bound r_k <= min(r_(k-1)·n_k, "
            "n_(k+1)·r_(k+1)) = min(1·8, 16·1) = 8 for modes (8, 16) (largest useful ranks: "
            "(8,))", TTLinear.plan, lin, _settings(tt_modes=[[2, 4], [4, 4]], tt_ranks=[9]),
            name="q")  # fmt: skip


def test_from_module_hands_the_resolved_settings_on(monkeypatch):
    calls = _spy_classmethod(monkeypatch, TTLinear, "from_linear")
    lin = nn.Linear(16, 8).double()
    C = torch.eye(16, dtype=torch.float64)
    TTLinear.from_module(lin, _settings(tt_ranks=[3, 2], implementation="reconstructed"),
                         name="a", moment=C, damp=0.125)  # fmt: skip
    ((args, kw),) = calls
    assert args == (lin, (2, 2, 2), (2, 2, 4))
    assert kw == {"ranks": (1, 3, 2, 1), "eps": None, "implementation": "reconstructed",
                  "moment": C, "damp": 0.125}  # fmt: skip
    calls.clear()
    TTLinear.from_module(lin, _settings(eps=0.5))
    ((args, kw),) = calls
    assert kw == {"ranks": None, "eps": 0.5, "implementation": "factorized", "moment": None,
                  "damp": 0.0}  # fmt: skip


def test_tt_linear_costs_repr_spec_and_forward_route(monkeypatch):
    torch.manual_seed(0)
    layer = TTLinear(12, 8, (2, 4), (3, 4), [3]).double()
    assert layer.matmat_costs(5) == _costs((2, 4), (3, 4), (1, 3, 1), 5)
    assert layer.matmat_costs() == layer.matmat_costs(1)
    for k in (1, 7):
        a, b = layer.matmat_costs(k)
        assert layer.order(k) == ("left_first" if a <= b else "right_first")
    assert layer.order() == layer.order(1)
    tie = TTLinear(4, 4, (2, 2), (2, 2), [2])
    assert tie.matmat_costs(1)[0] == tie.matmat_costs(1)[1] and tie.order(1) == "left_first"
    assert layer.extra_repr() == ("in_features=12, out_features=8, row_modes=(2, 4), "
                                  "col_modes=(3, 4), ranks=(1, 3, 1), params=74, "
                                  "implementation=factorized")  # fmt: skip
    assert layer._spec_values() == {"in_features": 12, "out_features": 8, "row_modes": [2, 4],
                                    "col_modes": [3, 4], "ranks": [1, 3, 1], "bias": True,
                                    "implementation": "factorized", "source": "linear"}  # fmt: skip
    torch.testing.assert_close(layer.to_dense(), _dense(list(layer.cores)), rtol=0, atol=0)
    x = torch.randn(2, 3, 12, dtype=torch.float64)
    want = x @ layer.to_dense().T + layer.bias
    seen = []
    real = tt_mod.tt_forward

    def spy(cores, xx, order=None, bias=None):
        seen.append((len(cores), tuple(xx.shape), order, bias))
        return real(cores, xx, order, bias)

    monkeypatch.setattr(tt_mod, "tt_forward", spy)
    y = layer(x)
    assert seen == [(2, (6, 12), None, layer.bias)] and y.shape == (2, 3, 8)
    torch.testing.assert_close(y, want)
    layer.implementation = "reconstructed"
    lin_calls = []
    real_linear = torch.nn.functional.linear
    monkeypatch.setattr(torch.nn.functional, "linear", lambda *a: lin_calls.append(a) or
                        real_linear(*a))  # fmt: skip
    torch.testing.assert_close(layer(x), want)
    assert len(seen) == 1 and len(lin_calls) == 1 and lin_calls[0][2] is layer.bias


# --------------------------------------------------------------------------------------
# TTConv2d
# --------------------------------------------------------------------------------------
def test_tt_conv_constructor_states_its_structure():
    layer = TTConv2d(4, 6, [3, 2], (2, 3), (2, 2), [2, 3], stride=[2, 1], padding=(1, 0),
                     dilation=2, bias=False, implementation="reconstructed",
                     approximation_error=0, dtype=torch.float64)  # fmt: skip
    assert (layer.in_channels, layer.out_channels) == (4, 6)
    assert (layer.kernel_size, layer.stride, layer.padding, layer.dilation) == (
        (3, 2), (2, 1), (1, 0), (2, 2))  # fmt: skip
    assert all(type(v) is int for v in layer.kernel_size + layer.stride)
    assert (layer.row_modes, layer.col_modes, layer.ranks) == ((2, 3), (2, 2), (1, 2, 3, 1))
    assert [tuple(G.shape) for G in layer.cores] == [(1, 2, 2, 2), (2, 3, 2, 3), (3, 1, 6, 1)]
    assert layer.bias is None and layer.cores[0].dtype == torch.float64
    assert layer.implementation == "reconstructed" and layer.approximation_error == 0.0
    meta = TTConv2d(4, 6, 3, (2, 3), (2, 2), 100, device="meta")
    assert meta.ranks == (1, 4, 9, 1)  # capped at the bounds of modes (4, 6, 9)
    assert all(t.device.type == "meta" for t in meta.state_dict().values())
    assert meta.to_conv2d().weight.device.type == "meta"
    d = TTConv2d(4, 6, 3, (2, 3), (2, 2), [2, 3])
    assert (d.stride, d.padding, d.dilation) == ((1, 1), (0, 0), (1, 1))
    assert d.bias is not None and tuple(d.bias.shape) == (6,)
    assert (d.implementation, d.approximation_error) == ("factorized", None)
    _raises(ValueError, "in_channels must be a positive integer, got 0", TTConv2d, 0, 6, 3,
            (2, 3), (2, 2), 1)  # fmt: skip
    _raises(ValueError, "out_channels must be a positive integer, got -6", TTConv2d, 4, -6, 3,
            (2, 3), (2, 2), 1)  # fmt: skip
    _raises(ValueError, "row_modes (2, 3) and col_modes (4,) must have the same length",
            TTConv2d, 4, 6, 3, (2, 3), (4,), 1)  # fmt: skip
    _raises(ValueError, "kernel_size must be an int or a pair of ints, got None", TTConv2d, 4, 6,
            None, (2, 3), (2, 2), 1)  # fmt: skip
    _raises(ValueError, "stride must be an int or a pair of ints, got True", TTConv2d, 4, 6, 3,
            (2, 3), (2, 2), 1, stride=True)  # fmt: skip
    assert TTLinear.methods == ("tt",) and TTConv2d.methods == ("tt",)


def test_from_conv2d_hands_every_argument_to_the_fit_and_the_layer(monkeypatch):
    fits = []
    real = tt_mod._fit_cores
    monkeypatch.setattr(tt_mod, "_fit_cores", lambda *a: fits.append(a) or real(*a))
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)).double()
    layer = TTConv2d.from_conv2d(conv, [3, 2], [2, 2], ranks=[2, 3],
                                 implementation="reconstructed")  # fmt: skip
    ((W, rm, cm, ranks, eps),) = fits
    assert torch.equal(W, conv.weight.detach().reshape(6, 24)) and not W.requires_grad
    assert (rm, cm, ranks, eps) == ((3, 2, 1), (2, 2, 6), [2, 3], None)
    cores, err = real(W, rm, cm, ranks, eps)
    for P, G in zip(layer.cores, cores, strict=True):
        torch.testing.assert_close(P.detach(), G, rtol=0, atol=0)
    assert (layer.row_modes, layer.col_modes, layer.kernel_size) == ((3, 2), (2, 2), (3, 2))
    assert (layer.stride, layer.padding, layer.dilation) == ((2, 1), (1, 0), (1, 2))
    assert layer.bias is not conv.bias and torch.equal(layer.bias.detach(), conv.bias.detach())
    assert layer.approximation_error == err and layer.implementation == "reconstructed"
    assert layer.cores[0].dtype == torch.float64
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    want = nn.functional.conv2d(x, layer.to_dense(), layer.bias, (2, 1), (1, 0), (1, 2))
    torch.testing.assert_close(layer(x), want)
    fits.clear()
    nb = nn.Conv2d(4, 6, 3, bias=False)
    layer = TTConv2d.from_conv2d(nb, eps=0.5)
    ((W, rm, cm, ranks, eps),) = fits
    assert (rm, cm, ranks, eps) == ((2, 3, 1), (2, 2, 9), None, 0.5)  # d = 2 by default
    assert layer.bias is None and layer.implementation == "factorized"
    assert layer.cores[0].dtype == torch.float32
    fits.clear()
    TTConv2d.from_conv2d(nb, ranks=1, d=1)
    assert fits[0][1:3] == ((6, 1), (4, 9))


def test_from_conv2d_names_what_it_cannot_take():
    _raises(TypeError, "conv must be a torch.nn.Conv2d, got Linear", TTConv2d.from_conv2d,
            nn.Linear(2, 2))  # fmt: skip
    cases = (({"groups": 2}, "groups=2, padding_mode='zeros', padding=(0, 0)"),
             ({"padding_mode": "reflect", "padding": 1},
              "groups=1, padding_mode='reflect', padding=(1, 1)"),
             ({"padding": "same"}, "groups=1, padding_mode='zeros', padding='same'"))  # fmt: skip
    for kw, got in cases:
        conv = nn.Conv2d(4, 6, 3, **kw)
        _raises(ValueError, "TTConv2d supports groups=1, padding_mode='zeros' and numeric "
                f"padding, got {got}", TTConv2d.from_conv2d, conv, ranks=1)  # fmt: skip
        assert not TTConv2d.accepts(conv)
    assert TTConv2d.accepts(nn.Conv2d(4, 6, 3, padding=2))
    assert not TTConv2d.accepts(nn.Linear(4, 6)) and not TTConv2d.accepts(nn.Conv1d(4, 6, 3))


def test_tt_conv_plan_resolves_each_setting_whole():
    conv = nn.Conv2d(4, 8, (3, 2))
    P = TTConv2d.plan
    w = (3, 2)
    assert P(conv, _settings(tt_ranks=[2, 3], rank=1)) == _plan(
        "TTConv2d", (2, 4), (2, 2), (1, 2, 3, 1), 8, 24, 8, w)  # fmt: skip
    assert P(conv, _settings(rank=2), name="c") == _plan(
        "TTConv2d", (2, 4), (2, 2), (1, 2, 2, 1), 8, 24, 8, w)  # fmt: skip
    assert P(conv, _settings(tt_cores=3, rank=1)) == _plan(
        "TTConv2d", (2, 2, 2), (1, 2, 2), (1, 1, 1, 1, 1), 8, 24, 8, w)  # fmt: skip
    assert P(conv, _settings(tt_modes=[[8], [4]], rank=3)) == _plan(
        "TTConv2d", (8,), (4,), (1, 3, 1), 8, 24, 8, w)  # fmt: skip
    r = tt_rank_for_budget((2, 4, 1), (2, 2, 6), 90 - 8)
    assert P(conv, _settings(n_params=90)) == _plan(
        "TTConv2d", (2, 4), (2, 2), (1, r, r, 1), 8, 24, 8, w)  # fmt: skip
    W = conv.weight.detach().double().reshape(8, -1)
    ranks = tqla.tt_matrix(W, (2, 4, 1), (2, 2, 6), eps=0.5).ranks
    assert P(conv, _settings(eps=0.5)) == _plan("TTConv2d", (2, 4), (2, 2), ranks, 8, 24, 8, w)
    _raises(ValueError, "module 'k': method 'tt' needs rank, tt_ranks, n_params or eps", P,
            conv, _settings(), name="k")  # fmt: skip
    _raises(ValueError, "module 'module': method 'tt' needs rank, tt_ranks, n_params or eps",
            TTConv2d.from_module, conv, _settings())  # fmt: skip
    _raises(ValueError, "module 'k': ranks[1] = 7 is above the bound r_k <= min(r_(k-1)·n_k, "
            "n_(k+1)·r_(k+1)) = min(2·8, 6·1) = 6 for modes (4, 8, 6) (largest useful ranks: "
            "(4, 6))", P, conv, _settings(tt_ranks=[2, 7]), name="k")  # fmt: skip


def test_tt_conv_from_module_hands_the_resolved_settings_on(monkeypatch):
    calls = _spy_classmethod(monkeypatch, TTConv2d, "from_conv2d")
    conv = nn.Conv2d(4, 8, 3).double()
    TTConv2d.from_module(conv, _settings(tt_ranks=[2, 3], implementation="reconstructed"))
    ((args, kw),) = calls
    assert args == (conv, (2, 4), (2, 2))
    assert kw == {"ranks": (1, 2, 3, 1), "eps": None, "implementation": "reconstructed"}
    calls.clear()
    TTConv2d.from_module(conv, _settings(eps=0.5), name="z")
    assert calls[0][1] == {"ranks": None, "eps": 0.5, "implementation": "factorized"}


@pytest.mark.parametrize("bias", [True, False])
def test_tt_conv_spec_repr_dense_conversion_and_forward(bias):
    torch.manual_seed(1)
    layer = TTConv2d(4, 6, (3, 2), (2, 3), (2, 2), [2, 3], stride=(2, 1), padding=(1, 2),
                     dilation=(1, 2), bias=bias, dtype=torch.float64)  # fmt: skip
    assert layer._spec_values() == {
        "in_channels": 4, "out_channels": 6, "kernel_size": [3, 2], "row_modes": [2, 3],
        "col_modes": [2, 2], "ranks": [1, 2, 3, 1], "stride": [2, 1], "padding": [1, 2],
        "dilation": [1, 2], "bias": bias, "implementation": "factorized"}  # fmt: skip
    n = 8 + 36 + 18 + (6 if bias else 0)
    assert layer.extra_repr() == (
        "4, 6, kernel_size=(3, 2), stride=(2, 1), padding=(1, 2), row_modes=(2, 3), "
        f"col_modes=(2, 2), ranks=(1, 2, 3, 1), params={n}")  # fmt: skip
    K = layer.to_dense()
    assert K.shape == (6, 4, 3, 2)
    torch.testing.assert_close(K.reshape(6, 24), _dense(list(layer.cores)), rtol=0, atol=0)
    conv = layer.to_conv2d()
    assert (conv.stride, conv.padding, conv.dilation, conv.kernel_size) == (
        (2, 1), (1, 2), (1, 2), (3, 2))  # fmt: skip
    assert conv.weight.dtype == torch.float64 and torch.equal(conv.weight.detach(), K.detach())
    assert (conv.bias is None) == (not bias)
    if bias:
        assert torch.equal(conv.bias.detach(), layer.bias.detach())
    x = torch.randn(2, 4, 6, 7, dtype=torch.float64)
    want = nn.functional.conv2d(x, K, layer.bias, (2, 1), (1, 2), (1, 2))
    torch.testing.assert_close(layer(x), want)
    torch.testing.assert_close(conv(x), want)
    layer.implementation = "reconstructed"
    torch.testing.assert_close(layer(x), want)


def test_settings_without_the_tt_fields_take_the_defaults(monkeypatch):
    """A settings object need not carry tt_cores, tt_modes, tt_ranks or eps: 3 cores for a
    linear layer, 2 for a convolution, modes by tt_modes, the rank or budget it states."""
    bare = SimpleNamespace(rank=2, n_params=None, repeat=1, implementation="factorized")
    lin, conv = nn.Linear(16, 8), nn.Conv2d(4, 8, 3)
    assert TTLinear.plan(lin, bare) == _plan("TTLinear", (2, 2, 2), (2, 2, 4), (1, 2, 2, 1),
                                             8, 16, 8)  # fmt: skip
    assert TTConv2d.plan(conv, bare) == _plan("TTConv2d", (2, 4), (2, 2), (1, 2, 2, 1), 8, 36, 8,
                                              (3, 3))  # fmt: skip
    assert TTLinear.from_module(lin, bare).ranks == (1, 2, 2, 1)
    assert TTConv2d.from_module(conv, bare).ranks == (1, 2, 2, 1)
    budget = SimpleNamespace(rank=None, n_params=40, repeat=1, implementation="factorized")
    r = tt_rank_for_budget((2, 2, 2), (2, 2, 4), 40 - 8)
    assert TTLinear.plan(lin, budget).rank == r


@pytest.mark.parametrize("implementation", ["factorized", "reconstructed"])
def test_tt_linear_takes_an_empty_batch_like_nn_linear(implementation):
    """A batch of no tokens gives an empty output of the right shape, as nn.Linear does."""
    layer = TTLinear(12, 8, (2, 4), (3, 4), 3, implementation=implementation)
    for lead in [(0,), (2, 0), (0, 3)]:
        y = layer(torch.zeros(*lead, 12))
        assert y.shape == (*lead, 8)


@pytest.mark.parametrize("implementation", ["factorized", "reconstructed"])
def test_tt_conv_takes_an_empty_batch_like_nn_conv2d(implementation):
    conv = TTConv2d(4, 6, (3, 2), (2, 3), (2, 2), [2, 3], implementation=implementation)
    assert conv(torch.zeros(0, 4, 5, 5)).shape == (0, 6, 3, 4)
