"""The factorized forward of :class:`~tqla_torch.nn.KroneckerLinear`, fused for torch.

``y = (K · x[..., input_perm])[..., output_perm]`` for a batch of tokens without forming K.
It does what :meth:`tqla.KroneckerSum.matmat` does (same association rule,
:meth:`tqla.KroneckerShape.matmat_order`) but fuses the permutations into the layout
changes and runs one large GEMM against a factor as stored; ``tests/test_nn_registry.py``
checks it against the core and ``benchmarks/bench_torch_forward.py`` measures it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["factorized_forward"]

# The "B first" forward switches from r accumulated GEMMs to one GEMM against a copy of A
# from this many output rows (tokens × m2) on.
_ONE_GEMM_MIN_ROWS = 256


def _input_transposed(
    x: torch.Tensor, input_perm: torch.Tensor | None, n1: int, n2: int
) -> torch.Tensor:
    """x (T, n1·n2) → (T, n2, n1) with ``x[..., input_perm]`` applied.

    With a permutation this is one gather whose index also transposes (the layout costs
    nothing extra); without, a strided view.
    """
    T = x.shape[0]
    if input_perm is not None:
        idx = input_perm.view(n1, n2).t().reshape(-1)
        return x.index_select(-1, idx).view(T, n2, n1)
    return x.view(T, n1, n2).transpose(1, 2)


def _output_index(output_perm: torch.Tensor, m1: int, m2: int) -> torch.Tensor:
    """Gather index from a (T, m2, m1) layout to the permuted (T, out) output."""
    o = output_perm
    return (o % m2) * m1 + torch.div(o, m2, rounding_mode="floor")


def factorized_forward(
    x: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    input_perm: torch.Tensor | None,
    output_perm: torch.Tensor | None,
    order: str,
) -> torch.Tensor:
    """K · x[input_perm], gathered by output_perm, for x of shape (T, in).

    Both association orders run one large GEMM against a factor as stored (no copy of
    A), one small batched GEMM, and at most one gather on each side, fused with the
    layout changes the orders need.
    """
    r, m1, n1 = A.shape
    _, m2, n2 = B.shape
    T = x.shape[0]
    # the cheaper association order of forward_costs (tqla.KroneckerShape.matmat_order)
    if order == "a_first":
        # Z[t, (j2, k), i1] = Σ_j1 X[t, j1, j2] A[k, i1, j1]: one GEMM against A.
        Xt = _input_transposed(x, input_perm, n1, n2).reshape(T * n2, n1).contiguous()
        Z = F.linear(Xt, A.reshape(r * m1, n1)).view(T, n2 * r, m1)
        del Xt  # intermediates are released as soon as possible (peak memory)
        if output_perm is not None:
            # Yt[t, i2, i1] = Σ_(j2,k) B[k, i2, j2] Z[t, (j2, k), i1]; the output gather
            # undoes the (i2, i1) layout and applies the permutation in one pass.
            BvT = B.permute(1, 2, 0).reshape(m2, n2 * r)
            Yt = torch.matmul(BvT, Z).view(T, m2 * m1)
            del Z
            return Yt.index_select(-1, _output_index(output_perm, m1, m2))
        # Y[t, i1, i2] = Σ_(j2,k) Z[t, (j2, k), i1] B[k, i2, j2]: the canonical layout.
        Bv = B.permute(2, 0, 1).reshape(n2 * r, m2)
        return torch.matmul(Z.transpose(1, 2), Bv).view(T, m1 * m2)
    # Z[t, (i2, k), j1] = Σ_j2 B[k, i2, j2] X[t, j1, j2]: a small batched GEMM.
    Xt = _input_transposed(x, input_perm, n1, n2)
    Bs = B.permute(1, 0, 2).reshape(m2 * r, n2)
    Z = torch.matmul(Bs, Xt).view(T, m2, r, n1)
    del Xt
    # Yt[(t, i2), i1] = Σ_(k, j1) Z[t, i2, k, j1] A[k, i1, j1].
    if T * m2 >= _ONE_GEMM_MIN_ROWS:
        # One GEMM with inner dimension r·n1 against A laid out as (m1, r·n1): the copy
        # of A costs less than writing the output r times.
        Acat = A.permute(1, 0, 2).reshape(m1, r * n1)
        Yt = F.linear(Z.view(T * m2, r * n1), Acat)
    else:
        # Few tokens: r GEMMs against A as stored, accumulated in place (Z[:, :, k] is a
        # strided matrix view), so A is read once and never copied.
        Yt = torch.mm(Z[:, :, 0].reshape(T * m2, n1), A[0].t())
        for k in range(1, r):
            Yt = Yt.addmm_(Z[:, :, k].reshape(T * m2, n1), A[k].t())
    del Z
    if output_perm is not None:
        return Yt.view(T, m2 * m1).index_select(-1, _output_index(output_perm, m1, m2))
    return Yt.view(T, m2, m1).transpose(1, 2).reshape(T, m1 * m2)
