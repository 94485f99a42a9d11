"""KroneckerLinear's factorized forward runs the cheaper association order.

Both orders compute the same output, so only the cost tells them apart: the multiply-adds
of the actual forward are counted with ``torch.utils.flop_counter.FlopCounterMode`` and
must equal the cheaper order's count, derived here from the factor shapes.  The inputs have
256 or 300 rows, so the forward also runs in chunks of tokens (tqla_torch/nn/_kron_forward.py);
its r accumulated GEMMs of the "B first" order use ``torch.addmm(..., out=)``, which the
counter sees (it does not see ``addmm_``).  Checked to fail, for several Hypothesis seeds,
with the order comparison flipped.
"""

from __future__ import annotations

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from tqla_torch.nn import KroneckerLinear  # noqa: E402


def _orders(m1: int, n1: int, m2: int, n2: int, r: int, T: int) -> tuple[int, int]:
    """Multiply-adds of T tokens through W = Σ A_k ⊗ B_k (out×in), A_k m1×n1, B_k m2×n2.

    A first: X_t (n1×n2) → A_k X_t (m1·n1·n2), then · B_kᵀ (m1·n2·m2).
    B first: X_t B_kᵀ (n1·n2·m2), then A_k · (m1·n1·m2).
    """
    a_first = T * r * (m1 * n1 * n2 + m1 * n2 * m2)
    b_first = T * r * (n1 * n2 * m2 + m1 * n1 * m2)
    return a_first, b_first


def _forward_flops(layer: KroneckerLinear, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        layer(x)
    return int(counter.get_total_flops())


dims = st.integers(1, 8)


@given(
    m1=dims,
    n1=dims,
    m2=dims,
    n2=dims,
    r=st.integers(1, 3),
    T=st.sampled_from([256, 300]),
    permute=st.sampled_from(["none", "rows", "cols", "both"]),
)
@example(m1=8, n1=2, m2=2, n2=8, r=2, T=300, permute="none")  # B first far cheaper
@example(m1=2, n1=8, m2=8, n2=2, r=2, T=300, permute="none")  # A first far cheaper
@example(m1=8, n1=2, m2=2, n2=8, r=3, T=256, permute="both")
def test_factorized_forward_runs_the_cheaper_order(m1, n1, m2, n2, r, T, permute):
    rank = min(r, m1 * n1, m2 * n2)
    a_first, b_first = _orders(m1, n1, m2, n2, rank, T)
    assume(a_first != b_first)  # a tie costs the same either way
    shape = ((m1, n1), (m2, n2))
    layer = KroneckerLinear(n1 * n2, m1 * m2, shape, rank, bias=False, permute=permute)
    layer = layer.double()
    x = torch.randn(T, n1 * n2, dtype=torch.float64)
    assert _forward_flops(layer, x) == 2 * min(a_first, b_first)
    # the cheaper order computes the layer's function
    with torch.no_grad():
        y = layer(x)
        ref = x @ layer.to_dense().T
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12 * max(1.0, float(ref.abs().max())))


def test_gpt2_c_fc_shape_runs_the_published_cheaper_order():
    """GPT-2 c_fc (768→3072, A 768×384, B 4×2, r = 4): 2,383,872 multiply-adds per token."""
    layer = KroneckerLinear(768, 3072, ((768, 384), (4, 2)), 4, bias=False)
    x = torch.randn(256, 768)
    assert _forward_flops(layer, x) == 2 * 256 * 2_383_872


# --------------------------------------------------------------------------------------
# Found by mutation testing of tqla_torch/nn/kronecker.py
# --------------------------------------------------------------------------------------
def test_from_dense_names_the_weight_in_shape_errors():
    with pytest.raises(ValueError, match=r"^weight of shape \(6, 8\)"):
        KroneckerLinear.from_dense(torch.zeros(6, 8), None, ((3, 2), (2, 2)), 1)


def test_from_conv1d_keeps_the_permute_argument():
    Conv1D = pytest.importorskip("transformers.pytorch_utils").Conv1D
    conv = Conv1D(6, 8)  # (nf=out, nx=in): weight stored (in, out) = (8, 6)
    layer = KroneckerLinear.from_conv1d(conv, ((3, 4), (2, 2)), 1, permute="rows", n_iter=1)
    assert layer.permute == "rows"
    assert layer.output_perm is not None and layer.input_perm is None


def test_from_dense_logs_its_error_at_debug_level(caplog):
    import logging

    W = torch.randn(6, 8, dtype=torch.float64)
    with caplog.at_level(logging.DEBUG, logger="tqla_torch.nn.kronecker"):
        KroneckerLinear.from_dense(W, None, ((3, 4), (2, 2)), 1, method="kron")
    assert "relative error" in caplog.text


def _spy_permuted_kron(monkeypatch) -> list[dict]:
    """Record the keyword arguments every ``tqla.permuted.permuted_kron`` call receives."""
    import tqla.permuted

    calls: list[dict] = []
    real = tqla.permuted.permuted_kron

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(tqla.permuted, "permuted_kron", spy)
    return calls


def test_from_dense_passes_restarts_and_tolerance_to_the_solver(monkeypatch):
    calls = _spy_permuted_kron(monkeypatch)
    W = torch.randn(6, 8, dtype=torch.float64)
    KroneckerLinear.from_dense(W, None, ((3, 4), (2, 2)), 1, n_restarts=2, tol=0.25, n_iter=2)
    assert len(calls) == 1
    assert calls[0]["n_restarts"] == 2 and calls[0]["tol"] == 0.25 and calls[0]["n_iter"] == 2


def test_from_module_passes_the_settings_to_the_solver(monkeypatch):
    from tqla_torch.compression import CompressionConfig

    calls = _spy_permuted_kron(monkeypatch)
    lin = torch.nn.Linear(8, 6, bias=False).double()
    cfg = CompressionConfig(target_modules=["m"], method="permuted_kron", shape=[[3, 4], [2, 2]],
                            rank=1, n_restarts=3, tol=0.125, n_iter=2)  # fmt: skip
    KroneckerLinear.from_module(lin, cfg.settings_for("m"), name="m")
    assert len(calls) == 1
    assert calls[0]["n_restarts"] == 3 and calls[0]["tol"] == 0.125 and calls[0]["n_iter"] == 2


def test_plan_states_both_feature_counts_and_names_the_module():
    from tqla_torch.compression import CompressionConfig

    lin = torch.nn.Linear(8, 6)
    settings = CompressionConfig(target_modules=["m"], method="kron", shape=[[3, 4], [2, 2]],
                                 rank=1).settings_for("m")  # fmt: skip
    plan = KroneckerLinear.plan(lin, settings)
    assert (plan.in_features, plan.out_features) == (8, 6)
    assert plan.params_after == 3 * 4 + 2 * 2 + 6
    # without a name, the errors of from_module still name "the module"
    too_big = CompressionConfig(target_modules=["m"], method="kron", shape=[[3, 4], [2, 2]],
                                rank=5).settings_for("m")  # fmt: skip
    with pytest.raises(ValueError, match=r"^module 'module': rank 5 exceeds"):
        KroneckerLinear.from_module(lin, too_big)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_from_dense_puts_both_factors_on_the_weight_device(monkeypatch):
    import numpy as np

    calls = _spy_permuted_kron(monkeypatch)  # the non-CPU route of kron_decompose
    W = torch.randn(6, 8, dtype=torch.float64, device="cuda")
    layer = KroneckerLinear.from_dense(W, None, ((3, 4), (2, 2)), 1, n_iter=2, seed=0)
    assert layer.A.device == W.device and layer.B.device == W.device
    assert layer.kshape.a == (3, 4) and isinstance(calls[0]["rng"], np.random.Generator)
    assert layer.output_perm.device == W.device and layer.input_perm.device == W.device
    plain = KroneckerLinear.from_dense(W, None, ((3, 4), (2, 2)), 1, method="kron")
    Wc = W.cpu()
    ref = KroneckerLinear.from_dense(Wc, None, ((3, 4), (2, 2)), 1, method="kron")
    assert abs(plain.approximation_error - ref.approximation_error) < 1e-9


def test_kron_decompose_seeds_the_solver_and_names_a_bad_method(monkeypatch):
    import numpy as np

    from tqla.shapes import KroneckerShape
    from tqla_torch.nn.kronecker import kron_decompose

    calls = _spy_permuted_kron(monkeypatch)
    W = torch.randn(6, 8, dtype=torch.float64)
    s = KroneckerShape((3, 4), (2, 2))
    kron_decompose(W, s, 1, method="permuted_kron", permute="both", n_iter=1, seed=0)
    kron_decompose(W, s, 1, method="permuted_kron", permute="both", n_iter=1, seed=None)
    assert isinstance(calls[0]["rng"], np.random.Generator) and calls[1]["rng"] is None
    with pytest.raises(ValueError, match=r"^method must be one of .*got 'svd'"):
        kron_decompose(W, s, 1, method="svd", permute="none")


def test_activation_aware_kron_fit_uses_the_damping_it_is_given():
    from tqla.shapes import KroneckerShape
    from tqla.whiten import whitened_kron_svd
    from tqla_torch.nn.kronecker import kron_decompose

    g = torch.Generator().manual_seed(0)
    W = torch.randn(6, 8, dtype=torch.float64, generator=g)
    X = torch.randn(40, 8, dtype=torch.float64, generator=g) * torch.linspace(0.1, 3, 8)
    C = X.T @ X / 40
    s = KroneckerShape((3, 4), (2, 2))
    for damp in (0.0, 0.5):
        want = whitened_kron_svd(W, C, s, 1, damp=damp).to_dense()
        kw = {} if damp == 0.0 else {"damp": damp}  # 0.0 is kron_decompose's default
        A, B, _, _, _ = kron_decompose(W, s, 1, method="kron", permute="none", moment=C, **kw)
        torch.testing.assert_close(torch.kron(A[0], B[0]), want, rtol=1e-10, atol=1e-12)
        layer = KroneckerLinear.from_dense(W, None, s, 1, method="kron", moment=C, damp=damp)
        torch.testing.assert_close(layer.to_dense(), want, rtol=1e-10, atol=1e-12)


def test_layer_defaults_and_the_arguments_its_constructors_pass_on():
    from tqla_torch.compression import CompressionConfig

    assert KroneckerLinear(8, 6, ((3, 4), (2, 2))).rank == 1
    lin = torch.nn.Linear(8, 6).double()
    layer = KroneckerLinear.from_linear(lin, ((3, 4), (2, 2)), 1, method="kron",
                                        implementation="reconstructed")  # fmt: skip
    assert layer.implementation == "reconstructed"
    cfg = CompressionConfig(target_modules=["m"], method="permuted_kron", shape=[[3, 4], [2, 2]],
                            rank=1, permute="cols", n_iter=1)  # fmt: skip
    layer = KroneckerLinear.from_module(lin, cfg.settings_for("m"), name="m")
    assert layer.permute == "cols" and layer.output_perm is None and layer.input_perm is not None
    A, B = layer.A.detach(), layer.B.detach()
    with pytest.raises(ValueError, match=r"^bias must have shape \(6,\), got \(5,\)"):
        KroneckerLinear.from_factors(A, B, bias=torch.zeros(5, dtype=A.dtype))


# Found by a fresh sample (seed 2) of tqla_torch/nn/kronecker.py's mutants
@pytest.mark.parametrize("implementation", ["factorized", "reconstructed"])
def test_forward_runs_the_route_its_implementation_names(implementation, monkeypatch):
    import tqla_torch.nn.kronecker as kmod

    calls: list[int] = []
    real = kmod.factorized_forward

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(kmod, "factorized_forward", spy)
    layer = KroneckerLinear(8, 6, ((3, 4), (2, 2)), 2, permute="both",
                            implementation=implementation).double()  # fmt: skip
    x = torch.randn(5, 8, dtype=torch.float64)
    with torch.no_grad():
        y = layer(x)
        torch.testing.assert_close(y, x @ layer.to_dense().T + layer.bias)
    assert len(calls) == (1 if implementation == "factorized" else 0)


def test_activation_aware_permuted_fit_gets_the_rank_and_the_options(monkeypatch):
    import numpy as np

    import tqla.whiten
    from tqla.shapes import KroneckerShape
    from tqla_torch.nn.kronecker import kron_decompose

    seen: list[tuple] = []
    real = tqla.whiten.whitened_permuted_kron

    def spy(W, C, shape, rank=1, **kwargs):
        seen.append((rank, kwargs))
        return real(W, C, shape, rank, **kwargs)

    monkeypatch.setattr(tqla.whiten, "whitened_permuted_kron", spy)
    calls = _spy_permuted_kron(monkeypatch)
    W = torch.randn(6, 8, dtype=torch.float64)
    X = torch.randn(40, 8, dtype=torch.float64)
    s = KroneckerShape((3, 4), (2, 2))
    A, B, rp, cp, _ = kron_decompose(W, s, 2, method="permuted_kron", permute="rows",
                                     n_iter=1, seed=0, moment=X.T @ X / 40, damp=0.1)  # fmt: skip
    assert A.shape == (2, 3, 4) and rp is not None and cp is None
    rank, kw = seen[0]
    assert rank == 2 and kw["damp"] == 0.1 and kw["permute"] == "rows" and kw["n_iter"] == 1
    assert isinstance(kw["rng"], np.random.Generator) and kw["n_restarts"] == 1
    kron_decompose(W, s, 1, method="permuted_kron", permute="both", n_iter=1)
    assert calls[-1]["n_restarts"] == 1  # kron_decompose's default: one start


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weight_gives_factors_of_its_dtype(dtype):
    W = torch.randn(6, 8).to(dtype)
    layer = KroneckerLinear.from_dense(W, None, ((3, 4), (2, 2)), 1, method="kron")
    assert layer.A.dtype == dtype and layer.B.dtype == dtype


def test_from_linear_names_what_it_got():
    with pytest.raises(TypeError, match=r"^linear must be a torch\.nn\.Linear, got Conv2d$"):
        KroneckerLinear.from_linear(torch.nn.Conv2d(2, 2, 1), ((1, 1), (2, 2)))


def test_constructors_name_their_bad_arguments():  # found by a fourth sample (seed 3)
    with pytest.raises(ValueError, match=r"^in_features must be a positive integer, got 0$"):
        KroneckerLinear(0, 6, ((3, 4), (2, 2)))
    with pytest.raises(TypeError, match=r"^conv1d must be a transformers\.pytorch_utils\.Conv1D, "
                                        r"got Linear$"):  # fmt: skip
        KroneckerLinear.from_conv1d(torch.nn.Linear(8, 6), ((3, 4), (2, 2)))


# Found by a fresh sample (seed 6) of tqla_torch/nn/kronecker.py's mutants
def test_from_factors_names_each_bad_permutation_and_plan_names_the_module():
    from tqla_torch.compression import CompressionConfig

    A, B = torch.randn(1, 3, 2), torch.randn(1, 2, 4)  # W is 6×8
    for rp, cp, msg in (
        ([0, 1, 2], None, r"^row_perm must have shape \(6,\), got \(3,\)$"),
        (None, [0, 1, 2], r"^col_perm must have shape \(8,\), got \(3,\)$"),
        (None, [0] * 8, r"^col_perm must be a permutation of range\(8\): it repeats entries$"),
    ):
        with pytest.raises(ValueError, match=msg):
            KroneckerLinear.from_factors(A, B, rp, cp)
    too_big = CompressionConfig(target_modules=["m"], method="kron", shape=[[3, 4], [2, 2]],
                                rank=5).settings_for("m")  # fmt: skip
    with pytest.raises(ValueError, match=r"^module 'module': rank 5 exceeds"):
        KroneckerLinear.plan(torch.nn.Linear(8, 6), too_big)  # the default name
