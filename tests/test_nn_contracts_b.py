"""More contracts of the layer modules (base, spectral), from the fourth mutation pass:
the hetero plan's fields against their definitions, the whole call of the whitened refit on
the permuting route, a zero weight on every spectral route, the plan's message naming the
module, ``compressible`` on each module kind, and ``from_spec`` without ``"type"``.
Fast: tiny shapes only."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from tqla.kron import KroneckerShape  # noqa: E402
from tqla_torch.compression.config import CompressionConfig  # noqa: E402
from tqla_torch.nn import base, spectral  # noqa: E402
from tqla_torch.nn.base import CompressedModule, LayerPlan  # noqa: E402
from tqla_torch.nn.lowrank import LowRankLinear  # noqa: E402


def _exact(msg: str) -> str:
    return "^" + re.escape(msg) + "$"


def _spectral_settings(**kw):
    fields = dict(target_modules=["m"], method="spectral_kron", b_shape=[4, 4], rank=2,
                  p=[8, 32], seed=3)
    fields.update(kw)
    return CompressionConfig(**fields).settings_for("m")


# ------------------------------------------------------------------ hetero plan
@pytest.mark.parametrize("n_params", [None, 120])
@pytest.mark.parametrize("use_bias", [True, False])
def test_hetero_plan_fields_are_their_definitions(n_params, use_bias):
    shapes = [[[4, 3], [2, 4]], [[2, 6], [4, 2]]]
    st = CompressionConfig(target_modules=["m"], method="hetero_kron", shapes=shapes,
                           rank=2).settings_for("m")
    st = SimpleNamespace(**{**vars(st), "n_params": n_params})  # the config allows one of them
    lin = nn.Linear(12, 8, bias=use_bias)
    plan = spectral.HeteroKroneckerLinear.plan(lin, st, name="m")
    bias = 8 if use_bias else 0
    biggest = max(KroneckerShape.of(s).n_params(1) for s in shapes)
    after = 2 * biggest + bias
    if n_params is not None:
        after = min(n_params, after)
    assert plan == LayerPlan(
        layer="HeteroKroneckerLinear", in_features=12, out_features=8,
        factors="4×3 ⊗ 2×4 | 2×6 ⊗ 4×2", shape=None, rank=2, permute="none", repeat=1,
        params_after=after,
    )


# ------------------------------------------------------------------ whitened refit call
@pytest.mark.parametrize("permute", ["rows", "cols", "both"])
def test_permuting_route_with_a_moment_passes_the_whole_call_to_the_refit(
    monkeypatch, permute
):
    calls = []
    real = spectral._whitened_refit

    def spy(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(spectral, "_whitened_refit", spy)
    torch.manual_seed(0)
    lin = nn.Linear(16, 16, dtype=torch.float64)
    M = torch.eye(16, dtype=torch.float32) * 2
    st = _spectral_settings(permute=permute, n_iter=4, tol=1e-3)
    layer = spectral.SpectralKroneckerLinear.from_module(
        lin, st, name="m", moment=M, damp=0.125)
    (args,) = calls
    W, Md, shape, rank, rp, cp, damp, opts = args
    assert torch.equal(W, lin.weight) and W.dtype == torch.float64
    assert torch.equal(Md, M.double()) and Md.dtype == torch.float64
    assert shape == KroneckerShape.of(st_shape(lin, st)) and rank == 2 and damp == 0.125
    assert (rp is None) == (permute == "cols") and (cp is None) == (permute == "rows")
    for got, mine in ((rp, layer.row_perm), (cp, layer.col_perm)):
        if got is not None:
            assert torch.equal(got.to(mine.device, mine.dtype), mine)
    assert set(opts) == {"rng", "p", "max_iter", "tol"}
    assert (opts["p"], opts["max_iter"], opts["tol"]) == ([8, 32], 4, 1e-3)
    assert layer.kron_svd_spectral_error is None
    assert layer.approximation_error == pytest.approx(
        base.relative_error(layer.to_dense(), lin.weight), rel=1e-12)


def st_shape(lin, st):
    return spectral.SpectralKroneckerLinear.plan(lin, st, name="m").shape


# ------------------------------------------------------------------ zero weight
@pytest.mark.parametrize("permute", ["none", "rows", "cols", "both"])
@pytest.mark.parametrize("with_moment", [False, True])
def test_zero_weight_on_every_route_gives_zeros_and_finite_errors(permute, with_moment):
    lin = nn.Linear(16, 16, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.zero_()
    M = torch.eye(16) if with_moment else None
    layer = spectral.SpectralKroneckerLinear.from_module(
        lin, _spectral_settings(permute=permute), name="m", moment=M)
    assert torch.equal(layer.to_dense(), torch.zeros(16, 16, dtype=torch.float64))
    assert layer.approximation_error == 0.0 and layer.spectral_error == 0.0
    if with_moment:
        assert layer.kron_svd_spectral_error is None
    else:
        assert layer.kron_svd_spectral_error == 0.0


# ------------------------------------------------------------------ the plan names the module
def test_spectral_from_module_message_names_the_module():
    lin = nn.Linear(16, 16)
    st = _spectral_settings(b_shape=[2, 2], rank=5)
    tail = "rank 5 exceeds the Kronecker rank bound min(p·q, s·t) = 4 of A (8, 8) ⊗ B (2, 2)"
    with pytest.raises(ValueError, match=_exact(f"module 'blk.attn': {tail}")):
        spectral.SpectralKroneckerLinear.from_module(lin, st, name="blk.attn")
    with pytest.raises(ValueError, match=_exact(f"module 'module': {tail}")):
        spectral.SpectralKroneckerLinear.from_module(lin, st)


# ------------------------------------------------------------------ compressible
def test_compressible_on_each_module_kind():
    from transformers.pytorch_utils import Conv1D

    yes = [nn.Linear(4, 3), Conv1D(3, 4), nn.Embedding(10, 4), nn.Conv2d(2, 4, 3)]
    no = [nn.ReLU(), nn.LayerNorm(4), nn.Sequential(nn.Linear(4, 3)), nn.Dropout()]
    for m in yes:
        assert CompressedModule.compressible(m) is True, m
    for m in no:
        assert CompressedModule.compressible(m) is False, m


# ------------------------------------------------------------------ from_spec without "type"
def test_from_spec_without_type():
    layer = LowRankLinear(6, 4, 2)
    spec = {k: v for k, v in layer.spec().items() if k != "type"}
    again = LowRankLinear.from_spec(spec)
    assert type(again) is LowRankLinear and again.spec() == layer.spec()
    with pytest.raises(ValueError, match=_exact(
            "unknown compressed layer type 'CompressedModule'; known: "
            f"{sorted(base.REGISTRY)}")):
        CompressedModule.from_spec(spec)


# ------------------------------------------------------------------ the plain start's error
@pytest.mark.parametrize("permute", ["rows", "cols", "both"])
def test_permuted_start_error_is_the_searchs_relative_spectral_error(monkeypatch, permute):
    import tqla

    results = []
    real = tqla.permuted_kron_spectral

    def spy(*args, **kwargs):
        results.append(real(*args, **kwargs))
        return results[-1]

    monkeypatch.setattr(tqla, "permuted_kron_spectral", spy)
    torch.manual_seed(1)
    lin = nn.Linear(16, 8, dtype=torch.float64)
    layer = spectral.SpectralKroneckerLinear.from_module(
        lin, _spectral_settings(b_shape=[2, 4], permute=permute), name="m")
    (P,) = results
    assert layer.kron_svd_spectral_error == pytest.approx(P.errors[0], rel=1e-12)


def test_a_layer_not_fitted_reports_no_spectral_errors():
    torch.manual_seed(0)
    fitted = spectral.SpectralKroneckerLinear.from_module(
        nn.Linear(16, 16, dtype=torch.float64), _spectral_settings(), name="m")
    again = spectral.SpectralKroneckerLinear.from_spec(fitted.spec())
    made = spectral.SpectralKroneckerLinear.from_factors(fitted.A.detach(), fitted.B.detach())
    for layer in (again, made):
        assert layer.spectral_error is None and layer.kron_svd_spectral_error is None
