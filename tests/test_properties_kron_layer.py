"""KroneckerLinear and its fitting helpers (tqla_torch/nn/kronecker.py) stated whole.

Each function is checked for every argument it hands on (spies compare the whole
positional tuple and keyword dict of the callee), every default (called without the
argument, the callee receives the documented value), whole messages and reprs, and every
route (the CPU/NumPy and device routes of ``kron_decompose``: the device route runs on
PyTorch's ``meta`` device with a recorded ``_decompose``; which side the reconstructed
forward gathers).  Found needed by the seed-10 sample of the fifth mutation pass.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
from torch.overrides import TorchFunctionMode  # noqa: E402

import tqla.kron  # noqa: E402
import tqla.permuted  # noqa: E402
import tqla.whiten  # noqa: E402
import tqla_torch.nn.kronecker as kmod  # noqa: E402
from tqla.kron import KroneckerShape  # noqa: E402
from tqla_torch.compression.config import ModuleSettings  # noqa: E402
from tqla_torch.nn import KroneckerLinear  # noqa: E402
from tqla_torch.nn.base import LayerPlan, inverse_perm, seed_for  # noqa: E402

S = KroneckerShape((3, 4), (2, 2))  # a 6×8 (out, in) weight


def _spy(monkeypatch, owner, name, fake=None):
    """Replace ``owner.name`` by a recorder of (args, kwargs); calls through unless fake."""
    calls: list[tuple[tuple, dict]] = []
    real = getattr(owner, name)

    def spy(*args, **kwargs):
        calls.append((args, dict(kwargs)))
        return (fake or real)(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return calls


def _spy_classmethod(monkeypatch, name):
    calls: list[tuple[tuple, dict]] = []
    real = getattr(KroneckerLinear, name)

    def spy(cls, *args, **kwargs):
        calls.append((args, dict(kwargs)))
        return real(*args, **kwargs)

    monkeypatch.setattr(KroneckerLinear, name, classmethod(spy))
    return calls


def _weight(seed=0, dtype=torch.float64, shape=(6, 8)):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def _moment(n=8, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(40, n, dtype=dtype, generator=g) * torch.linspace(0.2, 3, n, dtype=dtype)
    return X.T @ X / 40


def _rel(A, B, rp, cp, W):
    """‖K[rp][:, cp] − W‖ / ‖W‖ from returned factors."""
    K = sum(torch.kron(torch.as_tensor(A[k]), torch.as_tensor(B[k])) for k in range(len(A)))
    if rp is not None:
        K = K[torch.as_tensor(rp)]
    if cp is not None:
        K = K[:, torch.as_tensor(cp)]
    W = torch.as_tensor(W)
    return float(torch.linalg.norm(K - W) / torch.linalg.norm(W))


def _settings(**kw):
    base = dict(method="permuted_kron", shape=[[3, 4], [2, 2]], b_shape=None, rank=2,
                n_params=None, permute="rows", rule="slots", n_iter=2, tol=0.125,
                n_restarts=2, seed=7, repeat=1, implementation="reconstructed")  # fmt: skip
    base.update(kw)
    return ModuleSettings(**base)


# --------------------------------------------------------------------------------------
# forward_costs
# --------------------------------------------------------------------------------------
@given(
    m1=st.integers(1, 30),
    n1=st.integers(1, 30),
    m2=st.integers(1, 30),
    n2=st.integers(1, 30),
    r=st.integers(1, 6),
)
def test_forward_costs_are_the_two_orders_of_one_token(m1, n1, m2, n2, r):
    c = kmod.forward_costs(((m1, n1), (m2, n2)), r)
    a, b = r * m1 * n2 * (n1 + m2), r * n1 * m2 * (m1 + n2)
    assert c == {"a_first": a, "b_first": b, "factorized": min(a, b), "dense": m1 * m2 * n1 * n2}
    assert all(type(v) is int for v in c.values())
    if r <= min(m1 * n1, m2 * n2):
        layer = KroneckerLinear(n1 * n2, m1 * m2, ((m1, n1), (m2, n2)), r, device="meta")
        assert layer.forward_costs() == c
        assert layer._order == ("a_first" if a < b else "b_first")
    assert kmod.forward_costs(((m1, n1), (m2, n2))) == kmod.forward_costs(((m1, n1), (m2, n2)), 1)


# --------------------------------------------------------------------------------------
# kron_decompose: validation, the CPU (NumPy) route and the device route
# --------------------------------------------------------------------------------------
def test_kron_decompose_hands_a_numpy_view_and_every_argument_to_decompose(monkeypatch):
    calls = _spy(monkeypatch, kmod, "_decompose")
    W = _weight()
    C = _moment(dtype=torch.float32)  # converted to the weight's dtype
    A, B, rp, cp, err = kmod.kron_decompose(
        W, S, 2, method="permuted_kron", permute="rows", rule="slots", n_iter=2, tol=0.125,
        n_restarts=2, seed=5, moment=C, damp=0.25,
    )  # fmt: skip
    ((args, kwargs),) = calls
    assert kwargs == {} and len(args) == 12
    Wn, shape, rank, *rest, Mn, damp = args
    assert isinstance(Wn, np.ndarray) and np.shares_memory(Wn, W.numpy())  # no copy
    assert (shape, rank, rest, damp) == (S, 2, ["permuted_kron", "rows", "slots", 2, 0.125, 2, 5],
                                         0.25)  # fmt: skip
    assert isinstance(Mn, np.ndarray) and Mn.dtype == np.float64
    np.testing.assert_array_equal(Mn, C.double().numpy())
    for t in (A, B, rp):
        assert isinstance(t, torch.Tensor) and t.is_contiguous()
    assert cp is None and rp.dtype == torch.int64 and A.dtype == B.dtype == torch.float64
    assert type(err) is float and err == pytest.approx(_rel(A, B, rp, None, W), rel=1e-9)


def test_kron_decompose_defaults(monkeypatch):
    calls = _spy(monkeypatch, kmod, "_decompose")
    W16 = _weight().half()
    kmod.kron_decompose(W16, S, 1, method="kron", permute="none")
    ((args, _),) = calls
    Wn = args[0]
    assert Wn.dtype == np.float32  # half precision is decomposed in float32
    np.testing.assert_array_equal(Wn, W16.float().numpy())
    assert args[1:] == (S, 1, "kron", "none", None, None, None, 1, None, None, 0.0)


def test_kron_decompose_validates_before_decomposing(monkeypatch):
    calls = _spy(monkeypatch, kmod, "_decompose")
    W = _weight()
    with pytest.raises(ValueError, match=r"^method must be one of \('permuted_kron', 'kron'\), "
                                         r"got 'svd'$"):  # fmt: skip
        kmod.kron_decompose(W, S, 1, method="svd", permute="none")
    with pytest.raises(ValueError, match=r"^permute must be one of .*got 'diag'$"):
        kmod.kron_decompose(W, S, 1, method="kron", permute="diag")
    msg = re.escape(
        "weight of shape (8, 6) does not match the Kronecker shape A (3, 4) ⊗ B (2, 2), "
        "which needs (3·2, 4·2) = (6, 8)"
    )
    with pytest.raises(ValueError, match=f"^{msg}$"):
        kmod.kron_decompose(W.T, S, 1, method="kron", permute="none")
    with pytest.raises(ValueError, match=r"^rank must satisfy 1 <= rank"):
        kmod.kron_decompose(W, S, 5, method="kron", permute="none")
    with pytest.warns(DeprecationWarning):
        kmod.kron_decompose(W, S, 1, method="permuted_kron", permute="input", n_iter=1)
    assert [c[0][4] for c in calls] == ["cols"]  # the old spelling, mapped
    assert calls[0][0][2] == 1 and type(calls[0][0][2]) is int


def test_kron_decompose_on_a_device_decomposes_the_tensor_there(monkeypatch):
    """Off the CPU (here PyTorch's data-less ``meta`` device) ``_decompose`` gets the
    weight and moment as tensors in the decomposition dtype on that device, and its
    results come back unchanged."""
    result = (object(), object(), None, None, 0.5)
    calls = _spy(monkeypatch, kmod, "_decompose", fake=lambda *a: result)
    W = torch.empty(6, 8, dtype=torch.float16, device="meta")
    C = torch.empty(8, 8, dtype=torch.float64, device="meta")
    out = kmod.kron_decompose(W, S, 2, method="permuted_kron", permute="both", rule="assign",
                              n_iter=3, tol=0.5, n_restarts=4, seed=9, moment=C,
                              damp=0.75)  # fmt: skip
    assert out is result
    ((args, kwargs),) = calls
    Wt, *middle, Mt, damp = args
    assert kwargs == {} and middle == [S, 2, "permuted_kron", "both", "assign", 3, 0.5, 4, 9]
    assert (Wt.device.type, Wt.dtype, tuple(Wt.shape)) == ("meta", torch.float32, (6, 8))
    assert (Mt.device.type, Mt.dtype, tuple(Mt.shape)) == ("meta", torch.float32, (8, 8))
    assert damp == 0.75
    kmod.kron_decompose(W, S, 1, method="kron", permute="none")
    assert calls[1][0][5:] == (None, None, None, 1, None, None, 0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_kron_decompose_cuda_routes(monkeypatch):
    calls = _spy(monkeypatch, kmod, "_decompose")
    W = _weight()
    C = _moment().cuda()  # a moment on the device, a weight on the CPU: NumPy route
    kmod.kron_decompose(W, S, 1, method="kron", permute="none", moment=C)
    assert isinstance(calls[0][0][0], np.ndarray) and isinstance(calls[0][0][10], np.ndarray)
    Wc = W.cuda()
    A, B, rp, cp, err = kmod.kron_decompose(Wc, S, 1, method="kron", permute="none", moment=C)
    Wt, Mt = calls[1][0][0], calls[1][0][10]
    assert Wt.device == Wc.device and Mt.device == Wc.device and A.device == Wc.device


# --------------------------------------------------------------------------------------
# _decompose: the four solvers, their arguments and the error it reports
# --------------------------------------------------------------------------------------
def _rng_state(seed):
    return np.random.default_rng(seed).bit_generator.state


def _spy_solvers(monkeypatch):
    """Record every tqla solver call; for rng, its state at the call (before any draw)."""
    seen: dict[str, list] = {}
    for owner, name in ((tqla.kron, "kron_svd"), (tqla.whiten, "whitened_kron_svd"),
                        (tqla.permuted, "permuted_kron"),
                        (tqla.whiten, "whitened_permuted_kron")):  # fmt: skip
        real = getattr(owner, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            rng = kwargs.get("rng")
            state = None if rng is None else rng.bit_generator.state
            seen.setdefault(_name, []).append((args, dict(kwargs), state))
            return _real(*args, **kwargs)

        monkeypatch.setattr(owner, name, spy)
    return seen


@pytest.mark.parametrize("rank", [1, 2])
def test_decompose_kron_calls_the_best_kronecker_sum(rank, monkeypatch):
    seen = _spy_solvers(monkeypatch)
    W = _weight()
    A, B, rp, cp, err = kmod.kron_decompose(W, S, rank, method="kron", permute="none")
    ((args, kwargs, _),) = seen.pop("kron_svd")
    assert not seen and kwargs == {} and args[1:] == (S, rank) and isinstance(args[0], np.ndarray)
    assert rp is None and cp is None and A.shape == (rank, 3, 4) and B.shape == (rank, 2, 2)
    assert type(err) is float and err == pytest.approx(_rel(A, B, None, None, W), rel=1e-9)


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("damp", [0.0, 0.5])
def test_decompose_kron_with_a_moment_calls_the_whitened_fit(rank, damp, monkeypatch):
    seen = _spy_solvers(monkeypatch)
    W, C = _weight(), _moment()
    A, B, rp, cp, err = kmod.kron_decompose(W, S, rank, method="kron", permute="none", moment=C,
                                            damp=damp)  # fmt: skip
    ((args, kwargs, _),) = seen.pop("whitened_kron_svd")
    assert not seen and kwargs == {"damp": damp} and args[2:] == (S, rank) and len(args) == 4
    np.testing.assert_array_equal(args[1], C.numpy())
    assert rp is None and cp is None and A.shape == (rank, 3, 4)
    assert err == pytest.approx(_rel(A, B, None, None, W), rel=1e-9)  # the plain error


@pytest.mark.parametrize("permute", ["both", "rows", "cols", "none"])
@pytest.mark.parametrize("seed", [None, 3])
def test_decompose_permuted_calls_the_search_with_its_options(permute, seed, monkeypatch):
    seen = _spy_solvers(monkeypatch)
    W = _weight()
    A, B, rp, cp, err = kmod.kron_decompose(W, S, 2, method="permuted_kron", permute=permute,
                                            n_restarts=2, seed=seed)  # fmt: skip
    ((args, kwargs, state),) = seen.pop("permuted_kron")
    assert not seen and args[1:] == (S, 2) and len(args) == 3
    assert set(kwargs) == {"permute", "n_restarts", "rng"}  # None options are not passed
    assert kwargs["permute"] == permute and kwargs["n_restarts"] == 2
    assert state == (None if seed is None else _rng_state(seed))
    assert (rp is None) == (permute in ("cols", "none"))
    assert (cp is None) == (permute in ("rows", "none"))
    assert type(err) is float and err == pytest.approx(_rel(A, B, rp, cp, W), rel=1e-9)
    seen.clear()
    kmod.kron_decompose(W, S, 1, method="permuted_kron", permute=permute, rule="assign",
                        n_iter=1, tol=0.5, seed=seed)  # fmt: skip
    ((_, kwargs, _),) = seen.pop("permuted_kron")
    assert {k: kwargs[k] for k in ("rule", "n_iter", "tol", "n_restarts")} == {
        "rule": "assign", "n_iter": 1, "tol": 0.5, "n_restarts": 1}  # fmt: skip


def test_decompose_reports_the_last_error_of_the_search(monkeypatch):
    """The error is that of the returned factors, i.e. the search's last, not an earlier one."""
    W = _weight(seed=3)
    A, B, rp, cp, err = kmod.kron_decompose(W, S, 1, method="permuted_kron", permute="both",
                                            n_iter=4, tol=0.0, seed=0)  # fmt: skip
    assert err == pytest.approx(_rel(A, B, rp, cp, W), rel=1e-12, abs=1e-15)
    P = tqla.permuted.permuted_kron(W.numpy(), S, 1, permute="both", n_iter=4, tol=0.0,
                                    n_restarts=1, rng=np.random.default_rng(0))  # fmt: skip
    assert err == float(P.errors[-1])


@pytest.mark.parametrize("permute", ["rows", "both"])
def test_decompose_permuted_with_a_moment_calls_the_whitened_search(permute, monkeypatch):
    seen = _spy_solvers(monkeypatch)
    W, C = _weight(), _moment()
    A, B, rp, cp, err = kmod.kron_decompose(W, S, 2, method="permuted_kron", permute=permute,
                                            rule="slots", n_iter=2, tol=0.25, n_restarts=2,
                                            seed=4, moment=C, damp=0.1)  # fmt: skip
    ((args, kwargs, state),) = seen.pop("whitened_permuted_kron")
    assert args[2:] == (S, 2) and len(args) == 4  # (it runs the other solvers inside)
    np.testing.assert_array_equal(args[1], C.numpy())
    assert state == _rng_state(4) and kwargs.pop("rng") is not None
    assert kwargs == {"damp": 0.1, "permute": permute, "n_restarts": 2, "rule": "slots",
                      "n_iter": 2, "tol": 0.25}  # fmt: skip
    assert rp is not None and (cp is None) == (permute == "rows")
    # the plain relative error of the returned factors, not the whitened objective
    assert type(err) is float and err == pytest.approx(_rel(A, B, rp, cp, W), rel=1e-9)


@pytest.mark.parametrize(
    "method,permute,whiten",
    [("kron", "none", False), ("kron", "none", True), ("permuted_kron", "both", False),
     ("permuted_kron", "rows", True)],
)  # fmt: skip
def test_decompose_of_a_torch_matrix_returns_torch_factors_and_the_plain_error(
    method, permute, whiten
):
    """The device route's _decompose, run on CPU tensors: same solvers through torch."""
    W, C = _weight(), (_moment() if whiten else None)
    A, B, rp, cp, err = kmod._decompose(W, S, 2, method, permute, None, 2, None, 1, 0, C, 0.0)
    assert isinstance(A, torch.Tensor) and isinstance(B, torch.Tensor)
    assert (rp is None) == (permute == "none") and (cp is None) == (permute != "both")
    assert type(err) is float and err == pytest.approx(_rel(A, B, rp, cp, W), rel=1e-9)
    approx = W + 0.5
    want = float(torch.linalg.norm(approx - W) / torch.linalg.norm(W))
    assert kmod._relative_error(approx, W) == pytest.approx(want, rel=1e-12)
    assert kmod._relative_error(approx.numpy(), W.numpy()) == pytest.approx(want, rel=1e-12)


def test_decompose_kron_refuses_permutations():
    msg = ("permute='rows' needs method='permuted_kron'; method='kron' has no permutations "
           "(use permute='none')")  # fmt: skip
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        kmod.kron_decompose(_weight(), S, 1, method="kron", permute="rows")


# --------------------------------------------------------------------------------------
# The constructor
# --------------------------------------------------------------------------------------
def test_constructor_defaults_and_structure():
    layer = KroneckerLinear(8, 6, S)
    assert (layer.rank, layer.permute, layer.implementation, layer.source) == (
        1, "none", "factorized", "linear")  # fmt: skip
    assert layer.approximation_error is None and layer.bias.shape == (6,)
    assert layer.input_perm is None and layer.output_perm is None
    assert layer.A.dtype == torch.get_default_dtype() and layer.kshape == S
    assert layer._order == S.matmat_order(1)


@pytest.mark.parametrize("permute", ["none", "rows", "cols", "both"])
def test_constructor_puts_everything_on_the_device_and_dtype(permute):
    layer = KroneckerLinear(8, 6, S, 3, bias=False, permute=permute, implementation="reconstructed",
                            source="conv1d", approximation_error=0.25, device="meta",
                            dtype=torch.float64)  # fmt: skip
    assert (layer.A.shape, layer.B.shape) == ((3, 3, 4), (3, 2, 2))
    assert {p.device.type for p in layer.parameters()} == {"meta"}
    assert {p.dtype for p in layer.parameters()} == {torch.float64}
    assert layer.bias is None
    want = {"input_perm": permute in ("cols", "both"), "output_perm": permute in ("rows", "both")}
    assert {k: v is not None for k, v in layer._buffers.items()} == want
    for b in layer.buffers():
        assert (b.device.type, b.dtype) == ("meta", torch.int64)
    assert (layer.permute, layer.implementation, layer.source) == (permute, "reconstructed",
                                                                   "conv1d")  # fmt: skip
    assert layer.approximation_error == 0.25 and layer._order == S.matmat_order(3)
    real = KroneckerLinear(8, 6, S, 1, permute=permute)
    for name, b in real.named_buffers():  # identities until filled
        assert torch.equal(b, torch.arange(8 if name == "input_perm" else 6))


def test_constructor_names_its_bad_arguments():
    msg = ("shape A (3, 4) ⊗ B (2, 2) gives a (6, 8) weight, but a layer 6→8 needs (out, in) = "
           "(8, 6): m1·m2 = out and n1·n2 = in")  # fmt: skip
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        KroneckerLinear(6, 8, S)
    with pytest.raises(ValueError, match=r"^out_features must be a positive integer, got 0$"):
        KroneckerLinear(8, 0, S)
    with pytest.raises(ValueError, match=r"^rank must satisfy 1 <= rank"):
        KroneckerLinear(8, 6, S, 5)
    with pytest.raises(ValueError, match=r"^source must be 'linear' or 'conv1d', got 'conv2d'$"):
        KroneckerLinear(8, 6, S, source="conv2d")
    with pytest.raises(ValueError, match=r"^permute must be one of"):
        KroneckerLinear(8, 6, S, permute="all")


def test_reset_parameters_draws_the_linear_variance(monkeypatch):
    import tqla_torch.nn.base as base

    normal = _spy(monkeypatch, kmod.nn.init, "normal_")
    bias = []
    real = base.CompressedModule._reset_bias
    monkeypatch.setattr(base.CompressedModule, "_reset_bias",
                        lambda self, fan_in: bias.append(fan_in) or real(self, fan_in))  # fmt: skip
    layer = KroneckerLinear(8, 6, S, 3)
    std = (1.0 / (3.0 * 8 * 3)) ** 0.25
    assert [(a[0] is t, k) for (a, k), t in zip(normal, (layer.A, layer.B))] == [
        (True, {"std": std}), (True, {"std": std})]  # fmt: skip
    assert len(normal) == 2 and bias == [8]
    bound = 1 / 8**0.5
    assert 0 < float(layer.bias.detach().abs().max()) <= bound


# --------------------------------------------------------------------------------------
# from_factors
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["none", "rows", "cols", "both"])
def test_from_factors_holds_the_factors_and_permutations(which, monkeypatch):
    perms = _spy(monkeypatch, kmod, "as_perm")
    g = torch.Generator().manual_seed(0)
    A = torch.randn(2, 3, 4, dtype=torch.float64, generator=g)
    B = torch.randn(2, 2, 2, dtype=torch.float32, generator=g)
    bias = torch.randn(6, dtype=torch.float32, generator=g, requires_grad=True)
    rp = torch.randperm(6, generator=g) if which in ("rows", "both") else None
    cp = list(torch.randperm(8, generator=g).tolist()) if which in ("cols", "both") else None
    layer = KroneckerLinear.from_factors(A, B, rp, cp, bias, implementation="reconstructed",
                                         source="conv1d", approximation_error=0.125)  # fmt: skip
    assert [(a[1:], k) for a, k in perms] == [((6, "row_perm", A.device), {}),
                                              ((8, "col_perm", A.device), {})]  # fmt: skip
    assert perms[0][0][0] is rp and perms[1][0][0] is cp
    assert layer.permute == which and (layer.implementation, layer.source) == (
        "reconstructed", "conv1d")  # fmt: skip
    assert layer.approximation_error == 0.125
    assert {p.dtype for p in layer.parameters()} == {torch.float64}
    assert torch.equal(layer.A, A) and torch.equal(layer.B, B.double())
    assert torch.equal(layer.bias, bias.detach().double())
    K = torch.kron(A[0], B[0].double()) + torch.kron(A[1], B[1].double())
    W = K if rp is None else K[rp]
    W = W if cp is None else W[:, torch.tensor(cp)]
    torch.testing.assert_close(layer.to_dense(), W, rtol=0, atol=0)
    assert torch.equal(layer.row_perm, torch.arange(6) if rp is None else rp)
    assert torch.equal(layer.col_perm, torch.arange(8) if cp is None else torch.tensor(cp))
    A[0, 0, 0] = 99.0  # copies
    assert layer.A[0, 0, 0] != 99.0


def test_from_factors_builds_on_the_factors_device():
    A = torch.empty(2, 3, 4, dtype=torch.float64, device="meta")
    B = torch.empty(2, 2, 2, dtype=torch.float32, device="meta")
    bias = torch.empty(6, dtype=torch.float32, device="meta")
    layer = KroneckerLinear.from_factors(A, B, list(range(6)), None, bias)
    assert {t.device.type for t in (*layer.parameters(), *layer.buffers())} == {"meta"}
    assert {p.dtype for p in layer.parameters()} == {torch.float64}
    assert layer.permute == "rows" and layer.output_perm.dtype == torch.int64


def test_from_factors_defaults_and_messages():
    A, B = torch.randn(1, 3, 4), torch.randn(1, 2, 2)
    layer = KroneckerLinear.from_factors(A, B)
    assert (layer.implementation, layer.source, layer.approximation_error, layer.bias) == (
        "factorized", "linear", None, None)  # fmt: skip
    assert layer.permute == "none" and layer.A.dtype == torch.float32
    bad_pairs = ((A[0], B), (A, B[0]), (torch.randn(2, 3, 4), B), (A, B.reshape(1, 4)),
                 (A.reshape(1, 12), B))  # fmt: skip
    for a, b in bad_pairs:
        msg = (f"A and B must be 3-D (rank, rows, cols) with the same rank, got "
               f"{tuple(a.shape)} and {tuple(b.shape)}")  # fmt: skip
        with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
            KroneckerLinear.from_factors(a, b)
    with pytest.raises(ValueError, match=r"^bias must have shape \(6,\), got \(8,\)$"):
        KroneckerLinear.from_factors(A, B, bias=torch.zeros(8))
    L = KroneckerLinear.from_factors(A.numpy(), B.numpy(), bias=torch.zeros(6))
    assert L.A.dtype == torch.float32 and torch.equal(L.A, A)


# --------------------------------------------------------------------------------------
# from_dense, from_linear, from_conv1d, from_module, plan
# --------------------------------------------------------------------------------------
def test_from_dense_hands_every_argument_on(monkeypatch, caplog):
    dec = _spy(monkeypatch, kmod, "kron_decompose")
    fac = _spy_classmethod(monkeypatch, "from_factors")
    W, C, bias = _weight(), _moment(), torch.randn(6, dtype=torch.float64, requires_grad=True)
    with caplog.at_level(logging.DEBUG, logger="tqla_torch.nn.kronecker"):
        layer = KroneckerLinear.from_dense(
            W, bias, ((3, 4), (2, 2)), 2, method="permuted_kron", permute="cols",
            implementation="reconstructed", source="conv1d", rule="slots", n_iter=2, tol=0.25,
            n_restarts=2, seed=11, moment=C, damp=0.5,
        )  # fmt: skip
    ((args, kwargs),) = dec
    assert args[0] is W and args[1:] == (S, 2)
    assert kwargs == {"method": "permuted_kron", "permute": "cols", "rule": "slots",
                      "n_iter": 2, "tol": 0.25, "n_restarts": 2, "seed": 11, "moment": C,
                      "damp": 0.5}  # fmt: skip
    ((fargs, fkw),) = fac
    err = layer.approximation_error
    assert fkw == {"implementation": "reconstructed", "source": "conv1d",
                   "approximation_error": err}  # fmt: skip
    assert fargs[2] is None and fargs[3] is not None and not fargs[4].requires_grad
    assert torch.equal(fargs[4], bias.detach())
    assert [r.getMessage() for r in caplog.records] == [
        f"KroneckerLinear.from_dense: {S}, relative error {err:.4g}"]  # fmt: skip
    assert caplog.records[0].levelno == logging.DEBUG
    assert err == pytest.approx(_rel(layer.A.detach(), layer.B.detach(), layer.row_perm,
                                     layer.col_perm, W), rel=1e-9)  # fmt: skip


def test_from_dense_defaults(monkeypatch):
    dec = _spy(monkeypatch, kmod, "kron_decompose")
    fac = _spy_classmethod(monkeypatch, "from_factors")
    W = _weight()
    layer = KroneckerLinear.from_dense(W, None, ((3, 4), (2, 2)))
    assert dec[0][0][1:] == (S, 1)
    assert dec[0][1] == {"method": "permuted_kron", "permute": "both", "rule": None,
                         "n_iter": None, "tol": None, "n_restarts": 1, "seed": 0,
                         "moment": None, "damp": 0.0}  # fmt: skip
    assert fac[0][0][4] is None and fac[0][1]["implementation"] == "factorized"
    assert fac[0][1]["source"] == "linear" and layer.bias is None
    KroneckerLinear.from_dense(W, None, S, method="kron")
    assert dec[1][1]["permute"] == "none"
    KroneckerLinear.from_dense(W, None, S, method="permuted_kron", permute="rows")
    assert dec[2][1]["permute"] == "rows"


def test_from_dense_hands_the_factors_over_on_the_weight_device_and_dtype(monkeypatch):
    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(1, 3, 4, dtype=torch.float64, generator=g), torch.randn(1, 2, 2)
    monkeypatch.setattr(kmod, "kron_decompose", lambda *a, **k: (A, B, None, None, 0.5))
    fac = _spy_classmethod(monkeypatch, "from_factors")
    W = torch.empty(6, 8, dtype=torch.float16, device="meta")
    layer = KroneckerLinear.from_dense(W, None, S, method="kron")
    for t in fac[0][0][:2]:
        assert (t.device.type, t.dtype) == ("meta", torch.float16)
    assert layer.A.device.type == "meta" and layer.approximation_error == 0.5


def test_from_linear_and_from_conv1d_hand_their_weight_and_options_on(monkeypatch):
    from transformers.pytorch_utils import Conv1D

    calls = _spy_classmethod(monkeypatch, "from_dense")
    lin = torch.nn.Linear(8, 6).double()
    KroneckerLinear.from_linear(lin, S)
    KroneckerLinear.from_linear(lin, S, 2, method="kron", permute="none",
                                implementation="reconstructed", seed=3, n_iter=2)  # fmt: skip
    conv = Conv1D(6, 8).double()  # weight (in, out) = (8, 6)
    KroneckerLinear.from_conv1d(conv, S)
    KroneckerLinear.from_conv1d(conv, S, 2, method="kron", permute="none",
                                implementation="reconstructed", seed=3)  # fmt: skip
    for (args, _), w, b in zip(calls, (lin.weight, lin.weight, conv.weight.T, conv.weight.T),
                               (lin.bias, lin.bias, conv.bias, conv.bias)):  # fmt: skip
        assert torch.equal(args[0], w) and args[0].data_ptr() == w.data_ptr() and args[1] is b
    assert [c[0][2:] for c in calls] == [(S, 1), (S, 2), (S, 1), (S, 2)]
    assert [c[1] for c in calls] == [
        {"method": "permuted_kron", "permute": None, "implementation": "factorized"},
        {"method": "kron", "permute": "none", "implementation": "reconstructed", "seed": 3,
         "n_iter": 2},
        {"method": "permuted_kron", "permute": None, "implementation": "factorized",
         "source": "conv1d"},
        {"method": "kron", "permute": "none", "implementation": "reconstructed",
         "source": "conv1d", "seed": 3},
    ]  # fmt: skip


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
@pytest.mark.parametrize("name", ["", "h.0.mlp"])
def test_from_module_hands_every_setting_on(kind, name, monkeypatch):
    from transformers.pytorch_utils import Conv1D

    module = torch.nn.Linear(8, 6).double() if kind == "linear" else Conv1D(6, 8).double()
    calls = _spy_classmethod(monkeypatch, "from_dense")
    C = _moment()
    kw = {} if name == "" else {"name": name}
    KroneckerLinear.from_module(module, _settings(), moment=C, damp=0.5, **kw)
    KroneckerLinear.from_module(module, _settings(seed=None, rule=None), **kw)
    (args, kwargs), (_, kw2) = calls
    w = module.weight if kind == "linear" else module.weight.T
    assert torch.equal(args[0], w) and args[1] is module.bias
    assert args[2:] == ([[3, 4], [2, 2]], 2)
    assert kwargs == {"method": "permuted_kron", "permute": "rows",
                      "implementation": "reconstructed", "source": kind, "rule": "slots",
                      "n_iter": 2, "tol": 0.125, "n_restarts": 2, "seed": seed_for(7, name),
                      "moment": C, "damp": 0.5}  # fmt: skip
    assert (kw2["seed"], kw2["rule"], kw2["moment"], kw2["damp"]) == (None, None, None, 0.0)


def test_from_module_and_plan_name_the_module_in_their_errors():
    lin = torch.nn.Linear(8, 6)
    for name, shown in (("", "module"), ("h.0", "h.0")):
        msg = (f"module {shown!r}: rank 5 exceeds the Kronecker rank bound min(p·q, s·t) = 4 of "
               f"A (3, 4) ⊗ B (2, 2)")  # fmt: skip
        with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
            KroneckerLinear.from_module(lin, _settings(rank=5), name=name)
        with pytest.raises(ValueError, match=r"^module 'h\.0': repeat=2 applies to embeddings"):
            KroneckerLinear.from_module(lin, _settings(repeat=2), name="h.0")
    with pytest.raises(ValueError, match=r"^module 'module': repeat=3 applies to embeddings"):
        KroneckerLinear.plan(lin, _settings(repeat=3))
    with pytest.raises(ValueError, match=r"^module 'x': .*A \(5, 4\) ⊗ B \(2, 2\)"):
        KroneckerLinear.plan(lin, _settings(shape=[[5, 4], [2, 2]]), name="x")


@pytest.mark.parametrize("bias", [True, False])
def test_plan_is_stated_whole(bias):
    from transformers.pytorch_utils import Conv1D

    for module in (torch.nn.Linear(8, 6, bias=bias), Conv1D(6, 8)):
        if not bias and not isinstance(module, torch.nn.Linear):
            continue
        plan = KroneckerLinear.plan(module, _settings(rank=4), name="m")
        assert plan == LayerPlan(layer="KroneckerLinear", in_features=8, out_features=6,
                                 factors="3×4 ⊗ 2×2", shape=[[3, 4], [2, 2]], rank=4,
                                 permute="rows", repeat=1,
                                 params_after=4 * (12 + 4) + (6 if bias else 0))  # fmt: skip


# --------------------------------------------------------------------------------------
# Description, spec, dense form and forward
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_extra_repr_and_spec_are_stated_whole(bias):
    layer = KroneckerLinear(8, 6, S, 2, bias=bias, permute="cols")
    params = 2 * 12 + 2 * 4 + (6 if bias else 0)
    dense = 48 + (6 if bias else 0)
    assert layer.extra_repr() == (
        f"in_features=8, out_features=6, A=(3, 4), B=(2, 2), rank=2, permuted=cols, "
        f"params={params}, dense_params={dense}, implementation=factorized"
    )
    assert layer._spec_values() == {"in_features": 8, "out_features": 6,
                                    "shape": [[3, 4], [2, 2]], "rank": 2, "bias": bias,
                                    "permute": "cols", "implementation": "factorized",
                                    "source": "linear"}  # fmt: skip
    assert layer.spec() == {"type": "KroneckerLinear", **layer._spec_values()}


@pytest.mark.parametrize("permute", ["none", "rows", "cols", "both"])
def test_forward_hands_the_layer_to_the_fused_forward(permute, monkeypatch):
    calls = _spy(monkeypatch, kmod, "factorized_forward")
    layer = KroneckerLinear(8, 6, S, 2, permute=permute).double()
    layer.memory_fraction = 0.25
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    with torch.no_grad():
        y = layer(x)
    ((args, kwargs),) = calls
    assert kwargs == {} and args[0].shape == (6, 8) and torch.equal(args[0], x.reshape(6, 8))
    assert args[1] is layer.A and args[2] is layer.B and args[3] is layer.input_perm
    assert args[4] is layer.output_perm and args[5] == layer._order and args[6] is layer.bias
    assert args[7] == 0.25 and y.shape == (2, 3, 6)
    with torch.no_grad():
        torch.testing.assert_close(y, x @ layer.to_dense().T + layer.bias)
    msg = ("KroneckerLinear expects inputs with 8 features in the last dimension, got shape "
           "(2, 8, 3)")  # fmt: skip
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        layer(x.transpose(1, 2))


class _Gathers(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, tuple]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") == "index_select":
            self.calls.append((args[1], tuple(args[0].shape)))
        return func(*args, **kwargs)


@pytest.mark.parametrize("tokens", [1, 5, 6, 7, 20])
@pytest.mark.parametrize("permute", ["rows", "cols", "both"])
def test_reconstructed_forward_gathers_the_smaller_side(tokens, permute):
    """Rows of W for the output permutation; for the input permutation the columns of x
    while there are fewer tokens than outputs, else W's columns."""
    layer = KroneckerLinear(8, 6, S, 2, permute=permute, implementation="reconstructed").double()
    with torch.no_grad():
        for b in layer.buffers():
            b.copy_(torch.randperm(b.numel(), generator=torch.Generator().manual_seed(1)))
    x = torch.randn(tokens, 8, dtype=torch.float64)
    with torch.no_grad(), _Gathers() as rec:
        y = layer(x)
    want = []
    if permute in ("rows", "both"):
        want.append((0, (6, 8)))
    if permute in ("cols", "both"):
        want.append((-1, (tokens, 8)) if tokens < 6 else (1, (6, 8)))
    assert rec.calls == want
    with torch.no_grad():
        W = layer._kron_dense()
        if layer.output_perm is not None:
            W = W[layer.output_perm]
        if layer.input_perm is not None:
            W = W[:, inverse_perm(layer.input_perm)]
        torch.testing.assert_close(y, x @ W.T + layer.bias, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(layer.to_dense(), W, rtol=0, atol=0)
