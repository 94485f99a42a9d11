"""HeteroKroneckerLinear: forward routes, plan counts and initial scale (found by mutation
testing; listed in benchmarks/results/mutation_2026-11-30.md)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from tqla_torch.nn import HeteroKroneckerLinear  # noqa: E402

SHAPES = [[[4, 3], [2, 4]], [[2, 6], [4, 2]]]  # two candidate shapes of an 8×12 weight


@pytest.mark.parametrize("implementation", ["factorized", "reconstructed"])
def test_both_routes_add_the_bias(implementation):
    torch.manual_seed(0)
    layer = HeteroKroneckerLinear(12, 8, SHAPES, [1, 2], implementation=implementation).double()
    x = torch.randn(5, 12, dtype=torch.float64)
    with torch.no_grad():
        want = x @ layer.to_dense().T + layer.bias
        torch.testing.assert_close(layer(x), want, rtol=1e-12, atol=1e-12)


def test_plan_bound_counts_the_bias_only_when_there_is_one():
    settings = SimpleNamespace(shapes=SHAPES, n_params=None, rank=2, repeat=1)
    largest = max(4 * 3 + 2 * 4, 2 * 6 + 4 * 2)
    p = HeteroKroneckerLinear.plan(torch.nn.Linear(12, 8, bias=False), settings)
    assert p.params_after == 2 * largest
    p = HeteroKroneckerLinear.plan(torch.nn.Linear(12, 8), settings)
    assert p.params_after == 2 * largest + 8


def test_initial_weights_have_linear_layers_variance():
    """E[W_ij²] = 1/(3·in), like torch.nn.Linear's U(−1/√in, 1/√in) (mean over resets)."""
    torch.manual_seed(0)
    layer = HeteroKroneckerLinear(48, 32, [[[4, 6], [8, 8]], [[8, 8], [4, 6]]], [2, 3]).double()
    total = 0.0
    with torch.no_grad():
        for _ in range(40):
            layer.reset_parameters()
            total += float((layer.to_dense() ** 2).mean())
    assert 0.87 < total / 40 * 3 * 48 < 1.15  # the seed gives 1.05; a 1/(4·in) scale 0.79


# Found by a fresh sample (seed 6) of tqla_torch/nn/spectral.py's mutants
@pytest.mark.parametrize("permute", ["none", "rows", "cols", "both"])
def test_spectral_fit_passes_every_option_to_the_solver(permute, monkeypatch):
    """p, n_iter (as max_iter), tol and the seeded generator reach the spectral solver on
    both routes (plain for permute="none", else inside the permuted search), and the layer
    keeps the permutations of the sides it was asked to permute."""
    import numpy as np

    import tqla
    from tqla_torch.compression import CompressionConfig
    from tqla_torch.nn import SpectralKroneckerLinear
    from tqla_torch.nn.spectral import _spectral_options

    seen: list[tuple[str, dict]] = []
    real = tqla.kron_spectral

    def spy(*args, **kwargs):
        seen.append(("plain", kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(tqla, "kron_spectral", spy)
    real_perm = tqla.permuted_kron_spectral

    def spy_perm(*args, spectral_options, **kwargs):
        seen.append(("permuted", spectral_options))
        return real_perm(*args, spectral_options=spectral_options, **kwargs)

    monkeypatch.setattr(tqla, "permuted_kron_spectral", spy_perm)
    st = CompressionConfig(target_modules=["m"], method="spectral_kron", b_shape=[2, 2],
                           rank=1, p=[4, 8], n_iter=3, tol=1e-3, permute=permute,
                           n_restarts=1).settings_for("m")  # fmt: skip
    layer = SpectralKroneckerLinear.from_module(torch.nn.Linear(8, 6).double(), st, name="m")
    route, opts = seen[0]
    assert route == ("plain" if permute == "none" else "permuted")
    assert list(opts["p"]) == [4, 8] and opts["max_iter"] == 3 and opts["tol"] == 1e-3
    assert isinstance(opts["rng"], np.random.Generator)
    assert (layer.output_perm is not None) == (permute in ("rows", "both"))
    assert (layer.input_perm is not None) == (permute in ("cols", "both"))
    # settings without the Schatten schedule (p) are accepted: the solver's default
    bare = SimpleNamespace(n_iter=None, tol=None)
    assert _spectral_options(bare, 7) == {"rng": 7}


def test_relative_spectral_error_of_a_zero_weight_and_of_half_precision():
    from tqla_torch.nn.spectral import _relative_spectral

    zero = torch.zeros(4, 3, dtype=torch.float64)
    assert _relative_spectral(zero, zero.clone()) == (0.0, 0.0)
    assert _relative_spectral(zero, torch.ones(4, 3, dtype=torch.float64)) == (
        float("inf"), float("inf"))  # fmt: skip
    # a half-precision layer's dense weight is compared in float64 (it used to raise)
    torch.manual_seed(0)
    lin = torch.nn.Linear(12, 8).to(torch.bfloat16)
    st = SimpleNamespace(shapes=SHAPES, n_params=None, rank=2, repeat=1, norm=None, seed=0,
                         implementation="factorized")  # fmt: skip
    layer = HeteroKroneckerLinear.from_module(lin, st)
    assert layer.A[0].dtype == torch.bfloat16 and 0 < layer.spectral_error < 1


def test_plan_with_a_budget_and_a_rank_takes_the_smaller_bound_and_repr_names_every_term():
    largest = max(4 * 3 + 2 * 4, 2 * 6 + 4 * 2)  # 20 parameters per term
    lin = torch.nn.Linear(12, 8)
    for n_params, rank, want in ((100, 2, 2 * largest + 8), (40, 3, 40)):
        st = SimpleNamespace(shapes=SHAPES, n_params=n_params, rank=rank, repeat=1)
        assert HeteroKroneckerLinear.plan(lin, st).params_after == want
    layer = HeteroKroneckerLinear(12, 8, SHAPES, [1, 2])
    assert layer.extra_repr() == "in=12, out=8, terms=[4×3⊗2×4×1, 2×6⊗4×2×2]"


@pytest.mark.parametrize("implementation", ["factorized", "reconstructed"])
def test_forward_runs_the_route_its_implementation_names(implementation, monkeypatch):
    """Only "reconstructed" forms W; both give x·Wᵀ + bias for any leading dimensions."""
    torch.manual_seed(0)
    layer = HeteroKroneckerLinear(12, 8, SHAPES, [1, 2], implementation=implementation).double()
    with torch.no_grad():
        W = layer.to_dense()
    calls: list[int] = []
    real = layer.to_dense

    def spy():
        calls.append(1)
        return real()

    monkeypatch.setattr(layer, "to_dense", spy)
    x = torch.randn(2, 3, 12, dtype=torch.float64)
    with torch.no_grad():
        y = layer(x)
    torch.testing.assert_close(y, x @ W.T + layer.bias.detach(), rtol=1e-12, atol=1e-12)
    assert y.shape == (2, 3, 8) and len(calls) == (implementation == "reconstructed")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_hetero_fit_stays_on_the_weight_device():
    lin = torch.nn.Linear(12, 8, device="cuda")
    st = SimpleNamespace(shapes=SHAPES, n_params=None, rank=1, repeat=1, norm=None, seed=0,
                         implementation="factorized")  # fmt: skip
    layer = HeteroKroneckerLinear.from_module(lin, st)
    assert {t.device.type for t in layer.state_dict().values()} == {"cuda"}
