"""Array-library helpers: namespace lookup, dtype rules, input validation, random state.

Every public tqla function takes arrays of any library that array-api-compat understands
(NumPy, CuPy, torch on CPU or CUDA, array_api_strict, ...) and returns arrays of the same
library, on the same device, with the same floating dtype.  The helpers here are the only
place that knows about this.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import array_namespace as _array_namespace
from array_api_compat import device as _device
from array_api_compat import is_numpy_namespace, is_torch_namespace, to_device

__all__ = [
    "array_namespace",
    "as_float_matrix",
    "check_finite",
    "check_int",
    "check_permutation",
    "take",
    "check_rng",
    "device_of",
    "is_numpy",
    "is_torch",
    "lib_name",
    "to_numpy",
    "from_numpy",
]


def array_namespace(*arrays: Any) -> Any:
    """Return the array-API namespace of ``arrays`` (array-api-compat wrapped)."""
    try:
        return _array_namespace(*arrays)
    except TypeError as exc:
        kinds = ", ".join(sorted({type(a).__name__ for a in arrays}))
        raise TypeError(
            f"tqla needs arrays of one array library (NumPy, CuPy, torch, ...); got {kinds}"
        ) from exc


def device_of(x: Any) -> Any:
    """The device ``x`` lives on, in its library's terms."""
    return _device(x)


def is_numpy(xp: Any) -> bool:
    return is_numpy_namespace(xp)


def is_torch(xp: Any) -> bool:
    return is_torch_namespace(xp)


def lib_name(xp: Any) -> str:
    """A short name for the array library: 'numpy', 'torch', 'cupy', or the module name."""
    name = getattr(xp, "__name__", str(xp))
    for lib in ("numpy", "torch", "cupy", "array_api_strict", "jax"):
        if lib in name:
            return lib
    return name


def _is_real_floating(xp: Any, dtype: Any) -> bool:
    return (
        dtype in (xp.float32, xp.float64)
        or (hasattr(xp, "float16") and dtype == xp.float16)
        or (hasattr(xp, "bfloat16") and dtype == getattr(xp, "bfloat16", None))
    )


def as_float_matrix(x: Any, name: str, *, ndim: int = 2, finite: bool = True) -> tuple[Any, Any]:
    """Validate a real floating array of ``ndim`` dimensions; return ``(xp, x)``.

    Raises
    ------
    TypeError
        If ``x`` is not an array, or its dtype is integer, boolean or complex.
    ValueError
        If ``x`` has the wrong number of dimensions, is empty, or holds NaN/inf.
    """
    if isinstance(x, (list, tuple)) or np.isscalar(x):
        raise TypeError(
            f"{name} must be an array (NumPy, CuPy, torch, ...), got {type(x).__name__}; "
            f"wrap it with numpy.asarray first"
        )
    xp = array_namespace(x)
    check_has_data(x, name)
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got {x.ndim}-D array of shape {tuple(x.shape)}")
    if not _is_real_floating(xp, x.dtype):
        raise TypeError(
            f"{name} must have a real floating dtype (float32 or float64), got {x.dtype}; "
            f"convert it with .astype(float64) / .to(torch.float64)"
        )
    if any(int(s) == 0 for s in x.shape):
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if finite:
        check_finite(xp, x, name)
    return xp, x


def check_has_data(x: Any, name: str) -> None:
    """Raise ValueError for a torch tensor on the ``meta`` device (shape only, no values)."""
    if getattr(x, "is_meta", False) or str(getattr(x, "device", "")) == "meta":
        raise ValueError(
            f"{name} is a tensor on the 'meta' device: it has a shape but no values. "
            f"Materialise it first (e.g. module.to_empty(device='cpu') and then load the "
            f"weights, or build the model on a real device)"
        )


def check_finite(xp: Any, x: Any, name: str) -> None:
    """Raise ValueError if ``x`` holds NaN or infinity.

    A sum is finite when every entry is (one cheap reduction); only when it is not (NaN,
    inf, or an overflow of huge finite values) are the entries checked one by one.
    """
    if bool(xp.isfinite(xp.sum(x))):
        return
    if not bool(xp.all(xp.isfinite(x))):
        raise ValueError(f"{name} must be finite, but it holds NaN or infinity")


def check_int(
    value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """Validate an integer argument (bools rejected) and its range."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_rng(rng: None | int | np.random.Generator) -> np.random.Generator:
    """Normalise ``rng`` (None, an int seed or a Generator) to a NumPy Generator."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise TypeError(
        f"rng must be None, an int seed or a numpy.random.Generator, got {type(rng).__name__}"
    )


def to_numpy(x: Any, dtype: Any = None) -> np.ndarray:
    """Copy/convert ``x`` to a host NumPy array (a deliberate host round-trip)."""
    xp = array_namespace(x)
    if is_numpy(xp):
        out = np.asarray(x)
    elif is_torch(xp):
        out = x.detach().cpu().numpy()
    elif lib_name(xp) == "cupy":
        out = x.get()
    else:
        # Other libraries (array_api_strict, JAX, ...): DLPack first; their "cpu" device is
        # not always spelled "cpu" (array_api_strict rejects to_device(x, "cpu")).
        try:
            out = np.from_dlpack(x)
        except (TypeError, ValueError, RuntimeError, BufferError, AttributeError):
            out = np.asarray(to_device(x, "cpu")) if hasattr(x, "__array__") else np.asarray(x)
    return out.astype(dtype, copy=False) if dtype is not None else out


def from_numpy(a: np.ndarray, like: Any) -> Any:
    """Move host array ``a`` to the library and device of ``like`` (dtype of ``a`` kept)."""
    xp = array_namespace(like)
    if is_numpy(xp):
        return a
    dev = device_of(like)
    if is_torch(xp):
        import torch

        return torch.from_numpy(np.ascontiguousarray(a)).to(dev)
    return xp.asarray(a, device=dev)


def take(xp: Any, x: Any, idx: np.ndarray, axis: int) -> Any:
    """``x`` gathered along ``axis`` by the host index array ``idx`` (moved to x's device)."""
    return xp.take(x, from_numpy(np.ascontiguousarray(idx, dtype=np.int64), x), axis=axis)


def check_permutation(perm: Any, n: int, name: str = "perm") -> np.ndarray:
    """Validate a permutation of ``range(n)``; return it as a host NumPy int64 array.

    Parameters
    ----------
    perm : array of shape (n,) or sequence of ints
        Any array library (a device array is copied to the host once).
    n : int
        Length of the permutation.
    name : str
        The argument's name, used in error messages.

    Raises
    ------
    TypeError
        If ``perm`` is not an integer array (bool and floating dtypes are rejected).
    ValueError
        If it has the wrong shape, entries outside ``range(n)``, or repeats an entry.

    Examples
    --------
    >>> check_permutation([2, 0, 1], 3).tolist()
    [2, 0, 1]
    """
    n = check_int(n, "n", minimum=0)
    if perm is None:
        raise TypeError(f"{name} must be an integer array of shape ({n},), got None")
    if isinstance(perm, (list, tuple)):
        a = np.asarray(perm) if len(perm) else np.zeros(0, dtype=np.int64)
    elif isinstance(perm, np.ndarray):
        a = perm
    elif hasattr(perm, "shape") and hasattr(perm, "dtype"):
        a = np.asarray(to_numpy(perm))
    else:
        raise TypeError(f"{name} must be an integer array, got {type(perm).__name__}")
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {a.dtype}")
    if a.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {a.shape}")
    a = a.astype(np.int64, copy=False)
    if n and (a.min() < 0 or a.max() >= n):
        raise ValueError(f"{name} must be a permutation of range({n}): entries out of range")
    seen = np.zeros(n, dtype=bool)
    seen[a] = True
    if not seen.all():
        raise ValueError(f"{name} must be a permutation of range({n}): it repeats entries")
    return a
