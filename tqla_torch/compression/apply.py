"""Apply a :class:`~tqla_torch.compression.CompressionConfig` to a model: dry run and in place.

:func:`inspect` lists what a config matches, with each module's resolved factor shapes,
rank and parameter counts before and after, without touching the model.
:func:`compress` replaces the matched modules in place by compressed layers initialised
from tqla's decompositions of their current weights and returns the same report with the
approximation errors.  Which layer class compresses which module by which method comes from
the layer registry (:data:`tqla_torch.nn.REGISTRY`): each class states its ``methods`` and
the modules it ``accepts``, resolves a module's settings (``plan``) and fits itself
(``from_module``).

:func:`compress` is transactional: every matched module is fitted first, and the model is
changed only when all fits succeeded; a failure (a NaN in one weight, an out-of-memory
error, ...) leaves the model exactly as it was and names the module.

LM heads tied to a compressed embedding (GPT-2's ``lm_head.weight is transformer.wte.weight``)
are found by identity of the weight and replaced by a
:class:`~tqla_torch.nn.TiedEmbeddingHead` that computes logits through the embedding's
factors (``tie_lm_head=True``) or by an untied dense copy of the head (``False``).
Hugging Face's own re-tying is switched off for such models
(``config.tie_word_embeddings = False``): the tie now lives in the module, not in a shared
parameter.
"""

from __future__ import annotations

import dataclasses
import inspect as _inspect
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tqla_torch.compression.config import METHODS, CompressionConfig, ModuleSettings
from tqla_torch.compression.report import CompressionReport, ModuleReport
from tqla_torch.nn.base import REGISTRY, CompressedModule, set_module
from tqla_torch.nn.embedding import TiedEmbeddingHead

__all__ = [
    "CompressionError",
    "CompressionReport",
    "ModuleReport",
    "compress",
    "count_parameters",
    "fold_mlp_permutations",
    "inspect",
]

logger = logging.getLogger(__name__)

HISTORY_ATTR = "tqla_compression_history"


class CompressionError(ValueError, RuntimeError):
    """Fitting one module failed; the model was left unchanged (the message names it)."""


def count_parameters(model: nn.Module) -> int:
    """Σ p.numel() over ``model.parameters()`` (shared parameters once, buffers not counted)."""
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------
# Resolution: what each matched module becomes (no decomposition yet)
# --------------------------------------------------------------------------------------
@dataclass
class _Item:
    name: str
    module: nn.Module
    settings: ModuleSettings
    layer_type: type[CompressedModule]
    report: ModuleReport


def _is_embedding(module: nn.Module) -> bool:
    return isinstance(module, nn.Embedding) or callable(getattr(module, "attend", None))


def _own_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _check_arguments(model: Any, config: Any) -> None:
    if not isinstance(config, CompressionConfig):
        raise TypeError(
            f"config must be a tqla_torch.CompressionConfig, got {type(config).__name__}"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _resolve(model: nn.Module, config: CompressionConfig) -> tuple[list[_Item], list[str]]:
    _check_arguments(model, config)
    items: list[_Item] = []
    problems: list[str] = []
    unsupported: list[str] = []
    candidates: list[str] = []
    for name, module in model.named_modules():
        compressible = CompressedModule.compressible(module)
        if compressible:
            candidates.append(name)
        if not name or not config.matches(name):
            continue
        if not compressible:
            if isinstance(module, CompressedModule):
                problems.append(f"{name}: already compressed ({type(module).__name__})")
            else:
                unsupported.append(f"{name} ({type(module).__name__})")
            continue
        try:
            items.append(_resolve_one(name, module, config))
        except ValueError as err:
            problems.append(str(err))
    if unsupported:
        problems.append(
            "matched modules of unsupported types (narrow target_modules or add them to "
            "exclude_modules; supported: Linear, transformers Conv1D, Embedding, compressed "
            "embeddings): " + ", ".join(unsupported)
        )
    if problems:
        raise ValueError("cannot apply the compression config:\n  " + "\n  ".join(problems))
    if not items:
        shown = ", ".join(candidates[:12]) + (" ..." if len(candidates) > 12 else "")
        raise ValueError(
            f"target_modules {config.target_modules!r} matched no module of the model"
            + (f" (excluding {config.exclude_modules!r})" if config.exclude_modules else "")
            + f"; compressible modules are named like: {shown or '(none)'}"
        )
    notes = _check_ties(model, items, config)
    return items, notes


def _resolve_one(name: str, module: nn.Module, config: CompressionConfig) -> _Item:
    st = config.settings_for(name)
    layer_type = CompressedModule.for_module(module, st.method)
    if layer_type is None:
        methods = [
            m
            for m in METHODS
            if any(c.accepts(module) and m in c.methods for c in REGISTRY.values())
        ]
        raise ValueError(
            f"module {name!r}: a {type(module).__name__} can be compressed again only by "
            f"method {' or '.join(repr(m) for m in methods)}, not {st.method!r}"
        )
    plan = layer_type.plan(module, st, name=name)
    report = ModuleReport(
        name=name,
        kind=type(module).__name__,
        method=st.method,
        params_before=_own_params(module),
        **dataclasses.asdict(plan),
    )
    return _Item(name, module, st, layer_type, report)


def _tied_heads(model: nn.Module, module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules whose output weight is tied to embedding ``module``."""
    out = []
    weight = getattr(module, "weight", None) if isinstance(module, nn.Embedding) else None
    for name, m in model.named_modules():
        if m is module:
            continue
        if weight is not None and isinstance(m, nn.Linear) and m.weight is weight:
            out.append((name, m))
        elif isinstance(m, TiedEmbeddingHead) and m.embedding is module:
            out.append((name, m))
    return out


def _check_ties(model: nn.Module, items: list[_Item], config: CompressionConfig) -> list[str]:
    names = {it.name for it in items}
    notes = []
    for it in items:
        if not _is_embedding(it.module):
            continue
        for head_name, _head in _tied_heads(model, it.module):
            if head_name in names:
                raise ValueError(
                    f"module {head_name!r} is tied to {it.name!r}; compress the embedding "
                    f"only (the head follows it: tie_lm_head) — remove {head_name!r} from "
                    f"target_modules"
                )
            if config.tie_lm_head:
                notes.append(f"{head_name} stays tied to {it.name} (logits through its factors)")
            else:
                notes.append(
                    f"{head_name} untied from {it.name}: a dense copy of the head "
                    f"(+{_dense_size(it.module):,} parameters)"
                )
    # a matched Linear whose weight is shared with an embedding elsewhere
    for it in items:
        if isinstance(it.module, nn.Linear):
            for name, m in model.named_modules():
                if isinstance(m, nn.Embedding) and m.weight is it.module.weight:
                    raise ValueError(
                        f"module {it.name!r} shares its weight with embedding {name!r} (tied); "
                        f"compress {name!r} instead (the head follows it) or untie them first"
                    )
    return notes


def _params_after(model: nn.Module, items: list[_Item], config: CompressionConfig) -> int:
    total = count_parameters(model)
    for it in items:
        total += it.report.params_after - it.report.params_before
        if not config.tie_lm_head and _is_embedding(it.module):
            for _ in _tied_heads(model, it.module):
                total += _dense_size(it.module)  # the head's bias was counted already
    return total


def _dense_size(embedding: nn.Module) -> int:
    return int(embedding.num_embeddings) * int(embedding.embedding_dim)


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------
def inspect(model: nn.Module, config: CompressionConfig) -> CompressionReport:
    """Dry run: what :func:`compress` would do to ``model``, without changing it.

    Parameters
    ----------
    model : torch.nn.Module
    config : CompressionConfig

    Returns
    -------
    CompressionReport
        Matched modules with resolved factor shapes, ranks and parameter counts; print it
        for a table.

    Raises
    ------
    ValueError
        If nothing matches, a matched module is of an unsupported type, or a module's shapes
        or settings are invalid (all problems listed, each naming its module).

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))
    >>> cfg = CompressionConfig(target_modules=["0"], method="kron", b_shape=[2, 4], rank=2)
    >>> rep = inspect(model, cfg)
    >>> rep.modules[0].factors, rep.params_before, rep.params_after
    ('8×2 ⊗ 2×4', 280, 200)
    """
    items, notes = _resolve(model, config)
    _predicted(items, config)
    return CompressionReport(
        modules=[it.report for it in items],
        params_before=count_parameters(model),
        params_after=_params_after(model, items, config),
        notes=notes,
        applied=False,
        config=config.to_dict(),
    )


def _check_fitted(layer: nn.Module, name: str) -> None:
    err = layer.approximation_error
    if err is not None and not math.isfinite(err):
        raise ValueError(f"the fitted layer's relative error is {err} (a non-finite weight?)")
    for pname, p in layer.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise ValueError(
                f"the fitted layer's {pname} has NaN or infinite entries (does the module's "
                f"weight have any?)"
            )


def _fit(it: _Item, moment: Any = None, damp: float = 0.0) -> nn.Module:
    """Fit one module's replacement; any failure is re-raised naming the module."""
    t0 = time.perf_counter()
    extra = {} if moment is None else {"moment": moment, "damp": damp}
    try:
        with torch.no_grad():
            new = it.layer_type.from_module(it.module, it.settings, name=it.name, **extra)
        _check_fitted(new, it.name)
    except Exception as err:
        raise CompressionError(
            f"compressing module {it.name!r} ({it.report.kind} → {it.report.layer}) failed: "
            f"{type(err).__name__}: {err}. The model was left unchanged."
        ) from err
    new.train(it.module.training)
    it.report.seconds = time.perf_counter() - t0
    it.report.error = new.approximation_error
    it.report.spectral_error = getattr(new, "spectral_error", None)
    if getattr(new, "plan_is_bound", False):  # the fit chose the size within the plan
        it.report.params_after = new.n_params
        it.report.rank = getattr(new, "n_terms", it.report.rank)
    return new


def _swap(model: nn.Module, name: str, new: nn.Module, undo: list[Callable[[], None]]) -> None:
    old = model.get_submodule(name)
    set_module(model, name, new)
    undo.append(lambda: set_module(model, name, old))


def _fit_all(
    items: list[_Item],
    progress: bool | None,
    n_jobs: int,
    moments: dict[str, Any],
    damp: float,
) -> list[nn.Module]:
    """Fit every item (``n_jobs`` at a time, in threads), with a progress bar over modules
    when asked (``progress=True``) or, by default, for plans of five modules or more on a
    terminal."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with the torch extra
        tqdm = None
    disable = (len(items) < 5 or None) if progress is None else not progress
    bar = None
    if tqdm is not None and disable is not True:
        bar = tqdm(total=len(items), desc="compress", unit="module", disable=disable)

    def one(it: _Item) -> nn.Module:
        new = _fit(it, moments.get(it.name), damp)
        if bar is not None:
            bar.set_postfix_str(it.name, refresh=False)
            bar.update(1)
        return new

    try:
        if n_jobs == 1 or len(items) < 2:
            return [one(it) for it in items]
        from concurrent.futures import ThreadPoolExecutor

        from tqla.batch import _blas_threads, _usable_cpus

        with _blas_threads(max(1, _usable_cpus() // n_jobs)):
            with ThreadPoolExecutor(max_workers=n_jobs, thread_name_prefix="tqla-fit") as ex:
                return list(ex.map(one, items))
    finally:
        if bar is not None:
            bar.close()


def fold_mlp_permutations(model: nn.Module) -> list[str]:
    """Fold the permutation between an MLP's two compressed layers through its activation.

    In a GPT-2 style MLP, ``c_proj(act(c_fc(x)))`` with an elementwise ``act``, c_fc's
    output gather and c_proj's input gather compose into one: ``act(y)[..., p] ==
    act(y[..., p])``.  For every module with ``c_fc``, ``act`` and ``c_proj`` attributes
    whose two layers are :class:`~tqla_torch.nn.KroneckerLinear` and whose c_proj gathers
    its input, c_proj's input permutation moves into c_fc's output permutation (and c_fc's
    bias is permuted alike), so each MLP pays one gather instead of two.  The MLP computes
    the same function (to rounding: the same products, gathered once); c_fc alone now
    returns its outputs in c_proj's input order.

    Returns the names of the MLPs changed (:func:`compress` calls it unless
    ``fold_permutations=False``).
    """
    from tqla_torch.nn.kronecker import KroneckerLinear

    folded = []
    for name, mod in model.named_modules():
        fc, proj = getattr(mod, "c_fc", None), getattr(mod, "c_proj", None)
        if not (
            isinstance(fc, KroneckerLinear)
            and isinstance(proj, KroneckerLinear)
            and getattr(mod, "act", None) is not None
            and proj.input_perm is not None
            and fc.out_features == proj.in_features
        ):
            continue
        with torch.no_grad():
            p = proj.input_perm
            fc.output_perm = p.clone() if fc.output_perm is None else fc.output_perm[p]
            if fc.bias is not None:
                fc.bias.copy_(fc.bias[p])
            proj.input_perm = None
        folded.append(name)
    return folded


def compress(
    model: nn.Module,
    config: CompressionConfig,
    *,
    progress: bool | None = None,
    n_jobs: int | None = None,
    fold_permutations: bool = True,
    moments: dict[str, torch.Tensor] | None = None,
    damp: float | None = None,
) -> CompressionReport:
    """Replace the modules ``config`` matches by compressed layers, in place.

    Each layer is initialised from a decomposition of the module's current weight
    (:func:`tqla.permuted_kron`, :func:`tqla.kron_svd` or a truncated SVD) on the weight's
    device, in its dtype (float16/bfloat16 weights are decomposed in float32).  An LM head
    tied to a compressed embedding stays tied or is untied per ``config.tie_lm_head``.  The
    config is appended to ``model.tqla_compression_history`` (saved by
    :func:`tqla_torch.save_pretrained`).

    All modules are fitted before the first one is replaced: if any fit fails, the model is
    left exactly as it was.

    Parameters
    ----------
    model : torch.nn.Module
    config : CompressionConfig
    progress : bool, optional
        A tqdm progress bar over the modules being fitted.  Default: shown for plans of
        five modules or more when stderr is a terminal.
    n_jobs : int, optional
        Modules fitted concurrently (threads; BLAS then runs with CPUs // n_jobs threads
        per call, through threadpoolctl when installed).  Default: the usable CPUs.  Most
        of a fit is single-threaded (LSAP solves, copies), so fitting modules side by side
        uses the cores better than multi-threaded BLAS inside one fit — and avoids BLAS
        threads spinning when other processes share the cores (measured 3× less CPU time
        on a loaded 2-core machine, benchmarks/results/compress_cpu.md).  The fits are
        independent and seeded per module: the result does not depend on ``n_jobs``
        beyond rounding.  Under ``torchrun`` (a ``torch.distributed`` process group is
        initialised) the modules are spread over the ranks by estimated cost, each rank
        fits its share and every rank receives all fitted layers
        (:mod:`tqla_torch.compression.distributed`; ``docs/scaling.md``); the default is
        then the CPUs each process may keep busy (its CPUs divided by the processes on the
        same host that share them: :func:`~tqla_torch.compression.distributed.cpus_per_rank`).
    fold_permutations : bool
        Fold the permutation between the two compressed layers of each GPT-2 style MLP
        through its elementwise activation (:func:`fold_mlp_permutations`): one gather
        per MLP instead of two, the same outputs to rounding.
    moments : dict of str to torch.Tensor, optional
        Activation-aware fitting: the in×in second moment of the inputs of modules (by
        name; :func:`tqla_torch.compression.calibrate.collect_statistics`).  Those modules
        are fitted to minimise the output error on such inputs (:mod:`tqla.whiten`), the
        others by the plain Frobenius fit.  Default: the moments of a config made by
        :func:`tqla_torch.plan_for_budget` (``config.auto_plan``), else none.
    damp : float, optional
        Relative damping of the moments (default: the plan's, else 0.01).

    Returns
    -------
    CompressionReport
        With the relative approximation error and the fitting time (seconds) of each
        module, shown in its table.

    Raises
    ------
    ValueError
        As :func:`inspect`, or when a process group has more processes than the config
        matches modules; nothing is changed then.
    CompressionError
        (a ValueError and RuntimeError) naming the module whose fit failed (for example a
        weight with NaN entries); nothing is changed then either.
    """
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool or None, got {type(progress).__name__}")
    from tqla_torch.compression import distributed

    world_size = distributed.world()[1]
    if n_jobs is not None and (
        isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1
    ):
        raise ValueError(f"n_jobs must be None or an integer >= 1, got {n_jobs!r}")
    items, notes = _resolve(model, config)
    auto = getattr(config, "auto_plan", None)
    if moments is None and auto is not None:
        moments = auto.moments
    if damp is None:
        damp = auto.damp if auto is not None else 0.01
    moments = _check_moments(items, moments)
    _predicted(items, config)
    before = count_parameters(model)
    if world_size > 1:  # torchrun: each rank fits its share, every rank gets all layers
        layers = distributed.fit_spread(
            items, lambda mine, cpus: _fit_all(mine, progress, n_jobs or cpus, moments, damp)
        )
    else:
        from tqla.batch import _usable_cpus

        layers = _fit_all(items, progress, n_jobs or _usable_cpus(), moments, damp)
    fitted = list(zip(items, layers))
    undo: list[Callable[[], None]] = []
    try:
        for it, new in fitted:
            _swap(model, it.name, new, undo)
            if _is_embedding(it.module):
                _retie(model, it, new, config.tie_lm_head, undo)
    except BaseException:
        for step in reversed(undo):
            step()
        raise
    if fold_permutations:
        folded = fold_mlp_permutations(model)
        if folded:
            notes = [
                *notes,
                f"permutations folded through the activation in {len(folded)} MLP(s): "
                f"one gather per MLP",
            ]
    for it, _new in fitted:
        _log(it.report)
    history = list(getattr(model, HISTORY_ATTR, []) or [])
    history.append(config.to_dict())
    object.__setattr__(model, HISTORY_ATTR, history)
    from tqla_torch._hf_folder import record_compression

    record_compression(model)  # so transformers' own model.save_pretrained writes a loadable folder
    return CompressionReport(
        modules=[it.report for it in items],
        params_before=before,
        params_after=count_parameters(model),
        notes=notes,
        applied=True,
        config=config.to_dict(),
    )


def _predicted(items: list[_Item], config: CompressionConfig) -> None:
    """Copy the predicted errors of a :func:`plan_for_budget` config into the reports."""
    auto = getattr(config, "auto_plan", None)
    if auto is None:
        return
    pred = {r.name: r.predicted_error for r in auto.rows}
    for it in items:
        it.report.predicted_error = pred.get(it.name)


def _check_moments(items: list[_Item], moments: Any) -> dict[str, torch.Tensor]:
    if moments is None:
        return {}
    if not isinstance(moments, dict):
        raise TypeError(
            f"moments must be a dict {{module name: tensor}}, got {type(moments).__name__}"
        )
    names = {it.name: it for it in items}
    unknown = sorted(set(moments) - set(names))
    if unknown:
        raise ValueError(f"moments: no compressed module named {unknown}")
    for name, C in moments.items():
        it = names[name]
        n = it.report.in_features
        if _is_embedding(it.module):
            if it.report.layer != "LowRankEmbedding":
                raise ValueError(
                    f"moments[{name!r}]: activation-aware embeddings (token frequencies) are "
                    f"fitted by method 'svd' only, not by {it.report.layer}"
                )
            if isinstance(C, (tuple, list)):  # two-sided (tied table): checked by the fit
                continue
            if not torch.is_tensor(C) or tuple(C.shape) != (n,):
                raise ValueError(
                    f"moments[{name!r}] of an embedding must be the ({n},) vector of token "
                    f"frequencies, got {getattr(C, 'shape', type(C).__name__)}"
                )
            continue
        if not torch.is_tensor(C) or tuple(C.shape) != (n, n):
            raise ValueError(
                f"moments[{name!r}] must be the ({n}, {n}) second moment of the module's inputs, "
                f"got {getattr(C, 'shape', type(C).__name__)}"
            )
        if "moment" not in _inspect.signature(it.layer_type.from_module).parameters:
            raise ValueError(
                f"moments[{name!r}]: {it.report.layer} (method {it.settings.method!r}) has no "
                f"activation-aware fit; activation-aware methods: svd, kron, permuted_kron, "
                f"spectral_kron, tt (Linear/Conv1D layers)"
            )
    return dict(moments)


def _log(r: ModuleReport) -> None:
    logger.info(
        "compressed %s (%s → %s, %s): %d → %d parameters, relative error %s, %.2f s",
        r.name,
        r.kind,
        r.layer,
        r.factors,
        r.params_before,
        r.params_after,
        "n/a" if r.error is None else f"{r.error:.4g}",
        r.seconds,
    )


def _untied_copy(head: nn.Module) -> nn.Linear:
    """A dense ``nn.Linear`` copy of a (tied) head, marked as made by compress."""
    weight = head.to_dense() if isinstance(head, TiedEmbeddingHead) else head.weight
    weight = weight.detach().clone()
    dense = nn.Linear(
        weight.shape[1],
        weight.shape[0],
        bias=head.bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        dense.weight.copy_(weight)
        if head.bias is not None:
            dense.bias.copy_(head.bias)
    dense.tqla_untied_head = True  # made by compress: saved with the compressed modules
    return dense


def _retie(
    model: nn.Module, it: _Item, new: nn.Module, tie: bool, undo: list[Callable[[], None]]
) -> None:
    for head_name, head in _tied_heads(model, it.module):
        if tie and isinstance(head, TiedEmbeddingHead):
            old_embedding = head.embedding
            head.tie_to(new)
            undo.append(lambda h=head, e=old_embedding: h.tie_to(e))
        elif tie:
            _swap(model, head_name, TiedEmbeddingHead(new, bias=head.bias), undo)
        else:
            _swap(model, head_name, _untied_copy(head), undo)
        hf_config = getattr(model, "config", None)
        if hf_config is not None and getattr(hf_config, "tie_word_embeddings", False):
            # The tie is now held by the head module (or dropped); stop transformers from
            # trying to re-tie ``lm_head.weight`` to an embedding weight that no longer exists.
            hf_config.tie_word_embeddings = False
            undo.append(lambda c=hf_config: setattr(c, "tie_word_embeddings", True))
