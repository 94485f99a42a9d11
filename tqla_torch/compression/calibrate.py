"""Calibration statistics: the input second moment of each target module, and its sensitivity.

:func:`collect_statistics` runs a model over calibration batches with forward hooks on the
target modules and accumulates, streaming, in float64:

* the input second moment C = XᵀX / n of each module (X: every input vector the module saw,
  one row per token) — one in×in matrix per module, whatever the amount of data;
* a Fisher-style sensitivity: the mean squared gradient of a loss with respect to the
  module's *output*, per output coordinate, E‖∂L/∂y‖² / out.  With it,
  ½·sensitivity·tr(ΔW·C·ΔWᵀ) estimates the loss increase of a weight error ΔW (the
  diagonal, isotropic Fisher approximation; docs/auto.md).  The loss is the model's
  next-token cross-entropy when its output has ``logits`` and the batch ``input_ids``, else
  a fixed random projection ⟨h, z⟩ of its first output tensor (then the sensitivity
  estimates ‖∂h/∂y‖²_F, Hutchinson-style).

Batches are what a tokenizer returns (a dict of tensors, passed as ``model(**batch)``), a
tensor of input ids (``model(input_ids=...)`` for transformers models, else
``model(tensor)``), or a DataLoader / any iterable of either.
"""

from __future__ import annotations

import inspect as _inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tqla_torch.nn.weights import weight_view

__all__ = ["CalibrationStats", "collect_statistics"]


@dataclass
class CalibrationStats:
    """What :func:`collect_statistics` measured, per module name.

    Attributes
    ----------
    moments : dict of str to torch.Tensor
        C = XᵀX / n (float64, in×in, on the model's device); for an ``nn.Embedding`` the
        diagonal of C for its one-hot inputs: the token frequencies (float64, length V).
    tokens : dict of str to int
        n, the number of input vectors each module saw.
    sensitivity : dict of str to float
        E‖∂L/∂y‖² / out per module (empty when not measured).
    row_sensitivity : dict of str to torch.Tensor
        The same per output coordinate, E[(∂L/∂y_i)²] (float64, length out); for an
        ``nn.Embedding`` per row of its table, Σ_{t: x_t = v} ‖∂L/∂y_t‖² / (n·d) (length V;
        the row weights of the Fisher-style lookup error, summing to its ``sensitivity``).
        Empty when not measured.
    batches : int
    """

    moments: dict[str, torch.Tensor] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    sensitivity: dict[str, float] = field(default_factory=dict)
    row_sensitivity: dict[str, torch.Tensor] = field(default_factory=dict)
    batches: int = 0


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _call(model: nn.Module, batch: Any, device: torch.device, index: int) -> tuple[Any, Any]:
    """Run ``model`` on one batch; returns (output, input_ids or None)."""
    if isinstance(batch, Mapping) or (hasattr(batch, "keys") and hasattr(batch, "__getitem__")):
        kwargs = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in dict(batch).items()}
        return model(**kwargs), kwargs.get("input_ids")
    if torch.is_tensor(batch):
        batch = batch.to(device)
        params = _inspect.signature(model.forward).parameters
        if "input_ids" in params:
            return model(input_ids=batch), batch
        return model(batch), None
    if isinstance(batch, (list, tuple)) and len(batch) == 1 and torch.is_tensor(batch[0]):
        return _call(model, batch[0], device, index)  # DataLoader over a TensorDataset
    raise TypeError(
        f"data: batch {index} is a {type(batch).__name__}; calibration batches must be dicts of "
        f"tensors (as a tokenizer returns them), tensors of input ids, or a DataLoader of either"
    )


def _misfit(model: nn.Module, batch: Any) -> str:
    """Why a batch of input ids cannot fit the model, if its config says (else "")."""
    from tqla_torch._lm import max_positions, vocab_size

    ids = batch.get("input_ids") if isinstance(batch, Mapping) else batch
    if isinstance(ids, (list, tuple)) and len(ids) == 1:
        ids = ids[0]
    if not torch.is_tensor(ids) or ids.dim() < 1 or ids.is_floating_point() or ids.numel() == 0:
        return ""
    V, T = vocab_size(model), max_positions(model)
    if V is not None and int(ids.max()) >= V:
        return f" (token id {int(ids.max())} is not below the model's vocab_size {V})"
    if int(ids.min()) < 0:
        return f" (negative token id {int(ids.min())})"
    if T is not None and ids.shape[-1] > T:
        return (f" (rows of {ids.shape[-1]} tokens are longer than the model's {T} positions; "
                f"use at most {T} tokens per row)")
    return ""


def _loss(out: Any, input_ids: Any, gen: torch.Generator) -> torch.Tensor:
    logits = getattr(out, "logits", None)
    if logits is not None and input_ids is not None and logits.dim() == 3:
        lg = logits[:, :-1].float()
        return torch.nn.functional.cross_entropy(
            lg.reshape(-1, lg.shape[-1]), input_ids[:, 1:].reshape(-1)
        )
    h = out
    if not torch.is_tensor(h):
        h = getattr(out, "last_hidden_state", None)
        if h is None:
            h = out[0] if isinstance(out, (tuple, list)) or hasattr(out, "to_tuple") else None
    if not torch.is_tensor(h) or not h.is_floating_point():
        raise ValueError(
            "sensitivity: the model's output has neither logits (with input_ids in the batch) "
            "nor a floating tensor to project; pass sensitivity='uniform' or a dict of scores"
        )
    z = torch.randn(h.shape, generator=gen, dtype=torch.float32).to(h.device)
    return (h.float() * z).sum() / max(1, h.shape[0]) ** 0.5


def collect_statistics(
    model: nn.Module,
    data: Iterable[Any],
    modules: Mapping[str, nn.Module],
    *,
    sensitivity: bool = True,
    max_batches: int | None = None,
    seed: int = 0,
) -> CalibrationStats:
    """Input second moments (and sensitivities) of ``modules`` over calibration ``data``.

    Parameters
    ----------
    model : torch.nn.Module
    data : iterable of batches
        Dicts of tensors, tensors of input ids, or a DataLoader of either.
    modules : dict of str to module
        The modules to watch (``torch.nn.Linear``, transformers ``Conv1D`` or
        ``torch.nn.Embedding``), by name.
    sensitivity : bool, default True
        Also measure the Fisher-style sensitivity (one backward pass per batch).
    max_batches : int, optional
        Stop after this many batches.
    seed : int, default 0
        Seed of the random projection of the sensitivity loss (models without logits).

    Returns
    -------
    CalibrationStats

    Raises
    ------
    TypeError
        If a batch is of an unsupported type (naming its index).
    ValueError
        If ``data`` is empty, a batch does not fit the model (the model's own error is
        included), or a module received no input (naming the modules).
    """
    if not modules:
        raise ValueError("modules: nothing to calibrate (no target module)")
    device = _model_device(model)
    acc: dict[str, torch.Tensor] = {}
    tokens = dict.fromkeys(modules, 0)
    grads = dict.fromkeys(modules, 0.0)
    rows: dict[str, torch.Tensor] = {}
    embeds = {name for name, m in modules.items() if isinstance(m, nn.Embedding)}
    widths = {
        name: int(m.num_embeddings) if name in embeds else weight_view(m).in_features
        for name, m in modules.items()
    }

    def pre_hook(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0] if args else None
            if not torch.is_tensor(x):
                return
            if name in embeds:  # one-hot inputs: the moment is diag(token counts) / n
                ids = x.detach().reshape(-1).to(torch.int64)
                c = torch.bincount(ids, minlength=widths[name]).to(torch.float64)
                acc[name] = c if name not in acc else acc[name].add_(c)
                tokens[name] += int(ids.numel())
                return
            x = x.detach().reshape(-1, x.shape[-1]).to(torch.float64)
            if x.shape[1] != widths[name]:
                return
            c = x.T @ x
            acc[name] = c if name not in acc else acc[name].add_(c)
            tokens[name] += int(x.shape[0])

        return hook

    def fwd_hook(name: str):
        def hook(module: nn.Module, args: tuple, out: Any) -> None:
            if sensitivity and torch.is_tensor(out) and out.requires_grad:
                ids = args[0].detach().reshape(-1) if name in embeds else None

                def on_grad(g: torch.Tensor) -> None:
                    g2 = g.detach().double() ** 2
                    grads[name] += float(g2.sum())
                    g2 = g2.reshape(-1, g2.shape[-1])
                    if ids is not None:  # per table row: Σ over its tokens of ‖g_t‖²
                        row = torch.zeros(widths[name], dtype=torch.float64, device=g.device)
                        row.index_add_(0, ids.to(g.device), g2.sum(1))
                    else:
                        row = g2.sum(0)
                    rows[name] = row if name not in rows else rows[name].add_(row)

                out.register_hook(on_grad)

        return hook

    handles = []
    for name, m in modules.items():
        handles.append(m.register_forward_pre_hook(pre_hook(name)))
        handles.append(m.register_forward_hook(fwd_hook(name)))
    gen = torch.Generator().manual_seed(int(seed))
    was_training = model.training
    model.eval()
    n_batches = 0
    try:
        for i, batch in enumerate(data):
            if max_batches is not None and i >= max_batches:
                break
            with torch.set_grad_enabled(sensitivity):
                try:
                    out, ids = _call(model, batch, device, i)
                except TypeError as err:
                    if "calibration batches" in str(err):
                        raise
                    raise ValueError(
                        f"data: batch {i} does not fit the model: {err}{_misfit(model, batch)}"
                    ) from err
                except (RuntimeError, ValueError, IndexError) as err:
                    raise ValueError(
                        f"data: batch {i} does not fit the model: {err}{_misfit(model, batch)}"
                    ) from err
                if sensitivity:
                    _loss(out, ids, gen).backward()
            n_batches += 1
    finally:
        for h in handles:
            h.remove()
        if sensitivity:
            model.zero_grad(set_to_none=True)
        model.train(was_training)
    if n_batches == 0:
        raise ValueError("data: no calibration batch (the iterable is empty)")
    silent = [name for name in modules if tokens[name] == 0]
    if silent:
        raise ValueError(
            "modules without inputs during calibration (not called by the model's forward on "
            "this data, or called with inputs of another width): " + ", ".join(silent)
        )
    stats = CalibrationStats(batches=n_batches)
    for name, m in modules.items():
        n = tokens[name]
        stats.moments[name] = acc[name] / n
        stats.tokens[name] = n
        if sensitivity:
            out_f = int(m.embedding_dim) if name in embeds else weight_view(m).out_features
            stats.sensitivity[name] = grads[name] / n / out_f
            if name in rows:
                stats.row_sensitivity[name] = rows[name] / n / (out_f if name in embeds else 1)
    return stats
