"""The base class of tqla_torch's compressed layers and the registry of layer types.

Every compressed layer derives from :class:`CompressedModule`; defining the subclass
registers it by its class name (``__init_subclass__``), so saving, loading and
:func:`tqla_torch.compress` find a new layer family without a list kept in step by hand.
A subclass states which compression ``methods`` it implements and which dense modules it
``accepts``, and provides

* ``from_module(module, settings, name=...)`` — fit the layer to a module's weight,
* ``plan(module, settings, name=...)`` — the same resolution without fitting (a dry run),
* ``_spec_values()`` — the constructor arguments that rebuild it (:meth:`spec` /
  :meth:`from_spec` are shared),
* ``to_dense()`` and ``forward``.

``settings`` is anything with the attributes of
:class:`tqla_torch.compression.ModuleSettings` (the layers never import the compression
package: the import graph is layers → compression → training → cli).
"""

from __future__ import annotations

import math
import warnings
import zlib
from dataclasses import dataclass
from types import MappingProxyType
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from tqla import check_permutation
from tqla_torch.nn.weights import is_conv1d

__all__ = [
    "LAYER_IMPLEMENTATIONS",
    "PERMUTES",
    "REGISTRY",
    "CompressedModule",
    "EmbeddingBase",
    "LayerPlan",
    "LinearBase",
    "dense_linear",
    "set_module",
]

# A layer's forward strategy ("implementation"); tqla's compute back-ends are "kernels".
LAYER_IMPLEMENTATIONS = ("factorized", "reconstructed")

_REGISTRY: dict[str, type[CompressedModule]] = {}
#: Read-only view ``{class name: class}`` of every registered compressed layer type.
REGISTRY = MappingProxyType(_REGISTRY)


# --------------------------------------------------------------------------------------
# Small shared checks and helpers
# --------------------------------------------------------------------------------------
def check_implementation(value: Any) -> str:
    if value not in LAYER_IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {LAYER_IMPLEMENTATIONS}, got {value!r}")
    return value


def check_source(source: Any) -> str:
    """The kind of dense module a linear layer replaces: "linear" or "conv1d"."""
    if source not in ("linear", "conv1d"):
        raise ValueError(f"source must be 'linear' or 'conv1d', got {source!r}")
    return source


def check_rank_or_budget(rank: Any, n_params: Any) -> None:
    """ValueError unless exactly one of ``rank`` and ``n_params`` is given."""
    if (rank is None) == (n_params is None):
        raise ValueError(
            f"give exactly one of rank and n_params, got rank={rank!r}, n_params={n_params!r}"
        )


def check_linear_repeat(settings: Any, where: str) -> None:
    """ValueError if ``settings`` asks a linear layer for ``repeat`` > 1 (embeddings only)."""
    if settings.repeat > 1:
        raise ValueError(f"{where}: repeat={settings.repeat} applies to embeddings only")


def check_pos_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def decomposition_dtype(w: torch.Tensor) -> torch.dtype:
    """Half-precision weights are decomposed in float32; float32/float64 as they are."""
    return w.dtype if w.dtype in (torch.float32, torch.float64) else torch.float32


# Elements per block of the error sums: float64 temporaries stay near 16 MiB however large
# the matrix (a 50257×1280 embedding would otherwise need ~1.8 GB of float64 copies).
_ERROR_BLOCK = 1 << 21


def relative_error(
    approx: torch.Tensor | Callable[[int, int], torch.Tensor], ref: torch.Tensor
) -> float:
    """‖approx − ref‖ / ‖ref‖ in float64 (0 for a zero reference matched exactly).

    Summed over blocks of rows, so the float64 temporaries stay bounded.  ``approx`` is a
    tensor of ``ref``'s shape, or a function ``(i, j) -> approx[i:j]`` giving rows on demand
    (an embedding's rows by lookup, so the dense approximation is never formed).
    """
    ref = ref.detach()
    if isinstance(approx, torch.Tensor):
        dense = approx.detach()
        dense = dense if dense.shape == ref.shape else dense.expand_as(ref)
        if ref.ndim < 2:
            ref, dense = ref.reshape(1, -1), dense.reshape(1, -1)
        get = lambda i, j: dense[i:j]  # noqa: E731
    else:
        get = approx
    n = int(ref.shape[0])
    step = max(1, _ERROR_BLOCK // max(1, ref[0].numel()))
    diff2 = norm2 = 0.0
    with torch.no_grad():
        for i in range(0, n, step):
            j = min(n, i + step)
            r = ref[i:j].to(torch.float64)
            diff2 += float(torch.sum(torch.square(get(i, j).to(torch.float64) - r)))
            norm2 += float(torch.sum(torch.square(r)))
    diff, norm = math.sqrt(diff2), math.sqrt(norm2)
    if norm > 0:
        return diff / norm
    return 0.0 if diff == 0 else math.inf


# Sides of the (out, in) matrix: rows = output features, cols = input features.
PERMUTES = ("both", "rows", "cols", "none")
# Spellings of the first release (one more release, with a DeprecationWarning).
_DEPRECATED_PERMUTES = {"output": "rows", "out": "rows", "input": "cols", "in": "cols"}


def check_permute(value: Any, name: str = "permute", *, stacklevel: int = 3) -> str:
    """A valid side name ("both", "rows", "cols", "none"); old spellings warn and map.

    ``"input"``/``"in"`` → ``"cols"`` and ``"output"``/``"out"`` → ``"rows"`` (rows are
    the output features of ``nn.Linear``'s (out, in) weight), with a DeprecationWarning.
    """
    if isinstance(value, str) and value in _DEPRECATED_PERMUTES:
        new = _DEPRECATED_PERMUTES[value]
        warnings.warn(
            f"{name}={value!r} is deprecated; use {new!r} (rows = output features, "
            f"cols = input features)",
            DeprecationWarning,
            stacklevel=stacklevel,
        )
        return new
    if value not in PERMUTES:
        raise ValueError(f"{name} must be one of {PERMUTES}, got {value!r}")
    return value


def seed_for(seed: Any, name: str) -> Any:
    """The seed of one module's search: ``seed`` mixed with the module's name (None stays)."""
    return None if seed is None else [seed, zlib.crc32(name.encode())]


def as_perm(p: Any, n: int, name: str, device: Any) -> torch.Tensor | None:
    """An int64 permutation tensor of length n on ``device`` (None stays None)."""
    if p is None:
        return None
    if isinstance(p, torch.Tensor):
        p = p.detach()
    t = torch.as_tensor(check_permutation(p, n, name), device=device)
    # An identity is kept: a module's structure (which buffers exist) must depend on its
    # configuration only, never on the values a search found, or checkpoints made from one
    # run would not load into a module rebuilt by another.
    return t.contiguous()


def inverse_perm(p: torch.Tensor) -> torch.Tensor:
    inv = torch.empty_like(p)
    inv[p] = torch.arange(p.numel(), device=p.device, dtype=p.dtype)
    return inv


def dense_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """A new ``nn.Linear`` holding copies of an (out, in) ``weight`` and ``bias``."""
    out_features, in_features = weight.shape
    lin = nn.Linear(
        in_features, out_features, bias=bias is not None, device=weight.device, dtype=weight.dtype
    )
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    return lin


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule called ``name`` (dotted path) of ``model`` by ``new``."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


# --------------------------------------------------------------------------------------
# Dry-run description of one layer
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerPlan:
    """What a module becomes, resolved from its settings before any fitting.

    Attributes
    ----------
    layer : str
        Registered class name of the replacement.
    in_features, out_features : int
        Sizes of the module's matrix (vocabulary and dimension for embeddings).
    factors : str
        Readable factor shapes (config orientation), e.g. ``384×768 ⊗ 2×4``, or ``rank r``.
    shape : list or None
        ``[[p, q], [s, t]]`` of the Kronecker factors (the newest level for embeddings).
    rank : int
    permute : str
    repeat : int
    params_after : int
        Parameters of the replacement (factors and bias).
    """

    layer: str
    in_features: int
    out_features: int
    factors: str
    shape: list | None
    rank: int
    permute: str
    repeat: int
    params_after: int


# --------------------------------------------------------------------------------------
# The base class
# --------------------------------------------------------------------------------------
class CompressedModule(nn.Module):
    """Base of every compressed layer: registry, spec round trip, parameter count.

    Subclasses are registered under their class name when they are defined (pass
    ``register=False`` in the class statement to opt out, e.g. for an abstract
    intermediate class).

    Attributes
    ----------
    methods : tuple of str
        Compression methods of :class:`tqla_torch.CompressionConfig` the class implements.
    implementation : {"factorized", "reconstructed"}
        The layer's forward strategy.
    approximation_error : float or None
        Relative Frobenius error ‖W − Ŵ‖/‖W‖ of the weight the layer was fitted to; set by
        the constructor (None for a layer built from shapes alone).

    Examples
    --------
    >>> from tqla_torch.nn import REGISTRY
    >>> {'KroneckerLinear', 'LowRankLinear', 'TTLinear'} <= set(REGISTRY)
    True
    """

    methods: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, *, register: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not register:
            return
        old = _REGISTRY.get(cls.__name__)
        if old is not None and old.__qualname__ != cls.__qualname__:
            raise TypeError(
                f"a compressed layer type named {cls.__name__!r} is already registered "
                f"(from {old.__module__}); layer class names must be unique"
            )
        _REGISTRY[cls.__name__] = cls

    def __init__(
        self, *, implementation: str = "factorized", approximation_error: float | None = None
    ) -> None:
        super().__init__()
        self.implementation = check_implementation(implementation)
        self.approximation_error = (
            None if approximation_error is None else float(approximation_error)
        )

    # -- shared pieces of the constructors ----------------------------------------------
    def _init_bias(self, bias: bool, size: int, factory: dict[str, Any]) -> None:
        """An empty ``bias`` parameter of ``size`` entries, or a registered None."""
        if bias:
            self.bias = nn.Parameter(torch.empty(size, **factory))
        else:
            self.register_parameter("bias", None)

    def _reset_bias(self, fan_in: int) -> None:
        """``torch.nn.Linear``'s bias initialisation U(−1/√fan_in, 1/√fan_in) (if any)."""
        if self.bias is not None:
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    # -- lookup ------------------------------------------------------------------------
    @staticmethod
    def layer_type(name: str) -> type[CompressedModule]:
        """The registered class called ``name`` (ValueError naming the known ones)."""
        cls = _REGISTRY.get(name)
        if cls is None:
            raise ValueError(f"unknown compressed layer type {name!r}; known: {sorted(_REGISTRY)}")
        return cls

    @staticmethod
    def for_module(module: nn.Module, method: str) -> type[CompressedModule] | None:
        """The registered class that compresses ``module`` by ``method`` (None if none)."""
        for cls in _REGISTRY.values():
            if method in cls.methods and cls.accepts(module):
                return cls
        return None

    @staticmethod
    def compressible(module: nn.Module) -> bool:
        """Whether any registered layer type accepts ``module``."""
        return any(cls.accepts(module) for cls in _REGISTRY.values())

    # -- interface of a layer family ---------------------------------------------------
    @classmethod
    def accepts(cls, module: nn.Module) -> bool:
        """Whether :meth:`from_module` can compress ``module`` (by one of ``methods``)."""
        raise NotImplementedError(f"{cls.__name__}.accepts")

    @classmethod
    def plan(cls, module: nn.Module, settings: Any, *, name: str = "module") -> LayerPlan:
        """What ``module`` becomes under ``settings``, without fitting (ValueError if invalid)."""
        raise NotImplementedError(f"{cls.__name__}.plan")

    @classmethod
    def from_module(cls, module: nn.Module, settings: Any, *, name: str = "") -> CompressedModule:
        """A layer fitted to ``module``'s current weight under ``settings``."""
        raise NotImplementedError(f"{cls.__name__}.from_module")

    def _spec_values(self) -> dict[str, Any]:
        """Constructor arguments (JSON values) that rebuild this layer's structure."""
        raise NotImplementedError(f"{type(self).__name__}._spec_values")

    def to_dense(self) -> torch.Tensor:
        """The dense weight (or table) the layer represents (differentiable)."""
        raise NotImplementedError(f"{type(self).__name__}.to_dense")

    # -- shared ------------------------------------------------------------------------
    @property
    def n_params(self) -> int:
        """Trainable entries (permutation buffers are not counted)."""
        return sum(p.numel() for p in self.parameters())

    def spec(self) -> dict[str, Any]:
        """JSON description sufficient to rebuild an empty layer (:meth:`from_spec`)."""
        return {"type": type(self).__name__, **self._spec_values()}

    @classmethod
    def from_spec(
        cls, spec: dict[str, Any], *, device: Any = None, dtype: Any = None
    ) -> CompressedModule:
        """An (uninitialised) layer of the shapes :meth:`spec` describes.

        Called on the base class, dispatches on ``spec["type"]`` through the registry.
        """
        if not isinstance(spec, dict):
            raise ValueError(f"a layer spec must be a dict, got {type(spec).__name__}")
        kind = spec.get("type", cls.__name__)
        target = cls.layer_type(kind) if cls is CompressedModule else cls
        if kind != target.__name__:
            raise ValueError(f"spec of a {kind!r} given to {target.__name__}.from_spec")
        args = {k: v for k, v in spec.items() if k != "type"}
        try:
            return target(**args, device=device, dtype=dtype)
        except TypeError as err:
            raise ValueError(f"invalid {kind} spec {args!r}: {err}") from None

    def extra_repr(self) -> str:
        values = ", ".join(f"{k}={v}" for k, v in self._spec_values().items())
        return f"{values}, params={self.n_params}"


# --------------------------------------------------------------------------------------
# Compressed linear layers
# --------------------------------------------------------------------------------------
class LinearBase(CompressedModule, register=False):
    """Shared parts of the layers that replace ``nn.Linear`` or GPT-2 ``Conv1D``."""

    in_features: int
    out_features: int
    bias: torch.Tensor | None

    @classmethod
    def accepts(cls, module: nn.Module) -> bool:
        return isinstance(module, nn.Linear) or is_conv1d(module)

    def to_linear(self) -> nn.Linear:
        """A dense ``torch.nn.Linear`` holding :meth:`to_dense` (a copy)."""
        return dense_linear(self.to_dense(), self.bias)


# --------------------------------------------------------------------------------------
# Compressed embeddings
# --------------------------------------------------------------------------------------
class EmbeddingBase(CompressedModule, register=False):
    """Shared parts of the compressed embeddings: lookup, ``attend`` and dense forms."""

    num_embeddings: int
    embedding_dim: int
    padding_idx: int | None

    def attend(self, h: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_dense(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_embedding(self) -> nn.Embedding:
        """A dense ``torch.nn.Embedding`` holding :meth:`to_dense` (a copy)."""
        dense = self.to_dense()
        emb = nn.Embedding(
            self.num_embeddings,
            self.embedding_dim,
            padding_idx=self.padding_idx,
            device=dense.device,
            dtype=dense.dtype,
        )
        with torch.no_grad():
            emb.weight.copy_(dense)
        return emb


def check_padding_idx(padding_idx: Any, num_embeddings: int) -> int | None:
    if padding_idx is None:
        return None
    p = int(padding_idx)
    if not -num_embeddings <= p < num_embeddings:
        raise ValueError(f"padding_idx must be within num_embeddings, got {padding_idx}")
    return p % num_embeddings
