"""A small table of kernels for the operations the array API standard lacks.

Each operation (``rearranged_gram``, ``slots_cost``, ...) has one or more *kernels*
(compute implementations):

* ``"array_api"`` — generic code on the array-API namespace of the inputs; this is the
  implementation for torch (CPU/CUDA), CuPy and array_api_strict arrays, and it runs on
  their device with their own BLAS/cuBLAS;
* ``"numpy"`` — NumPy-specific code (host arrays);
* ``"numba"`` — compiled loops for host NumPy arrays (optional: ``pip install 'tqla[numba]'``).

``get_kernel(name, kernel="auto", *arrays)`` returns the callable.  ``"auto"`` picks, by the
arrays' library, the first installed kernel of the operation's row of
:data:`NUMPY_PREFERENCE` (an explicit table, set from measurements in ``benchmarks/``).
Kernel modules import lazily, one topic at a time.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from tqla._array import array_namespace, is_numpy, lib_name

__all__ = ["KERNELS", "NUMPY_PREFERENCE", "available", "get_kernel", "register", "resolve"]

#: The kernels (compute implementations) an operation may have.
KERNELS = ("numpy", "numba", "array_api")
#: Former name of :data:`KERNELS` (kept for one release; "implementation" now means a
#: layer's forward strategy in tqla_torch).
IMPLEMENTATIONS = KERNELS

#: Preference order of the kernels of each operation on NumPy arrays, fastest first as
#: measured by ``benchmarks/bench_kron.py`` and ``benchmarks/bench_lsap.py``
#: (benchmarks/results/); the first installed one runs.  Other libraries (torch, CuPy,
#: array_api_strict) always use ``"array_api"`` on their own device.
NUMPY_PREFERENCE: dict[str, tuple[str, ...]] = {
    "rearrange": ("numba",),  # NumPy's own strided copy is the fallback (tqla.rearrange)
    "unrearrange": ("numba",),
    "rearranged_gram": ("numba", "numpy"),
    "rearranged_matmul": ("numba", "numpy"),
    "slots_cost": ("numpy", "numba", "array_api"),
    "lsap_jv": ("numba",),
}

# The module holding each (operation topic, kernel), imported on first use only: resolving
# an operation imports the modules of its own topic, in preference order, until one has it.
_TOPIC = {
    "rearrange": "",
    "unrearrange": "",
    "rearranged_gram": "",
    "rearranged_matmul": "",
    "slots_cost": "_assignment",
    "lsap_jv": "_assignment",
}

# operation -> kernel -> callable
_TABLE: dict[str, dict[str, Callable[..., Any]]] = {}
_LOADED: set[str] = set()
_MISSING: set[str] = set()

_EXTRA = {"numba": "numba"}


def register(name: str, kernel: str):
    """Decorator: register ``fn`` as kernel ``kernel`` of operation ``name``."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _TABLE.setdefault(name, {})[kernel] = fn
        return fn

    return deco


def _load(kernel: str, name: str) -> bool:
    """Import the module of ``kernel`` for operation ``name``'s topic; False if the
    kernel's optional dependency is missing."""
    mod = f"tqla._kernels._{kernel}{_TOPIC.get(name, '')}"
    if mod in _LOADED:
        return True
    if mod in _MISSING:
        return False
    try:
        importlib.import_module(mod)
    except ImportError as exc:
        if kernel in _EXTRA and exc.name == _EXTRA[kernel]:
            _MISSING.add(mod)
            return False
        raise
    _LOADED.add(mod)
    return True


def _has(kernel: str, name: str) -> bool:
    return _load(kernel, name) and kernel in _TABLE.get(name, {})


def available(name: str) -> list[str]:
    """Kernels of operation ``name`` whose dependencies are installed."""
    return [k for k in KERNELS if _has(k, name)]


def resolve(name: str, kernel: str = "auto", *arrays: Any) -> tuple[str, Callable[..., Any]]:
    """Like :func:`get_kernel`, but also return which kernel was chosen.

    ``"auto"`` takes, for NumPy arrays, the first installed kernel of
    :data:`NUMPY_PREFERENCE` (then ``"array_api"``), and ``"array_api"`` for any other
    library.

    Returns
    -------
    (kernel, fn) : tuple of str and callable
        ``kernel`` is one of :data:`KERNELS`.
    """
    if kernel != "auto" and kernel not in KERNELS:
        raise ValueError(f"kernel must be 'auto' or one of {KERNELS}, got {kernel!r}")
    on_numpy = True
    if arrays:
        on_numpy = is_numpy(array_namespace(*arrays))
    if kernel == "auto":
        order = NUMPY_PREFERENCE.get(name, ("numpy",)) if on_numpy else ()
        for k in (*order, "array_api"):
            if _has(k, name):
                return k, _TABLE[name][k]
        raise ValueError(f"no kernel of operation {name!r} is registered")
    if not _load(kernel, name):
        raise ImportError(
            f"kernel={kernel!r} needs the optional dependency {_EXTRA[kernel]!r}: "
            f"pip install 'tqla[{_EXTRA[kernel]}]'"
        )
    if kernel not in _TABLE.get(name, {}):
        raise ValueError(
            f"operation {name!r} has no {kernel!r} kernel; available: {available(name)}"
        )
    if kernel in ("numpy", "numba") and not on_numpy:
        lib = lib_name(array_namespace(*arrays))
        raise ValueError(
            f"kernel={kernel!r} works on NumPy arrays only, got {lib} arrays; "
            f"use kernel='array_api' or 'auto'"
        )
    return kernel, _TABLE[name][kernel]


def get_kernel(name: str, kernel: str = "auto", *arrays: Any) -> Callable[..., Any]:
    """Return kernel ``kernel`` of operation ``name`` for ``arrays``.

    Raises
    ------
    ImportError
        If the requested kernel needs an optional dependency that is missing (the message
        names the pip extra).
    ValueError
        If ``kernel`` is unknown, or does not accept the arrays' library.
    """
    return resolve(name, kernel, *arrays)[1]
