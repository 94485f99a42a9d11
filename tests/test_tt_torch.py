"""TT layers of tqla_torch: TTLinear and TTConv2d."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tqla  # noqa: E402
from tqla_torch.nn.base import CompressedModule  # noqa: E402
from tqla_torch.nn.tt import TTConv2d, TTLinear, tt_forward, tt_modes, tt_rank_for_budget  # noqa: E402


def _lin(in_f=24, out_f=30, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(in_f, out_f).double()


@pytest.mark.parametrize("order", ["left_first", "right_first", None])
def test_tt_forward_matches_tqla_ttmatrix(order):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((30, 24))
    T = tqla.tt_matrix(W, (2, 3, 5), (2, 3, 4), ranks=[3, 4])
    cores = [torch.from_numpy(np.ascontiguousarray(G)) for G in T.cores]
    x = torch.from_numpy(rng.standard_normal((7, 24)))
    y = tt_forward(cores, x, order)
    np.testing.assert_allclose(y.numpy(), x.numpy() @ T.to_dense().T, atol=1e-12)


@pytest.mark.parametrize("order", ["left_first", "right_first"])
@pytest.mark.parametrize(
    "rm,cm,ranks",
    [
        ((40, 1), (1, 36), [5]),  # the low-rank form: MACs = parameters·tokens
        ((2, 40), (36, 2), [6]),  # wide right side (batched GEMMs, width ≥ 32)
        ((2, 3, 40), (3, 2, 33), [4, 5]),
        ((3, 1, 2), (1, 4, 3), [2, 3]),
    ],
)
def test_tt_forward_both_orders_every_shape_with_bias_and_grad(order, rm, cm, ranks):
    rng = np.random.default_rng(1)
    M, N = int(np.prod(rm)), int(np.prod(cm))
    T = tqla.tt_matrix(rng.standard_normal((M, N)), rm, cm, ranks=ranks)
    cores = [torch.from_numpy(np.ascontiguousarray(G)).requires_grad_(True) for G in T.cores]
    bias = torch.from_numpy(rng.standard_normal(M))
    x = torch.from_numpy(rng.standard_normal((5, N)))
    y = tt_forward(cores, x, order, bias=bias)
    ref = x.numpy() @ T.to_dense().T + bias.numpy()
    np.testing.assert_allclose(y.detach().numpy(), ref, atol=1e-10)
    y.square().sum().backward()  # the same gradient as through the dense weight
    from tqla_torch.nn._tt_forward import _dense

    dense_cores = [G.detach().clone().requires_grad_(True) for G in cores]
    (x @ _dense(dense_cores).T + bias).square().sum().backward()
    for a, b in zip(cores, dense_cores):
        torch.testing.assert_close(a.grad, b.grad)


def test_ttlinear_from_linear_forward_and_dense():
    lin = _lin()
    L = TTLinear.from_linear(lin, (2, 3, 5), (2, 3, 4), ranks=[3, 4])
    T = tqla.tt_matrix(lin.weight.detach(), (2, 3, 5), (2, 3, 4), ranks=[3, 4])
    x = torch.randn(2, 5, 24, dtype=torch.float64)
    ref = x @ T.to_dense().T + lin.bias
    torch.testing.assert_close(L(x), ref)
    torch.testing.assert_close(L.to_dense(), T.to_dense())
    L.implementation = "reconstructed"
    torch.testing.assert_close(L(x), ref)
    w = lin.weight.detach()
    err = float(torch.linalg.norm(w - T.to_dense()) / torch.linalg.norm(w))
    assert abs(L.approximation_error - err) < 1e-12
    assert L.n_params == T.n_params + 30


def test_ttlinear_exact_at_full_ranks_and_eps():
    lin = _lin()
    L = TTLinear.from_linear(lin, (5, 6), (4, 6))
    x = torch.randn(3, 24, dtype=torch.float64)
    torch.testing.assert_close(L(x), lin(x))
    L = TTLinear.from_linear(lin, (5, 6), (4, 6), eps=0.3)
    assert L.approximation_error <= 0.3


def test_ttlinear_from_conv1d_orientation():
    transformers = pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    conv = Conv1D(30, 24).double()  # nf=30 outputs, nx=24 inputs; weight (24, 30)
    L = TTLinear.from_conv1d(conv, (5, 6), (4, 6))  # exact: full ranks
    x = torch.randn(4, 24, dtype=torch.float64)
    torch.testing.assert_close(L(x), conv(x))
    assert L.source == "conv1d"
    del transformers


def test_ttlinear_default_modes_and_budget_rank():
    assert tt_modes(768, 3) == (8, 8, 12)
    assert tt_modes(3072, 3) == (12, 16, 16)
    r = tt_rank_for_budget((8, 8, 48), (8, 8, 12), 100_000)
    modes = (64, 64, 576)
    ranks = tqla.tt.check_ranks(r, modes)
    n = sum(ranks[k] * modes[k] * ranks[k + 1] for k in range(3))
    ranks2 = tqla.tt.check_ranks(r + 1, modes)
    n2 = sum(ranks2[k] * modes[k] * ranks2[k + 1] for k in range(3))
    assert n <= 100_000 < n2


def test_ttlinear_gradients_and_training_step():
    L = TTLinear(24, 30, (2, 3, 5), (2, 3, 4), ranks=[3, 4])
    x = torch.randn(8, 24)
    L(x).pow(2).sum().backward()
    assert all(G.grad is not None and G.grad.shape == G.shape for G in L.cores)
    assert L.bias.grad is not None


def test_ttlinear_spec_round_trip():
    lin = _lin()
    L = TTLinear.from_linear(lin, (2, 3, 5), (2, 3, 4), ranks=[3, 4])
    L2 = CompressedModule.from_spec(L.spec(), dtype=torch.float64)
    L2.load_state_dict(L.state_dict())
    x = torch.randn(3, 24, dtype=torch.float64)
    torch.testing.assert_close(L2(x), L(x))
    assert L2.spec() == L.spec()


def test_ttlinear_init_variance_like_linear():
    torch.manual_seed(0)
    L = TTLinear(768, 3072, (12, 16, 16), (8, 8, 12), ranks=8)
    var = float(L.to_dense().detach().var())
    assert 0.5 / (3 * 768) < var < 2.0 / (3 * 768)


def test_ttlinear_bad_input():
    with pytest.raises(ValueError, match=r"row_modes .* must multiply to the dimension 30"):
        TTLinear(24, 30, (2, 3, 4), (2, 3, 4), ranks=2)
    with pytest.raises(ValueError, match="same length"):
        TTLinear(24, 30, (5, 6), (2, 3, 4), ranks=2)
    with pytest.raises(ValueError, match="above the bound"):
        TTLinear(24, 30, (5, 6), (4, 6), ranks=[50])
    with pytest.raises(ValueError, match=r"0 < eps < 1"):
        TTLinear.from_linear(_lin(), (5, 6), (4, 6), eps=2.0)
    with pytest.raises(TypeError, match="embeddings"):
        TTLinear.from_linear(torch.nn.Embedding(10, 4))


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 0, 1), (1, 2, 2)])
def test_ttconv2d_matches_conv2d(stride, padding, dilation):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 12, 3, stride=stride, padding=padding, dilation=dilation).double()
    x = torch.randn(2, 8, 9, 9, dtype=torch.float64)
    exact = TTConv2d.from_conv2d(conv, (3, 4), (2, 4))
    torch.testing.assert_close(exact(x), conv(x))
    low = TTConv2d.from_conv2d(conv, (3, 4), (2, 4), ranks=[4, 3])
    ref = torch.nn.functional.conv2d(x, low.to_dense(), low.bias, stride, padding, dilation)
    torch.testing.assert_close(low(x), ref)
    low.implementation = "reconstructed"
    torch.testing.assert_close(low(x), ref)
    W = conv.weight.detach().reshape(12, -1)
    T = tqla.tt_matrix(W, (3, 4, 1), (2, 4, 9), ranks=[4, 3])
    torch.testing.assert_close(low.to_dense().reshape(12, -1), T.to_dense())
    assert low.ranks == (1, 4, 3, 1)


def test_ttconv2d_spec_round_trip_and_conversion():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, (3, 1), padding=(1, 0)).double()
    C = TTConv2d.from_conv2d(conv, (2, 3), (2, 2), ranks=2)
    C2 = CompressedModule.from_spec(C.spec(), dtype=torch.float64)
    C2.load_state_dict(C.state_dict())
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(C2(x), C(x))
    torch.testing.assert_close(C.to_conv2d()(x), C(x))


def test_ttconv2d_bad_input():
    with pytest.raises(ValueError, match="groups=1"):
        TTConv2d.from_conv2d(torch.nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(TypeError, match="Conv2d"):
        TTConv2d.from_conv2d(torch.nn.Linear(4, 4))
    with pytest.raises(ValueError, match="must multiply"):
        TTConv2d.from_conv2d(torch.nn.Conv2d(4, 6, 3), (2, 2), (2, 2))


# --------------------------------------------------------------------------------------
# method="tt" in configs: compress, inspect, save/load
# --------------------------------------------------------------------------------------
def _tiny():
    pytest.importorskip("transformers")
    from _tiny import tiny_gpt2

    return tiny_gpt2()


def test_config_tt_fields_and_rules():
    from tqla_torch import CompressionConfig

    cfg = CompressionConfig(target_modules=["c_fc"], method="tt", rank=4, tt_cores=2)
    st = cfg.settings_for("transformer.h.0.mlp.c_fc")
    assert (st.method, st.rank, st.tt_cores, st.permute) == ("tt", 4, 2, "none")
    # per-layer explicit ranks through an override clear the inherited rank
    cfg = CompressionConfig(
        target_modules=["c_fc"],
        method="tt",
        eps=0.5,
        overrides={r"h\.1\.mlp\.c_fc": {"tt_ranks": [3, 5]}},
    )
    st = cfg.settings_for("transformer.h.1.mlp.c_fc")
    assert st.tt_ranks == [3, 5] and st.eps is None
    assert cfg.settings_for("transformer.h.0.mlp.c_fc").eps == 0.5
    assert CompressionConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize(
    "fields,match",
    [
        ({"method": "tt"}, "needs one of rank, n_params, tt_ranks or eps"),
        ({"method": "tt", "rank": 2, "eps": 0.1}, "at most one of rank and eps"),
        ({"method": "tt", "eps": 1.5}, r"0 < eps < 1"),
        ({"method": "tt", "rank": 2, "b_shape": [2, 2]}, "method='tt' takes tt_cores"),
        ({"method": "tt", "rank": 2, "permute": "rows"}, "no permutations"),
        ({"method": "kron", "b_shape": [2, 2], "tt_cores": 2}, "applies to method='tt'"),
        ({"method": "tt", "tt_modes": [[2, 2], [4]], "rank": 2}, "same length"),
        ({"method": "tt", "tt_ranks": [0]}, "positive integers"),
    ],
)
def test_config_tt_bad_input(fields, match):
    from tqla_torch import CompressionConfig

    with pytest.raises(ValueError, match=match):
        CompressionConfig(target_modules=["c_fc"], **fields).settings_for("h.0.mlp.c_fc")


def test_compress_gpt2_mlps_with_tt_inspect_and_round_trip(tmp_path):
    from tqla_torch import CompressionConfig, compress, from_pretrained, inspect, save_pretrained
    from tqla_torch.nn import TTLinear

    model = _tiny()
    cfg = CompressionConfig(
        target_modules=r".*mlp\.c_(fc|proj)",
        method="tt",
        tt_cores=2,
        rank=4,
        overrides={r"h\.0\.mlp\.c_fc": {"tt_ranks": [2]}, r"h\.3\.mlp\.c_proj": {"eps": 0.6}},
    )
    text = str(inspect(model, cfg))
    assert "TT 8·16 × 4·8, ranks 1-2-1" in text and "TT 4·8 × 8·16, ranks 1-4-1" in text
    ids = torch.randint(0, 96, (2, 8), generator=torch.Generator().manual_seed(0))
    compress(model, cfg)
    fc0 = model.transformer.h[0].mlp.c_fc
    assert isinstance(fc0, TTLinear) and fc0.ranks == (1, 2, 1)
    assert fc0.source == "conv1d" and fc0.row_modes == tt_modes(128, 2)
    assert model.transformer.h[1].mlp.c_fc.ranks == (1, 4, 1)
    proj3 = model.transformer.h[3].mlp.c_proj
    assert proj3.approximation_error <= 0.6
    with torch.no_grad():
        logits = model(ids).logits
    save_pretrained(model, tmp_path / "tt")
    loaded = from_pretrained(tmp_path / "tt")
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, logits)
    assert isinstance(loaded.transformer.h[0].mlp.c_fc, TTLinear)


def test_compress_conv2d_model_with_tt():
    from tqla_torch import CompressionConfig, compress, inspect

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3)
    ).double()
    x = torch.randn(2, 8, 7, 7, dtype=torch.float64)
    cfg = CompressionConfig(target_modules=["0", "2"], method="tt", eps=0.999)
    assert "window 3×3" in str(inspect(model, cfg))
    compress(model, cfg)
    assert isinstance(model[0], TTConv2d) and isinstance(model[2], TTConv2d)
    assert model(x).shape == (2, 16, 5, 5)
    exact = CompressionConfig(target_modules=["0"], method="tt", rank=10_000)
    m2 = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1)).double()
    with torch.no_grad():
        y = m2(x)
    compress(m2, exact)  # ranks capped at their bounds: exact
    with torch.no_grad():
        torch.testing.assert_close(m2(x), y)


def test_tt_budget_rule_meets_the_budget():
    from tqla_torch import CompressionConfig, compress

    model = _tiny()
    budget = 1400  # r = 8 fits the cores alone (1,344) but not with the bias (128)
    cfg = CompressionConfig(target_modules=r".*mlp\.c_fc", method="tt", tt_cores=3, n_params=budget)
    compress(model, cfg)
    for block in model.transformer.h:
        layer = block.mlp.c_fc
        assert layer.n_params <= budget
        r = max(layer.ranks)
        bigger = tt_rank_for_budget(layer.row_modes, layer.col_modes, 10**9)
        assert r < bigger  # the budget, not the bound, set the rank
