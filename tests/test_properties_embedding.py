"""KroneckerEmbedding and TiedEmbeddingHead: settings reach the fit, plans count exactly
(found by mutation testing; listed in benchmarks/results/mutation_2026-11-30.md)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from tqla_torch.nn import KroneckerEmbedding, LowRankEmbedding  # noqa: E402
from tqla_torch.nn.embedding import TiedEmbeddingHead  # noqa: E402


@pytest.fixture
def fit_spies(monkeypatch):
    """The keyword arguments of the embedding's last Gram-route (``"table"``) and plain-route
    (``"kron"``) fit calls; both still run."""
    import tqla_torch.nn.embedding as emb_mod

    seen: dict[str, dict] = {}
    real_table, real_kron = emb_mod.permuted_table_fit, emb_mod.kron_decompose

    def spy_table(*args, **kwargs):
        seen["table"] = kwargs
        return real_table(*args, **kwargs)

    def spy_kron(*args, **kwargs):
        seen["kron"] = kwargs
        return real_kron(*args, **kwargs)

    monkeypatch.setattr(emb_mod, "permuted_table_fit", spy_table)
    monkeypatch.setattr(emb_mod, "kron_decompose", spy_kron)
    return seen


def _settings(**kw):
    base = {"shape": None, "b_shape": [2, 1], "rank": 1, "permute": "rows", "repeat": 1,
            "method": "permuted_kron", "implementation": "factorized", "rule": None,
            "n_iter": 2, "tol": None, "n_restarts": 1, "seed": 0}  # fmt: skip
    return SimpleNamespace(**{**base, **kw})


def _spy(monkeypatch) -> list[dict]:
    """Record the permutation side of every permuted fit: the core's ``permuted_kron`` and
    the embedding's Gram-matrix route (``permuted_table_fit``, which always permutes columns)."""
    import tqla.permuted
    import tqla_torch.nn.embedding as emb_mod

    calls: list[dict] = []
    real = tqla.permuted.permuted_kron
    real_table = emb_mod.permuted_table_fit

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    def spy_table(*args, **kwargs):
        calls.append({**kwargs, "permute": "cols"})
        return real_table(*args, **kwargs)

    monkeypatch.setattr(tqla.permuted, "permuted_kron", spy)
    monkeypatch.setattr(emb_mod, "permuted_table_fit", spy_table)
    return calls


def test_plan_takes_the_stated_shape_and_counts_exactly():
    emb = torch.nn.Embedding(10, 8)
    # the d×V table (8×10) as (4×10) ⊗ (2×1), stated by the full shape instead of b_shape
    p = KroneckerEmbedding.plan(emb, _settings(shape=[[4, 10], [2, 1]], b_shape=None))
    assert p.shape == [[4, 10], [2, 1]] and p.out_features == 8
    assert p.params_after == 10 * 4 + 2
    p = KroneckerEmbedding.plan(emb, _settings(b_shape=[2, 1], repeat=2))
    assert p.params_after == 10 * 2 + 2 + 2 and p.factors == "2×10 ⊗ 2×1 ⊗ 2×1"
    msg = r"^module 'module': factoring the table 10×2 by 1×4 needs 4"
    with pytest.raises(ValueError, match=msg):
        KroneckerEmbedding.plan(emb, _settings(b_shape=[4, 1], repeat=2))


def test_the_method_and_the_default_permutation_reach_the_solver(monkeypatch):
    calls = _spy(monkeypatch)
    emb = torch.nn.Embedding(10, 8).double()
    KroneckerEmbedding.from_embedding(emb, 2, n_iter=2)  # permuted_kron: columns by default
    assert [c["permute"] for c in calls] == ["cols"]
    KroneckerEmbedding.from_module(emb, _settings(method="kron", permute="none"))
    assert len(calls) == 1  # method="kron" never runs the permutation solver
    KroneckerEmbedding.from_module(emb, _settings())
    assert [c["permute"] for c in calls] == ["cols", "cols"]
    with pytest.raises(ValueError, match=r"^k must be a positive integer, got 0$"):
        KroneckerEmbedding.from_embedding(emb, 0)


def test_tied_head_adds_its_bias():
    torch.manual_seed(0)
    emb = LowRankEmbedding.from_embedding(torch.nn.Embedding(10, 8).double(), 3)
    bias = torch.randn(10, dtype=torch.float64)
    head = TiedEmbeddingHead(emb, bias)
    h = torch.randn(5, 8, dtype=torch.float64)
    torch.testing.assert_close(head(h), h @ emb.to_dense().T + bias)
    torch.testing.assert_close(TiedEmbeddingHead(emb)(h), h @ emb.to_dense().T)


# Found by a fresh sample (seed 1) of tqla_torch/nn/embedding.py's mutants
def test_embedding_messages_and_the_head_spec():
    with pytest.raises(ValueError, match=r"^factors\[i\] must be a positive integer, got 0$"):
        KroneckerEmbedding(10, 8, [0])
    emb = torch.nn.Embedding(10, 8)
    with pytest.raises(ValueError, match=r"^module 'e': embeddings take B factors of shape "
                                         r"\[k, 1\] .* got B \(2, 2\)$"):  # fmt: skip
        KroneckerEmbedding.plan(emb, _settings(b_shape=[2, 2]), name="e")
    low = LowRankEmbedding(10, 8, 2)
    assert TiedEmbeddingHead(low).spec() == {"type": "TiedEmbeddingHead", "bias": False}


def test_settings_reach_both_fit_routes_and_the_repr_names_the_chain(fit_spies):
    """``tol`` reaches the Gram-route fit, ``seed`` the plain route, the repr states the
    factor chain, and a wrong type names the rule (fresh mutation sample, seed 5)."""
    seen = fit_spies
    emb = torch.nn.Embedding(10, 8).double()
    layer = KroneckerEmbedding.from_embedding(emb, 2, n_iter=2, tol=0.25, seed=3)
    assert seen["table"]["tol"] == 0.25 and seen["table"]["seed"] == 3
    KroneckerEmbedding.from_embedding(emb, 2, method="kron", seed=7)
    assert seen["kron"]["seed"] == 7
    assert "factors=10×4 ⊗ 1×2," in repr(layer)
    with pytest.raises(TypeError, match=r"^embedding must be a torch\.nn\.Embedding or "
                       r"KroneckerEmbedding, got Linear$"):  # fmt: skip
        KroneckerEmbedding.from_embedding(torch.nn.Linear(2, 2), 2)


# Found by a fresh sample (seed 6) of tqla_torch/nn/embedding.py's mutants
def test_documented_defaults_of_the_layer_and_its_fit():
    """``KroneckerEmbedding(V, d)`` is one level of k = 2 without permutations, and
    ``from_embedding(emb)`` factors by k = 2 (as documented)."""
    layer = KroneckerEmbedding(10, 12)
    assert layer.level_factors == [2] and layer.col_perm_0 is None
    assert layer.table.shape == (10, 6)
    layer = KroneckerEmbedding(10, 12, [2, 3], permute=[False, True])
    assert layer.col_perm_0 is None and torch.equal(layer.col_perm_1, torch.arange(12))
    emb = torch.nn.Embedding(10, 12).double()  # 12: k = 2, 3, 4 and 6 all divide it
    fit = KroneckerEmbedding.from_embedding(emb, n_iter=1)
    assert fit.level_factors == [2] and fit.table.shape == (10, 6)


def test_from_module_passes_every_setting_to_each_step(monkeypatch):
    """Every field of the settings reaches ``from_embedding``, the seed mixed with the
    module's name (and the step, for repeats) by ``seed_for``."""
    from tqla_torch.nn.base import seed_for

    calls: list[dict] = []
    real = KroneckerEmbedding.from_embedding.__func__

    def spy(cls, embedding, k, **kwargs):
        calls.append({"k": k, **kwargs})
        return real(cls, embedding, k, **kwargs)

    monkeypatch.setattr(KroneckerEmbedding, "from_embedding", classmethod(spy))
    st = _settings(b_shape=[2, 1], repeat=2, rule="slots", n_iter=3, tol=0.125, n_restarts=2,
                   seed=11, implementation="reconstructed")  # fmt: skip
    KroneckerEmbedding.from_module(torch.nn.Embedding(10, 8).double(), st, name="wte")
    assert len(calls) == 2
    for step, c in enumerate(calls):
        assert c == {
            "k": 2, "method": "permuted_kron", "permute": True, "implementation": "reconstructed",
            "rule": "slots", "n_iter": 3, "tol": 0.125, "n_restarts": 2,
            "seed": seed_for(11, "wte#1" if step else "wte"),
        }  # fmt: skip
    assert calls[0]["seed"] != seed_for(None, "wte")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_kronecker_embedding_fit_stays_on_the_table_device():
    emb = torch.nn.Embedding(10, 8, device="cuda")
    for method in ("permuted_kron", "kron"):
        layer = KroneckerEmbedding.from_embedding(emb, 2, method=method, permute=True, n_iter=1)
        assert {t.device.type for t in layer.state_dict().values()} == {"cuda"}


# Found by a first sample (seed 6) of tqla_torch/nn/_embedding_fit.py's mutants
def test_permuted_table_fit_is_the_gram_fit_then_the_refit(monkeypatch):
    """Every option reaches ``gram_column_fit``; the factors are ``kron_svd`` of the table
    with its columns in K's order, and the error is that of the returned layer."""
    import numpy as np

    import tqla_torch.nn._embedding_fit as fit_mod
    from tqla.kron import kron_svd

    seen: list[dict] = []
    real = fit_mod.gram_column_fit

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(fit_mod, "gram_column_fit", spy)
    g = torch.Generator().manual_seed(0)
    table = torch.randn(30, 8, dtype=torch.float64, generator=g)
    opts = {"rule": "slots", "n_iter": 1, "tol": 0.5, "n_restarts": 2, "seed": 4}
    A, B, cp, err = fit_mod.permuted_table_fit(table, 2, **opts)
    assert seen == [opts]
    perm, errors = real(table, 2, 1, **opts)
    assert torch.equal(cp, torch.as_tensor(perm)) and err == errors[-1]
    K = kron_svd(table[:, np.argsort(perm)].numpy(), ((30, 4), (1, 2)), 1)
    torch.testing.assert_close(A, torch.from_numpy(K.A), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(B, torch.from_numpy(K.B), rtol=1e-12, atol=1e-12)
    dense = torch.kron(A[0], B[0])[:, cp]  # W ≈ K[:, col_perm]
    direct = float(torch.linalg.norm(table - dense) / torch.linalg.norm(table))
    assert err == pytest.approx(direct, rel=1e-9) and len(errors) == 2 and errors[1] < errors[0]


def test_gram_fit_uses_the_assignment_solver_it_is_given(monkeypatch):
    import tqla_torch.nn._embedding_fit as fit_mod

    solvers: list = []
    real = fit_mod.lsap

    def spy(cost, **kwargs):
        solvers.append(kwargs.get("solver"))
        return real(cost, **kwargs)

    monkeypatch.setattr(fit_mod, "lsap", spy)
    table = torch.randn(20, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fit_mod.gram_column_fit(table, 2, n_iter=2, solver="scipy")
    assert solvers and set(solvers) == {"scipy"}


# Found by a fresh sample (seed 7) of tqla_torch/nn/embedding.py's mutants
def test_every_option_reaches_both_fit_routes(fit_spies):
    seen = fit_spies
    emb = torch.nn.Embedding(10, 8).double()
    opts = {"rule": "slots", "n_iter": 2, "tol": 0.25, "n_restarts": 2, "seed": 3}
    layer = KroneckerEmbedding.from_embedding(emb, 2, **opts)
    assert seen["table"] == opts
    assert "col_perms=[True]" in layer.extra_repr()
    layer = KroneckerEmbedding.from_embedding(emb, 2, method="kron", **opts)
    assert {k: seen["kron"][k] for k in opts} == opts and seen["kron"]["permute"] == "none"
    assert "col_perms=[False]" in layer.extra_repr()


def test_compressing_again_keeps_the_earlier_levels_and_the_default_name(monkeypatch):
    """A third level leaves the two levels found before (factors and permutations) as they
    were, behind the new one; without a name, seeds and messages use the module's default."""
    torch.manual_seed(0)
    one = KroneckerEmbedding.from_embedding(torch.nn.Embedding(10, 16).double(), 2, n_iter=1)
    two = KroneckerEmbedding.from_embedding(one, 2, n_iter=1)
    three = KroneckerEmbedding.from_embedding(two, 2, n_iter=1)
    assert three.level_factors == [2, 2, 2]
    for i in range(2):
        assert torch.equal(three.factors[i + 1], two.factors[i])
        assert torch.equal(getattr(three, f"col_perm_{i + 1}"), getattr(two, f"col_perm_{i}"))
    msg = r"^module 'module': factoring the table 10×2 by 1×4 needs 4"
    with pytest.raises(ValueError, match=msg):
        KroneckerEmbedding.from_module(torch.nn.Embedding(10, 8), _settings(b_shape=[4, 1],
                                                                            repeat=2))
    from tqla_torch.nn.base import seed_for

    seeds: list = []
    real = KroneckerEmbedding.from_embedding.__func__

    def spy(cls, embedding, k, **kwargs):
        seeds.append(kwargs["seed"])
        return real(cls, embedding, k, **kwargs)

    monkeypatch.setattr(KroneckerEmbedding, "from_embedding", classmethod(spy))
    KroneckerEmbedding.from_module(torch.nn.Embedding(10, 8).double(), _settings(seed=5))
    assert seeds == [seed_for(5, "")]


# Found by a fresh sample (seed 8) of tqla_torch/nn/embedding.py's mutants
def test_the_repr_states_padding_idx_only_when_it_is_set():
    torch.manual_seed(0)
    plain = KroneckerEmbedding.from_embedding(torch.nn.Embedding(10, 8).double(), 2, n_iter=1)
    padded = KroneckerEmbedding.from_embedding(
        torch.nn.Embedding(10, 8, padding_idx=3).double(), 2, n_iter=1
    )
    assert plain.extra_repr().endswith(", dense_params=80")
    assert padded.extra_repr().endswith(", dense_params=80, padding_idx=3")


def test_repeating_on_a_compressed_embedding_measures_the_error_against_it():
    """``repeat > 1`` on a KroneckerEmbedding: the error of all the new steps together is
    relative to that layer's dense table (it has no ``weight``)."""
    torch.manual_seed(0)
    one = KroneckerEmbedding.from_embedding(torch.nn.Embedding(10, 16).double(), 2, n_iter=1)
    new = KroneckerEmbedding.from_module(one, _settings(repeat=2))
    assert new.level_factors == [2, 2, 2]
    with torch.no_grad():
        ref = one.to_dense()
        want = float(torch.linalg.norm(new.to_dense() - ref) / torch.linalg.norm(ref))
    assert new.approximation_error == pytest.approx(want, rel=1e-9)
