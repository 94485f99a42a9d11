"""Contracts of the layer modules (lowrank, base, spectral): every argument reaches its
callee with its value (spies compare the whole call), every default is the documented one,
and every error message is exact.  Fast: tiny shapes only."""

from __future__ import annotations

import inspect
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from _spies import Spy  # noqa: E402
from torch import nn  # noqa: E402

import tqla  # noqa: E402
from tqla_torch.nn import base, lowrank, spectral  # noqa: E402
from tqla_torch.nn.lowrank import LowRankEmbedding, LowRankLinear  # noqa: E402


def _settings(**kw):
    d = dict(rank=None, n_params=None, repeat=1, implementation="factorized")
    d.update(kw)
    return SimpleNamespace(**d)


def _defaults(fn):
    return {
        k: p.default
        for k, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


_Spy = Spy


def _exact(msg: str) -> str:
    return "^" + re.escape(msg) + "$"


# ------------------------------------------------------------------ documented defaults
def test_lowrank_defaults_are_documented():
    assert _defaults(LowRankLinear.__init__) == {
        "bias": True, "implementation": "factorized", "source": "linear",
        "approximation_error": None, "device": None, "dtype": None,
    }
    assert _defaults(LowRankLinear.from_dense) == {
        "rank": None, "n_params": None, "implementation": "factorized", "source": "linear",
        "moment": None, "damp": 0.0,
    }
    assert _defaults(LowRankLinear.from_linear) == {
        "rank": None, "n_params": None, "implementation": "factorized",
    }
    assert _defaults(LowRankLinear.from_module) == {"name": "", "moment": None, "damp": 0.0}
    assert _defaults(LowRankLinear.plan) == {"name": "module"}
    assert _defaults(LowRankEmbedding.from_embedding) == {
        "rank": None, "n_params": None, "implementation": "factorized",
        "moment": None, "damp": 0.0,
    }
    assert _defaults(LowRankEmbedding.from_module) == {"name": "", "moment": None, "damp": 0.0}
    assert _defaults(LowRankEmbedding.plan) == {"name": "module"}
    assert _defaults(lowrank._truncated_svd) == {"moment": None, "damp": 0.0}


def test_base_defaults_are_documented():
    assert _defaults(base.check_permute) == {"name": "permute", "stacklevel": 3}
    assert _defaults(base.CompressedModule.plan) == {"name": "module"}
    assert _defaults(base.CompressedModule.from_module) == {"name": ""}


def test_spectral_defaults_are_documented():
    assert _defaults(spectral.SpectralKroneckerLinear.from_module) == {
        "name": "", "moment": None, "damp": 0.0,
    }
    assert _defaults(spectral.HeteroKroneckerLinear.from_module) == {"name": ""}
    assert _defaults(spectral.HeteroKroneckerLinear.plan) == {"name": "module"}


# ------------------------------------------------------------------ exact error messages
def test_base_check_messages_exact():
    with pytest.raises(ValueError, match=_exact("source must be 'linear' or 'conv1d', got 'x'")):
        base.check_source("x")
    assert base.check_source("conv1d") == "conv1d"
    with pytest.raises(ValueError, match=_exact(
            "give exactly one of rank and n_params, got rank=None, n_params=None")):
        base.check_rank_or_budget(None, None)
    with pytest.raises(ValueError, match=_exact(
            "give exactly one of rank and n_params, got rank=2, n_params=5")):
        base.check_rank_or_budget(2, 5)
    base.check_rank_or_budget(2, None)
    base.check_rank_or_budget(None, 5)
    with pytest.raises(ValueError, match=_exact("w: repeat=2 applies to embeddings only")):
        base.check_linear_repeat(_settings(repeat=2), "w")
    base.check_linear_repeat(_settings(repeat=1), "w")
    for bad in (0, -1, True, 1.0, "2"):
        with pytest.raises(ValueError, match=_exact(f"k must be a positive integer, got {bad!r}")):
            base.check_pos_int(bad, "k")
    assert base.check_pos_int(np.int64(1), "k") == 1 and type(base.check_pos_int(np.int64(3), "k")) is int
    msg = f"implementation must be one of {base.LAYER_IMPLEMENTATIONS}, got 'x'"
    with pytest.raises(ValueError, match=_exact(msg)):
        base.check_implementation("x")
    with pytest.raises(ValueError, match=_exact(f"side must be one of {base.PERMUTES}, got 'x'")):
        base.check_permute("x", "side")
    with pytest.warns(DeprecationWarning, match=_exact(
            "side='in' is deprecated; use 'cols' (rows = output features, "
            "cols = input features)")):
        assert base.check_permute("in", "side") == "cols"
    with pytest.warns(DeprecationWarning, match="permute='output'"):
        assert base.check_permute("output") == "rows"


def test_base_small_helpers_exact():
    assert base.decomposition_dtype(torch.empty(1, dtype=torch.float16)) is torch.float32
    assert base.decomposition_dtype(torch.empty(1, dtype=torch.bfloat16)) is torch.float32
    assert base.decomposition_dtype(torch.empty(1, dtype=torch.float64)) is torch.float64
    assert base.decomposition_dtype(torch.empty(1, dtype=torch.float32)) is torch.float32
    assert base.seed_for(None, "a") is None
    import zlib
    assert base.seed_for(7, "a.b") == [7, zlib.crc32(b"a.b")]
    assert base.as_perm(None, 3, "p", "cpu") is None
    p = base.as_perm(torch.tensor([2, 0, 1]), 3, "p", "cpu")
    assert p.dtype == torch.int64 and p.tolist() == [2, 0, 1] and p.is_contiguous()
    assert base.as_perm([0, 1, 2], 3, "p", "cpu").tolist() == [0, 1, 2]
    assert base.inverse_perm(torch.tensor([2, 0, 1])).tolist() == [1, 2, 0]
    w = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    lin = base.dense_linear(w, torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert (lin.in_features, lin.out_features, lin.weight.dtype) == (3, 2, torch.float64)
    assert torch.equal(lin.weight, w) and lin.bias.tolist() == [1.0, 2.0]
    assert base.dense_linear(w, None).bias is None


def test_relative_error_exact_values():
    ref = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    assert base.relative_error(ref.clone(), ref) == 0.0
    assert base.relative_error(torch.zeros(2, 2), ref) == 1.0
    assert base.relative_error(torch.zeros(2, 2), torch.zeros(2, 2)) == 0.0
    assert base.relative_error(torch.ones(2, 2), torch.zeros(2, 2)) == math.inf
    assert base.relative_error(torch.zeros(2), torch.tensor([3.0, 4.0])) == 1.0
    # a row getter gives the same as the dense tensor; broadcastable approximations expand
    approx = torch.tensor([[3.0, 1.0], [0.0, 4.0]])
    assert base.relative_error(lambda i, j: approx[i:j], ref) == pytest.approx(0.2, abs=1e-15)
    assert base.relative_error(torch.zeros(1, 2), ref) == 1.0


def test_relative_error_blocks(monkeypatch):
    monkeypatch.setattr(base, "_ERROR_BLOCK", 4)  # 2 rows of 2 per block, 3 blocks
    ref = torch.arange(1.0, 11.0).reshape(5, 2)
    seen = []

    def get(i, j):
        seen.append((i, j))
        return torch.zeros(j - i, 2)

    assert base.relative_error(get, ref) == 1.0
    assert seen == [(0, 2), (2, 4), (4, 5)]


# ------------------------------------------------------------------ lowrank: exact values
def test_low_rank_for_budget_rule():
    assert lowrank.low_rank_for_budget(768, 3072, 1182752, bias=True) == 307
    assert lowrank.low_rank_for_budget(10, 6, 16 * 3 + 6, True) == 3
    assert lowrank.low_rank_for_budget(10, 6, 16 * 3 + 6, False) == 3   # (54/16 = 3.4)
    assert lowrank.low_rank_for_budget(10, 6, 16 * 3 + 8, False) == 4   # 3.5 → 4
    assert lowrank.low_rank_for_budget(10, 6, 1, True) == 1
    assert lowrank.low_rank_for_budget(10, 6, 10**6, True) == 6


def test_svd_rank_messages_exact():
    assert lowrank.svd_rank(_settings(rank=2), 5, 4, True, "w") == 2
    assert lowrank.svd_rank(_settings(n_params=2 * 9 + 4), 5, 4, True, "w") == 2
    assert lowrank.svd_rank(_settings(n_params=2 * 9 + 4), 5, 4, False, "w") == 2
    with pytest.raises(ValueError, match=_exact("w: svd rank 5 exceeds min(in, out) = 4")):
        lowrank.svd_rank(_settings(rank=5), 5, 4, True, "w")
    with pytest.raises(ValueError, match=_exact("w: rank must be a positive integer, got 0")):
        lowrank.svd_rank(_settings(rank=0), 5, 4, True, "w")


def test_lowrank_linear_init_contract():
    lr = LowRankLinear(6, 4, 2, bias=False, implementation="reconstructed", source="conv1d",
                       approximation_error=0.25, dtype=torch.float64)
    assert (lr.in_features, lr.out_features, lr.rank, lr.bias) == (6, 4, 2, None)
    assert (lr.implementation, lr.source, lr.approximation_error) == (
        "reconstructed", "conv1d", 0.25)
    assert lr.U.shape == (4, 2) and lr.V.shape == (2, 6) and lr.U.dtype == torch.float64
    d = LowRankLinear(6, 4, 2)
    assert d.bias is not None and d.bias.shape == (4,)
    assert (d.implementation, d.source, d.approximation_error) == ("factorized", "linear", None)
    with pytest.raises(ValueError, match=_exact(
            "rank must be <= min(in_features, out_features) = 4, got 5")):
        LowRankLinear(6, 4, 5)
    with pytest.raises(ValueError, match=_exact("in_features must be a positive integer, got 0")):
        LowRankLinear(0, 4, 1)
    with pytest.raises(ValueError, match=_exact("out_features must be a positive integer, got 0")):
        LowRankLinear(4, 0, 1)
    with pytest.raises(ValueError, match=_exact("rank must be a positive integer, got 0")):
        LowRankLinear(4, 4, 0)


def test_lowrank_reset_parameters_variance():
    torch.manual_seed(0)
    lr = LowRankLinear(200, 300, 50, dtype=torch.float64)
    # std of each factor = (1/(3·in·r))^(1/4) → var(U V) = 1/(3·in)
    assert lr.U.std().item() == pytest.approx((1 / (3 * 200 * 50)) ** 0.25, rel=0.02)
    assert lr.V.std().item() == pytest.approx((1 / (3 * 200 * 50)) ** 0.25, rel=0.05)


def test_from_dense_passes_everything(monkeypatch):
    spy = _Spy(lowrank._truncated_svd)
    monkeypatch.setattr(lowrank, "_truncated_svd", spy)
    torch.manual_seed(0)
    w = torch.randn(5, 7, dtype=torch.float64)
    b = torch.randn(5, dtype=torch.float64)
    M = torch.eye(7, dtype=torch.float64) * 2
    lr = LowRankLinear.from_dense(w, b, 3, implementation="reconstructed", source="conv1d",
                                  moment=M, damp=0.5)
    (args, kwargs), = spy.calls
    assert torch.equal(args[0], w) and args[1] == 3 and args[2] is M and args[3] == 0.5
    assert kwargs == {}
    assert (lr.rank, lr.implementation, lr.source) == (3, "reconstructed", "conv1d")
    assert lr.U.dtype == torch.float64 and torch.equal(lr.bias, b)
    U, s, Vh = tqla.truncated_svd(w, 3)
    assert lr.approximation_error == pytest.approx(
        float(torch.linalg.norm(w - U * s @ Vh) / torch.linalg.norm(w)), rel=1e-9)
    # budget route: the nearest rank of the budget, the bias counted
    lb = LowRankLinear.from_dense(w, b, n_params=2 * 12 + 5)
    assert lb.rank == 2 and lb.bias is not None
    ln = LowRankLinear.from_dense(w.float(), None, 2)
    assert ln.bias is None and ln.U.dtype == torch.float32
    with pytest.raises(ValueError, match=_exact("n_params must be a positive integer, got 0")):
        LowRankLinear.from_dense(w, b, n_params=0)


def test_truncated_svd_error_and_moment(monkeypatch):
    w = torch.diag(torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64))
    U, V, err = lowrank._truncated_svd(w, 1)
    assert err == pytest.approx(3 / 5, rel=1e-12)
    assert torch.allclose(U @ V, torch.diag(torch.tensor([0.0, 4.0, 0.0], dtype=torch.float64)))
    assert lowrank._truncated_svd(torch.zeros(3, 3), 1)[2] == 0.0
    spy = _Spy(tqla.whitened_svd)
    monkeypatch.setattr(tqla, "whitened_svd", spy)
    M = torch.eye(3, dtype=torch.float64)
    U2, V2, err2 = lowrank._truncated_svd(w, 1, M, 0.25)
    (args, kwargs), = spy.calls
    assert args[1:] == (M, 1) or (torch.equal(args[1], M) and args[2] == 1)
    assert kwargs == {"damp": 0.25}
    assert err2 == pytest.approx(3 / 5, rel=1e-9)
    assert lowrank._truncated_svd(torch.zeros(3, 3), 1, M)[2] == 0.0


def test_from_linear_passes_everything(monkeypatch):
    spy = _Spy(LowRankLinear.from_dense.__func__)
    monkeypatch.setattr(LowRankLinear, "from_dense", classmethod(spy))
    lin = nn.Linear(6, 4)
    LowRankLinear.from_linear(lin, 2, implementation="reconstructed")
    (args, kwargs), = spy.calls
    assert args[0] is LowRankLinear and torch.equal(args[1], lin.weight) and args[3] == 2
    assert torch.equal(args[2], lin.bias)
    assert kwargs == {"n_params": None, "implementation": "reconstructed", "source": "linear"}
    LowRankLinear.from_linear(lin, n_params=30)
    assert spy.calls[1][1] == {"n_params": 30, "implementation": "factorized", "source": "linear"}
    with pytest.raises(TypeError, match=_exact(
            "use LowRankEmbedding.from_embedding for embeddings")):
        LowRankLinear.from_linear(nn.Embedding(5, 3), 1)


def test_lowrank_linear_plan_exact():
    p = LowRankLinear.plan(nn.Linear(6, 4), _settings(rank=2), name="x")
    assert (p.layer, p.in_features, p.out_features, p.factors, p.shape, p.rank, p.permute,
            p.repeat, p.params_after) == ("LowRankLinear", 6, 4, "rank 2", None, 2, "none", 1,
                                          2 * 10 + 4)
    assert LowRankLinear.plan(nn.Linear(6, 4, bias=False), _settings(rank=2)).params_after == 20
    with pytest.raises(ValueError, match=_exact(
            "module 'x': repeat=2 applies to embeddings only")):
        LowRankLinear.plan(nn.Linear(6, 4), _settings(rank=2, repeat=2), name="x")
    with pytest.raises(ValueError, match=_exact(
            "module 'module': svd rank 5 exceeds min(in, out) = 4")):
        LowRankLinear.plan(nn.Linear(6, 4), _settings(rank=5))


def test_lowrank_from_module_passes_everything(monkeypatch):
    spy_l = _Spy(LowRankLinear.from_linear.__func__)
    spy_d = _Spy(LowRankLinear.from_dense.__func__)
    monkeypatch.setattr(LowRankLinear, "from_linear", classmethod(spy_l))
    lin = nn.Linear(6, 4)
    s = _settings(rank=2, implementation="reconstructed")
    LowRankLinear.from_module(lin, s, name="q")
    (args, kwargs), = spy_l.calls
    assert args == (LowRankLinear, lin, 2)
    assert kwargs == {"implementation": "reconstructed"}
    monkeypatch.setattr(LowRankLinear, "from_dense", classmethod(spy_d))
    M = torch.eye(6)
    LowRankLinear.from_module(lin, s, moment=M, damp=0.3)
    (args, kwargs), = spy_d.calls
    assert args[0] is LowRankLinear and args[3] == 2 and torch.equal(args[1], lin.weight)
    assert kwargs == {"implementation": "reconstructed", "source": "linear", "moment": M,
                      "damp": 0.3}
    with pytest.raises(ValueError, match=r"^module 'module': svd rank 9"):
        LowRankLinear.from_module(lin, _settings(rank=9))
    with pytest.raises(ValueError, match=r"^module 'q': svd rank 9"):
        LowRankLinear.from_module(lin, _settings(rank=9), name="q")


# ------------------------------------------------------------------ lowrank: embeddings
def test_from_embedding_messages_and_calls(monkeypatch):
    emb = nn.Embedding(7, 5, padding_idx=2)
    with pytest.raises(TypeError, match=_exact(
            "embedding must be a torch.nn.Embedding, got Linear")):
        LowRankEmbedding.from_embedding(nn.Linear(2, 2), 1)
    with pytest.raises(ValueError, match=_exact(
            "moment of an embedding must be the (7,) vector of token frequencies or a pair "
            "((V,) row weights, (d, d) moment), got torch.Size([6])")):
        LowRankEmbedding.from_embedding(emb, 2, moment=torch.ones(6))
    with pytest.raises(ValueError, match=r", got str$"):
        LowRankEmbedding.from_embedding(emb, 2, moment="f")
    with pytest.raises(ValueError, match=_exact("n_params must be a positive integer, got -1")):
        LowRankEmbedding.from_embedding(emb, n_params=-1)
    spy = _Spy(LowRankLinear.from_dense.__func__)
    monkeypatch.setattr(LowRankLinear, "from_dense", classmethod(spy))
    f = torch.arange(1.0, 8.0)
    e = LowRankEmbedding.from_embedding(emb, 2, implementation="reconstructed", moment=f,
                                        damp=0.5)
    (args, kwargs), = spy.calls
    assert torch.equal(args[1], emb.weight.T) and args[2] is None and args[3] == 2
    assert kwargs == {"moment": f, "damp": 0.5}
    assert (e.rank, e.implementation, e.padding_idx) == (2, "reconstructed", 2)
    assert e.approximation_error == pytest.approx(
        LowRankLinear.from_dense(emb.weight.T, None, 2, moment=f, damp=0.5).approximation_error)
    eb = LowRankEmbedding.from_embedding(emb, n_params=2 * 12)
    assert eb.rank == 2 and eb.implementation == "factorized"


def test_two_sided_messages_and_calls(monkeypatch):
    W = torch.randn(6, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=_exact(
            "moment pair must be (row weights (V,), column weight (d, d))")):
        lowrank._two_sided_fit(W, 2, (torch.ones(6),), 0.0)
    with pytest.raises(ValueError, match=_exact(
            "moment pair: the row weights must be a (6,) tensor")):
        lowrank._two_sided_fit(W, 2, (torch.ones(5), torch.eye(4)), 0.0)
    with pytest.raises(ValueError, match=_exact(
            "moment pair: the column weight must be a (4, 4) tensor")):
        lowrank._two_sided_fit(W, 2, (torch.ones(6), torch.eye(3)), 0.0)
    spy = _Spy(tqla.two_sided_whitened_svd)
    monkeypatch.setattr(tqla, "two_sided_whitened_svd", spy)
    p, C = torch.ones(6), torch.eye(4)
    fit = lowrank._two_sided_fit(W, 4, (p, C), 0.125)
    (args, kwargs), = spy.calls
    assert args[3] == 4 and kwargs == {"damp": 0.125}
    assert fit.U.shape == (4, 4) and fit.V.shape == (4, 6) and fit.U.dtype == W.dtype
    assert fit.approximation_error < 1e-12  # full rank: exact
    assert torch.allclose(fit.U @ fit.V, W.T, atol=1e-12)
    assert lowrank._two_sided_fit(torch.zeros(6, 4), 1, (p, C), 0.0).approximation_error == 0.0


def test_lowrank_embedding_plan_and_from_module(monkeypatch):
    emb = nn.Embedding(7, 5)
    p = LowRankEmbedding.plan(emb, _settings(rank=2), name="e")
    assert (p.layer, p.in_features, p.out_features, p.factors, p.shape, p.rank, p.permute,
            p.repeat, p.params_after) == ("LowRankEmbedding", 7, 5, "rank 2", None, 2, "none",
                                          1, 24)
    assert LowRankEmbedding.plan(emb, _settings(n_params=24)).rank == 2
    with pytest.raises(ValueError, match=_exact(
            "module 'e': repeat=2 applies to Kronecker methods")):
        LowRankEmbedding.plan(emb, _settings(rank=2, repeat=2), name="e")
    lr = LowRankEmbedding.from_embedding(emb, 3)
    with pytest.raises(ValueError, match=_exact(
            "module 'module': svd rank 3 must be below the current rank 3 to compress a "
            "LowRankEmbedding again")):
        LowRankEmbedding.plan(lr, _settings(rank=3))
    assert LowRankEmbedding.plan(lr, _settings(rank=2)).rank == 2
    spy = _Spy(LowRankEmbedding.from_embedding.__func__)
    monkeypatch.setattr(LowRankEmbedding, "from_embedding", classmethod(spy))
    f = torch.ones(7)
    LowRankEmbedding.from_module(emb, _settings(rank=2, implementation="reconstructed"),
                                 moment=f, damp=0.5)
    (args, kwargs), = spy.calls
    assert args == (LowRankEmbedding, emb, 2)
    assert kwargs == {"implementation": "reconstructed", "moment": f, "damp": 0.5}
    LowRankEmbedding.from_module(lr, _settings(rank=2))
    args, kwargs = spy.calls[1]
    assert isinstance(args[1], nn.Embedding) and torch.allclose(args[1].weight, lr.to_dense())
    assert kwargs == {"implementation": "factorized", "moment": None, "damp": 0.0}
    assert LowRankEmbedding.accepts(emb) and LowRankEmbedding.accepts(lr)
    assert not LowRankEmbedding.accepts(nn.Linear(2, 2))


# ------------------------------------------------------------------ spectral
def test_spectral_options_exact():
    s = SimpleNamespace(n_iter=None, tol=None)
    assert spectral._spectral_options(s, 5) == {"rng": 5}
    s = SimpleNamespace(p=3, n_iter=7, tol=1e-4)
    assert spectral._spectral_options(s, 5) == {"rng": 5, "p": 3, "max_iter": 7, "tol": 1e-4}
    s = SimpleNamespace(p=None, n_iter=0, tol=0.0)
    assert spectral._spectral_options(s, None) == {"rng": None, "max_iter": 0, "tol": 0.0}


def test_relative_spectral_exact(monkeypatch):
    W = torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64))
    A = torch.diag(torch.tensor([4.0, 0.0], dtype=torch.float64))
    est, up = spectral._relative_spectral(W, A)
    assert est == pytest.approx(0.25, rel=1e-6) and up >= est
    assert spectral._relative_spectral(torch.zeros(2, 2), torch.zeros(2, 2)) == (0.0, 0.0)
    assert spectral._relative_spectral(torch.zeros(2, 2), torch.eye(2)) == (math.inf, math.inf)
    spy = _Spy(tqla.spectral_norm)
    monkeypatch.setattr(tqla, "spectral_norm", spy)
    spectral._relative_spectral(W.float(), A.half())
    (args, kwargs), = spy.calls
    assert kwargs == {"rng": 0}


def test_whitened_refit_passes_everything(monkeypatch):
    calls = []

    def fake(W, M, shape, rank, **kw):
        calls.append((W, M, shape, rank, kw))
        return SimpleNamespace(A="A", B="B")

    monkeypatch.setattr(tqla, "whitened_kron_spectral", fake)
    W = torch.arange(12.0).reshape(3, 4)
    M = torch.arange(16.0).reshape(4, 4)
    rp, cp = torch.tensor([2, 0, 1]), torch.tensor([1, 3, 0, 2])
    A, B, start = spectral._whitened_refit(W, M, "shape", 2, rp, cp, 0.5, {"rng": 1, "p": 2})
    assert (A, B) == ("A", "B") and math.isnan(start)
    (w, m, shape, rank, kw), = calls
    ir, ic = torch.argsort(rp), torch.argsort(cp)
    assert torch.equal(w, W[ir][:, ic]) and torch.equal(m, M[ic][:, ic])
    assert (shape, rank, kw) == ("shape", 2, {"damp": 0.5, "rng": 1, "p": 2})
    spectral._whitened_refit(W, M, "s", 1, None, None, 0.0, {})
    assert torch.equal(calls[1][0], W) and torch.equal(calls[1][1], M)
    assert calls[1][4] == {"damp": 0.0}


def _spectral_settings(**kw):
    from tqla_torch.compression.config import CompressionConfig

    fields = dict(target_modules=["m"], method="spectral_kron", b_shape=[4, 4], rank=2,
                  p=[8, 32], seed=3)
    fields.update(kw)
    return CompressionConfig(**fields).settings_for("m")


def test_spectral_from_module_passes_everything(monkeypatch):
    spy = _Spy(tqla.kron_spectral)
    monkeypatch.setattr(tqla, "kron_spectral", spy)
    torch.manual_seed(0)
    lin = nn.Linear(16, 16, dtype=torch.float64)
    st = _spectral_settings(n_iter=5, tol=1e-3, implementation="reconstructed")
    layer = spectral.SpectralKroneckerLinear.from_module(lin, st, name="m")
    (args, kwargs), = spy.calls
    assert args[0].dtype == torch.float64 and torch.equal(args[0], lin.weight)
    assert args[2] == 2 and tuple(args[1].b) == (4, 4)
    rng = kwargs.pop("rng")
    assert kwargs == {"p": [8, 32], "max_iter": 5, "tol": 1e-3}
    assert isinstance(rng, np.random.Generator)
    assert layer.implementation == "reconstructed" and layer.source == "linear"
    assert layer.bias is not None and torch.equal(layer.bias, lin.bias)
    assert layer.approximation_error == pytest.approx(
        base.relative_error(layer.to_dense(), lin.weight), rel=1e-12)
    assert 0 <= layer.spectral_error <= layer.kron_svd_spectral_error * (1 + 1e-12)


def test_spectral_from_module_seed_reaches_search(monkeypatch):
    seen = []
    real = np.random.default_rng

    def rng(seed=None):
        seen.append(seed)
        return real(seed)

    monkeypatch.setattr(spectral.np.random, "default_rng", rng)
    lin = nn.Linear(16, 16, dtype=torch.float64)
    spectral.SpectralKroneckerLinear.from_module(lin, _spectral_settings(), name="a.b")
    assert base.seed_for(3, "a.b") in seen


def test_spectral_from_module_moment_passes_damp(monkeypatch):
    spy = _Spy(tqla.whitened_kron_spectral)
    monkeypatch.setattr(tqla, "whitened_kron_spectral", spy)
    lin = nn.Linear(16, 16, dtype=torch.float64)
    M = torch.eye(16) * 3
    layer = spectral.SpectralKroneckerLinear.from_module(
        lin, _spectral_settings(), name="m", moment=M, damp=0.25)
    (args, kwargs), = spy.calls
    assert torch.equal(args[1], M.double()) and args[1].dtype == torch.float64
    assert args[3] == 2 and kwargs["damp"] == 0.25 and kwargs["p"] == [8, 32]
    assert layer.kron_svd_spectral_error is None
