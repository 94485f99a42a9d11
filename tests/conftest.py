"""Shared fixtures: the array backends every core test runs over.

``backend`` is parametrized over NumPy, array_api_strict, torch CPU, and — when a CUDA
device is present — torch CUDA and CuPy.  Backends whose library is missing or has no GPU
are skipped with a reason, never failed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
settings.register_profile(
    "dev", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@dataclass(frozen=True)
class Backend:
    """An array library (and device) the tests run tqla on."""

    name: str
    xp: Any
    device: Any = None

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """Host NumPy data -> this backend (dtype: a NumPy dtype or None to keep a's)."""
        a = np.asarray(a) if dtype is None else np.asarray(a, dtype=dtype)
        if self.name.startswith("torch"):
            import torch

            return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)
        if self.name == "cupy":
            return self.xp.asarray(a)
        if self.name == "array_api_strict":
            return self.xp.asarray(a)
        return a

    def to_numpy(self, x: Any) -> np.ndarray:
        if self.name.startswith("torch"):
            return x.detach().cpu().numpy()
        if self.name == "cupy":
            return x.get()
        return np.asarray(x)

    def dtype(self, np_dtype: Any) -> Any:
        """This backend's dtype object for a NumPy dtype (float32/float64/int64)."""
        name = np.dtype(np_dtype).name
        return getattr(self.xp, name)


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _make_backend(name: str) -> Backend:
    if name == "numpy":
        return Backend("numpy", np)
    if name == "array_api_strict":
        xs = pytest.importorskip("array_api_strict")
        return Backend(name, xs)
    if name == "torch_cpu":
        torch = pytest.importorskip("torch")
        return Backend(name, torch, "cpu")
    if name == "torch_cuda":
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("torch CUDA backend: no CUDA device on this machine")
        return Backend(name, torch, "cuda")
    if name == "cupy":
        if not _cuda_available():
            pytest.skip("CuPy backend: no CUDA device on this machine")
        cp = pytest.importorskip("cupy")
        return Backend(name, cp)
    raise ValueError(name)


BACKENDS = ["numpy", "array_api_strict", "torch_cpu", "torch_cuda", "cupy"]


@pytest.fixture(params=BACKENDS)
def backend(request) -> Backend:
    """Each array backend in turn (GPU ones skip cleanly without a GPU)."""
    return _make_backend(request.param)


@pytest.fixture(params=["torch_cuda", "cupy"])
def gpu_backend(request) -> Backend:
    """GPU backends only."""
    return _make_backend(request.param)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a module's tests: faster for tiny models and identical
    to the single-threaded subprocess runs they are compared with."""
    torch = pytest.importorskip("torch")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
