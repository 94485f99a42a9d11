"""LowRankLinear / LowRankEmbedding: fits, plans and messages (found by mutation testing).

Each test states one fact the layers promise and fails on a small bug that the round-trip
tests of test_layers.py / test_nn_registry.py let through (listed in
benchmarks/results/mutation_2026-11-30.md).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from tqla import truncated_svd, whitened_svd  # noqa: E402
from tqla_torch.nn import LowRankEmbedding, LowRankLinear  # noqa: E402


def _settings(**kw):
    base = {"rank": None, "n_params": None, "repeat": 1, "implementation": "factorized",
            "method": "svd"}  # fmt: skip
    return SimpleNamespace(**{**base, **kw})


def _moment(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(4 * n, n, dtype=torch.float64, generator=g) * torch.linspace(0.1, 3, n)
    return X.T @ X / (4 * n)


def test_activation_aware_fit_is_the_whitened_svd_with_its_plain_error():
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 6).double()
    W = lin.weight.detach()
    C = _moment(8, 1)
    U, s, Vh = whitened_svd(W, C, 2, damp=0.25)
    want = (U * s) @ Vh
    for layer in (
        LowRankLinear.from_dense(W, None, 2, moment=C, damp=0.25),
        LowRankLinear.from_module(lin, _settings(rank=2), moment=C, damp=0.25),
    ):
        torch.testing.assert_close(layer.to_dense(), want, rtol=1e-10, atol=1e-12)
        err = float(torch.linalg.norm(W - want) / torch.linalg.norm(W))
        assert layer.approximation_error == pytest.approx(err, rel=1e-9)
    # without a moment: the plain truncated SVD
    U, s, Vh = truncated_svd(W, 2)
    layer = LowRankLinear.from_module(lin, _settings(rank=2))
    torch.testing.assert_close(layer.to_dense(), (U * s) @ Vh, rtol=1e-10, atol=1e-12)


def test_plans_count_features_and_parameters():
    lin = torch.nn.Linear(8, 6)
    p = LowRankLinear.plan(lin, _settings(rank=2))
    assert (p.in_features, p.out_features, p.rank) == (8, 6, 2)
    assert p.params_after == 2 * (8 + 6) + 6
    p = LowRankLinear.plan(torch.nn.Linear(8, 6, bias=False), _settings(rank=2))
    assert p.params_after == 2 * (8 + 6)
    emb = torch.nn.Embedding(10, 8)
    p = LowRankEmbedding.plan(emb, _settings(rank=3))
    assert (p.in_features, p.out_features, p.params_after) == (10, 8, 3 * (10 + 8))
    with pytest.raises(ValueError, match=r"^module 'e': repeat=2 applies to Kronecker methods$"):
        LowRankEmbedding.plan(emb, _settings(rank=3, repeat=2), name="e")


def test_constructors_validate_the_rank_with_its_name():
    with pytest.raises(ValueError, match=r"^rank must be a positive integer, got 0$"):
        LowRankLinear(8, 6, 0)
    with pytest.raises(ValueError, match=r"^rank must be <= min\(in_features, out_features\) "
                                         r"= 6, got 7$"):  # fmt: skip
        LowRankLinear(8, 6, 7)
    with pytest.raises(ValueError, match=r"^rank must be <= min\(num_embeddings, "
                                         r"embedding_dim\) = 8, got 9$"):  # fmt: skip
        LowRankEmbedding(10, 8, 9)
    assert LowRankEmbedding(10, 8, 2).implementation == "factorized"
    with pytest.raises(ValueError, match=r"^n_params must be a positive integer, got 0$"):
        LowRankEmbedding.from_embedding(torch.nn.Embedding(10, 8), n_params=0)
    with pytest.raises(ValueError, match=r"^n_params must be a positive integer, got -3$"):
        LowRankLinear.from_dense(torch.zeros(6, 8), None, n_params=-3)


# Found by a fresh sample (seed 1) of tqla_torch/nn/lowrank.py's mutants
def test_error_of_a_small_weight_and_budgeted_ranks():
    torch.manual_seed(0)
    W = 0.01 * torch.randn(6, 8, dtype=torch.float64)  # ‖W‖² < 1
    layer = LowRankLinear.from_dense(W, None, 2)
    want = float(torch.linalg.norm(W - layer.to_dense().detach()) / torch.linalg.norm(W))
    assert want > 0.1 and layer.approximation_error == pytest.approx(want, rel=1e-9)
    # budgets: r·(8 + 6) + 6 nearest 40 → r = 2; the embedding r·(10 + 8) nearest 37 → r = 2
    p = LowRankLinear.plan(torch.nn.Linear(8, 6), _settings(n_params=40))
    assert p.rank == 2 and p.repeat == 1
    emb = LowRankEmbedding.from_embedding(torch.nn.Embedding(10, 8).double(), n_params=37)
    assert emb.rank == 2
    with pytest.raises(TypeError, match=r"^use LowRankEmbedding\.from_embedding for embeddings$"):
        LowRankLinear.from_linear(torch.nn.Embedding(10, 8), 2)


def test_embedding_init_has_unit_variance_and_padding_gets_no_gradient():
    torch.manual_seed(0)
    emb = LowRankEmbedding(50, 40, 4, padding_idx=3).double()
    total = 0.0
    with torch.no_grad():
        for _ in range(20):
            emb.reset_parameters()
            total += float((emb.to_dense() ** 2).mean())
    assert 0.85 < total / 20 < 1.15  # like torch.nn.Embedding's N(0, 1)
    emb(torch.tensor([3, 3, 5])).sum().backward()
    assert torch.all(emb.U.grad[3] == 0) and torch.any(emb.U.grad[5] != 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fits_stay_on_the_weight_device():
    lin = LowRankLinear.from_dense(torch.randn(6, 8, device="cuda"), None, 2)
    emb = LowRankEmbedding.from_embedding(torch.nn.Embedding(10, 8, device="cuda"), 2)
    assert lin.U.device.type == "cuda" and emb.U.device.type == "cuda"


# Found by a third sample (seed 2)
def test_linear_init_variance_and_the_default_module_name():
    torch.manual_seed(0)
    layer = LowRankLinear(48, 32, 4).double()
    total = 0.0
    with torch.no_grad():
        for _ in range(20):
            layer.reset_parameters()
            total += float((layer.to_dense() ** 2).mean())
    assert 0.85 < total / 20 * 3 * 48 < 1.15  # torch.nn.Linear's 1/(3·in)
    with pytest.raises(ValueError, match=r"^module 'module': svd rank 9 exceeds"):
        LowRankLinear.from_module(torch.nn.Linear(8, 6), _settings(rank=9))


# Found by a fresh sample (seed 6)
def test_token_frequency_fit_is_the_row_weighted_svd():
    """With frequencies f the embedding fit minimises Σ_v f_v·‖E_v − Ê_v‖²: the truncated
    SVD of diag(√f)·E, rows scaled back (the definition; ``damp`` defaults to 0)."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(10, 8).double()
    f = torch.linspace(0.5, 4.0, 10, dtype=torch.float64)
    E = emb.weight.detach()
    U, s, Vh = truncated_svd(f.sqrt()[:, None] * E, 3)
    want = (U * s) @ Vh / f.sqrt()[:, None]
    for layer in (
        LowRankEmbedding.from_embedding(emb, 3, moment=f),
        LowRankEmbedding.from_module(emb, _settings(rank=3), moment=f),
    ):
        torch.testing.assert_close(layer.to_dense(), want, rtol=1e-9, atol=1e-11)
    msg = (r"^moment of an embedding must be the \(10,\) vector of token frequencies or a pair "
           r"\(\(V,\) row weights, \(d, d\) moment\), got ")
    with pytest.raises(ValueError, match=msg + r"torch\.Size\(\[9\]\)$"):
        LowRankEmbedding.from_embedding(emb, 3, moment=f[:9])
    with pytest.raises(ValueError, match=msg + r"\(10,\)$"):
        LowRankEmbedding.from_embedding(emb, 3, moment=f.numpy())
    # a list or tuple is the two-sided pair, checked as such
    with pytest.raises(ValueError, match=r"^moment pair must be \(row weights \(V,\), column weight \(d, d\)\)"):
        LowRankEmbedding.from_embedding(emb, 3, moment=f.tolist())
    with pytest.raises(ValueError, match=r"^rank must be a positive integer, got 0$"):
        LowRankEmbedding(10, 8, 0)


def test_from_module_defaults_and_compressing_a_low_rank_embedding_again():
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 6).double()
    C = _moment(8, 2)
    # damp defaults to 0 on the module route, as on from_dense
    U, s, Vh = whitened_svd(lin.weight.detach(), C, 2, damp=0.0)
    layer = LowRankLinear.from_module(lin, _settings(rank=2), moment=C)
    torch.testing.assert_close(layer.to_dense(), (U * s) @ Vh, rtol=1e-9, atol=1e-11)
    with pytest.raises(ValueError, match=r"^module 'h': repeat=2 applies to embeddings only$"):
        LowRankLinear.plan(lin, _settings(rank=2, repeat=2), name="h")
    # a LowRankEmbedding compressed again: the truncated SVD of its own table
    low = LowRankEmbedding.from_embedding(torch.nn.Embedding(10, 8).double(), 4)
    U, s, Vh = truncated_svd(low.to_dense().detach(), 2)
    again = LowRankEmbedding.from_module(low, _settings(rank=2))
    torch.testing.assert_close(again.to_dense(), (U * s) @ Vh, rtol=1e-9, atol=1e-11)
    with pytest.raises(ValueError, match=r"^module 'module': svd rank 9 exceeds"):
        LowRankEmbedding.from_module(torch.nn.Embedding(10, 8), _settings(rank=9))


# Found by a fresh sample (seed 7)
@pytest.mark.parametrize("implementation", ["factorized", "reconstructed"])
def test_forward_runs_the_route_its_implementation_names(implementation, monkeypatch):
    """"factorized" multiplies by V then U (never forming U·V), "reconstructed" by U·V."""
    import tqla_torch.nn.lowrank as lr

    shapes: list[tuple] = []
    real = torch.nn.functional.linear

    def spy(x, w, b=None):
        shapes.append(tuple(w.shape))
        return real(x, w, b)

    torch.manual_seed(0)
    layer = LowRankLinear(8, 6, 2, implementation=implementation).double()
    x = torch.randn(3, 8, dtype=torch.float64)
    monkeypatch.setattr(lr.F, "linear", spy)
    y = layer(x)
    monkeypatch.undo()
    torch.testing.assert_close(y, x @ layer.to_dense().detach().T + layer.bias.detach())
    assert shapes == ([(2, 8), (6, 2)] if implementation == "factorized" else [(6, 8)])


def test_zero_weight_and_recompression_messages():
    zero = torch.zeros(6, 8, dtype=torch.float64)
    for moment in (None, _moment(8, 3)):
        layer = LowRankLinear.from_dense(zero, None, 2, moment=moment)
        assert layer.approximation_error == 0.0
        assert torch.count_nonzero(layer.to_dense()) == 0
    low = LowRankEmbedding(10, 8, 3)
    with pytest.raises(ValueError, match=r"^module 'e': svd rank 3 must be below the current "
                                         r"rank 3 to compress a LowRankEmbedding again$"):  # fmt: skip
        LowRankEmbedding.plan(low, _settings(rank=3), name="e")
