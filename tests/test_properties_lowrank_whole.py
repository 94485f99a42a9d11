"""tqla_torch/nn/lowrank.py stated function by function (issue 15, fifth pass).

Each test states one function whole: the arguments each callee receives (spies compare the
whole call), the dtype and device of every tensor it creates (the ``meta`` device makes a
dropped ``device=`` visible without a GPU), whole messages, whole ``repr``/``spec``, and the
route each option selects.
"""

from __future__ import annotations

import math
from fractions import Fraction
from types import SimpleNamespace

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
from _spies import Spy  # noqa: E402
from torch import nn  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402

import tqla  # noqa: E402
from tqla_torch.nn import lowrank  # noqa: E402
from tqla_torch.nn.base import LayerPlan  # noqa: E402
from tqla_torch.nn.lowrank import LowRankEmbedding, LowRankLinear  # noqa: E402


def _settings(**kw):
    base = {"rank": None, "n_params": None, "repeat": 1, "implementation": "factorized"}
    return SimpleNamespace(**{**base, **kw})


_Spy = Spy


def _spy_init(monkeypatch, cls):
    """Record the (args, kwargs) of every construction of ``cls`` (exact class only)."""
    calls, real = [], cls.__init__

    def init(self, *args, **kwargs):
        if type(self) is cls:
            calls.append((args, kwargs))
        real(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", init)
    return calls


class _Copies(TorchFunctionMode):
    """Records (destination dtype, source dtype) of every ``Tensor.copy_``."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.copy_:
            self.seen.append((args[0].dtype, args[1].dtype))
        return func(*args, **(kwargs or {}))


# ------------------------------------------------------------------ low_rank_for_budget
def _nearest_rank(i: int, o: int, n: int, bias: bool) -> int:
    """Reference: round((n − bias)/(i + o)) half to even, clamped to [1, min(i, o)]."""
    q = Fraction(n - (o if bias else 0), i + o)
    return min(max(1, round(q)), min(i, o))


@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 4000), st.booleans())
@example(10, 6, 16 * 3 + 8, False)  # 3.5 → 4 (half to even)
@example(10, 6, 16 * 5 + 8, False)  # 5.5 → 6, the min clamp is 6
@example(10, 6, 16 * 2 + 8 + 6, True)  # 2.5 → 2 (half to even, bias counted)
@example(10, 6, 7, True)  # below one rank: 1
@example(3, 40, 10**4, True)  # above min(in, out): 3
def test_low_rank_for_budget_is_the_nearest_rank(i, o, n, bias):
    assert lowrank.low_rank_for_budget(i, o, n, bias) == _nearest_rank(i, o, n, bias)
    assert type(lowrank.low_rank_for_budget(i, o, n, bias)) is int


def test_svd_rank_whole():
    s = _settings(n_params=27)
    # 27/10 = 2.7 → 3 without a bias; (27 − 4)/10 = 2.3 → 2 with one
    assert lowrank.svd_rank(s, 6, 4, False, "w") == 3
    assert lowrank.svd_rank(s, 6, 4, True, "w") == 2
    assert lowrank.svd_rank(_settings(rank=4, n_params=1), 6, 4, True, "w") == 4  # rank wins
    with pytest.raises(ValueError, match=r"^w: rank must be a positive integer, got True$"):
        lowrank.svd_rank(_settings(rank=True), 6, 4, True, "w")
    with pytest.raises(ValueError, match=r"^v: svd rank 5 exceeds min\(in, out\) = 4$"):
        lowrank.svd_rank(_settings(rank=5), 4, 6, True, "v")


# ------------------------------------------------------------------ _truncated_svd
def test_truncated_svd_whole(monkeypatch):
    torch.manual_seed(0)
    W = torch.randn(5, 4)  # float32: the fit and its factors are float64
    spy = _Spy(tqla.truncated_svd)
    monkeypatch.setattr(tqla, "truncated_svd", spy)
    U, V, err = lowrank._truncated_svd(W, 2)
    ((args, kwargs),) = spy.calls
    assert args[0].dtype == torch.float64 and torch.equal(args[0], W.double())
    assert args[1:] == (2,) and kwargs == {}
    assert (U.dtype, V.dtype, U.shape, V.shape) == (torch.float64,) * 2 + ((5, 2), (2, 4))
    Wd = W.double()
    u, s, vh = torch.linalg.svd(Wd)
    torch.testing.assert_close(U @ V, (u[:, :2] * s[:2]) @ vh[:2], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(U.norm(dim=0), s[:2].sqrt())  # √Σ on both sides
    torch.testing.assert_close(V.norm(dim=1), s[:2].sqrt())
    want = float(torch.linalg.norm(Wd - U @ V) / torch.linalg.norm(Wd))
    assert type(err) is float and err == pytest.approx(want, rel=1e-9)
    # full rank: the tail is clamped at 0 (rounding can make ‖W‖² − Σσ² negative)
    for seed in range(6):
        g = torch.Generator().manual_seed(seed)
        full = lowrank._truncated_svd(torch.randn(4, 3, generator=g, dtype=torch.float64), 3)[2]
        assert type(full) is float and 0.0 <= full < 1e-7


def test_truncated_svd_with_a_moment_whole(monkeypatch):
    torch.manual_seed(1)
    W = torch.randn(5, 4)
    M = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0]))  # float32 moment: used in float64
    spy = _Spy(tqla.whitened_svd)
    monkeypatch.setattr(tqla, "whitened_svd", spy)
    U, V, err = lowrank._truncated_svd(W, 2, M, 0.375)
    ((args, kwargs),) = spy.calls
    assert args[0].dtype == torch.float64 and torch.equal(args[0], W.double())
    assert args[1].dtype == torch.float64 and torch.equal(args[1], M.double())
    assert args[2:] == (2,) and kwargs == {"damp": 0.375}
    u, s, vh = tqla.whitened_svd(W.double(), M.double(), 2, damp=0.375)
    torch.testing.assert_close(U, u * s.sqrt(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(V, s.sqrt()[:, None] * vh, rtol=1e-12, atol=1e-14)
    want = float(torch.linalg.norm(W.double() - U @ V) / torch.linalg.norm(W.double()))
    assert type(err) is float and err == pytest.approx(want, rel=1e-12)
    assert lowrank._truncated_svd(W, 2, M)[2] != err  # damp defaults to 0, not 0.375


# ------------------------------------------------------------------ _two_sided_fit
def test_two_sided_fit_whole(monkeypatch):
    torch.manual_seed(2)
    W = torch.randn(6, 4)  # float32 table, float32 weights
    p = torch.linspace(0.5, 2.0, 6)
    C = torch.diag(torch.tensor([1.0, 0.5, 2.0, 3.0]))
    spy = _Spy(tqla.two_sided_whitened_svd)
    monkeypatch.setattr(tqla, "two_sided_whitened_svd", spy)
    fit = lowrank._two_sided_fit(W, 2, (p, C), 0.25)
    ((args, kwargs),) = spy.calls
    assert [a.dtype for a in args[:3]] == [torch.float64] * 3
    assert torch.equal(args[0], W.double()) and torch.equal(args[1], p.double())
    assert torch.equal(args[2], C.double()) and args[3:] == (2,) and kwargs == {"damp": 0.25}
    u, s, vh = tqla.two_sided_whitened_svd(W.double(), p.double(), C.double(), 2, damp=0.25)
    E = (u * s) @ vh
    assert (fit.U.dtype, fit.V.dtype, fit.U.shape, fit.V.shape) == (
        torch.float32,
        torch.float32,
        (4, 2),
        (2, 6),
    )
    torch.testing.assert_close(fit.U, (s.sqrt()[:, None] * vh).T.float())
    torch.testing.assert_close(fit.V, (u * s.sqrt()).T.float())
    want = float(torch.linalg.norm(W.double() - E) / torch.linalg.norm(W.double()))
    assert fit.approximation_error == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match=r"^moment pair: the row weights must be a \(6,\) tensor$"):
        lowrank._two_sided_fit(W, 2, (p.tolist(), C), 0.0)
    with pytest.raises(ValueError, match=r"^moment pair: the column weight must be a \(4, 4\) "
                                         r"tensor$"):  # fmt: skip
        lowrank._two_sided_fit(W, 2, (p, C.numpy()), 0.0)
    with pytest.raises(ValueError, match=r"^moment pair must be \(row weights \(V,\), column "
                                         r"weight \(d, d\)\)$"):  # fmt: skip
        lowrank._two_sided_fit(W, 2, (p, C, C), 0.0)


# ------------------------------------------------------------------ LowRankLinear
def test_linear_init_whole():
    lr = LowRankLinear(6, 4, 2, device="meta", dtype=torch.float64)
    for t in (lr.U, lr.V, lr.bias):
        assert (t.device.type, t.dtype) == ("meta", torch.float64)
    assert (lr.U.shape, lr.V.shape, lr.bias.shape) == ((4, 2), (2, 6), (4,))
    assert LowRankLinear(6, 4, 2, bias=False, device="meta").bias is None
    torch.manual_seed(0)
    lr = LowRankLinear(9, 4, 2)
    assert (lr.U.dtype, lr.V.dtype, lr.bias.dtype) == (torch.float32,) * 3
    bound = 1 / math.sqrt(9)  # nn.Linear's bias: U(−1/√in, 1/√in)
    b = torch.cat([LowRankLinear(9, 400, 2).bias.detach() for _ in range(5)])
    assert float(b.abs().max()) <= bound and float(b.abs().max()) > 0.95 * bound
    assert repr(lr) == (
        "LowRankLinear(in_features=9, out_features=4, rank=2, params=30, implementation=factorized)"
    )
    assert lr.spec() == {"type": "LowRankLinear", "in_features": 9, "out_features": 4,
                         "rank": 2, "bias": True, "implementation": "factorized",
                         "source": "linear"}  # fmt: skip
    r = LowRankLinear(9, 4, 3, False, implementation="reconstructed", source="conv1d")
    assert r.spec() == {"type": "LowRankLinear", "in_features": 9, "out_features": 4,
                        "rank": 3, "bias": False, "implementation": "reconstructed",
                        "source": "conv1d"}  # fmt: skip
    assert repr(r).endswith("rank=3, params=39, implementation=reconstructed)")
    with pytest.raises(ValueError, match=r"^source must be 'linear' or 'conv1d', got 'x'$"):
        LowRankLinear(9, 4, 2, source="x")


def test_from_dense_builds_the_layer_with_every_argument(monkeypatch):
    torch.manual_seed(3)
    W, b = torch.randn(4, 6), torch.randn(4)  # float32
    calls = _spy_init(monkeypatch, LowRankLinear)
    with _Copies() as copies:
        lr = LowRankLinear.from_dense(W, b, 2, implementation="reconstructed", source="conv1d")
    ((args, kwargs),) = calls
    assert args == (6, 4, 2)
    assert kwargs == {"bias": True, "implementation": "reconstructed", "source": "conv1d",
                      "approximation_error": lr.approximation_error, "device": W.device,
                      "dtype": torch.float32}  # fmt: skip
    # the factors are cast to the weight's dtype before the copy; the bias copied as it is
    assert copies.seen[-3:] == [(torch.float32, torch.float32)] * 3
    assert torch.equal(lr.bias, b) and lr.bias is not b
    U, V, err = lowrank._truncated_svd(W, 2)
    assert lr.approximation_error == err
    assert torch.equal(lr.U, U.float()) and torch.equal(lr.V, V.float())
    # a budget: the bias is counted (31 − 4)/10 = 2.7 → 3; without a bias 31/10 → 3.1 → 3;
    # 28: (28 − 4)/10 = 2.4 → 2 with the bias, 2.8 → 3 without
    assert LowRankLinear.from_dense(W, b, n_params=28).rank == 2
    assert LowRankLinear.from_dense(W, None, n_params=28).rank == 3
    calls.clear()
    lb = LowRankLinear.from_dense(W.double(), None, 1)
    ((args, kwargs),) = calls
    assert kwargs == {"bias": False, "implementation": "factorized", "source": "linear",
                      "approximation_error": lb.approximation_error, "device": W.device,
                      "dtype": torch.float64}  # fmt: skip
    with pytest.raises(ValueError, match=r"^give exactly one of rank and n_params, got "
                                         r"rank=2, n_params=5$"):  # fmt: skip
        LowRankLinear.from_dense(W, b, 2, n_params=5)


def test_from_dense_damp_defaults_to_zero():
    torch.manual_seed(6)
    W = torch.randn(4, 6, dtype=torch.float64)
    M = torch.diag(torch.linspace(0.5, 3.0, 6, dtype=torch.float64))
    u, s, vh = tqla.whitened_svd(W, M, 2, damp=0.0)
    layer = LowRankLinear.from_dense(W, None, 2, moment=M)
    torch.testing.assert_close(layer.to_dense().detach(), (u * s) @ vh, rtol=1e-10, atol=1e-12)


def test_plan_whole():
    assert LowRankLinear.plan(nn.Linear(6, 4, bias=False), _settings(n_params=27), name="q") == (
        LayerPlan(layer="LowRankLinear", in_features=6, out_features=4, factors="rank 3",
                  shape=None, rank=3, permute="none", repeat=1, params_after=30)
    )  # fmt: skip
    assert LowRankLinear.plan(nn.Linear(6, 4), _settings(n_params=27)) == LayerPlan(
        layer="LowRankLinear",
        in_features=6,
        out_features=4,
        factors="rank 2",
        shape=None,
        rank=2,
        permute="none",
        repeat=1,
        params_after=24,
    )
    # the embedding counts no bias: 51/(7 + 5) = 4.25 → 4 (with a "bias" of 5: 3.8 → 4; 45:
    # 3.75 → 4 against 3.33 → 3)
    assert LowRankEmbedding.plan(nn.Embedding(7, 5), _settings(n_params=45)) == LayerPlan(
        layer="LowRankEmbedding",
        in_features=7,
        out_features=5,
        factors="rank 4",
        shape=None,
        rank=4,
        permute="none",
        repeat=1,
        params_after=48,
    )
    with pytest.raises(ValueError, match=r"^module 'e': svd rank 6 exceeds min\(in, out\) = 5$"):
        LowRankEmbedding.plan(nn.Embedding(7, 5), _settings(rank=6), name="e")


@pytest.mark.parametrize("implementation", ["factorized", "reconstructed"])
def test_embedding_routes_are_observable(implementation, monkeypatch):
    """attend: (h Vᵀ) Uᵀ or h·(U V)ᵀ; forward: a padded lookup of U, then V."""
    torch.manual_seed(4)
    emb = LowRankEmbedding(7, 5, 2, padding_idx=-2, implementation=implementation).double()
    assert emb.padding_idx == 5 and torch.count_nonzero(emb.U[5]) == 0
    shapes, lookups = [], []
    real_linear, real_embedding = lowrank.F.linear, lowrank.F.embedding

    def linear(x, w, *rest):
        shapes.append(tuple(w.shape))
        return real_linear(x, w, *rest)

    def embedding(*args, **kwargs):
        lookups.append((args[2:], kwargs))
        return real_embedding(*args, **kwargs)

    monkeypatch.setattr(lowrank.F, "linear", linear)
    monkeypatch.setattr(lowrank.F, "embedding", embedding)
    h = torch.randn(3, 5, dtype=torch.float64)
    E = (emb.U @ emb.V).detach()
    torch.testing.assert_close(emb.attend(h), h @ E.T)
    assert shapes == ([(2, 5), (7, 2)] if implementation == "factorized" else [(7, 5)])
    shapes.clear()
    ids = torch.tensor([0, 5, 6])
    torch.testing.assert_close(emb(ids), E[ids])
    assert lookups == [((5,), {})] and shapes == [(5, 2)]


# ------------------------------------------------------------------ LowRankEmbedding
def test_embedding_init_whole():
    e = LowRankEmbedding(7, 5, 2, device="meta", dtype=torch.float64)
    assert [(t.device.type, t.dtype, tuple(t.shape)) for t in (e.U, e.V)] == [
        ("meta", torch.float64, (7, 2)), ("meta", torch.float64, (2, 5))]  # fmt: skip
    assert e.padding_idx is None and e.approximation_error is None
    torch.manual_seed(0)
    e = LowRankEmbedding(7, 5, 2, padding_idx=3, implementation="reconstructed",
                         approximation_error=0.5)  # fmt: skip
    assert (e.U.dtype, e.padding_idx, e.implementation, e.approximation_error) == (
        torch.float32,
        3,
        "reconstructed",
        0.5,
    )
    assert repr(e) == "LowRankEmbedding(7, 5, rank=2, params=24, dense_params=35)"
    assert e.spec() == {"type": "LowRankEmbedding", "num_embeddings": 7, "embedding_dim": 5,
                        "rank": 2, "padding_idx": 3, "implementation": "reconstructed"}  # fmt: skip
    for args, msg in [
        ((0, 5, 1), "num_embeddings must be a positive integer, got 0"),
        ((7, 0, 1), "embedding_dim must be a positive integer, got 0"),
        ((7, 5, 0), "rank must be a positive integer, got 0"),
        ((7, 5, 6), "rank must be <= min(num_embeddings, embedding_dim) = 5, got 6"),
        ((4, 5, 5), "rank must be <= min(num_embeddings, embedding_dim) = 4, got 5"),
    ]:
        with pytest.raises(ValueError) as info:
            LowRankEmbedding(*args)
        assert str(info.value) == msg
    with pytest.raises(ValueError, match=r"^padding_idx must be within num_embeddings, got 7$"):
        LowRankEmbedding(7, 5, 2, padding_idx=7)


@pytest.mark.parametrize("route", ["plain", "frequencies", "pair"])
def test_from_embedding_builds_the_layer_with_every_argument(route, monkeypatch):
    torch.manual_seed(5)
    emb = nn.Embedding(7, 5, padding_idx=1)  # float32
    moment = {"plain": None, "frequencies": torch.linspace(1, 2, 7),
              "pair": (torch.linspace(1, 2, 7), torch.eye(5) * 2)}[route]  # fmt: skip
    calls = _spy_init(monkeypatch, LowRankEmbedding)
    with _Copies() as copies:
        e = LowRankEmbedding.from_embedding(
            emb, 2, implementation="reconstructed", moment=moment, damp=0.5
        )
    ((args, kwargs),) = calls
    assert args == (7, 5, 2)
    assert kwargs == {"padding_idx": 1, "implementation": "reconstructed",
                      "approximation_error": e.approximation_error, "device": emb.weight.device,
                      "dtype": torch.float32}  # fmt: skip
    assert copies.seen[-2:] == [(torch.float32, torch.float32)] * 2
    if route == "pair":
        fit = lowrank._two_sided_fit(emb.weight, 2, moment, 0.5)
    else:
        fit = LowRankLinear.from_dense(emb.weight.T, None, 2, moment=moment, damp=0.5)
    assert e.approximation_error == fit.approximation_error
    assert torch.equal(e.U, fit.V.T) and torch.equal(e.V, fit.U.T)
    assert LowRankEmbedding.from_embedding(emb, n_params=45).rank == 4  # no bias counted


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_every_fit_stays_on_the_cuda_device():
    W = torch.randn(4, 6, device="cuda")
    lin = LowRankLinear.from_dense(W, torch.zeros(4, device="cuda"), 2, moment=torch.eye(6))
    emb = nn.Embedding(7, 5, device="cuda")
    pair = (torch.ones(7, device="cuda"), torch.eye(5, device="cuda"))
    for layer in (
        lin,
        LowRankEmbedding.from_embedding(emb, 2, moment=pair),
        LowRankEmbedding.from_embedding(emb, 2, moment=torch.ones(7, device="cuda")),
    ):
        assert all(p.device.type == "cuda" for p in layer.parameters())
