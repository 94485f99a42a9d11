"""tqla_torch.nn.weights stated against its definitions: the (out, in) view of every module
kind, and the factor-shape resolution with every message it can give (found by mutation
testing; listed in benchmarks/results/mutation_2026-11-30.md)."""

from __future__ import annotations

import re
import sys
import types
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from tqla.shapes import KroneckerShape  # noqa: E402
from tqla_torch.nn import weights as W  # noqa: E402


class _FakeConv1D(torch.nn.Module):
    """transformers' Conv1D layout: weight (in, out), y = x · weight + bias."""

    def __init__(self, n_in: int, n_out: int, bias: bool = True):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(n_in, n_out))
        self.bias = torch.nn.Parameter(torch.randn(n_out)) if bias else None


@pytest.fixture
def fake_transformers(monkeypatch):
    """A stand-in ``transformers.pytorch_utils`` whose Conv1D is :class:`_FakeConv1D`."""
    mod = types.ModuleType("transformers.pytorch_utils")
    mod.Conv1D = _FakeConv1D
    monkeypatch.setitem(sys.modules, "transformers.pytorch_utils", mod)
    return mod


def test_conv1d_is_recognised_only_through_an_imported_transformers(monkeypatch, fake_transformers):
    assert W.conv1d_class() is _FakeConv1D
    assert W.is_conv1d(_FakeConv1D(2, 3)) is True
    assert W.is_conv1d(torch.nn.Linear(2, 3)) is False
    # a module without Conv1D (another version) and no module at all: never a Conv1D
    monkeypatch.setitem(sys.modules, "transformers.pytorch_utils", types.ModuleType("x"))
    assert W.conv1d_class() is None and W.is_conv1d(_FakeConv1D(2, 3)) is False
    monkeypatch.delitem(sys.modules, "transformers.pytorch_utils")
    assert W.conv1d_class() is None and W.is_conv1d(_FakeConv1D(2, 3)) is False


@pytest.mark.parametrize("bias", [True, False])
def test_weight_view_of_every_kind_is_a_view_of_the_in_out_matrix(fake_transformers, bias):
    lin = torch.nn.Linear(3, 5, bias=bias)
    conv = _FakeConv1D(3, 5, bias=bias)
    emb = torch.nn.Embedding(7, 4)
    for module, kind, n_in, n_out, stored in (
        (lin, "linear", 3, 5, lin.weight.T),
        (conv, "conv1d", 3, 5, conv.weight),
        (emb, "embedding", 7, 4, emb.weight),
    ):
        v = W.weight_view(module)
        assert (v.kind, v.in_features, v.out_features) == (kind, n_in, n_out)
        assert type(v.in_features) is int and type(v.out_features) is int
        assert v.weight.shape == (n_in, n_out) and v.weight_out_in.shape == (n_out, n_in)
        # views of the parameter, not copies: writes reach the module
        assert v.weight.data_ptr() == module.weight.data_ptr()
        assert torch.equal(v.weight, stored) and torch.equal(v.weight_out_in, stored.T)
        has_bias = bias and kind != "embedding"
        assert (v.bias is module.bias) if has_bias else v.bias is None
        assert v.n_params == n_in * n_out + (n_out if has_bias else 0)
    msg = (
        "module must be a torch.nn.Linear, a transformers Conv1D or a torch.nn.Embedding, "
        "got ReLU"
    )
    with pytest.raises(TypeError, match=f"^{re.escape(msg)}$"):
        W.weight_view(torch.nn.ReLU())


def test_layer_shape_is_the_transposed_in_out_shape():
    assert W.layer_shape(((2, 3), (5, 7))) == KroneckerShape((3, 2), (7, 5))
    assert W.layer_shape(KroneckerShape((4, 1), (2, 6))) == KroneckerShape((1, 4), (6, 2))


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


@pytest.mark.parametrize("route", ["resolve_shape", "resolve_out_in"])
def test_b_shape_resolves_exactly_when_it_divides_the_matrix(route):
    fn = getattr(W, route)
    rn, cn = ("in", "out") if route == "resolve_shape" else ("out", "in")
    for rows in (1, 4, 6):
        for cols in (1, 3, 8):
            for s in range(1, 8):
                for t in range(1, 9):
                    if rows % s == 0 and cols % t == 0:
                        got = fn(rows, cols, b_shape=(s, t))
                        assert got == KroneckerShape((rows // s, cols // t), (s, t))
                        assert type(got.a[0]) is int and got == fn(rows, cols, shape=(got.a, got.b))
                        continue
                    msg = (
                        f"h.0: b_shape ({s}, {t}) does not divide the {rn}×{cn} matrix "
                        f"({rows}, {cols}): need {rn} % {s} == 0 and {cn} % {t} == 0"
                    )
                    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
                        fn(rows, cols, b_shape=(s, t), where="h.0")
    # every divisor pair, and nothing else, is a valid full shape
    rows, cols = 6, 4
    ok = {((rows // s, cols // t), (s, t)) for s in _divisors(rows) for t in _divisors(cols)}
    for p in range(1, 7):
        for s in range(1, 7):
            for q, t in ((1, 4), (2, 2), (4, 1), (2, 1), (3, 2)):
                sh = ((p, q), (s, t))
                if sh in ok:
                    assert fn(rows, cols, shape=sh) == KroneckerShape(*sh)
                    continue
                msg = (
                    f"m: factor shapes A ({p}, {q}) ⊗ B ({s}, {t}) give a ({p * s}, {q * t}) "
                    f"matrix, but the module's {rn}×{cn} matrix is ({rows}, {cols}): "
                    f"need p·s = {rn} and q·t = {cn}"
                )
                with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
                    fn(rows, cols, shape=sh, where="m")


@pytest.mark.parametrize("route", ["resolve_shape", "resolve_out_in"])
def test_resolution_messages_name_the_module_the_argument_and_the_rule(route):
    fn = getattr(W, route)
    rn, cn = ("in", "out") if route == "resolve_shape" else ("out", "in")

    def fails(msg, *args, **kw):
        with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
            fn(*args, **kw)

    for sh, bsh in ((None, None), (((2, 2), (2, 2)), (2, 2))):
        fails(
            "module: give exactly one of shape ((p, q), (s, t)) and b_shape (s, t) "
            f"for its Kronecker factors ({rn}×{cn} orientation); got shape={sh!r}, "
            f"b_shape={bsh!r}",
            4, 4, shape=sh, b_shape=bsh,
        )  # fmt: skip
    for bad in (3, (1, 2, 3), (True, 2), (2, 2.0), (0, 2), (2, -1)):
        fails(f"a.b: b_shape must be a pair of positive integers, got {bad!r}",
              4, 4, b_shape=bad, where="a.b")  # fmt: skip
    for bad in (3, ((2, 2),), ((2, 2), (2, 2), (1, 1))):
        fails(f"m: shape must be ((p, q), (s, t)) in the {rn}×{cn} orientation, got {bad!r}",
              4, 4, shape=bad, where="m")  # fmt: skip
    fails("m: shape[0] (factor A) must be a pair of positive integers, got (2, 0)",
          4, 4, shape=((2, 0), (2, 2)), where="m")  # fmt: skip
    fails("m: shape[1] (factor B) must be a pair of positive integers, got (False, 2)",
          4, 4, shape=((2, 2), (False, 2)), where="m")  # fmt: skip


def test_settings_shape_resolves_the_settings_on_the_out_in_matrix():
    v = W.weight_view(torch.nn.Linear(6, 4))  # out×in = 4×6
    st = SimpleNamespace(shape=None, b_shape=(2, 3))
    assert W.settings_shape(v, st, "x") == KroneckerShape((2, 2), (2, 3))
    st = SimpleNamespace(shape=((1, 6), (4, 1)), b_shape=None)
    assert W.settings_shape(v, st, "x") == KroneckerShape((1, 6), (4, 1))
    with pytest.raises(ValueError, match=r"^blk\.3: b_shape \(3, 2\) does not divide the out×in"):
        W.settings_shape(v, SimpleNamespace(shape=None, b_shape=(3, 2)), "blk.3")
