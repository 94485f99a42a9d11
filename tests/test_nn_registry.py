"""Every registered compressed layer type: from_module → forward = dense → save → load.

The table ``CASES`` has one row per way of building a layer; a new layer family registered
with :class:`tqla_torch.nn.CompressedModule` fails ``test_every_registered_type_has_a_row``
until it gets a row here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from tqla_torch import CompressionConfig
from tqla_torch.nn import REGISTRY, CompressedModule
from tqla_torch.nn import base as nn_base

Conv1D = pytest.importorskip("transformers.pytorch_utils").Conv1D

DTYPE = torch.float64
# float64 forward paths that differ only in association order: a few hundred ulps at most.
TOL = 1e3 * torch.finfo(DTYPE).eps


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _kron_weight(rank: int, a: tuple[int, int], b: tuple[int, int], seed: int) -> torch.Tensor:
    """An (out, in) weight that is exactly a rank-``rank`` Kronecker sum."""
    g = _gen(seed)
    A = torch.randn(rank, *a, dtype=DTYPE, generator=g)
    B = torch.randn(rank, *b, dtype=DTYPE, generator=g)
    return sum(torch.kron(A[k], B[k]) for k in range(rank))


def _low_rank(m: int, n: int, rank: int, seed: int) -> torch.Tensor:
    g = _gen(seed)
    return torch.randn(m, rank, dtype=DTYPE, generator=g) @ torch.randn(
        rank, n, dtype=DTYPE, generator=g
    )


def _linear(weight: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], dtype=DTYPE)
    with torch.no_grad():
        lin.weight.copy_(weight)
        lin.bias.normal_(generator=_gen(9))
    return lin


def _conv1d(weight: torch.Tensor) -> nn.Module:
    conv = Conv1D(weight.shape[0], weight.shape[1]).to(DTYPE)  # nf = out, nx = in
    with torch.no_grad():
        conv.weight.copy_(weight.T)  # Conv1D stores (in, out)
        conv.bias.normal_(generator=_gen(9))
    return conv


def _tt_weight(rows: tuple, cols: tuple, ranks: tuple, seed: int) -> torch.Tensor:
    """An (out, in) weight that is exactly a TT-matrix with these modes and ranks."""
    from tqla_torch.nn.tt import _dense

    g = _gen(seed)
    full = (1, *ranks, 1)
    shapes = [(full[k], m, n, full[k + 1]) for k, (m, n) in enumerate(zip(rows, cols))]
    return _dense([torch.randn(*sh, dtype=DTYPE, generator=g) for sh in shapes])


def _conv2d(c_in: int, c_out: int, seed: int) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(c_in, c_out, 3, padding=1, dtype=DTYPE)


def _embedding(table: torch.Tensor) -> nn.Embedding:
    emb = nn.Embedding(*table.shape, dtype=DTYPE)
    with torch.no_grad():
        emb.weight.copy_(table)
    return emb


def _tokens(vocab: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.randint(0, vocab, (3, 5), generator=_gen(4))


def _features(n: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.randn(3, 5, n, dtype=DTYPE, generator=_gen(4))


@dataclass(frozen=True)
class Case:
    layer: str  # registered class name
    module: Callable[[], nn.Module]  # the dense module to compress
    config: dict[str, Any]  # CompressionConfig fields for it
    inputs: Callable[[], torch.Tensor]
    exact: bool  # the module has the structure: the layer reproduces it


CASES = {
    "kron-linear": Case(
        "KroneckerLinear",
        lambda: _linear(_kron_weight(2, (4, 3), (2, 4), 0)),  # (out 8, in 12)
        {"method": "kron", "shape": [[4, 3], [2, 4]], "rank": 2},  # out×in
        _features(12),
        exact=True,
    ),
    "kron-conv1d": Case(
        "KroneckerLinear",
        lambda: _conv1d(_kron_weight(1, (4, 3), (2, 4), 1)),
        {"method": "kron", "b_shape": [2, 4], "rank": 1},
        _features(12),
        exact=True,
    ),
    "permuted-kron-linear": Case(
        "KroneckerLinear",
        lambda: _linear(torch.randn(8, 12, dtype=DTYPE, generator=_gen(2))),
        {"method": "permuted_kron", "b_shape": [4, 2], "rank": 2, "n_iter": 2},
        _features(12),
        exact=False,
    ),
    "lowrank-linear": Case(
        "LowRankLinear",
        lambda: _linear(_low_rank(8, 12, 3, 3)),
        {"method": "svd", "rank": 3},
        _features(12),
        exact=True,
    ),
    "kron-embedding": Case(
        "KroneckerEmbedding",
        lambda: _embedding(
            torch.kron(
                torch.randn(10, 4, dtype=DTYPE, generator=_gen(5)),
                torch.tensor([[0.5, -2.0]], dtype=DTYPE),
            )
        ),
        {"method": "kron", "b_shape": [2, 1]},
        _tokens(10),
        exact=True,
    ),
    "permuted-kron-embedding-twice": Case(
        "KroneckerEmbedding",
        lambda: _embedding(torch.randn(10, 8, dtype=DTYPE, generator=_gen(6))),
        {"method": "permuted_kron", "b_shape": [2, 1], "repeat": 2, "permute": "rows"},
        _tokens(10),
        exact=False,
    ),
    "tt-linear": Case(
        "TTLinear",
        lambda: _linear(_tt_weight((2, 4), (3, 4), (2,), 8)),  # (out 8, in 12)
        {"method": "tt", "tt_modes": [[2, 4], [3, 4]], "tt_ranks": [2]},
        _features(12),
        exact=True,
    ),
    "tt-conv2d": Case(
        "TTConv2d",
        lambda: _conv2d(4, 6, 9),
        {"method": "tt", "tt_modes": [[2, 3], [2, 2]], "rank": 3},
        lambda: torch.randn(2, 4, 5, 5, dtype=DTYPE, generator=_gen(4)),
        exact=False,
    ),
    "spectral-kron-linear": Case(
        "SpectralKroneckerLinear",
        lambda: _linear(_kron_weight(2, (4, 3), (2, 4), 10)),
        {"method": "spectral_kron", "shape": [[4, 3], [2, 4]], "rank": 2, "p": [8, 32]},
        _features(12),
        exact=True,
    ),
    "spectral-kron-permuted-conv1d": Case(
        "SpectralKroneckerLinear",
        lambda: _conv1d(torch.randn(8, 12, dtype=DTYPE, generator=_gen(12))),
        {"method": "spectral_kron", "b_shape": [2, 4], "rank": 2, "permute": "both",
         "p": [8, 32], "n_iter": 4},
        _features(12),
        exact=False,
    ),
    "hetero-kron-linear": Case(
        "HeteroKroneckerLinear",
        lambda: _linear(torch.randn(8, 12, dtype=DTYPE, generator=_gen(13))),
        {"method": "hetero_kron", "shapes": [[[4, 3], [2, 4]], [[2, 6], [4, 2]]],
         "n_params": 100},
        _features(12),
        exact=False,
    ),
    "hetero-kron-spectral-conv1d": Case(
        "HeteroKroneckerLinear",
        lambda: _conv1d(_kron_weight(1, (2, 6), (4, 2), 14)),
        {"method": "hetero_kron", "shapes": [[[4, 3], [2, 4]], [[2, 6], [4, 2]]], "rank": 1,
         "norm": "spectral"},
        _features(12),
        exact=True,
    ),
    "lowrank-embedding": Case(
        "LowRankEmbedding",
        lambda: _embedding(_low_rank(10, 8, 2, 7)),
        {"method": "svd", "rank": 2},
        _tokens(10),
        exact=True,
    ),
}


def _dense_forward(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the layer must compute, from its dense form alone."""
    if isinstance(layer, REGISTRY["TTConv2d"]):
        return F.conv2d(x, layer.to_dense(), layer.bias, layer.stride, layer.padding)
    if x.is_floating_point():  # a linear layer
        return F.linear(x, layer.to_dense(), layer.bias)
    return F.embedding(x, layer.to_dense())


def _fit(case: Case) -> tuple[nn.Module, CompressedModule]:
    module = case.module()
    settings = CompressionConfig(target_modules=["m"], **case.config).settings_for("m")
    layer_type = CompressedModule.for_module(module, settings.method)
    assert layer_type is not None and layer_type.__name__ == case.layer
    with torch.no_grad():
        return module, layer_type.from_module(module, settings, name="m")


def test_every_registered_type_has_a_row():
    assert set(REGISTRY) == {c.layer for c in CASES.values()}


@pytest.mark.parametrize("case_name", sorted(CASES))
def test_from_module_forward_save_load(case_name, tmp_path):
    case = CASES[case_name]
    module, layer = _fit(case)
    assert type(layer).__name__ == case.layer and isinstance(layer, CompressedModule)
    x = case.inputs()
    y = layer(x)
    # forward = its dense form
    torch.testing.assert_close(y, _dense_forward(layer, x), rtol=TOL, atol=TOL)
    # the constructor recorded the approximation error, and it is the true one
    dense_ref = layer.to_dense()
    ref = module.weight if isinstance(module, nn.Embedding) else _out_in(module)
    err = float((dense_ref - ref).detach().norm() / ref.detach().norm())
    assert layer.approximation_error is not None
    assert abs(layer.approximation_error - err) <= 1e-8
    if case.exact:
        assert layer.approximation_error < 1e-8
        torch.testing.assert_close(y, module(x), rtol=1e-8, atol=1e-8)
    # parameter count
    assert layer.n_params == sum(p.numel() for p in layer.parameters())
    # save (spec + safetensors) and load into a layer built from the spec alone
    spec = layer.spec()
    save_file({k: v.contiguous() for k, v in layer.state_dict().items()}, tmp_path / "w.st")
    again = CompressedModule.from_spec(spec, dtype=DTYPE)
    assert type(again) is type(layer) and again.spec() == spec
    again.load_state_dict(load_file(tmp_path / "w.st"))
    assert torch.equal(again(x), y)  # same parameters, same code path: bit-equal


def _out_in(module: nn.Module) -> torch.Tensor:
    if isinstance(module, (nn.Linear, nn.Conv2d)):  # (out, in) or (out, in, kh, kw)
        return module.weight
    return module.weight.T


def test_registry_by_subclassing():
    before = dict(REGISTRY)

    class ToyLayer(CompressedModule):
        methods = ("toy",)

    try:
        assert REGISTRY["ToyLayer"] is ToyLayer
        assert CompressedModule.layer_type("ToyLayer") is ToyLayer

        class _Abstract(CompressedModule, register=False):
            pass

        assert "_Abstract" not in REGISTRY
        with pytest.raises(TypeError, match="already registered"):
            type("KroneckerLinear", (CompressedModule,), {"__qualname__": "Other"})
    finally:
        nn_base._REGISTRY.pop("ToyLayer", None)
    assert dict(REGISTRY) == before
    with pytest.raises(TypeError):
        REGISTRY["x"] = ToyLayer  # read-only view


def test_from_spec_errors():
    with pytest.raises(ValueError, match="unknown compressed layer type 'Nope'"):
        CompressedModule.from_spec({"type": "Nope"})
    with pytest.raises(ValueError, match="invalid KroneckerLinear spec"):
        CompressedModule.from_spec({"type": "KroneckerLinear", "bogus": 1})
    with pytest.raises(ValueError, match="given to LowRankLinear"):
        REGISTRY["LowRankLinear"].from_spec({"type": "KroneckerLinear"})


@pytest.mark.parametrize("order_shape", [((6, 2), (3, 4)), ((2, 6), (4, 3))])  # both orders
@pytest.mark.parametrize("permute", ["none", "rows", "cols", "both"])
@pytest.mark.parametrize("tokens", [3, 300])  # both paths of the "B first" order
def test_fused_forward_agrees_with_the_core(order_shape, permute, tokens):
    """KroneckerLinear's torch-fused forward = tqla.KroneckerSum.matmat, permuted."""
    from tqla.kron import KroneckerShape, KroneckerSum
    from tqla_torch.nn import KroneckerLinear

    g = _gen(11)
    shape = KroneckerShape(*order_shape)
    A = torch.randn(3, *shape.a, dtype=DTYPE, generator=g)
    B = torch.randn(3, *shape.b, dtype=DTYPE, generator=g)
    M, N = shape.matrix_shape
    rp = torch.randperm(M, generator=g) if permute in ("rows", "both") else None
    cp = torch.randperm(N, generator=g) if permute in ("cols", "both") else None
    layer = KroneckerLinear.from_factors(A, B, rp, cp)
    x = torch.randn(tokens, N, dtype=DTYPE, generator=g)
    # W[i, j] = K[rp[i], cp[j]]:  W x = (K · x[inverse cp])[rp]
    xin = x if cp is None else x[:, torch.argsort(cp)]
    y = KroneckerSum(A, B).matmat(xin.T).T
    y = y if rp is None else y[:, rp]
    with torch.no_grad():
        torch.testing.assert_close(layer(x), y, rtol=TOL, atol=TOL)
