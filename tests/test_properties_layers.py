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
