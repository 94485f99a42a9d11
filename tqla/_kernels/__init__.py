"""A small table of kernels for the operations the array API standard lacks.

Each kernel has a name and one or more implementations:

* ``"array_api"`` — generic code on the array-API namespace of the inputs; this is the
  implementation for torch (CPU/CUDA), CuPy and array_api_strict arrays, and it runs on
  their device with their own BLAS/cuBLAS;
* ``"numpy"`` — NumPy-specific code (host arrays);
* ``"numba"`` — compiled loops for host NumPy arrays (optional: ``pip install 'tqla[numba]'``).

``get_kernel(name, kernel="auto", *arrays)`` returns the callable.  ``"auto"`` picks, by the
arrays' library, the first available implementation in the kernel's preference order (set
from measurements in ``benchmarks/``).  Optional dependencies import lazily.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from tqla._array import array_namespace, is_numpy, lib_name

__all__ = ["available", "get_kernel", "register", "resolve"]

IMPLEMENTATIONS = ("numpy", "numba", "array_api")

# name -> impl -> callable
_TABLE: dict[str, dict[str, Callable[..., Any]]] = {}
# name -> preference order for NumPy inputs (other libraries always use "array_api")
_NUMPY_ORDER: dict[str, tuple[str, ...]] = {}
_LOADED: set[str] = set()

_EXTRA = {"numba": "numba"}

# The modules holding each implementation, imported on first use.  One module per topic
# (core Kronecker kernels, assignment kernels) keeps files small and owned by one job.
_MODULES = {
    "numpy": ("_numpy", "_numpy_assignment"),
    "numba": ("_numba", "_numba_assignment"),
    "array_api": ("_array_api", "_array_api_assignment"),
}


def register(name: str, impl: str, *, numpy_order: tuple[str, ...] | None = None):
    """Decorator: register ``fn`` as implementation ``impl`` of kernel ``name``."""
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"impl must be one of {IMPLEMENTATIONS}, got {impl!r}")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _TABLE.setdefault(name, {})[impl] = fn
        if numpy_order is not None:
            _NUMPY_ORDER[name] = numpy_order
        return fn

    return deco


def _load(impl: str) -> bool:
    """Import the module holding implementation ``impl``; False if its dependency is missing."""
    if impl in _LOADED:
        return True
    for mod in _MODULES[impl]:
        try:
            importlib.import_module(f"tqla._kernels.{mod}")
        except ImportError as exc:
            if impl in _EXTRA and exc.name == _EXTRA[impl]:
                return False
            if exc.name == f"tqla._kernels.{mod}":  # module not written (optional topic)
                continue
            raise
    _LOADED.add(impl)
    return True


def available(name: str) -> list[str]:
    """Implementations of kernel ``name`` whose dependencies are installed."""
    for impl in IMPLEMENTATIONS:
        _load(impl)
    return [impl for impl in IMPLEMENTATIONS if impl in _TABLE.get(name, {})]


def resolve(name: str, kernel: str = "auto", *arrays: Any) -> tuple[str, Callable[..., Any]]:
    """Like :func:`get_kernel`, but also return which implementation was chosen.

    Returns
    -------
    (impl, fn) : tuple of str and callable
        ``impl`` is one of :data:`IMPLEMENTATIONS`.
    """
    if kernel != "auto" and kernel not in IMPLEMENTATIONS:
        raise ValueError(f"kernel must be 'auto' or one of {IMPLEMENTATIONS}, got {kernel!r}")
    on_numpy = True
    if arrays:
        on_numpy = is_numpy(array_namespace(*arrays))
    if kernel == "auto":
        if on_numpy:
            # Load every implementation first: the preference order is registered by the
            # modules themselves, so it must not be read before they are imported.
            for impl in IMPLEMENTATIONS:
                _load(impl)
            order = _NUMPY_ORDER.get(name, ("numpy", "array_api"))
        else:
            order = ("array_api",)
        for impl in order:
            if _load(impl) and impl in _TABLE.get(name, {}):
                return impl, _TABLE[name][impl]
        _load("array_api")
        if "array_api" in _TABLE.get(name, {}):
            return "array_api", _TABLE[name]["array_api"]
        raise ValueError(f"no implementation of kernel {name!r} is registered")
    if not _load(kernel):
        raise ImportError(
            f"kernel={kernel!r} needs the optional dependency {_EXTRA[kernel]!r}: "
            f"pip install 'tqla[{_EXTRA[kernel]}]'"
        )
    if kernel not in _TABLE.get(name, {}):
        raise ValueError(
            f"kernel {name!r} has no {kernel!r} implementation; available: {available(name)}"
        )
    if kernel in ("numpy", "numba") and not on_numpy:
        lib = lib_name(array_namespace(*arrays))
        raise ValueError(
            f"kernel={kernel!r} works on NumPy arrays only, got {lib} arrays; "
            f"use kernel='array_api' or 'auto'"
        )
    return kernel, _TABLE[name][kernel]


def get_kernel(name: str, kernel: str = "auto", *arrays: Any) -> Callable[..., Any]:
    """Return implementation ``kernel`` of kernel ``name`` for ``arrays``.

    Raises
    ------
    ImportError
        If the requested implementation needs an optional dependency that is missing
        (the message names the pip extra).
    ValueError
        If ``kernel`` is unknown, or does not accept the arrays' library.
    """
    return resolve(name, kernel, *arrays)[1]
