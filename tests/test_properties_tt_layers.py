"""TTConv2d: settings reach the fit, the forward runs the route it names, messages name the
argument (found by mutation testing; listed in benchmarks/results/mutation_2026-11-30.md)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from tqla_torch.nn import TTConv2d  # noqa: E402


def _settings(**kw):
    base = {"tt_cores": None, "tt_modes": None, "eps": None, "tt_ranks": None, "rank": None,
            "n_params": None}  # fmt: skip
    return SimpleNamespace(**{**base, **kw})


def test_plan_takes_the_stated_tt_ranks_and_default_mode_count():
    conv = torch.nn.Conv2d(4, 8, 3, padding=1)
    p = TTConv2d.plan(conv, _settings(tt_ranks=[2, 3]))
    assert p.rank == 3 and p.factors == "TT 2·4 × 2·2 × window 3×3, ranks 1-2-3-1"
    # cores (1,2,2,2), (2,4,2,3), (3,1,9,1) and the bias
    assert p.params_after == 8 + 2 * 4 * 2 * 3 + 3 * 9 + 8
    layer = TTConv2d.from_conv2d(conv.double(), ranks=[2, 3])
    assert (layer.row_modes, layer.col_modes) == ((2, 4), (2, 2))  # d = 2 by default


@pytest.mark.parametrize("implementation", ["factorized", "reconstructed"])
def test_forward_runs_the_route_it_names(implementation, monkeypatch):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 8, 3, padding=1).double()
    layer = TTConv2d.from_conv2d(conv, ranks=[2, 3], implementation=implementation)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    want = torch.nn.functional.conv2d(x, layer.to_dense(), layer.bias, 1, 1)
    groups: list[int] = []
    real = torch.nn.functional.conv2d

    def spy(*args, **kwargs):
        groups.append(kwargs.get("groups", args[6] if len(args) > 6 else 1))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "conv2d", spy)
    y = layer(x)
    # reconstructed: one dense convolution; factorized: the depthwise window convolution
    assert groups == ([1] if implementation == "reconstructed" else [4])
    torch.testing.assert_close(y, want, rtol=1e-10, atol=1e-10)


def test_constructors_name_the_bad_argument():
    with pytest.raises(ValueError, match=r"^padding must be an int or a pair of ints, got "
                                         r"\(1, 2, 3\)$"):  # fmt: skip
        TTConv2d(4, 8, 3, (2, 4), (2, 2), [2, 3], padding=(1, 2, 3))
    conv = torch.nn.Conv2d(4, 8, 3, groups=2)
    with pytest.raises(ValueError, match=r"^TTConv2d supports groups=1, padding_mode='zeros' "
                                         r"and numeric padding, got groups=2"):  # fmt: skip
        TTConv2d.from_conv2d(conv, ranks=[2, 3])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_to_conv2d_stays_on_the_layer_device():
    layer = TTConv2d(4, 8, 3, (2, 4), (2, 2), [2, 3], device="cuda")
    assert layer.to_conv2d().weight.device == layer.cores[0].device
