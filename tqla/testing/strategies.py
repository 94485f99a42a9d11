"""Hypothesis strategies for Kronecker-structured data, on any array library.

Every strategy is a function that returns a :class:`hypothesis.strategies.SearchStrategy`.
Data are generated with NumPy (so they shrink well and are reproducible) and converted at
the end to the array library given by ``xp`` (a module such as ``numpy``, ``torch``,
``cupy`` or ``array_api_strict``) and ``device``.  :func:`make_strategies_namespace`
binds ``xp`` and ``device`` once, like ``hypothesis.extra.array_api``.

Examples
--------
>>> from hypothesis import given
>>> from tqla.testing import strategies as tst
>>> @given(tst.kronecker_sums(max_side=3, max_rank=2))
... def test_shape(K):
...     assert K.to_dense().shape == K.shape
>>> test_shape()
"""

from __future__ import annotations

import types
from functools import partial
from typing import Any, NamedTuple

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tqla.kron import KroneckerShape, KroneckerSum

__all__ = [
    "PlantedKronecker",
    "convert",
    "kronecker_shapes",
    "kronecker_structured",
    "kronecker_sums",
    "make_strategies_namespace",
    "matrices",
    "permutations",
    "tensor_trains",
    "tt_matrices",
]

_FLOATS = ("float32", "float64")


def _np_dtype(dtype: Any) -> np.dtype:
    """A NumPy float dtype from a NumPy/torch/CuPy dtype or a name ('float32', ...)."""
    try:  # NumPy dtypes, scalar types (np.float32) and names
        out = np.dtype(dtype)
    except TypeError:
        try:  # torch.float32, array_api_strict.float32, ...: by name
            out = np.dtype(str(dtype).rsplit(".", 1)[-1])
        except TypeError:
            raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if out.name not in _FLOATS:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
    return out


def convert(a: np.ndarray, xp: Any = None, device: Any = None) -> Any:
    """Move a NumPy array to the library ``xp`` (a module) and ``device``; dtype kept.

    ``xp=None`` (or ``numpy``) returns ``a`` itself.
    """
    if xp is None or xp is np or getattr(xp, "__name__", "") == "numpy":
        if device not in (None, "cpu"):
            raise ValueError(f"NumPy arrays live on the CPU, got device={device!r}")
        return a
    name = getattr(xp, "__name__", "")
    a = np.ascontiguousarray(a)
    if name == "torch" or name.endswith(".torch"):
        import torch

        t = torch.from_numpy(a.copy())
        return t if device is None else t.to(device)
    if device is None:
        return xp.asarray(a)
    return xp.asarray(a, device=device)


def _matrix_shape(shape: Any) -> tuple[int, int]:
    """(M, N) from (M, N), a KroneckerShape or ((m1, n1), (m2, n2))."""
    if isinstance(shape, KroneckerShape) or all(isinstance(v, (tuple, list)) for v in shape):
        return KroneckerShape.of(shape).matrix_shape
    M, N = shape
    return (int(M), int(N))


def _elements(dtype: np.dtype, bound: float) -> st.SearchStrategy[float]:
    return st.floats(
        min_value=-bound,
        max_value=bound,
        allow_nan=False,
        allow_infinity=False,
        allow_subnormal=False,
        width=dtype.itemsize * 8,
    )


def _gaussian(shape: tuple[int, ...], dtype: np.dtype) -> st.SearchStrategy[np.ndarray]:
    """Standard normal arrays from a drawn seed: generic data (distinct singular values)."""
    seeds = st.integers(min_value=0, max_value=2**32 - 1)
    return seeds.map(lambda seed: np.random.default_rng(seed).standard_normal(shape).astype(dtype))


@st.composite
def _kronecker_shapes(
    draw: Any, max_side: int, max_dim: int, min_side: int, nontrivial: bool
) -> KroneckerShape:
    def side(limit: int) -> int:
        return draw(st.integers(min_value=min_side, max_value=max(min_side, limit)))

    m1 = side(min(max_side, max_dim))
    n1 = side(min(max_side, max_dim))
    m2 = side(min(max_side, max_dim // m1))
    n2 = side(min(max_side, max_dim // n1))
    s = KroneckerShape((m1, n1), (m2, n2))
    if nontrivial:
        from hypothesis import assume

        assume(s.a != (1, 1) and s.b != (1, 1))
    return s


def kronecker_shapes(
    *,
    max_side: int = 5,
    max_dim: int = 64,
    min_side: int = 1,
    nontrivial: bool = False,
) -> st.SearchStrategy[KroneckerShape]:
    """Factor shapes ``KroneckerShape((m1, n1), (m2, n2))``.

    Parameters
    ----------
    max_side, min_side : int
        Bounds of each of m1, n1, m2, n2.
    max_dim : int
        Bound of the matrix dimensions M = m1·m2 and N = n1·n2.
    nontrivial : bool
        Leave out shapes where A or B is 1×1.
    """
    if min_side < 1 or max_side < min_side:
        raise ValueError(f"need 1 <= min_side <= max_side, got {min_side} and {max_side}")
    if max_dim < min_side * min_side:
        raise ValueError(f"max_dim must be >= min_side², got {max_dim}")
    return _kronecker_shapes(max_side, max_dim, min_side, nontrivial)


def matrices(
    shape: Any = None,
    *,
    dtype: Any = "float64",
    elements: st.SearchStrategy[float] | None = None,
    bound: float = 10.0,
    gaussian: bool = False,
    max_dim: int = 16,
    xp: Any = None,
    device: Any = None,
) -> st.SearchStrategy[Any]:
    """Real matrices with finite, bounded entries.

    Parameters
    ----------
    shape : (M, N), KroneckerShape, ((m1, n1), (m2, n2)), SearchStrategy or None
        The matrix shape; factor shapes mean their ``matrix_shape`` (m1·m2, n1·n2);
        ``None`` draws both dimensions from 1 to ``max_dim``.
    dtype : "float32" or "float64" (or a NumPy/torch dtype)
    elements : SearchStrategy of float, optional
        Entry strategy; default: floats in [-bound, bound], no NaN, inf or subnormals.
    gaussian : bool
        Instead of Hypothesis-chosen entries, standard normal entries from a drawn seed
        (generic matrices: full rank, distinct singular values with probability one).
    xp, device
        Array library (a module) and device of the result; NumPy by default.
    """
    dt = _np_dtype(dtype)
    if shape is None:
        dims = st.integers(1, max_dim)
        shapes: st.SearchStrategy = st.tuples(dims, dims)
    elif isinstance(shape, st.SearchStrategy):
        shapes = shape.map(_matrix_shape)
    else:
        shapes = st.just(_matrix_shape(shape))
    elems = elements if elements is not None else _elements(dt, bound)

    def arrays(shp: tuple[int, int]) -> st.SearchStrategy[np.ndarray]:
        if gaussian:
            return _gaussian(shp, dt)
        return hnp.arrays(dt, shp, elements=elems)

    return shapes.flatmap(arrays).map(partial(convert, xp=xp, device=device))


def kronecker_sums(
    shape: Any = None,
    *,
    rank: int | st.SearchStrategy[int] | None = None,
    max_rank: int = 3,
    dtype: Any = "float64",
    elements: st.SearchStrategy[float] | None = None,
    bound: float = 10.0,
    gaussian: bool = False,
    max_side: int = 5,
    max_dim: int = 64,
    xp: Any = None,
    device: Any = None,
) -> st.SearchStrategy[KroneckerSum]:
    """Kronecker sums Σ_k A_k ⊗ B_k of any rank, as :class:`~tqla.KroneckerSum`.

    Parameters
    ----------
    shape : KroneckerShape, ((m1, n1), (m2, n2)), SearchStrategy or None
        Factor shapes; ``None`` draws them with :func:`kronecker_shapes` (``max_side``,
        ``max_dim``).
    rank : int, SearchStrategy of int, or None
        Number of terms; ``None`` draws it from 1 to ``max_rank``.  The rank may exceed
        the Kronecker rank bound (the sum then has a lower Kronecker rank).
    dtype, elements, bound, gaussian, xp, device
        As in :func:`matrices`, for the factor entries.
    """
    dt = _np_dtype(dtype)
    if shape is None:
        shapes = kronecker_shapes(max_side=max_side, max_dim=max_dim)
    elif isinstance(shape, st.SearchStrategy):
        shapes = shape.map(KroneckerShape.of)
    else:
        shapes = st.just(KroneckerShape.of(shape))
    if rank is None:
        ranks: st.SearchStrategy[int] = st.integers(1, max_rank)
    elif isinstance(rank, st.SearchStrategy):
        ranks = rank
    else:
        ranks = st.just(int(rank))
    elems = elements if elements is not None else _elements(dt, bound)

    @st.composite
    def build(draw: Any) -> KroneckerSum:
        s = draw(shapes)
        r = draw(ranks)
        if gaussian:
            A = draw(_gaussian((r, s.m1, s.n1), dt))
            B = draw(_gaussian((r, s.m2, s.n2), dt))
        else:
            A = draw(hnp.arrays(dt, (r, s.m1, s.n1), elements=elems))
            B = draw(hnp.arrays(dt, (r, s.m2, s.n2), elements=elems))
        return KroneckerSum(convert(A, xp, device), convert(B, xp, device))

    return build()


def permutations(n: int | st.SearchStrategy[int], *, xp: Any = None, device: Any = None):
    """Permutations of ``range(n)`` as 1-D integer arrays (int64).

    ``n`` may be an int or a strategy of ints.
    """
    ns = n if isinstance(n, st.SearchStrategy) else st.just(int(n))

    def perm(k: int) -> st.SearchStrategy[np.ndarray]:
        return st.permutations(list(range(k))).map(lambda p: np.asarray(p, dtype=np.int64))

    return ns.flatmap(perm).map(partial(convert, xp=xp, device=device))


class PlantedKronecker(NamedTuple):
    """A matrix with planted Kronecker structure: ``W[i, j] = K[row_perm[i], col_perm[j]]``.

    Without permutations ``row_perm`` and ``col_perm`` are the identity and W = K, up to
    the added ``noise``.  ``noise`` is the Frobenius norm of what was added.
    """

    W: Any
    K: KroneckerSum
    row_perm: Any
    col_perm: Any
    noise: float


def kronecker_structured(
    shape: Any = None,
    *,
    rank: int | st.SearchStrategy[int] | None = None,
    max_rank: int = 3,
    permuted: bool = False,
    noise: float = 0.0,
    dtype: Any = "float64",
    gaussian: bool = True,
    max_side: int = 5,
    max_dim: int = 64,
    xp: Any = None,
    device: Any = None,
) -> st.SearchStrategy[PlantedKronecker]:
    """Matrices with exact (planted) Kronecker structure, optionally permuted and noisy.

    Draws a Kronecker sum K (see :func:`kronecker_sums`; generic Gaussian factors by
    default), optionally a row and a column permutation, and returns a
    :class:`PlantedKronecker` with ``W[i, j] = K[row_perm[i], col_perm[j]] + E[i, j]``,
    where E is Gaussian noise of Frobenius norm ``noise``·‖K‖_F.

    Parameters
    ----------
    permuted : bool
        Draw row and column permutations (else the identity).
    noise : float
        Relative Frobenius norm of the added noise (0 for exact structure).
    """
    dt = _np_dtype(dtype)
    sums = kronecker_sums(
        shape,
        rank=rank,
        max_rank=max_rank,
        dtype=dt,
        gaussian=gaussian,
        max_side=max_side,
        max_dim=max_dim,
    )

    @st.composite
    def build(draw: Any) -> PlantedKronecker:
        K = draw(sums)
        M, N = K.shape
        dense = np.asarray(K.to_dense())
        if permuted:
            rp = draw(permutations(M))
            cp = draw(permutations(N))
        else:
            rp, cp = np.arange(M), np.arange(N)
        W = dense[rp][:, cp]
        added = 0.0
        if noise > 0:
            seed = draw(st.integers(0, 2**32 - 1))
            E = np.random.default_rng(seed).standard_normal((M, N))
            scale = noise * float(np.linalg.norm(dense)) / max(float(np.linalg.norm(E)), 1e-300)
            W = W + (scale * E).astype(dt)
            added = float(np.linalg.norm(scale * E))
        W = np.ascontiguousarray(W, dtype=dt)
        K_out = KroneckerSum(
            convert(np.asarray(K.A), xp, device), convert(np.asarray(K.B), xp, device)
        )
        return PlantedKronecker(
            convert(W, xp, device), K_out, convert(rp, xp, device), convert(cp, xp, device), added
        )

    return build()


def make_strategies_namespace(xp: Any, device: Any = None) -> types.SimpleNamespace:
    """The strategies of this module with ``xp`` (and ``device``) bound.

    Examples
    --------
    >>> import numpy as np
    >>> from hypothesis import given
    >>> from tqla.testing import make_strategies_namespace
    >>> tst = make_strategies_namespace(np)
    >>> @given(tst.kronecker_sums(((2, 3), (2, 2)), rank=2))
    ... def test_shape(K):
    ...     assert K.shape == (4, 6) and K.rank == 2
    >>> test_shape()
    """
    bound = {
        name: partial(fn, xp=xp, device=device)
        for name, fn in {
            "matrices": matrices,
            "kronecker_sums": kronecker_sums,
            "kronecker_structured": kronecker_structured,
            "permutations": permutations,
            "tensor_trains": tensor_trains,
            "tt_matrices": tt_matrices,
        }.items()
    }
    return types.SimpleNamespace(
        kronecker_shapes=kronecker_shapes,
        xp=xp,
        device=device,
        **bound,
    )


# --------------------------------------------------------------------------------------
# Tensor trains
# --------------------------------------------------------------------------------------
def _tt_ranks(draw: Any, modes: tuple[int, ...], max_rank: int) -> tuple[int, ...]:
    """Reachable TT ranks: 1 ≤ r_k ≤ min(r_{k−1}·n_k, n_{k+1}·r_{k+1}, max_rank)."""
    d = len(modes)
    full = [1] * (d + 1)
    for k in range(1, d):  # left caps while drawing, then the right caps backwards
        full[k] = draw(st.integers(1, max(1, min(full[k - 1] * modes[k - 1], max_rank))))
    for k in range(d - 1, 0, -1):
        full[k] = min(full[k], modes[k] * full[k + 1])
    return tuple(full)


def tensor_trains(
    *,
    modes: Any = None,
    max_d: int = 4,
    max_mode: int = 4,
    max_rank: int = 3,
    dtype: Any = "float64",
    xp: Any = None,
    device: Any = None,
) -> st.SearchStrategy[Any]:
    """Tensor trains (:class:`~tqla.TensorTrain`) with Gaussian cores at reachable ranks.

    Generic Gaussian cores make the drawn ranks the exact TT ranks of ``to_dense()`` (with
    probability one), so TT-SVD at those ranks must reconstruct it.

    Parameters
    ----------
    modes : tuple of int, SearchStrategy or None
        The tensor's shape; ``None`` draws 1 to ``max_d`` modes of size 1 to ``max_mode``.
    max_rank : int
        Bound of each inner rank (ranks are also kept reachable:
        r_k ≤ min(r_{k−1}·n_k, n_{k+1}·r_{k+1})).
    dtype, xp, device
        As in :func:`matrices`.
    """
    from tqla.tt import TensorTrain

    dt = _np_dtype(dtype)
    if modes is None:
        mode_st = st.lists(st.integers(1, max_mode), min_size=1, max_size=max_d).map(tuple)
    elif isinstance(modes, st.SearchStrategy):
        mode_st = modes.map(tuple)
    else:
        mode_st = st.just(tuple(int(v) for v in modes))

    @st.composite
    def build(draw: Any) -> Any:
        ms = draw(mode_st)
        ranks = _tt_ranks(draw, ms, max_rank)
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        cores = [
            convert(rng.standard_normal((ranks[k], n, ranks[k + 1])).astype(dt), xp, device)
            for k, n in enumerate(ms)
        ]
        return TensorTrain(cores)

    return build()


def tt_matrices(
    *,
    max_d: int = 3,
    max_mode: int = 3,
    max_rank: int = 3,
    dtype: Any = "float64",
    xp: Any = None,
    device: Any = None,
) -> st.SearchStrategy[Any]:
    """TT-matrices (:class:`~tqla.TTMatrix`) with Gaussian cores at reachable ranks.

    Row and column modes are drawn separately (1 to ``max_mode`` each, 1 to ``max_d``
    cores); the ranks are reachable for the merged modes m_k·n_k.
    """
    from tqla.tt_matrix import TTMatrix

    dt = _np_dtype(dtype)

    @st.composite
    def build(draw: Any) -> Any:
        d = draw(st.integers(1, max_d))
        rm = tuple(draw(st.lists(st.integers(1, max_mode), min_size=d, max_size=d)))
        cm = tuple(draw(st.lists(st.integers(1, max_mode), min_size=d, max_size=d)))
        ranks = _tt_ranks(draw, tuple(a * b for a, b in zip(rm, cm)), max_rank)
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        shapes = [(ranks[k], rm[k], cm[k], ranks[k + 1]) for k in range(d)]
        cores = [convert(rng.standard_normal(s).astype(dt), xp, device) for s in shapes]
        return TTMatrix(cores)

    return build()
