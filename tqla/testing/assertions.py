"""Assertion helpers for Kronecker factorizations, on any array library.

Every helper accepts arrays of any library tqla supports (and :class:`~tqla.KroneckerSum`
where it says so), compares on the host in float64, and raises ``AssertionError`` with a
message that states what was expected, what was found and the tolerance used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tqla._array import array_namespace, device_of, lib_name, to_numpy
from tqla.kron import KroneckerShape, KroneckerSum, rearrange

__all__ = [
    "as_numpy",
    "assert_kron_close",
    "assert_kron_optimal",
    "assert_nonincreasing",
    "assert_reconstructs",
    "assert_same_array_type",
    "assert_same_result_across_backends",
    "assert_valid_permutation",
    "kron_error",
    "rounding_tolerance",
]


def as_numpy(x: Any, dtype: Any = np.float64) -> np.ndarray:
    """A host NumPy copy of an array (any library) or of a KroneckerSum's dense matrix."""
    if isinstance(x, KroneckerSum):
        x = x.to_dense()
    if isinstance(x, (list, tuple, int, float, np.ndarray, np.generic)):
        return np.asarray(x, dtype=dtype)
    return to_numpy(x).astype(dtype, copy=False)


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def rounding_tolerance(dtype: Any, n_terms: int, magnitude: Any = 1.0) -> Any:
    """A bound on the rounding error of sums of ``n_terms`` products in ``dtype``.

    Floating-point sums may be evaluated in any order (BLAS blocking, SIMD width, thread
    count and CPU model change it), so two correct results can differ.  The classical bound
    for a dot product of length n is |fl(x·y) − x·y| <= γ_n·Σ|x_i·y_i| with γ_n ≈ n·u
    (u = eps/2); this returns 2·n·eps·magnitude, the bound on the *difference* of two
    evaluations, where ``magnitude`` is Σ|x_i·y_i| (a number or an array, e.g. the product
    of the absolute values ``abs(A) @ abs(B)``).

    Examples
    --------
    >>> bool(rounding_tolerance(np.float64, 4, 1.0) == 8 * np.finfo(np.float64).eps)
    True
    """
    eps = float(np.finfo(np.dtype(_np_dtype_name(dtype))).eps)
    return 2.0 * max(int(n_terms), 1) * eps * np.asarray(magnitude, dtype=np.float64)


def _np_dtype_name(dtype: Any) -> str:
    """'float32' for np.float32, torch.float32, array_api_strict.float32, ..."""
    name = str(dtype).rsplit(".", 1)[-1]
    if name in ("float16", "float32", "float64", "bfloat16"):
        return "float32" if name == "bfloat16" else name  # bfloat16: callers scale up
    return np.dtype(dtype).name


def kron_error(W: Any, K: Any) -> float:
    """‖W − K‖_F in float64 on the host (K: KroneckerSum or dense array)."""
    return float(np.linalg.norm(as_numpy(W) - as_numpy(K)))


def assert_reconstructs(
    decomposition: Any, W: Any, *, rtol: float = 1e-7, atol: float = 0.0, name: str = "K"
) -> None:
    """Assert ‖dense(decomposition) − W‖_F <= atol + rtol·‖W‖_F.

    Parameters
    ----------
    decomposition : KroneckerSum, anything with ``to_dense()``, or a dense array
    W : array
        The matrix it should reproduce.
    """
    D = decomposition.to_dense() if hasattr(decomposition, "to_dense") else decomposition
    Dn, Wn = as_numpy(D), as_numpy(W)
    if Dn.shape != Wn.shape:
        raise AssertionError(f"{name} has shape {Dn.shape}, but W has shape {Wn.shape}")
    err = float(np.linalg.norm(Dn - Wn))
    norm = float(np.linalg.norm(Wn))
    tol = atol + rtol * norm
    if not err <= tol:
        worst = np.unravel_index(int(np.argmax(np.abs(Dn - Wn))), Dn.shape)
        raise AssertionError(
            f"{name} does not reconstruct W: ‖{name} − W‖_F = {_fmt(err)} "
            f"(relative {_fmt(err / norm if norm else np.inf)}) > atol + rtol·‖W‖_F = "
            f"{_fmt(atol)} + {_fmt(rtol)}·{_fmt(norm)} = {_fmt(tol)}; largest difference at "
            f"{tuple(int(i) for i in worst)}: {name} = {_fmt(Dn[worst])}, W = {_fmt(Wn[worst])}"
        )


def assert_nonincreasing(errors: Any, *, rtol: float = 1e-10, atol: float = 0.0) -> None:
    """Assert a sequence never increases: e[i+1] <= e[i] + atol + rtol·|e[i]|.

    For error histories of monotone algorithms (alternating minimisation), where rounding
    may add a few ulps per step.
    """
    e = as_numpy(errors).ravel()
    if not np.all(np.isfinite(e)):
        bad = int(np.flatnonzero(~np.isfinite(e))[0])
        raise AssertionError(
            f"errors[{bad}] = {float(e[bad])} is not finite; errors = {e.tolist()}"
        )
    allowed = e[:-1] + atol + rtol * np.abs(e[:-1])
    up = np.flatnonzero(e[1:] > allowed)
    if up.size:
        i = int(up[0])
        raise AssertionError(
            f"errors increase at step {i} -> {i + 1}: {float(e[i])!r} -> {float(e[i + 1])!r} "
            f"(+{_fmt(e[i + 1] - e[i])}, allowed +{_fmt(allowed[i] - e[i])} with "
            f"rtol={rtol}, atol={atol}); {up.size} increase(s) in {e.size} values"
        )


def assert_valid_permutation(p: Any, n: int | None = None, *, name: str = "p") -> None:
    """Assert ``p`` is a 1-D integer array holding each of 0..n−1 exactly once."""
    if isinstance(p, (list, tuple)):
        arr = np.asarray(p)
    else:
        arr = to_numpy(p)
    if arr.ndim != 1:
        raise AssertionError(f"{name} must be 1-D, got shape {arr.shape}")
    if n is None:
        n = arr.shape[0]
    if arr.shape[0] != n:
        raise AssertionError(f"{name} must have length {n}, got {arr.shape[0]}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise AssertionError(f"{name} must hold integers, got dtype {arr.dtype}")
    counts = np.bincount(arr[(arr >= 0) & (arr < n)].astype(np.int64), minlength=n)
    out_of_range = arr[(arr < 0) | (arr >= n)]
    missing = np.flatnonzero(counts == 0)
    repeated = np.flatnonzero(counts > 1)
    if out_of_range.size or missing.size or repeated.size:
        parts = []
        if out_of_range.size:
            parts.append(f"values outside 0..{n - 1}: {out_of_range[:10].tolist()}")
        if repeated.size:
            parts.append(f"repeated: {repeated[:10].tolist()}")
        if missing.size:
            parts.append(f"missing: {missing[:10].tolist()}")
        raise AssertionError(f"{name} is not a permutation of range({n}); " + "; ".join(parts))


def assert_kron_optimal(
    W: Any, shape: Any, rank: int, K: Any, *, rtol: float = 1e-10, atol: float = 0.0
) -> None:
    """Assert K is a best rank-``rank`` Kronecker approximation of W (Frobenius norm).

    Checks ‖W − K‖²_F = Σ_{k>rank} σ_k² (σ: singular values of R(W), computed here in
    float64 with LAPACK) within ``atol + rtol·‖W‖²_F``, and that K has the factor
    shapes ``shape`` and at most ``rank`` terms.
    """
    s = KroneckerShape.of(shape)
    if isinstance(K, KroneckerSum):
        if K.kshape != s:
            raise AssertionError(f"K has factor shapes A {K.kshape.a} ⊗ B {K.kshape.b}, not {s}")
        if K.rank > rank:
            raise AssertionError(f"K has {K.rank} terms, more than rank={rank}")
    Wn = as_numpy(W)
    sigma = np.linalg.svd(np.asarray(rearrange(Wn, s)), compute_uv=False)
    tail = float(np.sum(sigma[rank:] ** 2))
    err2 = kron_error(Wn, K) ** 2
    total = float(np.sum(Wn**2))
    tol = atol + rtol * total
    if not abs(err2 - tail) <= tol:
        raise AssertionError(
            f"K is not a best rank-{rank} Kronecker approximation: ‖W − K‖²_F = {err2:.12g}, "
            f"but the tail Σ_(k>{rank}) σ_k² of R(W)'s singular values is {tail:.12g} "
            f"(difference {_fmt(err2 - tail)}, tolerance atol + rtol·‖W‖²_F = {_fmt(tol)}); "
            f"σ = {np.array2string(sigma[: rank + 3], precision=6)}"
        )


def _arrays_of(x: Any) -> list[Any]:
    if isinstance(x, KroneckerSum):
        return [x.A, x.B]
    if isinstance(x, (list, tuple)):
        out = []
        for item in x:
            out.extend(_arrays_of(item))
        return out
    if hasattr(x, "_asdict"):  # NamedTuple results
        return _arrays_of(tuple(x))
    return [x] if hasattr(x, "shape") else []


def assert_same_array_type(result: Any, like: Any, *, dtype: Any = None) -> None:
    """Assert every array in ``result`` has the library, device (and dtype) of ``like``.

    ``result`` may be an array, a KroneckerSum, or a (named) tuple of them.  ``dtype``
    defaults to ``like.dtype``.
    """
    xp = array_namespace(like)
    want_dtype = like.dtype if dtype is None else dtype
    want_dev = device_of(like)
    for i, arr in enumerate(_arrays_of(result)):
        try:
            got = array_namespace(arr)
        except TypeError:
            got = None
        if got is None or lib_name(got) != lib_name(xp):
            raise AssertionError(
                f"output {i} is a {type(arr).__name__}, expected an array of "
                f"{lib_name(xp)} like the input"
            )
        if str(device_of(arr)) != str(want_dev):
            raise AssertionError(f"output {i} is on device {device_of(arr)}, input on {want_dev}")
        if arr.dtype != want_dtype:
            raise AssertionError(f"output {i} has dtype {arr.dtype}, expected {want_dtype}")


def assert_kron_close(
    K: KroneckerSum,
    ref: KroneckerSum,
    *,
    rtol: float = 1e-7,
    atol: float = 0.0,
    compare: str = "factors",
) -> None:
    """Assert two Kronecker sums agree (e.g. the same computation on two backends).

    ``compare="factors"`` compares A and B term by term — meaningful for results of
    :func:`tqla.kron_svd`, whose sign convention makes factors unique when the singular
    values of R(W) are distinct; the tolerance is relative to the largest entry of each
    reference factor.  ``compare="dense"`` compares the dense matrices relative to
    ‖ref‖_F.
    """
    if K.shape != ref.shape or K.kshape != ref.kshape:
        raise AssertionError(f"shapes differ: {K!r} vs reference {ref!r}")
    if compare == "dense":
        assert_reconstructs(K, ref.to_dense(), rtol=rtol, atol=atol)
        return
    if compare != "factors":
        raise ValueError(f"compare must be 'factors' or 'dense', got {compare!r}")
    if K.rank != ref.rank:
        raise AssertionError(f"ranks differ: {K.rank} vs reference {ref.rank}")
    for name, F, R in (("A", K.A, ref.A), ("B", K.B, ref.B)):
        Fn, Rn = as_numpy(F), as_numpy(R)
        for k in range(K.rank):
            scale = float(np.max(np.abs(Rn[k]))) if Rn[k].size else 0.0
            diff = float(np.max(np.abs(Fn[k] - Rn[k]))) if Rn[k].size else 0.0
            if not diff <= atol + rtol * scale:
                flipped = float(np.max(np.abs(Fn[k] + Rn[k]))) if Rn[k].size else 0.0
                hint = (
                    " (it matches with the opposite sign)" if flipped <= atol + rtol * scale else ""
                )
                raise AssertionError(
                    f"factor {name}[{k}] differs from the reference by {_fmt(diff)} (max abs), "
                    f"> atol + rtol·max|ref| = {_fmt(atol + rtol * scale)}{hint}"
                )


def assert_same_result_across_backends(
    fn: Any,
    inputs: Any,
    backends: Any,
    *,
    rtol: float = 1e-7,
    atol: float = 0.0,
    compare: str = "factors",
) -> None:
    """Run ``fn`` on the same NumPy ``inputs`` converted to each backend; compare with NumPy.

    Parameters
    ----------
    fn : callable
        Called as ``fn(*converted_inputs)``; returns an array or a KroneckerSum.
    inputs : sequence of numpy.ndarray
        Host data; NumPy runs first and is the reference.
    backends : iterable of (xp, device)
        Array libraries (modules) and devices, e.g. ``[(torch, "cpu"), (cupy, None)]``.
    """
    from tqla.testing.strategies import convert

    ref = fn(*inputs)
    for xp, device in backends:
        conv = [convert(np.asarray(a), xp, device) for a in inputs]
        out = fn(*conv)
        assert_same_array_type(out, conv[0])
        where = f"{getattr(xp, '__name__', xp)} on {device}"
        try:
            if isinstance(ref, KroneckerSum):
                assert_kron_close(out, ref, rtol=rtol, atol=atol, compare=compare)
            else:
                np.testing.assert_allclose(as_numpy(out), as_numpy(ref), rtol=rtol, atol=atol)
        except AssertionError as exc:
            raise AssertionError(f"{where} differs from NumPy: {exc}") from None
