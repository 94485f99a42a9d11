"""Arguments, defaults and messages of the embedding layer, its Gram fit and permuted_kron.

Issue 15, fourth pass: the fresh mutation samples of these modules showed survivors of three
kinds (an argument not handed on, a default changed, a message changed).  These tests check
each public entry point generally: every argument reaches its callee with its value (spies
compare the whole kwargs dict), every default equals the documented one (the signature
against the docstring), and every message exactly.
"""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tqla.permuted as perm_mod  # noqa: E402
import tqla_torch.nn._embedding_fit as fit_mod  # noqa: E402
import tqla_torch.nn.embedding as emb_mod  # noqa: E402
from tqla.permuted import PermutedKroneckerApprox, permuted_kron  # noqa: E402
from tqla_torch.nn.embedding import KroneckerEmbedding  # noqa: E402


def _record(monkeypatch, module, name):
    """Replace ``module.name`` by a spy that records (args, kwargs) and calls through."""
    real = getattr(module, name)
    calls: list[tuple[tuple, dict]] = []

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


def _defaults(fn):
    return {
        k: p.default
        for k, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def _full(msg):
    return "^" + re.escape(msg) + "$"


# -- KroneckerEmbedding ---------------------------------------------------------------------
def test_embedding_defaults_are_the_documented_ones():
    assert _defaults(KroneckerEmbedding.__init__) == {
        "factors": (2,), "permute": False, "padding_idx": None,
        "implementation": "factorized", "approximation_error": None,
        "device": None, "dtype": None,
    }  # fmt: skip
    assert _defaults(KroneckerEmbedding.from_embedding) == {
        "k": 2, "method": "permuted_kron", "permute": None, "implementation": None,
        "rule": None, "n_iter": None, "tol": None, "n_restarts": 1, "seed": 0,
    }  # fmt: skip
    assert _defaults(KroneckerEmbedding.plan) == {"name": "module"}
    assert _defaults(KroneckerEmbedding.from_module) == {"name": ""}
    doc = KroneckerEmbedding.from_embedding.__doc__
    assert "default True for permuted_kron, False for kron" in doc
    layer = KroneckerEmbedding(6, 4)
    assert layer.level_factors == [2] and layer.implementation == "factorized"
    assert layer.padding_idx is None and layer.col_perm_0 is None
    assert layer.table.dtype == torch.get_default_dtype()


def test_from_embedding_hands_every_option_to_the_gram_route(monkeypatch):
    calls = _record(monkeypatch, emb_mod, "permuted_table_fit")
    emb = torch.nn.Embedding(12, 8, padding_idx=3).double()
    layer = KroneckerEmbedding.from_embedding(
        emb, 4, rule="slots", n_iter=3, tol=0.25, n_restarts=2, seed=7,
        implementation="reconstructed",
    )  # fmt: skip
    ((args, kwargs),) = calls
    assert args[0] is emb.weight and args[1] == 4 and len(args) == 2
    assert kwargs == {"rule": "slots", "n_iter": 3, "tol": 0.25, "n_restarts": 2, "seed": 7}
    assert layer.level_factors == [4] and layer.padding_idx == 3
    assert layer.implementation == "reconstructed"
    assert layer.table.dtype == torch.float64 and layer.col_perm_0 is not None
    A, B, cp, err = fit_mod.permuted_table_fit(
        emb.weight, 4, rule="slots", n_iter=3, tol=0.25, n_restarts=2, seed=7
    )
    assert layer.approximation_error == err
    assert torch.equal(layer.col_perm_0, cp)
    # the default seed (0) reaches the fit too
    KroneckerEmbedding.from_embedding(emb, 4)
    assert calls[-1][1] == {"rule": None, "n_iter": None, "tol": None, "n_restarts": 1,
                            "seed": 0}  # fmt: skip


def test_from_embedding_hands_every_option_to_kron_decompose(monkeypatch):
    calls = _record(monkeypatch, emb_mod, "kron_decompose")
    emb = torch.nn.Embedding(10, 6)
    layer = KroneckerEmbedding.from_embedding(
        emb, 3, method="kron", rule="assign", n_iter=4, tol=0.5, n_restarts=3, seed=11
    )
    ((args, kwargs),) = calls
    assert args[0] is emb.weight and args[2] == 1
    assert tuple(args[1].a) == (10, 2) and tuple(args[1].b) == (1, 3)
    assert kwargs == {"method": "kron", "permute": "none", "rule": "assign", "n_iter": 4,
                      "tol": 0.5, "n_restarts": 3, "seed": 11}  # fmt: skip
    assert layer.col_perm_0 is None and layer.implementation == "factorized"
    KroneckerEmbedding.from_embedding(emb, 3, method="permuted_kron", permute=False)
    assert calls[-1][1]["permute"] == "none" and calls[-1][1]["method"] == "permuted_kron"
    with pytest.raises(ValueError, match="needs method='permuted_kron'"):
        KroneckerEmbedding.from_embedding(emb, 3, method="kron", permute=True)
    assert calls[-1][1]["permute"] == "cols" and len(calls) == 3


def test_compressing_again_keeps_the_layer_implementation_and_dtype():
    emb = torch.nn.Embedding(10, 8).double()
    first = KroneckerEmbedding.from_embedding(emb, 2, n_iter=1, implementation="reconstructed")
    second = KroneckerEmbedding.from_embedding(first, 2, n_iter=1)
    assert second.implementation == "reconstructed" and second.level_factors == [2, 2]
    assert second.table.dtype == torch.float64 and second.factors[1].dtype == torch.float64
    assert torch.equal(second.factors[1], first.factors[0])
    assert torch.equal(second.col_perm_1, first.col_perm_0)
    assert second.embedding_dim == 8 and second.num_embeddings == 10


def test_embedding_messages_are_exact():
    with pytest.raises(ValueError, match=_full("factors must name at least one level (e.g. (2,))")):
        KroneckerEmbedding(6, 4, ())
    with pytest.raises(
        ValueError, match=_full("the product of factors [3] = 3 must divide embedding_dim 4")
    ):
        KroneckerEmbedding(6, 4, (3,))
    with pytest.raises(
        ValueError, match=_full("permute must be a bool or one bool per level (2), got [True]")
    ):
        KroneckerEmbedding(6, 4, (2, 2), permute=[True])
    with pytest.raises(
        ValueError,
        match=_full(
            "embedding.max_norm is not supported by KroneckerEmbedding (it renormalises "
            "looked-up rows in place, which a factored table cannot do)"
        ),
    ):
        KroneckerEmbedding.from_embedding(torch.nn.Embedding(6, 4, max_norm=1.0))
    with pytest.raises(
        TypeError,
        match=_full("embedding must be a torch.nn.Embedding or KroneckerEmbedding, got Linear"),
    ):
        KroneckerEmbedding.from_embedding(torch.nn.Linear(4, 6))
    with pytest.raises(
        ValueError,
        match=_full(
            "k = 3 must divide the embedding table's width 4 and leave at least 2 columns "
            "(d % k == 0 and d / k >= 2)"
        ),
    ):
        KroneckerEmbedding.from_embedding(torch.nn.Embedding(6, 4), 3)
    with pytest.raises(
        ValueError, match=_full("k = 4 equals the table's width 4: nothing left to factor")
    ):
        KroneckerEmbedding.from_embedding(torch.nn.Embedding(6, 4), 4)


def _settings(**kw):
    from types import SimpleNamespace

    base = {"shape": None, "b_shape": [2, 1], "rank": 1, "permute": "rows", "repeat": 1,
            "method": "permuted_kron", "implementation": "factorized", "rule": None,
            "n_iter": 2, "tol": None, "n_restarts": 1, "seed": 0}  # fmt: skip
    return SimpleNamespace(**{**base, **kw})


def test_plan_messages_are_exact():
    emb = torch.nn.Embedding(10, 8)
    with pytest.raises(
        ValueError,
        match=_full(
            "module 'wte': embeddings take B factors of shape [k, 1] (the d×V matrix → "
            "(d/k)×V ⊗ k×1), got B (2, 2)"
        ),
    ):
        KroneckerEmbedding.plan(emb, _settings(b_shape=[2, 2]), name="wte")
    with pytest.raises(
        ValueError, match=_full("module 'module': embeddings are compressed at rank 1, got rank=2")
    ):
        KroneckerEmbedding.plan(emb, _settings(rank=2))
    with pytest.raises(
        ValueError,
        match=_full(
            "module 'module': permute='cols' would permute the vocabulary, which a 1×k "
            "factor makes useless; use 'rows' (the feature side) or 'none'"
        ),
    ):
        KroneckerEmbedding.plan(emb, _settings(permute="cols"))
    with pytest.raises(
        ValueError,
        match=_full(
            "module 'module': factoring the table 10×2 by 1×4 needs 4 to divide 2 and leave "
            "at least 2 columns (repeat=2)"
        ),
    ):
        KroneckerEmbedding.plan(emb, _settings(b_shape=[4, 1], repeat=2))
    p = KroneckerEmbedding.plan(emb, _settings(permute="none"))
    assert p.permute == "none" and p.rank == 1 and p.repeat == 1 and p.in_features == 10


def test_from_module_hands_the_plan_and_settings_to_from_embedding(monkeypatch):
    calls = _record(monkeypatch, KroneckerEmbedding, "from_embedding")
    from tqla_torch.nn.base import seed_for

    st = _settings(b_shape=[4, 1], method="kron", permute="none", implementation="reconstructed",
                   rule="assign", n_iter=3, tol=0.5, n_restarts=2, seed=5)  # fmt: skip
    emb = torch.nn.Embedding(10, 8).double()
    KroneckerEmbedding.from_module(emb, st, name="wte")
    ((args, kwargs),) = calls
    assert args == (emb, 4)
    assert kwargs == {"method": "kron", "permute": False, "implementation": "reconstructed",
                      "rule": "assign", "n_iter": 3, "tol": 0.5, "n_restarts": 2,
                      "seed": seed_for(5, "wte")}  # fmt: skip
    calls.clear()
    KroneckerEmbedding.from_module(emb, _settings(repeat=2, n_iter=1), name="wte")
    assert [c[1]["seed"] for c in calls] == [seed_for(0, "wte"), seed_for(0, "wte#1")]
    assert all(c[1]["permute"] is True for c in calls)


# -- the Gram fit -------------------------------------------------------------------------
def test_gram_fit_defaults_are_permuted_krons():
    pk = _defaults(permuted_kron)
    assert fit_mod._DEFAULTS == {k: pk[k] for k in ("rule", "n_iter", "tol", "solver")}
    assert _defaults(fit_mod.gram_column_fit) == {
        "rank": 1, "rule": None, "n_iter": None, "tol": None, "n_restarts": 1, "seed": None,
        "solver": None,
    }  # fmt: skip
    assert _defaults(fit_mod.permuted_table_fit) == {
        "rule": None, "n_iter": None, "tol": None, "n_restarts": 1, "seed": None,
    }  # fmt: skip


def test_gram_fit_hands_its_options_to_each_start(monkeypatch):
    starts = _record(monkeypatch, fit_mod, "_run_start")
    runs = _record(monkeypatch, fit_mod, "_GramRun")
    W = torch.randn(20, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    fit_mod.gram_column_fit(W, 4, 2, rule="slots", n_iter=3, tol=0.5, n_restarts=2, seed=3,
                            solver="scipy")  # fmt: skip
    assert len(starts) == 2
    for args, kwargs in starts:
        assert args[2:] == ("slots", 3, 0.5) and kwargs == {}
    ((args, kwargs),) = runs
    assert args[0] is W and args[2:5] == (4, 2, "scipy") and kwargs == {}
    G = fit_mod.column_gram(W)
    np.testing.assert_array_equal(args[1], G)
    assert args[5] == float(np.trace(G))
    assert starts[0][0][1].tolist() == list(range(8))
    assert starts[1][0][1].tolist() == np.random.default_rng(3).permutation(8).tolist()
    starts.clear()
    runs.clear()
    fit_mod.gram_column_fit(W, 2)
    d = fit_mod._DEFAULTS
    assert starts[0][0][2:] == (d["rule"], d["n_iter"], d["tol"]) and len(starts) == 1
    assert runs[0][0][2:5] == (2, 1, d["solver"])


def test_table_fit_hands_its_options_to_the_gram_fit(monkeypatch):
    calls = _record(monkeypatch, fit_mod, "gram_column_fit")
    T = torch.randn(12, 8, generator=torch.Generator().manual_seed(1)).half()
    A, B, cp, err = fit_mod.permuted_table_fit(T, 4, rule="assign", n_iter=2, tol=0.5,
                                               n_restarts=2, seed=9)  # fmt: skip
    ((args, kwargs),) = calls
    assert args[0].dtype == torch.float32 and args[1:] == (4, 1)
    torch.testing.assert_close(args[0], T.float(), rtol=0, atol=0)
    assert kwargs == {"rule": "assign", "n_iter": 2, "tol": 0.5, "n_restarts": 2, "seed": 9}
    assert A.dtype == torch.float32 and B.dtype == torch.float32 and cp.dtype == torch.int64
    assert A.shape == (1, 12, 2) and B.shape == (1, 1, 4)


def test_gram_fit_messages_are_exact():
    W = torch.randn(6, 8, dtype=torch.float64)
    for k in (1, 3, 8):
        with pytest.raises(
            ValueError,
            match=_full(f"k = {k} must be >= 2, divide the width 8 and leave >= 2 groups"),
        ):
            fit_mod.gram_column_fit(W, k)
    for r in (0, 3):
        with pytest.raises(ValueError, match=_full(f"rank must be between 1 and k = 2, got {r}")):
            fit_mod.gram_column_fit(W, 2, r)
    with pytest.raises(
        ValueError, match=_full(f"rule must be one of {perm_mod.RULES}, got 'nope'")
    ):
        fit_mod.gram_column_fit(W, 2, rule="nope")


# -- permuted_kron ------------------------------------------------------------------------
def test_permuted_kron_defaults_are_the_documented_ones():
    d = _defaults(permuted_kron)
    assert d == {
        "rank": 1, "rule": "slots+assign", "permute": "both", "n_iter": 10, "tol": 1e-4,
        "n_restarts": 1, "rng": None, "kernel": "auto", "solver": "auto", "warm_start": False,
        "max_cost_bytes": None, "callback": None,
    }  # fmt: skip
    doc = permuted_kron.__doc__
    assert '``"slots+assign"`` (default)' in doc


def test_permuted_kron_hands_every_option_to_each_start(monkeypatch):
    runs = _record(monkeypatch, perm_mod, "_Run")
    rngs = _record(monkeypatch, perm_mod, "check_rng")
    maxb = _record(monkeypatch, perm_mod, "check_max_bytes")
    W = np.random.default_rng(0).standard_normal((8, 6))
    gen = np.random.default_rng(4)
    P = permuted_kron(W, ((4, 3), (2, 2)), 1, rule="slots", permute="both", n_iter=2, tol=0.0,
                      n_restarts=2, rng=gen, kernel="numpy", solver="scipy", warm_start=True,
                      max_cost_bytes=10**6)  # fmt: skip
    assert rngs == [((gen,), {})]
    assert maxb == [((10**6, "max_cost_bytes"), {})]
    assert len(runs) == 2
    for args, kwargs in runs:
        assert args[0] is W and args[1].a == (4, 3) and args[1].b == (2, 2)
        assert args[2] == 1 and args[4] == pytest.approx(np.linalg.norm(W), rel=1e-12)
        assert args[5] is gen and args[6:10] == ("numpy", "scipy", True, 10**6)
        assert args[10] is runs[0][0][10] and args[10] == P.timings and kwargs == {}


def test_estimator_hands_every_option_to_permuted_kron(monkeypatch):
    calls = _record(monkeypatch, perm_mod, "permuted_kron")
    W = np.random.default_rng(1).standard_normal((8, 6))
    kw = {"rule": "assign", "permute": "rows", "n_iter": 2, "tol": 0.5, "n_restarts": 2,
          "rng": 3, "kernel": "numpy", "solver": "scipy", "warm_start": True,
          "max_cost_bytes": 10**6}  # fmt: skip
    est = PermutedKroneckerApprox(((4, 3), (2, 2)), rank=2, **kw).fit(W)
    ((args, kwargs),) = calls
    assert args[0] is W and args[2] == 2 and kwargs == kw
    assert est.errors_ == est.result_.errors and est.n_iter_ == est.result_.n_iter
    np.testing.assert_array_equal(est.row_perm_, est.result_.row_perm)
    np.testing.assert_array_equal(est.col_perm_, est.result_.col_perm)


def test_permuted_kron_messages_are_exact():
    W = np.zeros((8, 6))
    s = ((4, 3), (2, 2))
    with pytest.raises(ValueError, match=_full(f"rule must be one of {perm_mod.RULES}, got 'x'")):
        permuted_kron(W, s, rule="x")
    with pytest.raises(
        ValueError, match=_full(f"permute must be one of {perm_mod.PERMUTES}, got 'x'")
    ):
        permuted_kron(W, s, permute="x")
    with pytest.raises(TypeError, match=_full("callback must be callable, got int")):
        permuted_kron(W, s, callback=3)
    with pytest.raises(TypeError, match=_full("tol must be a number >= 0, got 'a'")):
        permuted_kron(W, s, tol="a")
    with pytest.raises(ValueError, match=_full("tol must be a number >= 0, got -1.0")):
        permuted_kron(W, s, tol=-1)
    with pytest.raises(ValueError, match=_full("tol must be a number >= 0, got nan")):
        permuted_kron(W, s, tol=float("nan"))


def test_svd_kernel_choice():
    from tqla._array import as_float_matrix
    from tqla._kernels import available

    xp, _ = as_float_matrix(np.zeros((2, 2)), "W")
    assert perm_mod._svd_kernel("numpy", "scipy", xp) == "numpy"
    assert perm_mod._svd_kernel("nope", "scipy", xp) == "auto"
    assert perm_mod._svd_kernel("auto", "scipy", xp) == "auto"
    want = "numba" if "numba" in available("rearranged_gram") else "auto"
    assert perm_mod._svd_kernel("auto", "auto", xp) == want
    assert perm_mod._svd_kernel("auto", "jv", xp) == want
    assert perm_mod._svd_kernel("auto", ("jv", "scipy"), xp) == want
