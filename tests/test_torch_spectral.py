"""tqla_torch with method="spectral_kron" and method="hetero_kron": config, compress,
inspect (Frobenius and spectral errors), save/load."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tqla_torch
from tqla_torch import CompressionConfig
from tqla_torch.nn import HeteroKroneckerLinear, SpectralKroneckerLinear

DTYPE = torch.float64


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 12)).to(DTYPE)


def test_compress_spectral_and_hetero_report_both_errors(tmp_path):
    model = _model()
    x = torch.randn(4, 12, dtype=DTYPE)
    cfg = CompressionConfig(
        target_modules=["0", "2"], method="spectral_kron", b_shape=[2, 4], rank=2, p=[8, 32],
        overrides={"2": {"method": "hetero_kron", "shapes": [[[4, 2], [3, 4]], [[2, 4], [6, 2]]],
                         "n_params": 70, "b_shape": None, "rank": None, "p": None}},
    )
    weights = [model[0].weight.detach().clone(), model[2].weight.detach().clone()]
    plan = tqla_torch.inspect(model, cfg)
    assert [m.layer for m in plan.modules] == ["SpectralKroneckerLinear", "HeteroKroneckerLinear"]
    rep = tqla_torch.compress(model, cfg)
    assert isinstance(model[0], SpectralKroneckerLinear)
    assert isinstance(model[2], HeteroKroneckerLinear)
    assert model[2].n_params <= 70
    assert rep.modules[1].params_after == model[2].n_params  # the fitted size, not the bound
    assert rep.modules[1].rank == model[2].n_terms
    assert rep.params_after == sum(p.numel() for p in model.parameters())
    for m in rep.modules:
        assert m.error is not None and m.spectral_error is not None
        assert 0 <= m.spectral_error <= 1.0 + 1e-12
    for W, layer, m in zip(weights, (model[0], model[2]), rep.modules):
        D = layer.to_dense().detach()
        true = float(torch.linalg.matrix_norm(W - D, ord=2) / torch.linalg.matrix_norm(W, ord=2))
        assert m.spectral_error == pytest.approx(true, rel=1e-9)
        assert m.error == pytest.approx(float((W - D).norm() / W.norm()), rel=1e-9)
    table = rep.table()
    assert "rel. spectral error" in table and "rel. error" in table
    y = model(x)
    tqla_torch.save_pretrained(model, tmp_path / "m")
    again = tqla_torch.from_pretrained(tmp_path / "m", base_model=_model(1))
    torch.testing.assert_close(again(x), y, rtol=0, atol=0)


def test_spectral_layer_never_worse_than_kron_svd():
    lin = nn.Linear(16, 16, dtype=DTYPE)
    st = CompressionConfig(target_modules=["m"], method="spectral_kron", b_shape=[4, 4],
                           rank=2, p=[8, 32]).settings_for("m")
    layer = SpectralKroneckerLinear.from_module(lin, st, name="m")
    assert layer.spectral_error <= layer.kron_svd_spectral_error * (1 + 1e-12)
    W = lin.weight.detach()
    got = float(torch.linalg.matrix_norm(W - layer.to_dense().detach(), ord=2)
                / torch.linalg.matrix_norm(W, ord=2))
    assert layer.spectral_error == pytest.approx(got, rel=1e-9)


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"method": "spectral_kron", "b_shape": [2, 4], "p": 1.5}, "p must be >= 2"),
        ({"method": "kron", "b_shape": [2, 4], "p": 8}, "p .* applies to method='spectral_kron'"),
        ({"method": "hetero_kron", "rank": 2}, "needs shapes"),
        ({"method": "hetero_kron", "shapes": [[[4, 3], [2, 4]]]}, "needs n_params"),
        ({"method": "hetero_kron", "shapes": [], "rank": 1}, "non-empty list"),
        ({"method": "hetero_kron", "shapes": [[[4, 3], [2, 4]]], "rank": 1, "permute": "rows"},
         "not supported by method='hetero_kron'"),
        ({"method": "kron", "b_shape": [2, 4], "norm": "spectral"}, "norm applies to"),
        ({"method": "hetero_kron", "shapes": [[[4, 3], [2, 4]]], "rank": 1, "norm": "l1"},
         "norm must be one of"),
    ],
)
def test_config_errors(fields, match):
    with pytest.raises(ValueError, match=match):
        CompressionConfig(target_modules=["m"], **fields).settings_for("m")


def test_hetero_budget_below_one_term():
    st = CompressionConfig(target_modules=["m"], method="hetero_kron",
                           shapes=[[[4, 3], [2, 4]]], n_params=10).settings_for("m")
    with pytest.raises(ValueError, match="below one term of the cheapest shape"):
        HeteroKroneckerLinear.plan(nn.Linear(12, 8), st, name="m")


def test_config_json_round_trip():
    cfg = CompressionConfig(target_modules=["m"], method="hetero_kron",
                            shapes=[[[4, 3], [2, 4]]], n_params=40, norm="spectral")
    assert CompressionConfig.from_json(cfg.to_json()) == cfg
