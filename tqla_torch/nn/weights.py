"""How each supported dense module stores its weight: one (out, in) view of all of them.

==========================  ===================  ==========================================
module                      stored weight        (out, in) matrix (``weight_out_in``)
==========================  ===================  ==========================================
``torch.nn.Linear``         (out, in)            ``weight``
transformers ``Conv1D``     (in, out)            ``weight.T`` (GPT-2 stores it this way)
``torch.nn.Embedding``      (vocab, dim)         ``weight.T`` (a lookup: in = vocab)
==========================  ===================  ==========================================

Configs state factor shapes for the out×in matrix ``weight_view(m).weight_out_in`` (the
layers' orientation); :func:`resolve_out_in` resolves ``shape``/``b_shape`` against it.
:func:`resolve_shape` does the same for an in×out matrix and :func:`layer_shape` transposes
(``(A ⊗ B)ᵀ = Aᵀ ⊗ Bᵀ``), for the first release's in×out configs.

GPT-2's ``Conv1D`` has been transposed the wrong way in more than one library; every
conversion in tqla_torch goes through :func:`weight_view`, which is tested per module kind.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tqla.kron import KroneckerShape

__all__ = [
    "WeightView",
    "conv1d_class",
    "is_conv1d",
    "layer_shape",
    "resolve_out_in",
    "resolve_shape",
    "settings_shape",
    "weight_view",
]


def conv1d_class() -> type | None:
    """transformers' ``Conv1D`` class if transformers is already imported, else None.

    A module can only be a ``Conv1D`` if its class was imported, so this never imports
    transformers itself (which takes seconds).
    """
    mod = sys.modules.get("transformers.pytorch_utils")
    return getattr(mod, "Conv1D", None) if mod is not None else None


def is_conv1d(module: Any) -> bool:
    """Whether ``module`` is a transformers ``Conv1D`` (GPT-2's in×out linear layer)."""
    cls = conv1d_class()
    return cls is not None and isinstance(module, cls)


@dataclass(frozen=True)
class WeightView:
    """A module's weight in the in×out orientation, without copying.

    Attributes
    ----------
    kind : str
        ``"linear"``, ``"conv1d"`` or ``"embedding"``.
    in_features, out_features : int
        For embeddings: vocabulary size and embedding dimension.
    weight : torch.Tensor
        The (in_features, out_features) matrix W with ``y = x · W`` (a view of the module's
        parameter: ``linear.weight.T``, ``conv1d.weight``, ``embedding.weight``).
    bias : torch.Tensor or None
        The module's bias (None for embeddings and bias-free layers).
    """

    kind: str
    in_features: int
    out_features: int
    weight: torch.Tensor
    bias: torch.Tensor | None

    @property
    def weight_out_in(self) -> torch.Tensor:
        """The same matrix in ``torch.nn.Linear``'s (out, in) orientation (a view)."""
        return self.weight.T

    @property
    def n_params(self) -> int:
        """Entries of the weight and bias."""
        return self.weight.numel() + (0 if self.bias is None else self.bias.numel())


def weight_view(module: nn.Module) -> WeightView:
    """Normalise a Linear, GPT-2 ``Conv1D`` or Embedding weight to the in×out orientation.

    Parameters
    ----------
    module : torch.nn.Linear, transformers Conv1D or torch.nn.Embedding

    Returns
    -------
    WeightView

    Raises
    ------
    TypeError
        For any other module type.

    Examples
    --------
    >>> import torch
    >>> v = weight_view(torch.nn.Linear(3, 5))
    >>> v.kind, v.in_features, v.out_features, tuple(v.weight.shape)
    ('linear', 3, 5, (3, 5))
    """
    if isinstance(module, nn.Linear):
        out_f, in_f = module.weight.shape
        return WeightView("linear", int(in_f), int(out_f), module.weight.T, module.bias)
    if is_conv1d(module):
        in_f, out_f = module.weight.shape
        return WeightView("conv1d", int(in_f), int(out_f), module.weight, module.bias)
    if isinstance(module, nn.Embedding):
        vocab, dim = module.weight.shape
        return WeightView("embedding", int(vocab), int(dim), module.weight, None)
    raise TypeError(
        f"module must be a torch.nn.Linear, a transformers Conv1D or a torch.nn.Embedding, "
        f"got {type(module).__name__}"
    )


def layer_shape(shape_in_out: Any) -> KroneckerShape:
    """Factor shapes stated in the in×out orientation → the layer's (out, in) orientation.

    ``W = A ⊗ B`` with A (p, q) and B (s, t) on the in×out matrix is ``Wᵀ = Aᵀ ⊗ Bᵀ``,
    i.e. A (q, p) and B (t, s) on ``torch.nn.Linear``'s (out, in) weight.

    Examples
    --------
    >>> layer_shape(((384, 768), (2, 4)))  # GPT-2 c_fc, as published
    KroneckerShape(a=(768, 384), b=(4, 2))
    """
    return KroneckerShape.of(shape_in_out).T


def _as_pair(value: Any, name: str) -> tuple[int, int]:
    try:
        a, b = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of positive integers, got {value!r}") from None
    out = []
    for v in (a, b):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a pair of positive integers, got {value!r}")
        out.append(int(v))
    return out[0], out[1]


def resolve_shape(
    in_features: int,
    out_features: int,
    *,
    shape: Any = None,
    b_shape: Any = None,
    where: str = "module",
) -> KroneckerShape:
    """The in×out factor shapes of an (in_features × out_features) matrix.

    Exactly one of ``shape`` (both factors, ``((p, q), (s, t))``) and ``b_shape`` (B's
    shape ``(s, t)``; A is then ``(in/s, out/t)``) must be given.

    Parameters
    ----------
    in_features, out_features : int
        The in×out matrix shape.
    shape : ((p, q), (s, t)), optional
        Full factor shapes with ``p·s = in_features`` and ``q·t = out_features``.
    b_shape : (s, t), optional
        Shape of the small factor; ``s`` must divide ``in_features`` and ``t`` must divide
        ``out_features``.
    where : str
        Name used in error messages (the module name).

    Returns
    -------
    KroneckerShape
        In the in×out orientation.

    Raises
    ------
    ValueError
        If neither or both are given, or the shapes do not divide the matrix.

    Examples
    --------
    >>> resolve_shape(768, 3072, b_shape=(2, 4))
    KroneckerShape(a=(384, 768), b=(2, 4))
    """
    return _resolve_matrix(in_features, out_features, shape, b_shape, where, "in", "out")


def resolve_out_in(
    out_features: int,
    in_features: int,
    *,
    shape: Any = None,
    b_shape: Any = None,
    where: str = "module",
) -> KroneckerShape:
    """The factor shapes of an out×in matrix (``nn.Linear``'s orientation, tqla's M×N).

    Exactly one of ``shape`` (``((p, q), (s, t))`` with ``p·s = out`` and ``q·t = in``) and
    ``b_shape`` (``(s, t)``; A is then ``(out/s, in/t)``) must be given.

    Examples
    --------
    >>> resolve_out_in(3072, 768, b_shape=(4, 2))   # GPT-2 c_fc
    KroneckerShape(a=(768, 384), b=(4, 2))
    """
    return _resolve_matrix(out_features, in_features, shape, b_shape, where, "out", "in")


def _resolve_matrix(
    rows: int, cols: int, shape: Any, b_shape: Any, where: str, rn: str, cn: str
) -> KroneckerShape:
    """:func:`resolve_shape` / :func:`resolve_out_in` for a rows×cols matrix whose sides
    are called ``rn`` and ``cn`` ("in"/"out") in the messages."""
    if (shape is None) == (b_shape is None):
        raise ValueError(
            f"{where}: give exactly one of shape ((p, q), (s, t)) and b_shape (s, t) "
            f"for its Kronecker factors ({rn}×{cn} orientation); got shape={shape!r}, "
            f"b_shape={b_shape!r}"
        )
    if b_shape is not None:
        s, t = _as_pair(b_shape, f"{where}: b_shape")
        if rows % s or cols % t:
            raise ValueError(
                f"{where}: b_shape ({s}, {t}) does not divide the {rn}×{cn} matrix "
                f"({rows}, {cols}): need {rn} % {s} == 0 and {cn} % {t} == 0"
            )
        return KroneckerShape((rows // s, cols // t), (s, t))
    try:
        a, b = shape
    except (TypeError, ValueError):
        raise ValueError(
            f"{where}: shape must be ((p, q), (s, t)) in the {rn}×{cn} orientation, got {shape!r}"
        ) from None
    p, q = _as_pair(a, f"{where}: shape[0] (factor A)")
    s, t = _as_pair(b, f"{where}: shape[1] (factor B)")
    if p * s != rows or q * t != cols:
        raise ValueError(
            f"{where}: factor shapes A ({p}, {q}) ⊗ B ({s}, {t}) give a ({p * s}, {q * t}) "
            f"matrix, but the module's {rn}×{cn} matrix is ({rows}, {cols}): "
            f"need p·s = {rn} and q·t = {cn}"
        )
    return KroneckerShape((p, q), (s, t))


def settings_shape(view: WeightView, settings: Any, where: str) -> KroneckerShape:
    """The out×in factor shapes of ``settings`` (``shape`` or ``b_shape``) for ``view``."""
    return resolve_out_in(
        view.out_features,
        view.in_features,
        shape=settings.shape,
        b_shape=settings.b_shape,
        where=where,
    )
