"""tqla_torch/nn/spectral.py stated function by function (issue 15, fifth pass).

The whole call of each solver, of ``from_factors`` and of the constructor (dtype and device
included), the errors each fit records against their definitions, whole messages and
``spec``, and the device of every created parameter (``meta`` device).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402

import tqla  # noqa: E402
from tqla.kron import KroneckerShape  # noqa: E402
from tqla_torch.compression.config import CompressionConfig  # noqa: E402
from tqla_torch.nn import spectral  # noqa: E402
from tqla_torch.nn.base import relative_error, seed_for  # noqa: E402
from tqla_torch.nn.spectral import HeteroKroneckerLinear, SpectralKroneckerLinear  # noqa: E402

SHAPES = [[[4, 3], [2, 4]], [[2, 6], [4, 2]]]  # two factor shapes of an 8×12 weight


class _Spy:
    def __init__(self, real):
        self.real, self.calls, self.results = real, [], []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        self.results.append(self.real(*args, **kwargs))
        return self.results[-1]


class _Copies(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.copy_:
            self.seen.append((args[0].dtype, args[1].dtype))
        return func(*args, **(kwargs or {}))


def _raises(exc, msg, fn, *args, **kwargs):
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    assert str(info.value) == msg


def _settings(**kw):
    fields = dict(target_modules=["m"], method="spectral_kron", b_shape=[2, 4], rank=2,
                  p=[8, 32], seed=3, n_iter=4, tol=1e-3)  # fmt: skip
    fields.update(kw)
    return CompressionConfig(**fields).settings_for("m")


def _hetero(**kw):
    base = dict(shapes=SHAPES, n_params=None, rank=2, repeat=1, norm=None, seed=0,
                implementation="factorized")  # fmt: skip
    return SimpleNamespace(**{**base, **kw})


# ------------------------------------------------------------------ _relative_spectral
def test_relative_spectral_whole(monkeypatch):
    torch.manual_seed(0)
    W = torch.randn(6, 4)  # float32
    approx = torch.randn(6, 4, dtype=torch.bfloat16)
    res = _Spy(tqla.residual)
    sn = _Spy(tqla.spectral_norm)
    monkeypatch.setattr(tqla, "residual", res)
    monkeypatch.setattr(tqla, "spectral_norm", sn)
    est, up = spectral._relative_spectral(W, approx)
    ((args, kwargs),) = res.calls
    assert [a.dtype for a in args] == [torch.float64] * 2 and kwargs == {}
    assert torch.equal(args[0], W.double()) and torch.equal(args[1], approx.double())
    ((args, kwargs),) = sn.calls
    assert args == (res.results[0],) and kwargs == {"rng": 0}
    norm = float(torch.linalg.matrix_norm(W.double(), ord=2))
    assert est == sn.results[0].estimate / norm and up == sn.results[0].upper / norm
    want = float(torch.linalg.matrix_norm(W.double() - approx.double(), ord=2)) / norm
    assert est == pytest.approx(want, rel=1e-6) and up >= est
    # a non-tensor approximation (a tqla Kronecker) is handed on as it is
    K = tqla.kron_svd(W.double(), ((3, 2), (2, 2)), 1)
    spectral._relative_spectral(W, K)
    assert res.calls[1][0][1] is K


# ------------------------------------------------------------------ SpectralKroneckerLinear
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_plain_spectral_fit_whole(dtype, monkeypatch):
    torch.manual_seed(1)
    lin = nn.Linear(8, 6).to(dtype)
    ks = _Spy(tqla.kron_spectral)
    ff = _Spy(SpectralKroneckerLinear.from_factors.__func__)
    rel = _Spy(spectral._relative_spectral)
    monkeypatch.setattr(tqla, "kron_spectral", ks)
    monkeypatch.setattr(SpectralKroneckerLinear, "from_factors", classmethod(ff))
    monkeypatch.setattr(spectral, "_relative_spectral", rel)
    st = _settings(implementation="reconstructed")
    layer = SpectralKroneckerLinear.from_module(lin, st, name="blk")
    work = torch.float64 if dtype == torch.float64 else torch.float32
    ((args, kwargs),) = ks.calls
    assert args[0].dtype == work and torch.equal(args[0], lin.weight.detach().to(work))
    assert args[1:] == (KroneckerShape((3, 2), (2, 4)), 2)
    gen = kwargs.pop("rng")
    assert kwargs == {"p": [8, 32], "max_iter": 4, "tol": 1e-3}
    assert isinstance(gen, np.random.Generator)
    K = ks.results[0]
    ((args, kwargs),) = ff.calls
    assert args[0] is SpectralKroneckerLinear and args[3:5] == (None, None)
    assert args[1].dtype == args[2].dtype == dtype
    assert torch.equal(args[1], K.A.to(dtype)) and torch.equal(args[2], K.B.to(dtype))
    assert torch.equal(args[5], lin.bias) and not args[5].requires_grad
    assert kwargs == {"implementation": "reconstructed", "source": "linear"}
    ((args, kwargs),) = rel.calls
    dense = layer.to_dense().detach()
    assert torch.equal(args[0], lin.weight) and torch.equal(args[1], dense) and kwargs == {}
    assert layer.spectral_error == rel.results[0][0]
    assert layer.approximation_error == relative_error(dense, lin.weight)
    norm = float(torch.linalg.matrix_norm(lin.weight.detach().double(), ord=2))
    assert layer.kron_svd_spectral_error == K.kron_svd_error.estimate / norm


def test_whitened_spectral_fit_whole(monkeypatch):
    torch.manual_seed(2)
    lin = nn.Linear(8, 6, dtype=torch.float64)
    wk = _Spy(tqla.whitened_kron_spectral)
    monkeypatch.setattr(tqla, "whitened_kron_spectral", wk)
    M = torch.diag(torch.linspace(1, 2, 8))  # float32
    layer = SpectralKroneckerLinear.from_module(lin, _settings(), name="blk", moment=M, damp=0.5)
    ((args, kwargs),) = wk.calls
    assert torch.equal(args[0], lin.weight) and args[1].dtype == torch.float64
    assert torch.equal(args[1], M.double()) and args[1].device.type == "cpu"
    assert args[2:] == (KroneckerShape((3, 2), (2, 4)), 2)
    gen = kwargs.pop("rng")
    assert kwargs == {"damp": 0.5, "p": [8, 32], "max_iter": 4, "tol": 1e-3}
    assert isinstance(gen, np.random.Generator)
    assert layer.kron_svd_spectral_error is None
    K = wk.results[0]
    want = torch.einsum("rij,rkl->ikjl", K.A, K.B).reshape(6, 8)
    torch.testing.assert_close(layer.to_dense().detach(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("permute", ["rows", "cols", "both"])
def test_permuted_spectral_fit_whole(permute, monkeypatch):
    torch.manual_seed(3)
    lin = nn.Linear(8, 6, dtype=torch.float64, bias=False)
    pk = _Spy(tqla.permuted_kron_spectral)
    ff = _Spy(SpectralKroneckerLinear.from_factors.__func__)
    monkeypatch.setattr(tqla, "permuted_kron_spectral", pk)
    monkeypatch.setattr(SpectralKroneckerLinear, "from_factors", classmethod(ff))
    st = _settings(permute=permute, n_restarts=2)
    layer = SpectralKroneckerLinear.from_module(lin, st, name="blk")
    ((args, kwargs),) = pk.calls
    assert torch.equal(args[0], lin.weight) and args[1:] == (KroneckerShape((3, 2), (2, 4)), 2)
    gen = kwargs["spectral_options"].pop("rng")
    assert kwargs["frobenius_options"] == {"n_restarts": 2, "rng": gen}
    assert kwargs["spectral_options"] == {"p": [8, 32], "max_iter": 4, "tol": 1e-3}
    assert kwargs["permute"] == permute and len(kwargs) == 3
    P = pk.results[0]
    ((args, kwargs),) = ff.calls
    rp = P.row_perm if permute in ("rows", "both") else None
    cp = P.col_perm if permute in ("cols", "both") else None
    assert args[3] is rp and args[4] is cp and args[5] is None
    assert kwargs == {"implementation": "factorized", "source": "linear"}
    assert layer.bias is None


def test_the_seed_of_a_spectral_fit_is_mixed_with_the_module_name(monkeypatch):
    seen = []
    real = np.random.default_rng

    def rng(seed=None):
        seen.append(seed)
        return real(seed)

    monkeypatch.setattr(spectral.np.random, "default_rng", rng)
    lin = nn.Linear(8, 6, dtype=torch.float64)
    SpectralKroneckerLinear.from_module(lin, _settings(seed=9))
    assert seen[0] == seed_for(9, "")
    seen.clear()
    HeteroKroneckerLinear.from_module(nn.Linear(12, 8), _hetero(seed=5), name="h")
    assert seen[0] == seed_for(5, "h")


# ------------------------------------------------------------------ HeteroKroneckerLinear
def test_hetero_init_whole():
    layer = HeteroKroneckerLinear(12, 8, SHAPES, [1, 2], device="meta", dtype=torch.float64)
    ps = [*layer.A, *layer.B, layer.bias]
    assert {(p.device.type, p.dtype) for p in ps} == {("meta", torch.float64)}
    assert [tuple(p.shape) for p in ps] == [(1, 4, 3), (2, 2, 6), (1, 2, 4), (2, 4, 2), (8,)]
    assert (layer.ranks, layer.n_terms, layer.kshapes) == (
        [1, 2],
        3,
        [KroneckerShape.of(s) for s in SHAPES],
    )
    torch.manual_seed(0)
    plain = HeteroKroneckerLinear(12, 8, SHAPES, [1, 1], bias=False)
    assert plain.bias is None and plain.A[0].dtype == torch.float32
    assert (plain.implementation, plain.source, plain.approximation_error) == (
        "factorized",
        "linear",
        None,
    )
    assert plain.spec() == {
        "type": "HeteroKroneckerLinear",
        "in_features": 12,
        "out_features": 8,
        "shapes": SHAPES,
        "ranks": [1, 1],
        "bias": False,
        "implementation": "factorized",
        "source": "linear",
    }
    conv = HeteroKroneckerLinear(12, 8, SHAPES[:1], [2], implementation="reconstructed",
                                 source="conv1d", approximation_error=0.5)  # fmt: skip
    assert conv.spec()["source"] == "conv1d" and conv.approximation_error == 0.5
    b = torch.cat([HeteroKroneckerLinear(12, 8, SHAPES, [1, 1]).bias.detach() for _ in range(10)])
    assert 0.9 / math.sqrt(12) < float(b.abs().max()) <= 1 / math.sqrt(12)
    assert HeteroKroneckerLinear.accepts(nn.Linear(2, 2))
    assert not HeteroKroneckerLinear.accepts(nn.Embedding(2, 2))
    from transformers.pytorch_utils import Conv1D

    assert HeteroKroneckerLinear.accepts(Conv1D(3, 4))


def test_hetero_init_messages_whole():
    H = HeteroKroneckerLinear
    _raises(ValueError, "shapes and ranks must be non-empty lists of one length, got 2 shapes "
            "and 1 ranks", H, 12, 8, SHAPES, [1])  # fmt: skip
    _raises(ValueError, "shapes and ranks must be non-empty lists of one length, got 0 shapes "
            "and 0 ranks", H, 12, 8, [], [])  # fmt: skip
    _raises(
        ValueError,
        "shapes[1] A (2, 6) ⊗ B (4, 3) gives a (8, 18) weight, the layer needs (out, in) = (8, 12)",
        H,
        12,
        8,
        [SHAPES[0], [[2, 6], [4, 3]]],
        [1, 1],
    )
    _raises(ValueError, "in_features must be a positive integer, got 0", H, 0, 8, SHAPES, [1, 1])
    _raises(ValueError, "out_features must be a positive integer, got 0", H, 12, 0, SHAPES,
            [1, 1])  # fmt: skip
    _raises(ValueError, "source must be 'linear' or 'conv1d', got 'x'", H, 12, 8, SHAPES,
            [1, 1], source="x")  # fmt: skip
    with pytest.raises(ValueError, match=r"^ranks\[1\] must satisfy 1 <= ranks\[1\]"):
        H(12, 8, SHAPES, [1, 0])


def test_hetero_plan_whole(monkeypatch):
    lin = nn.Linear(12, 8)
    real = spectral.resolve_out_in
    calls = []

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(spectral, "resolve_out_in", spy)
    p = HeteroKroneckerLinear.plan(lin, _hetero(rank=None, n_params=60), name="h")
    assert calls == [
        ((8, 12), {"shape": SHAPES[0], "where": "module 'h': shapes[0]"}),
        ((8, 12), {"shape": SHAPES[1], "where": "module 'h': shapes[1]"}),
    ]
    assert (p.rank, p.params_after, p.factors) == (0, 60, "4×3 ⊗ 2×4 | 2×6 ⊗ 4×2")
    _raises(ValueError, "module 'h': n_params 27 leaves 19 for the factors, below one term of "
            "the cheapest shape (20)", HeteroKroneckerLinear.plan, lin, _hetero(n_params=27),
            name="h")  # fmt: skip
    assert HeteroKroneckerLinear.plan(lin, _hetero(n_params=28, rank=None)).params_after == 28
    _raises(ValueError, "module 'module': repeat=2 applies to embeddings only",
            HeteroKroneckerLinear.plan, lin, _hetero(repeat=2))  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_hetero_fit_whole(dtype, monkeypatch):
    torch.manual_seed(4)
    lin = nn.Linear(12, 8).to(dtype)
    kh = _Spy(tqla.kron_hetero)
    monkeypatch.setattr(tqla, "kron_hetero", kh)
    calls, real_init = [], HeteroKroneckerLinear.__init__

    def init(self, *args, **kwargs):
        calls.append((args, kwargs))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(HeteroKroneckerLinear, "__init__", init)
    st = _hetero(n_params=28, rank=3, norm="spectral", implementation="reconstructed")
    with _Copies() as copies:
        layer = HeteroKroneckerLinear.from_module(lin, st, name="h")
    work = torch.float64 if dtype == torch.float64 else torch.float32
    ((args, kwargs),) = kh.calls
    assert args[0].dtype == work and torch.equal(args[0], lin.weight.detach().to(work))
    assert args[1] == [KroneckerShape.of(s) for s in SHAPES]
    gen = kwargs["spectral_options"].pop("rng")
    assert kwargs == {"n_params": 20, "rank": 3, "norm": "spectral", "spectral_options": {}}
    assert gen.integers(1 << 30) == np.random.default_rng(seed_for(0, "h")).integers(1 << 30)
    H = kh.results[0]
    ((args, kwargs),) = calls
    assert args == (12, 8, [[list(K.kshape.a), list(K.kshape.b)] for K in H.terms],
                    [K.rank for K in H.terms])  # fmt: skip
    assert kwargs == {"bias": True, "implementation": "reconstructed", "source": "linear",
                      "device": lin.weight.device, "dtype": dtype}  # fmt: skip
    n = len(H.terms)
    assert copies.seen[: 2 * n + 1] == [(dtype, dtype)] * (2 * n + 1)
    for a, b, K in zip(layer.A, layer.B, H.terms):
        assert torch.equal(a, K.A.to(dtype)) and torch.equal(b, K.B.to(dtype))
    assert torch.equal(layer.bias, lin.bias)
    dense = layer.to_dense().detach()
    assert layer.approximation_error == relative_error(dense, lin.weight)
    assert layer.spectral_error == spectral._relative_spectral(lin.weight, dense)[0]
    kh.calls.clear()
    HeteroKroneckerLinear.from_module(nn.Linear(12, 8, bias=False), _hetero(norm=None))
    ((args, kwargs),) = kh.calls
    kwargs["spectral_options"].pop("rng")
    assert kwargs == {"n_params": None, "rank": 2, "norm": "fro", "spectral_options": {}}
    assert calls[1][1]["bias"] is False
    kh.calls.clear()  # without a bias the whole budget goes to the factors
    HeteroKroneckerLinear.from_module(nn.Linear(12, 8, bias=False), _hetero(n_params=20))
    ((args, kwargs),) = kh.calls
    assert kwargs["n_params"] == 20


def test_hetero_fit_resolves_the_shapes_under_the_module_name(monkeypatch):
    wheres = []
    real = spectral.resolve_out_in

    def spy(*args, **kwargs):
        wheres.append(kwargs["where"])
        return real(*args, **kwargs)

    monkeypatch.setattr(spectral, "resolve_out_in", spy)
    HeteroKroneckerLinear.from_module(nn.Linear(12, 8), _hetero(rank=1))
    assert wheres == [f"module 'module': shapes[{i}]" for i in (0, 1)] * 2
    wheres.clear()
    HeteroKroneckerLinear.from_module(nn.Linear(12, 8), _hetero(rank=1), name="h")
    assert wheres == [f"module 'h': shapes[{i}]" for i in (0, 1)] * 2


def test_whitened_fit_damp_defaults_to_zero(monkeypatch):
    wk = _Spy(tqla.whitened_kron_spectral)
    monkeypatch.setattr(tqla, "whitened_kron_spectral", wk)
    lin = nn.Linear(8, 6, dtype=torch.float64)
    SpectralKroneckerLinear.from_module(lin, _settings(), moment=torch.eye(8))
    assert wk.calls[0][1]["damp"] == 0.0


def test_hetero_fit_message_names_the_module():
    st = _hetero(shapes=[[[4, 3], [2, 5]]])
    with pytest.raises(ValueError, match=r"^module 'h': shapes\[0\]"):
        HeteroKroneckerLinear.from_module(nn.Linear(12, 8), st, name="h")
    with pytest.raises(ValueError, match=r"^module 'module': shapes\[0\]"):
        HeteroKroneckerLinear.from_module(nn.Linear(12, 8), st)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_spectral_fits_stay_on_the_cuda_device():
    lin = nn.Linear(8, 6, device="cuda")
    for permute in ("none", "both"):
        layer = SpectralKroneckerLinear.from_module(lin, _settings(permute=permute))
        assert {t.device.type for t in layer.state_dict().values()} == {"cuda"}
    layer = HeteroKroneckerLinear.from_module(nn.Linear(12, 8, device="cuda"), _hetero())
    assert {t.device.type for t in layer.state_dict().values()} == {"cuda"}


def test_hetero_factorized_forward_reads_rows_of_in_features():
    """The factorized forward takes x as rows of in_features values: an input whose size is
    no multiple of in_features fails at that first reshape (which names in_features)."""
    layer = HeteroKroneckerLinear.from_module(nn.Linear(12, 8), _hetero())
    assert layer.implementation == "factorized"
    x = torch.randn(3, 12)
    torch.testing.assert_close(layer(x), F.linear(x, layer.to_dense(), layer.bias))
    with pytest.raises(RuntimeError, match=r"'\[-1, 12\]' is invalid for input of size 10"):
        layer(torch.randn(2, 5))
