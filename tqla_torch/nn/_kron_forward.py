"""The factorized forward of :class:`~tqla_torch.nn.KroneckerLinear`, fused for torch.

``y = (K · x[..., input_perm])[..., output_perm] + bias`` for a batch of tokens without
forming K.  It does what :meth:`tqla.KroneckerSum.matmat` does (same association rule,
:meth:`tqla.KroneckerShape.matmat_order`) but fuses the permutations into the layout
changes, runs its GEMMs against the factors as stored (no copy of A), and works through
long inputs in chunks of tokens so that its temporaries stay a fraction of the output
(``_TEMP_FRACTION``; the intermediate of either order is about twice the size of the
input or output it comes from, and the chunk's gathers then run on data still in cache).
``tests/test_nn_registry.py`` checks it against the core and
``benchmarks/bench_layers.py`` / ``bench_torch_forward.py`` measure it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["factorized_forward"]

# The temporaries of one chunk (gathered input, intermediate, un-permuted output) stay below
# this fraction of the output's size by default (KroneckerLinear.memory_fraction), so the peak
# memory of a forward is about (1 + _TEMP_FRACTION)× that of a dense layer (whose only
# allocation is its output) ...
_TEMP_FRACTION = 0.5
# ... unless that leaves fewer GEMM rows per chunk than this: below it, BLAS re-packing the
# factor for every chunk costs more time than the memory is worth (bench_layers.py).
_MIN_GEMM_ROWS = 256


def _input_transposed(
    x: torch.Tensor, input_perm: torch.Tensor | None, n1: int, n2: int
) -> torch.Tensor:
    """x (T, n1·n2) → (T, n2, n1) with ``x[..., input_perm]`` applied.

    With a permutation this is one gather whose index also transposes (the layout costs
    nothing extra; ``input_perm`` is passed already transposed, see
    :func:`factorized_forward`); without, a strided view.
    """
    T = x.shape[0]
    if input_perm is not None:
        return x.index_select(-1, input_perm).view(T, n2, n1)
    return x.view(T, n1, n2).transpose(1, 2)


def _output_index(output_perm: torch.Tensor, m1: int, m2: int) -> torch.Tensor:
    """Gather index from a (T, m2, m1) layout to the permuted (T, out) output."""
    o = output_perm
    return (o % m2) * m1 + torch.div(o, m2, rounding_mode="floor")


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _chunk_tokens(
    T: int, temp_per_token: int, out_per_token: int, rows_per_token: int, fraction: float
) -> int:
    """Tokens per chunk: temporaries ≤ ``fraction`` × the whole output, ≥ the GEMM floor."""
    budget = int(fraction * T * out_per_token) // max(1, temp_per_token)
    return max(budget, -(-_MIN_GEMM_ROWS // rows_per_token), 1)


def _a_first(x, A, B, idx_in, oidx, out):
    """"A first" on one chunk: Z = X·Aᵀ (one GEMM against A), then the small B contraction."""
    r, m1, n1 = A.shape
    _, m2, n2 = B.shape
    T = x.shape[0]
    # Z[t, (j2, k), i1] = Σ_j1 X[t, j1, j2] A[k, i1, j1]: one GEMM against A.
    # contiguous: for one token the reshape is a view with strides (1, n2), which BLAS
    # multiplies several times slower
    Xt = _input_transposed(x, idx_in, n1, n2).reshape(T * n2, n1).contiguous()
    Z = F.linear(Xt, A.reshape(r * m1, n1)).view(T, n2 * r, m1)
    del Xt  # intermediates are released as soon as possible (peak memory)
    if oidx is not None:
        # Yt[t, i2, i1] = Σ_(j2,k) B[k, i2, j2] Z[t, (j2, k), i1]; the output gather
        # undoes the (i2, i1) layout and applies the permutation in one pass.
        BvT = B.permute(1, 2, 0).reshape(m2, n2 * r)
        Yt = torch.matmul(BvT, Z).view(T, m2 * m1)
        del Z
        return torch.index_select(Yt, 1, oidx, out=out)
    # Y[t, i1, i2] = Σ_(j2,k) Z[t, (j2, k), i1] B[k, i2, j2]: the canonical layout.
    Bv = B.permute(2, 0, 1).reshape(n2 * r, m2)
    if out is None:
        return torch.matmul(Z.transpose(1, 2), Bv).view(T, m1 * m2)
    torch.matmul(Z.transpose(1, 2), Bv, out=out.view(T, m1, m2))
    return out


def _b_first(x, A, B, idx_in, oidx, out):
    """"B first" on one chunk: the small B contraction, then r GEMMs against A as stored."""
    r, m1, n1 = A.shape
    _, m2, n2 = B.shape
    T = x.shape[0]
    # Z[t, (i2, k), j1] = Σ_j2 B[k, i2, j2] X[t, j1, j2]: a small batched GEMM.
    Xt = _input_transposed(x, idx_in, n1, n2)
    Bs = B.permute(1, 0, 2).reshape(m2 * r, n2)
    Z = torch.matmul(Bs, Xt).view(T, m2, r, n1)
    del Xt
    # Yt[(t, i2), i1] = Σ_k Σ_j1 Z[t, i2, k, j1] A[k, i1, j1]: r GEMMs against A as stored,
    # accumulated in place (Z[:, :, k] is a strided matrix view); torch.addmm with out=
    # (not addmm_) so that FLOP counters see every product.
    Yt = torch.mm(Z[:, :, 0].reshape(T * m2, n1), A[0].t())
    in_place = not _needs_grad(Z, A)  # out= has no gradient
    for k in range(1, r):
        Zk = Z[:, :, k].reshape(T * m2, n1)
        Yt = torch.addmm(Yt, Zk, A[k].t(), out=Yt) if in_place else torch.addmm(Yt, Zk, A[k].t())
    del Z
    if oidx is not None:
        return torch.index_select(Yt.view(T, m2 * m1), 1, oidx, out=out)
    Y = Yt.view(T, m2, m1).transpose(1, 2)
    if out is None:
        return Y.reshape(T, m1 * m2)
    out.view(T, m1, m2).copy_(Y)
    return out


def factorized_forward(
    x: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    input_perm: torch.Tensor | None,
    output_perm: torch.Tensor | None,
    order: str,
    bias: torch.Tensor | None = None,
    memory_fraction: float | None = _TEMP_FRACTION,
) -> torch.Tensor:
    """K · x[input_perm], gathered by output_perm, plus bias, for x of shape (T, in).

    Both association orders run their large GEMM(s) against A as stored, one small batched
    GEMM against B, and at most one gather on each side, fused with the layout changes the
    orders need.  Long inputs go through in chunks of tokens written into one output, the
    temporaries of a chunk at most ``memory_fraction`` × the output (:func:`_chunk_tokens`;
    None: one pass); the result is a fresh (T, out) tensor either way.
    """
    r, m1, n1 = A.shape
    _, m2, n2 = B.shape
    T = x.shape[0]
    idx_in = None if input_perm is None else input_perm.view(n1, n2).t().reshape(-1)
    oidx = None if output_perm is None else _output_index(output_perm, m1, m2)
    gathered_in = 0 if idx_in is None else n1 * n2
    gathered_out = 0 if oidx is None else m1 * m2
    # the cheaper association order of forward_costs (tqla.KroneckerShape.matmat_order)
    if order == "a_first":
        step, rows = _a_first, n2
        temp = gathered_in + n2 * r * m1 + gathered_out
    else:
        step, rows = _b_first, m2
        temp = gathered_in + m2 * r * n1 + m2 * m1
    chunk = T if memory_fraction is None else _chunk_tokens(T, temp, m1 * m2, rows, memory_fraction)
    if _needs_grad(x, A, B):
        chunk = T  # autograd keeps every intermediate anyway, and out= has no gradient
    if chunk >= T:
        y = step(x, A, B, idx_in, oidx, None)
        return y if bias is None else y.add_(bias)
    out = x.new_empty((T, m1 * m2))
    for s in range(0, T, chunk):
        y = step(x[s : s + chunk], A, B, idx_in, oidx, out[s : s + chunk])
        if bias is not None:
            y.add_(bias)  # while the chunk is in cache
    return out
