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
