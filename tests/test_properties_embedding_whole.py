"""tqla_torch/nn/embedding.py stated function by function (issue 15, fifth pass).

Every argument each callee receives (spies compare the whole call), every default against
the signature, whole messages, whole ``repr``/``spec``/plans, the device of every created
tensor (the ``meta`` device and a recording ``TorchFunctionMode`` make a dropped ``device=``
visible without a GPU) and the route each option selects.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
from _spies import Spy  # noqa: E402
from torch import nn  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402

import tqla_torch.nn.embedding as emb_mod  # noqa: E402
from tqla.kron import KroneckerShape  # noqa: E402
from tqla_torch.nn.base import LayerPlan, seed_for  # noqa: E402
from tqla_torch.nn.embedding import KroneckerEmbedding, TiedEmbeddingHead  # noqa: E402
from tqla_torch.nn.lowrank import LowRankEmbedding  # noqa: E402


def _settings(**kw):
    base = {"shape": None, "b_shape": [2, 1], "rank": 1, "permute": "rows", "repeat": 1,
            "method": "permuted_kron", "implementation": "factorized", "rule": None,
            "n_iter": 1, "tol": None, "n_restarts": 1, "seed": 0}  # fmt: skip
    return SimpleNamespace(**{**base, **kw})


def _defaults(fn):
    return {
        k: p.default
        for k, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


_Spy = Spy


def _spy_init(monkeypatch, cls):
    calls, real = [], cls.__init__

    def init(self, *args, **kwargs):
        calls.append((args, kwargs))
        real(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", init)
    return calls


class _Record(TorchFunctionMode):
    """Records (source dtype) of ``Tensor.copy_`` and the kwargs of ``torch.arange``."""

    def __init__(self):
        super().__init__()
        self.copies, self.aranges = [], []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.copy_:
            self.copies.append((args[0].dtype, args[1].dtype))
        if func is torch.arange:
            self.aranges.append(dict(kwargs))
        return func(*args, **kwargs)


def _raises(exc, msg, fn, *args, **kwargs):
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    assert str(info.value) == msg


# ------------------------------------------------------------------ defaults
def test_defaults_against_the_signatures():
    assert _defaults(KroneckerEmbedding.__init__) == {
        "factors": (2,), "permute": False, "padding_idx": None, "implementation": "factorized",
        "approximation_error": None, "device": None, "dtype": None,
    }  # fmt: skip
    assert _defaults(KroneckerEmbedding.from_embedding) == {
        "k": 2, "method": "permuted_kron", "permute": None, "implementation": None,
        "rule": None, "n_iter": None, "tol": None, "n_restarts": 1, "seed": 0,
    }  # fmt: skip
    assert _defaults(KroneckerEmbedding.plan) == {"name": "module"}
    assert _defaults(KroneckerEmbedding.from_module) == {"name": ""}
    assert _defaults(TiedEmbeddingHead.__init__) == {"bias": None}


# ------------------------------------------------------------------ __init__
def test_init_whole():
    e = KroneckerEmbedding(5, 12, [2, 3], permute=[True, True], device="meta",
                           dtype=torch.float64)  # fmt: skip
    assert (e.table.shape, e.table.dtype, e.table.device.type) == ((5, 2), torch.float64, "meta")
    assert [(tuple(b.shape), b.dtype, b.device.type) for b in e.factors] == [
        ((1, 2), torch.float64, "meta"), ((1, 3), torch.float64, "meta")]  # fmt: skip
    for p, n in ((e.col_perm_0, 4), (e.col_perm_1, 12)):
        assert (tuple(p.shape), p.dtype, p.device.type) == ((n,), torch.int64, "meta")
    torch.manual_seed(0)
    e = KroneckerEmbedding(5, 12, [2, 3], permute=[False, True], padding_idx=-1,
                           approximation_error=0.5)  # fmt: skip
    assert e.col_perm_0 is None and torch.equal(e.col_perm_1, torch.arange(12))
    assert e.col_perm_1.dtype == torch.int64 and e.table.dtype == torch.float32
    assert (e.padding_idx, e.implementation, e.approximation_error) == (4, "factorized", 0.5)
    assert torch.count_nonzero(e.table[4]) == 0 and torch.count_nonzero(e.table[:4]) == 8
    assert all(torch.equal(b, torch.ones_like(b)) for b in e.factors)
    assert e.extra_repr() == (
        "5, 12, factors=5×2 ⊗ 1×2 ⊗ 1×3, col_perms=[False, True], "
        "params=15, dense_params=60, padding_idx=4"
    )
    assert e.spec() == {"type": "KroneckerEmbedding", "num_embeddings": 5, "embedding_dim": 12,
                        "factors": [2, 3], "permute": [False, True], "padding_idx": 4,
                        "implementation": "factorized"}  # fmt: skip
    assert (e.n_levels, e.level_factors) == (2, [2, 3])
    both = KroneckerEmbedding(5, 12, [2, 3], permute=True, implementation="reconstructed")
    assert torch.equal(both.col_perm_0, torch.arange(4)) and both.implementation == "reconstructed"
    assert KroneckerEmbedding(5, 12, [2, 3]).col_perm_1 is None
    torch.manual_seed(1)
    big = KroneckerEmbedding(400, 20, [2])
    assert 0.9 < float(big.table.detach().var()) < 1.1
    assert abs(float(big.table.detach().mean())) < 0.05


def test_init_messages_whole():
    K = KroneckerEmbedding
    _raises(ValueError, "num_embeddings must be a positive integer, got 0", K, 0, 4)
    _raises(ValueError, "embedding_dim must be a positive integer, got 0", K, 5, 0)
    _raises(ValueError, "factors[i] must be a positive integer, got 0", K, 5, 4, [2, 0])
    _raises(ValueError, "factors must name at least one level (e.g. (2,))", K, 5, 4, [])
    _raises(
        ValueError,
        "the product of factors [2, 3] = 6 must divide embedding_dim 8",
        K,
        5,
        8,
        [2, 3],
    )
    _raises(
        ValueError,
        "permute must be a bool or one bool per level (2), got [True]",
        K,
        5,
        8,
        [2, 2],
        permute=[1],
    )
    _raises(ValueError, "padding_idx must be within num_embeddings, got 5", K, 5, 4,
            padding_idx=5)  # fmt: skip


# ------------------------------------------------------------------ from_embedding
def test_from_embedding_messages_whole():
    E = KroneckerEmbedding.from_embedding
    _raises(
        ValueError,
        "embedding.max_norm is not supported by KroneckerEmbedding (it renormalises "
        "looked-up rows in place, which a factored table cannot do)",
        E, nn.Embedding(5, 8, max_norm=1.0),
    )  # fmt: skip
    _raises(
        TypeError, "embedding must be a torch.nn.Embedding or KroneckerEmbedding, got Linear",
        E, nn.Linear(2, 2),
    )  # fmt: skip
    _raises(
        ValueError,
        "k = 3 must divide the embedding table's width 8 and leave at least 2 columns "
        "(d % k == 0 and d / k >= 2)",
        E, nn.Embedding(5, 8), 3,
    )  # fmt: skip
    _raises(ValueError, "k = 8 equals the table's width 8: nothing left to factor", E,
            nn.Embedding(5, 8), 8)  # fmt: skip
    _raises(ValueError, "k must be a positive integer, got -2", E, nn.Embedding(5, 8), -2)


@pytest.mark.parametrize(
    "method, permute, route",
    [("permuted_kron", None, "table"), ("permuted_kron", False, "kron"),
     ("kron", None, "kron"), ("permuted_kron", True, "table")],
)  # fmt: skip
def test_from_embedding_calls_its_fit_and_builds_the_layer_whole(
    method, permute, route, monkeypatch
):
    torch.manual_seed(2)
    emb = nn.Embedding(6, 8, padding_idx=2).double()
    table = _Spy(emb_mod.permuted_table_fit)
    kron = _Spy(emb_mod.kron_decompose)
    perm = _Spy(emb_mod.as_perm)
    monkeypatch.setattr(emb_mod, "permuted_table_fit", table)
    monkeypatch.setattr(emb_mod, "kron_decompose", kron)
    monkeypatch.setattr(emb_mod, "as_perm", perm)
    inits = _spy_init(monkeypatch, KroneckerEmbedding)
    opts = {"rule": "slots", "n_iter": 2, "tol": 0.25, "n_restarts": 2, "seed": 3}
    layer = KroneckerEmbedding.from_embedding(emb, 2, method=method, permute=permute, **opts)
    permuted = method == "permuted_kron" if permute is None else permute
    if route == "table":
        ((args, kwargs),) = table.calls
        assert kron.calls == [] and args == (emb.weight, 2) and kwargs == opts
    else:
        ((args, kwargs),) = kron.calls
        assert table.calls == [] and args == (emb.weight, KroneckerShape((6, 4), (1, 2)), 1)
        assert kwargs == {"method": method, "permute": "cols" if permuted else "none", **opts}
    ((args, kwargs),) = perm.calls
    assert args[1:] == (8, "col_perm", emb.weight.device)
    ((args, kwargs),) = inits
    assert args == (6, 8, [2])
    assert kwargs == {"permute": [permuted], "padding_idx": 2, "implementation": "factorized",
                      "approximation_error": layer.approximation_error,
                      "device": emb.weight.device, "dtype": torch.float64}  # fmt: skip
    assert (layer.col_perm_0 is not None) == permuted
    dense, w = layer.to_dense().detach(), emb.weight.detach()
    rel = float(torch.linalg.norm(w - dense) / torch.linalg.norm(w))
    assert layer.approximation_error == pytest.approx(rel, rel=1e-9)


@pytest.mark.parametrize("method", ["permuted_kron", "kron"])
def test_from_embedding_defaults_reach_the_fit(method, monkeypatch):
    table = _Spy(emb_mod.permuted_table_fit)
    kron = _Spy(emb_mod.kron_decompose)
    monkeypatch.setattr(emb_mod, "permuted_table_fit", table)
    monkeypatch.setattr(emb_mod, "kron_decompose", kron)
    emb = nn.Embedding(6, 8).double()
    layer = KroneckerEmbedding.from_embedding(emb, method=method)
    defaults = {"rule": None, "n_iter": None, "tol": None, "n_restarts": 1, "seed": 0}
    if method == "permuted_kron":
        assert table.calls[0] == ((emb.weight, 2), defaults)
    else:
        assert kron.calls[0][1] == {"method": "kron", "permute": "none", **defaults}
    assert layer.implementation == "factorized" and layer.level_factors == [2]
    assert KroneckerEmbedding(6, 8).approximation_error is None


def test_half_precision_tables_are_fitted_in_float32_and_copied_back(monkeypatch):
    torch.manual_seed(3)
    for method in ("permuted_kron", "kron"):
        emb = nn.Embedding(6, 8).to(torch.bfloat16)
        with _Record() as rec:
            layer = KroneckerEmbedding.from_embedding(emb, 2, method=method, n_iter=1)
        # the table and the factor are cast to the table's dtype before the copy
        assert rec.copies[:2] == [(torch.bfloat16, torch.bfloat16)] * 2
        assert layer.table.dtype == layer.factors[0].dtype == torch.bfloat16


def test_compressing_again_keeps_dtype_levels_and_implementation(monkeypatch):
    torch.manual_seed(4)
    emb = nn.Embedding(6, 16).double()
    one = KroneckerEmbedding.from_embedding(emb, 2, method="kron", implementation="reconstructed")
    inits = _spy_init(monkeypatch, KroneckerEmbedding)
    two = KroneckerEmbedding.from_embedding(one, 4, n_iter=1)
    ((args, kwargs),) = inits
    assert args == (6, 16, [4, 2])
    assert kwargs["permute"] == [True, False] and kwargs["implementation"] == "reconstructed"
    assert kwargs["padding_idx"] is None and kwargs["dtype"] == torch.float64
    assert torch.equal(two.factors[1], one.factors[0]) and two.col_perm_1 is None
    assert KroneckerEmbedding.from_embedding(one, 2, implementation="factorized",
                                             n_iter=1).implementation == "factorized"  # fmt: skip
    torch.testing.assert_close(two.to_dense(), two(torch.arange(6)))


# ------------------------------------------------------------------ plan / from_module
def test_plan_whole(monkeypatch):
    emb = nn.Embedding(10, 8)
    spy = _Spy(emb_mod.resolve_out_in)
    monkeypatch.setattr(emb_mod, "resolve_out_in", spy)
    p = KroneckerEmbedding.plan(emb, _settings(b_shape=[2, 1], repeat=2), name="wte")
    assert spy.calls == [((8, 10), {"shape": None, "b_shape": [2, 1], "where": "module 'wte'"})]
    assert p == LayerPlan(layer="KroneckerEmbedding", in_features=10, out_features=8,
                          factors="2×10 ⊗ 2×1 ⊗ 2×1", shape=[[2, 10], [2, 1]], rank=1,
                          permute="rows", repeat=2, params_after=24)  # fmt: skip
    p = KroneckerEmbedding.plan(emb, _settings(shape=[[4, 10], [2, 1]], b_shape=None,
                                               permute="none"))  # fmt: skip
    assert spy.calls[1][1] == {
        "shape": [[4, 10], [2, 1]],
        "b_shape": None,
        "where": "module 'module'",
    }
    assert p == LayerPlan(layer="KroneckerEmbedding", in_features=10, out_features=8,
                          factors="4×10 ⊗ 2×1", shape=[[4, 10], [2, 1]], rank=1,
                          permute="none", repeat=1, params_after=42)  # fmt: skip
    # a compressed embedding: its table is factored, its levels stay behind the new ones
    ke = KroneckerEmbedding(10, 24, [3], permute=True)
    p = KroneckerEmbedding.plan(ke, _settings(b_shape=[2, 1], permute="both"))
    assert spy.calls[2][0] == (8, 10)
    assert p == LayerPlan(layer="KroneckerEmbedding", in_features=10, out_features=24,
                          factors="4×10 ⊗ 2×1 ⊗ 3×1", shape=[[4, 10], [2, 1]], rank=1,
                          permute="rows", repeat=1, params_after=45)  # fmt: skip


def test_plan_messages_whole():
    emb = nn.Embedding(10, 8)
    P = KroneckerEmbedding.plan
    _raises(
        ValueError,
        "module 'e': embeddings take B factors of shape [k, 1] (the d×V matrix → "
        "(d/k)×V ⊗ k×1), got B (2, 2)",
        P, emb, _settings(b_shape=[2, 2]), name="e",
    )  # fmt: skip
    _raises(ValueError, "module 'e': embeddings are compressed at rank 1, got rank=2", P, emb,
            _settings(rank=2), name="e")  # fmt: skip
    _raises(
        ValueError,
        "module 'e': permute='cols' would permute the vocabulary, which a 1×k factor makes "
        "useless; use 'rows' (the feature side) or 'none'",
        P, emb, _settings(permute="cols"), name="e",
    )  # fmt: skip
    _raises(
        ValueError,
        "module 'e': factoring the table 10×2 by 1×2 needs 2 to divide 2 and leave at "
        "least 2 columns (repeat=3)",
        P, emb, _settings(b_shape=[2, 1], repeat=3), name="e",
    )  # fmt: skip
    _raises(
        ValueError,
        "module 'module': factoring the table 10×8 by 1×8 needs 8 to divide 8 and leave at "
        "least 2 columns (repeat=1)",
        P, emb, _settings(b_shape=[8, 1]),
    )  # fmt: skip


@pytest.mark.parametrize("dense", [True, False])
def test_repeated_from_module_measures_the_error_by_lookups_on_the_table_device(dense, monkeypatch):
    torch.manual_seed(5)
    emb = nn.Embedding(6, 16).double()
    module = emb if dense else KroneckerEmbedding.from_embedding(emb, 2, n_iter=1)
    spy = _Spy(emb_mod.relative_error)
    monkeypatch.setattr(emb_mod, "relative_error", spy)
    with _Record() as rec:
        new = KroneckerEmbedding.from_module(module, _settings(repeat=2), name="e")
    ((args, kwargs),) = spy.calls
    ref = (emb.weight if dense else module.to_dense()).detach()
    assert kwargs == {} and torch.equal(args[1], ref)
    assert torch.equal(args[0](1, 4), new(torch.arange(1, 4)))
    assert {"device": ref.device} in rec.aranges
    want = float(torch.linalg.norm(new.to_dense().detach() - ref) / torch.linalg.norm(ref))
    assert new.approximation_error == pytest.approx(want, rel=1e-9)
    spy.calls.clear()
    one = KroneckerEmbedding.from_module(module, _settings(repeat=1))
    assert spy.calls == [] and one.n_levels == (1 if dense else 2)


def test_from_module_seeds_each_step_by_name(monkeypatch):
    spy = _Spy(KroneckerEmbedding.from_embedding.__func__)
    monkeypatch.setattr(KroneckerEmbedding, "from_embedding", classmethod(spy))
    emb = nn.Embedding(6, 8).double()
    KroneckerEmbedding.from_module(emb, _settings(repeat=2, seed=None, permute="none",
                                                  method="kron"))  # fmt: skip
    assert [c[1]["seed"] for c in spy.calls] == [None, None]
    assert [c[1]["permute"] for c in spy.calls] == [False, False]
    spy.calls.clear()
    KroneckerEmbedding.from_module(emb, _settings(repeat=2, seed=4))
    assert [c[1]["seed"] for c in spy.calls] == [seed_for(4, ""), seed_for(4, "#1")]
    assert [c[0][2] for c in spy.calls] == [2, 2]


# ------------------------------------------------------------------ compute
@pytest.mark.parametrize("implementation", ["factorized", "reconstructed"])
def test_attend_and_lookup_routes_whole(implementation, monkeypatch):
    torch.manual_seed(6)
    emb = nn.Embedding(6, 12, padding_idx=1).double()
    one = KroneckerEmbedding.from_embedding(emb, 2, n_iter=1)
    layer = KroneckerEmbedding.from_embedding(one, 3, n_iter=1, implementation=implementation)
    with torch.no_grad():
        layer.factors[1].copy_(torch.tensor([[0.5, -2.0]]))
        layer.col_perm_1.copy_(torch.tensor([3, 1, 0, 2, 11, 9, 4, 5, 6, 7, 8, 10]))
    E = layer.to_dense().detach()
    weights, lookups = [], []
    real_linear, real_embedding = emb_mod.F.linear, emb_mod.F.embedding

    def linear(x, w, *rest):
        weights.append(tuple(w.shape))
        return real_linear(x, w, *rest)

    def embedding(*args, **kwargs):
        lookups.append((args[2:], kwargs))
        return real_embedding(*args, **kwargs)

    monkeypatch.setattr(emb_mod.F, "linear", linear)
    monkeypatch.setattr(emb_mod.F, "embedding", embedding)
    h = torch.randn(2, 3, 12, dtype=torch.float64)
    torch.testing.assert_close(layer.attend(h), h @ E.T)
    assert weights == ([(6, 2)] if implementation == "factorized" else [(6, 12)])
    ids = torch.tensor([[0, 1], [5, 3]])
    torch.testing.assert_close(layer(ids), E[ids])
    assert lookups == [((1,), {})]
    _raises(ValueError, "attend expects 12 features in the last dimension, got shape (2, 11)",
            layer.attend, torch.zeros(2, 11))  # fmt: skip


# ------------------------------------------------------------------ TiedEmbeddingHead
def test_tied_head_whole():
    torch.manual_seed(7)
    emb = LowRankEmbedding(6, 4, 2).double()
    bias = torch.randn(6, dtype=torch.float64, requires_grad=True)
    head = TiedEmbeddingHead(emb, bias)
    assert head.bias is not bias and torch.equal(head.bias, bias)
    assert head.bias.data_ptr() != bias.data_ptr() and head.bias.grad_fn is None
    assert isinstance(head.bias, nn.Parameter) and head.embedding is emb
    assert (head.in_features, head.out_features) == (4, 6)
    assert repr(head) == (
        "TiedEmbeddingHead(in_features=4, out_features=6, tied to LowRankEmbedding, bias=True)"
    )
    assert head.spec() == {"type": "TiedEmbeddingHead", "bias": True}
    assert [n for n, _ in head.named_parameters()] == ["bias"]
    torch.testing.assert_close(head.to_dense(), emb.to_dense())
    h = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(head(h), h @ emb.to_dense().T + bias)
    plain = TiedEmbeddingHead(emb)
    assert plain.bias is None and list(plain.named_parameters()) == []
    assert plain.spec() == {"type": "TiedEmbeddingHead", "bias": False}
    assert repr(plain).endswith("tied to LowRankEmbedding, bias=False)")
    torch.testing.assert_close(plain(h), h @ emb.to_dense().T)
    other = KroneckerEmbedding(6, 4)
    plain.tie_to(other)
    assert plain.embedding is other and repr(plain).endswith("KroneckerEmbedding, bias=False)")
    _raises(
        TypeError,
        "embedding must provide attend(h) (a tqla_torch compressed embedding), got Embedding",
        TiedEmbeddingHead, nn.Embedding(6, 4),
    )  # fmt: skip


def test_from_module_reports_plan_errors_under_the_module_name():
    """from_module plans under ``name`` (``'module'`` when none is given): the plan's
    messages name the module being compressed."""
    emb = nn.Embedding(10, 8)
    F = KroneckerEmbedding.from_module
    _raises(ValueError, "module 'wte': embeddings are compressed at rank 1, got rank=2", F,
            emb, _settings(rank=2), name="wte")  # fmt: skip
    _raises(ValueError, "module 'module': embeddings are compressed at rank 1, got rank=2", F,
            emb, _settings(rank=2))  # fmt: skip
