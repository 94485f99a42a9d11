"""Automatic per-module ranks for a whole-model parameter budget (LWIQ + the κ rule).

:func:`auto_ranks` turns "this model, at most N parameters" into a :class:`CompressionConfig`
with one rank per target module: it scores the modules with LWIQ on calibration ``data``
(:func:`tqla_torch.compression.importance.lwiq`), then sets
``r_l = clip(round(κ·w_l·r_max_l), 1, r_max_l)`` with κ found by bisection so that the model
meets the budget (:mod:`tqla_torch.compression.ranks`). Parameter counts come from each layer
family's own ``plan`` (what :func:`tqla_torch.inspect` reports), so the same code serves every
method with a ``rank`` setting. :func:`auto_tt` is it for tensor trains and :func:`auto_svd` for
low-rank factors; ``presets.auto_tt`` and ``tqla compress --preset auto_tt --budget 0.5`` reach
them by name.

By default each module is scored at the output of its *block* — the nearest enclosing module
whose name ends in a list index (``transformer.h.3`` for ``transformer.h.3.mlp.c_fc``,
``layers.2`` for ``layers.2.conv1``): inside a residual branch a layer's own output is an
increment to the residual stream, not the representation, and scoring it misleads the
allocation (``docs/lwiq.md`` has the measurements). ``score_at="module"`` scores each module
itself.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from tqla_torch.compression.config import CompressionConfig
from tqla_torch.compression.ranks import plan_ranks
from tqla_torch.nn.base import CompressedModule

__all__ = ["auto_ranks", "auto_svd", "auto_tt", "block_of"]

_GPT2_MLP = r".*\.mlp\.c_(fc|proj)"


def block_of(name: str) -> str:
    """The nearest enclosing block of a module: its longest name prefix ending in an index.

    Examples
    --------
    >>> block_of("transformer.h.3.mlp.c_fc"), block_of("layers.2.conv1"), block_of("fc")
    ('transformer.h.3', 'layers.2', 'fc')
    """
    parts = name.split(".")
    for i in range(len(parts) - 2, -1, -1):  # an index strictly inside the name
        if parts[i].isdigit():
            return ".".join(parts[: i + 1])
    return name


def _targets(model: nn.Module, config: CompressionConfig) -> dict[str, nn.Module]:
    found = {
        n: m
        for n, m in model.named_modules()
        if n and config.matches(n) and CompressedModule.compressible(m)
    }
    if not found:
        raise ValueError(
            f"target_modules {config.target_modules!r} matched no compressible module of the model"
        )
    return found


def _params_table(
    name: str, module: nn.Module, config: CompressionConfig
) -> tuple[Callable[[int], int], int]:
    """(rank -> parameters replacing the weight, largest rank that still saves parameters)."""
    base = config.settings_for(name)
    layer_type = CompressedModule.for_module(module, base.method)
    if layer_type is None:
        raise ValueError(
            f"module {name!r}: no layer compresses a {type(module).__name__} "
            f"by method {base.method!r}"
        )
    bias = getattr(module, "bias", None)
    n_bias = 0 if bias is None else bias.numel()
    dense = module.weight.numel()
    counts: list[int] = []
    r = 1
    while True:
        try:
            st = dataclasses.replace(base, rank=r, n_params=None)
            after = layer_type.plan(module, st, name=name).params_after - n_bias
        except ValueError:
            break
        if after >= dense or (counts and after == counts[-1]):
            break  # no saving left, or every bond of a tensor train at its bound
        counts.append(after)
        r += 1
    if not counts:
        raise ValueError(f"module {name!r}: no rank of method {base.method!r} saves parameters")
    return (lambda rank, c=tuple(counts): c[rank - 1]), len(counts)


def auto_ranks(
    model: nn.Module,
    *,
    budget: int | float,
    data: Iterable[Any] | None,
    method: str,
    target_modules: str | list[str] | None = None,
    allocation: str = "lwiq",
    score_at: str = "block",
    n_classes: int | None = None,
    seed: int = 0,
    **config_fields: Any,
) -> CompressionConfig:
    """A :class:`CompressionConfig` with per-module ranks meeting ``budget``.

    Parameters
    ----------
    model : torch.nn.Module
        The trained model (classifier or causal LM).
    budget : int or float
        The whole model's parameters after compression, or a fraction of today's in (0, 1].
    data : re-iterable of batches or None
        Calibration batches for LWIQ (see :func:`~tqla_torch.compression.importance.lwiq`);
        not needed for ``allocation="uniform"``.
    method : str
        The compression method (a method whose layers take a ``rank``, e.g. ``"svd"``).
    target_modules : str or list of str, optional
        As in :class:`CompressionConfig`; default: GPT-2's MLP matrices when the model has
        them, else every Linear / Conv1D module.
    allocation : {"lwiq", "uniform"}
        LWIQ-weighted ranks, or the same rank everywhere (the baseline).
    score_at : {"block", "module"}
        Where LWIQ scores each module (see the module docstring).
    n_classes, seed
        Passed to :func:`~tqla_torch.compression.importance.lwiq`.
    **config_fields
        Other :class:`CompressionConfig` fields (``implementation``, ``exclude_modules``...).

    Raises
    ------
    ValueError
        A budget no ranks can meet (naming the feasible range), no matching module, a method
        without ranks, missing data for LWIQ.
    """
    if allocation not in ("lwiq", "uniform"):
        raise ValueError(f"allocation must be 'lwiq' or 'uniform', got {allocation!r}")
    if score_at not in ("block", "module"):
        raise ValueError(f"score_at must be 'block' or 'module', got {score_at!r}")
    if target_modules is None:
        has_mlp = any(re.fullmatch(_GPT2_MLP, n) for n, _ in model.named_modules())
        target_modules = _GPT2_MLP if has_mlp else r".+"
    config = CompressionConfig(
        target_modules=target_modules, method=method, rank=1, **config_fields
    )
    modules = _targets(model, config)
    params, r_max = {}, {}
    for name, module in modules.items():
        params[name], r_max[name] = _params_table(name, module, config)
    at = {n: (block_of(n) if score_at == "block" else n) for n in modules}
    alloc, _ = plan_ranks(
        model,
        params,
        budget,
        r_max=r_max,
        method=allocation,
        data=data,
        score_at=at,
        n_classes=n_classes,
        seed=seed,
    )
    # the ranks join the caller's overrides (e.g. tt_modes per module kind), applied last
    overrides = dict(config.overrides)
    for n, r in alloc.ranks.items():
        overrides[re.escape(n)] = {**overrides.get(re.escape(n), {}), "rank": r}
    # target exactly the modules ranked (a broad pattern may also match, e.g., activations)
    return dataclasses.replace(config, target_modules=list(modules), overrides=overrides)


def auto_svd(
    model: nn.Module,
    *,
    budget: int | float,
    data: Iterable[Any] | None = None,
    **kwargs: Any,
) -> CompressionConfig:
    """Low-rank (``method="svd"``) ranks per module for ``budget``; see :func:`auto_ranks`.

    Examples
    --------
    >>> import torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> gpt = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2,
    ...                                  n_positions=16, bos_token_id=0, eos_token_id=0))
    >>> data = [torch.randint(0, 64, (4, 16)) for _ in range(2)]
    >>> cfg = auto_svd(gpt, budget=0.8, data=data, n_classes=8)
    >>> sorted(cfg.overrides)[0], cfg.method
    ('transformer\\\\.h\\\\.0\\\\.mlp\\\\.c_fc', 'svd')
    """
    return auto_ranks(model, budget=budget, data=data, method="svd", **kwargs)


def auto_tt(
    model: nn.Module,
    *,
    budget: int | float,
    data: Iterable[Any] | None = None,
    **kwargs: Any,
) -> CompressionConfig:
    """Tensor-train (``method="tt"``) ranks per module for ``budget``; see :func:`auto_ranks`.

    The rank of a module is the uniform TT rank of its layer (each bond capped at its bound);
    ``tt_cores`` / ``tt_modes`` in ``kwargs`` choose the modes as in :class:`CompressionConfig`.

    Examples
    --------
    >>> import torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> gpt = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2,
    ...                                  n_positions=16, bos_token_id=0, eos_token_id=0))
    >>> data = [torch.randint(0, 64, (4, 16)) for _ in range(2)]
    >>> cfg = auto_tt(gpt, budget=0.8, data=data, n_classes=8)
    >>> cfg.method, len(cfg.overrides)
    ('tt', 4)
    """
    return auto_ranks(model, budget=budget, data=data, method="tt", **kwargs)
