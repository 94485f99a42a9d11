"""Apply a :class:`~tqla_torch.plan.CompressionConfig` to a model: dry run and in place.

:func:`inspect` lists what a config matches, with each module's resolved factor shapes,
rank and parameter counts before and after, without touching the model.
:func:`compress` replaces the matched modules in place by compressed layers initialised
from tqla's decompositions of their current weights (:func:`tqla.permuted_kron`,
:func:`tqla.kron_svd`, truncated SVD) and returns the same report with the approximation
errors.  Both fail with a ValueError naming the modules and rules when nothing matches, a
shape does not divide, or a module type is not supported.

LM heads tied to a compressed embedding (GPT-2's ``lm_head.weight is transformer.wte.weight``)
are found by identity of the weight and replaced by a
:class:`~tqla_torch.layers.TiedEmbeddingHead` that computes logits through the embedding's
factors (``tie_lm_head=True``) or by an untied dense copy of the head (``False``).
Hugging Face's own re-tying is switched off for such models
(``config.tie_word_embeddings = False``): the tie now lives in the module, not in a shared
parameter.
"""

from __future__ import annotations

import logging
import sys
import time
import types
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from tqla.kron import KroneckerShape
from tqla_torch._shapes import is_conv1d, layer_shape, resolve_shape, weight_view
from tqla_torch.layers import (
    KroneckerEmbedding,
    KroneckerLinear,
    LowRankEmbedding,
    LowRankLinear,
    TiedEmbeddingHead,
    low_rank_for_budget,
)
from tqla_torch.plan import CompressionConfig, ModuleSettings

__all__ = ["CompressionReport", "ModuleReport", "compress", "count_parameters", "inspect"]

logger = logging.getLogger(__name__)

HISTORY_ATTR = "tqla_compression_history"


def count_parameters(model: nn.Module) -> int:
    """Σ p.numel() over ``model.parameters()`` (shared parameters once, buffers not counted)."""
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------
@dataclass
class ModuleReport:
    """One matched module: what it is and what it becomes.

    Attributes
    ----------
    name : str
    kind : str
        The module's class name (``Conv1D``, ``Linear``, ``Embedding``, ...).
    in_features, out_features : int
        In×out sizes (vocabulary and dimension for embeddings).
    method : str
    layer : str
        Class of the replacement.
    factors : str
        Readable factor shapes in the in×out orientation, e.g. ``384×768 ⊗ 2×4``.
    shape : list or None
        ``[[p, q], [s, t]]`` of the Kronecker factors (the last level for embeddings).
    rank : int
    permute : str
    repeat : int
    params_before, params_after : int
        Parameters of the module (weight and bias; buffers not counted).
    error : float or None
        Relative Frobenius error ‖W − Ŵ‖/‖W‖ of the module's weight (after compress; for a
        repeated embedding, of all repetitions together).
    seconds : float or None
        Time spent decomposing.
    """

    name: str
    kind: str
    in_features: int
    out_features: int
    method: str
    layer: str
    factors: str
    shape: list | None
    rank: int
    permute: str
    repeat: int
    params_before: int
    params_after: int
    error: float | None = None
    seconds: float | None = None


@dataclass
class CompressionReport:
    """What :func:`inspect` / :func:`compress` found and did.

    Attributes
    ----------
    modules : list of ModuleReport
    params_before, params_after : int
        ``Σ p.numel()`` over the whole model's parameters (shared parameters once).
    notes : list of str
        Tied heads and other model-level changes.
    applied : bool
        False for a dry run.
    config : dict
        The config, as ``CompressionConfig.to_dict()``.
    """

    modules: list[ModuleReport]
    params_before: int
    params_after: int
    notes: list[str] = field(default_factory=list)
    applied: bool = False
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """params_before / params_after."""
        return self.params_before / max(1, self.params_after)

    def to_dict(self) -> dict[str, Any]:
        return {
            "modules": [asdict(m) for m in self.modules],
            "params_before": self.params_before,
            "params_after": self.params_after,
            "ratio": self.ratio,
            "notes": list(self.notes),
            "applied": self.applied,
            "config": self.config,
        }

    def table(self) -> str:
        """The modules as a fixed-width text table, with totals."""
        head = [
            "module",
            "kind",
            "in→out",
            "method",
            "factors (in×out)",
            "rank",
            "perm",
            "params before",
            "params after",
        ]
        show_err = any(m.error is not None for m in self.modules)
        if show_err:
            head.append("rel. error")
        rows = []
        for m in self.modules:
            row = [
                m.name,
                m.kind,
                f"{m.in_features}→{m.out_features}",
                m.method,
                m.factors,
                str(m.rank),
                m.permute,
                f"{m.params_before:,}",
                f"{m.params_after:,}",
            ]
            if show_err:
                row.append("" if m.error is None else f"{m.error:.4f}")
            rows.append(row)
        before = sum(m.params_before for m in self.modules)
        after = sum(m.params_after for m in self.modules)
        total = ["matched modules", "", "", "", "", "", "", f"{before:,}", f"{after:,}"]
        model = [
            "whole model",
            "",
            "",
            "",
            "",
            "",
            "",
            f"{self.params_before:,}",
            f"{self.params_after:,}",
        ]
        if show_err:
            total.append("")
            model.append("")
        allrows = [head, *rows, total, model]
        widths = [max(len(r[i]) for r in allrows) for i in range(len(head))]
        right = {2, 5, 7, 8, 9}

        def fmt(r: list[str]) -> str:
            return "  ".join(
                c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))
            ).rstrip()

        sep = "  ".join("-" * w for w in widths)
        lines = [fmt(head), sep, *(fmt(r) for r in rows), sep, fmt(total), fmt(model)]
        return "\n".join(lines)

    def __str__(self) -> str:
        verb = "compressed" if self.applied else "would compress"
        lines = [
            f"tqla {verb} {len(self.modules)} modules: {self.params_before:,} → "
            f"{self.params_after:,} parameters ({self.ratio:.2f}× smaller)",
            self.table(),
        ]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Resolution: what each matched module becomes (no decomposition yet)
# --------------------------------------------------------------------------------------
@dataclass
class _Item:
    name: str
    module: nn.Module
    kind: str  # linear | conv1d | embedding | kron_embedding | lowrank_embedding
    in_f: int
    out_f: int
    settings: ModuleSettings
    shape: KroneckerShape | None  # in×out, of each level's decomposition
    rank: int
    report: ModuleReport


def _kind(module: nn.Module) -> str | None:
    if isinstance(module, KroneckerEmbedding):
        return "kron_embedding"
    if isinstance(module, LowRankEmbedding):
        return "lowrank_embedding"
    if isinstance(module, nn.Linear):
        return "linear"
    if is_conv1d(module):
        return "conv1d"
    if isinstance(module, nn.Embedding):
        return "embedding"
    return None


def _fmt_shape(s: KroneckerShape) -> str:
    return f"{s.m1}×{s.n1} ⊗ {s.m2}×{s.n2}"


def _own_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _resolve(model: nn.Module, config: CompressionConfig) -> tuple[list[_Item], list[str]]:
    if not isinstance(config, CompressionConfig):
        raise TypeError(
            f"config must be a tqla_torch.CompressionConfig, got {type(config).__name__}"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    items: list[_Item] = []
    problems: list[str] = []
    unsupported: list[str] = []
    candidates: list[str] = []
    for name, module in model.named_modules():
        kind = _kind(module)
        if kind is not None:
            candidates.append(name)
        if not name or not config.matches(name):
            continue
        if kind is None:
            if isinstance(module, (KroneckerLinear, LowRankLinear)):
                problems.append(f"{name}: already compressed ({type(module).__name__})")
            else:
                unsupported.append(f"{name} ({type(module).__name__})")
            continue
        try:
            items.append(_resolve_one(name, module, kind, config))
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


def _resolve_one(name: str, module: nn.Module, kind: str, config: CompressionConfig) -> _Item:
    st = config.settings_for(name)
    where = f"module {name!r}"
    if kind == "kron_embedding":
        in_f, out_f = module.num_embeddings, int(module.table.shape[1])
        bias = 0
    elif kind == "lowrank_embedding":
        in_f, out_f = module.num_embeddings, module.embedding_dim
        bias = 0
    else:
        v = weight_view(module)
        in_f, out_f = v.in_features, v.out_features
        bias = 0 if v.bias is None else v.bias.numel()
    before = _own_params(module)
    is_emb = kind in ("embedding", "kron_embedding", "lowrank_embedding")
    if st.repeat > 1 and not is_emb:
        raise ValueError(f"{where}: repeat={st.repeat} applies to embeddings only")
    if kind == "kron_embedding" and st.method == "svd":
        raise ValueError(
            f"{where}: a KroneckerEmbedding can be compressed again only by "
            f"method 'permuted_kron' or 'kron', not 'svd'"
        )
    if kind == "lowrank_embedding" and st.method != "svd":
        raise ValueError(
            f"{where}: a LowRankEmbedding can be compressed again only by "
            f"method 'svd' (a lower rank)"
        )
    if st.method == "svd":
        dim_v, dim_d = in_f, out_f
        if st.rank is not None:
            rank = st.rank
        elif is_emb:
            rank = max(1, round(st.n_params / (dim_v + dim_d)))
        else:
            rank = low_rank_for_budget(in_f, out_f, st.n_params, bias > 0)
        if rank > min(in_f, out_f):
            raise ValueError(f"{where}: svd rank {rank} exceeds min(in, out) = {min(in_f, out_f)}")
        if kind == "lowrank_embedding" and rank >= module.rank:
            raise ValueError(
                f"{where}: svd rank {rank} must be below the current rank "
                f"{module.rank} to compress a LowRankEmbedding again"
            )
        after = rank * (in_f + out_f) + bias
        layer = "LowRankEmbedding" if is_emb else "LowRankLinear"
        rep = ModuleReport(
            name,
            type(module).__name__,
            in_f,
            out_f,
            "svd",
            layer,
            f"rank {rank}",
            None,
            rank,
            "none",
            1,
            before,
            after,
        )
        return _Item(name, module, kind, in_f, out_f, st, None, rank, rep)
    # Kronecker methods
    shape = resolve_shape(in_f, out_f, shape=st.shape, b_shape=st.b_shape, where=where)
    rank = st.rank
    if is_emb:
        if shape.m2 != 1:
            raise ValueError(
                f"{where}: embeddings take B factors of shape [1, k] (V×d → V×(d/k) ⊗ 1×k), "
                f"got B {shape.b}"
            )
        if rank != 1:
            raise ValueError(f"{where}: embeddings are compressed at rank 1, got rank={rank}")
        if st.permute == "input":
            raise ValueError(
                f"{where}: permute='input' would permute the vocabulary rows, which a 1×k factor "
                f"makes useless; use 'output' (the columns) or 'none'"
            )
        k = shape.n2
        width = out_f
        chain: list[int] = []
        for _ in range(st.repeat):
            if width % k or width == k:
                raise ValueError(
                    f"{where}: factoring the table {in_f}×{width} by 1×{k} needs {k} to divide "
                    f"{width} and leave at least 2 columns (repeat={st.repeat})"
                )
            width //= k
            chain.append(k)
        if kind == "kron_embedding":
            prev = module.level_factors
            after = in_f * width + sum(chain) + sum(prev)
            all_levels = chain + prev
        else:
            after = in_f * width + sum(chain)
            all_levels = chain
        factors = f"{in_f}×{width}" + "".join(f" ⊗ 1×{k_}" for k_ in all_levels)
        last = KroneckerShape((in_f, width), (1, k))
        permute = "none" if st.permute == "none" else "output"
        dim = module.embedding_dim if kind == "kron_embedding" else out_f
        rep = ModuleReport(
            name,
            type(module).__name__,
            in_f,
            dim,
            st.method,
            "KroneckerEmbedding",
            factors,
            [list(last.a), list(last.b)],
            1,
            permute,
            st.repeat,
            before,
            after,
        )
        return _Item(name, module, kind, in_f, out_f, st, shape, 1, rep)
    if rank > shape.max_rank:
        raise ValueError(
            f"{where}: rank {rank} exceeds the Kronecker rank bound min(p·q, s·t) = "
            f"{shape.max_rank} of A {shape.a} ⊗ B {shape.b}"
        )
    after = shape.n_params(rank) + bias
    rep = ModuleReport(
        name,
        type(module).__name__,
        in_f,
        out_f,
        st.method,
        "KroneckerLinear",
        _fmt_shape(shape),
        [list(shape.a), list(shape.b)],
        rank,
        st.permute,
        1,
        before,
        after,
    )
    return _Item(name, module, kind, in_f, out_f, st, shape, rank, rep)


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
        if it.kind not in ("embedding", "kron_embedding", "lowrank_embedding"):
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
        if it.kind == "linear":
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
        if not config.tie_lm_head and it.kind in (
            "embedding",
            "kron_embedding",
            "lowrank_embedding",
        ):
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
    ('4×4 ⊗ 2×4', 280, 200)
    """
    items, notes = _resolve(model, config)
    return CompressionReport(
        modules=[it.report for it in items],
        params_before=count_parameters(model),
        params_after=_params_after(model, items, config),
        notes=notes,
        applied=False,
        config=config.to_dict(),
    )


def _seed(st: ModuleSettings, name: str) -> Any:
    return None if st.seed is None else [st.seed, zlib.crc32(name.encode())]


def _opts(st: ModuleSettings, name: str) -> dict[str, Any]:
    return {
        "rule": st.rule,
        "n_iter": st.n_iter,
        "tol": st.tol,
        "n_restarts": st.n_restarts,
        "seed": _seed(st, name),
    }


def _build(it: _Item) -> nn.Module:
    st = it.settings
    m = it.module
    if st.method == "svd":
        if it.kind == "embedding":
            return LowRankEmbedding.from_embedding(m, it.rank, implementation=st.implementation)
        if it.kind == "lowrank_embedding":
            return LowRankEmbedding.from_embedding(
                m.to_embedding(), it.rank, implementation=st.implementation
            )
        return LowRankLinear.from_linear(m, it.rank, implementation=st.implementation)
    if it.kind in ("embedding", "kron_embedding"):
        new = m
        for step in range(st.repeat):
            new = KroneckerEmbedding.from_embedding(
                new,
                it.shape.n2,
                method=st.method,
                permute=st.permute != "none",
                implementation=st.implementation,
                **_opts(st, f"{it.name}#{step}" if step else it.name),
            )
        if st.repeat > 1:  # report the error of all steps together, not of the last one
            ref = m.weight if it.kind == "embedding" else m.to_dense()
            norm = float(torch.linalg.norm(ref))
            err = float(torch.linalg.norm(new.to_dense() - ref)) / norm if norm > 0 else 0.0
            new.approximation_error = err
        return new
    lshape = layer_shape(it.shape)  # (out, in) orientation of the layer
    v = weight_view(m)
    new = KroneckerLinear.from_dense(
        v.weight_out_in,
        v.bias,
        lshape,
        it.rank,
        method=st.method,
        permute=st.permute,
        implementation=st.implementation,
        **_opts(st, it.name),
    )
    new.source = v.kind
    return new


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def compress(model: nn.Module, config: CompressionConfig) -> CompressionReport:
    """Replace the modules ``config`` matches by compressed layers, in place.

    Each layer is initialised from a decomposition of the module's current weight
    (:func:`tqla.permuted_kron`, :func:`tqla.kron_svd` or a truncated SVD) on the weight's
    device, in its dtype (float16/bfloat16 weights are decomposed in float32).  An LM head
    tied to a compressed embedding stays tied or is untied per ``config.tie_lm_head``.  The
    config is appended to ``model.tqla_compression_history`` (saved by
    :func:`tqla_torch.save_pretrained`).

    Parameters
    ----------
    model : torch.nn.Module
    config : CompressionConfig

    Returns
    -------
    CompressionReport
        With the relative approximation error and time of each module.

    Raises
    ------
    ValueError
        As :func:`inspect`; nothing is changed then.
    """
    items, notes = _resolve(model, config)
    before = count_parameters(model)
    for it in items:
        t0 = time.perf_counter()
        with torch.no_grad():
            new = _build(it)
        new.train(it.module.training)
        it.report.seconds = time.perf_counter() - t0
        it.report.error = getattr(new, "approximation_error", None)
        _set_module(model, it.name, new)
        if it.kind in ("embedding", "kron_embedding", "lowrank_embedding"):
            _retie(model, it, new, config.tie_lm_head)
        logger.info(
            "compressed %s (%s → %s, %s): %d → %d parameters, relative error %s, %.2f s",
            it.name,
            it.report.kind,
            it.report.layer,
            it.report.factors,
            it.report.params_before,
            it.report.params_after,
            "n/a" if it.report.error is None else f"{it.report.error:.4g}",
            it.report.seconds,
        )
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


def _retie(model: nn.Module, it: _Item, new: nn.Module, tie: bool) -> None:
    old = it.module
    for head_name, head in _tied_heads(model, old):
        if tie:
            if isinstance(head, TiedEmbeddingHead):
                head.tie_to(new)
            else:
                _set_module(model, head_name, TiedEmbeddingHead(new, bias=head.bias))
        else:
            if isinstance(head, TiedEmbeddingHead):
                weight = head.to_dense().detach().clone()
                bias = head.bias
            else:
                weight = head.weight.detach().clone()
                bias = head.bias
            dense = nn.Linear(
                weight.shape[1],
                weight.shape[0],
                bias=bias is not None,
                device=weight.device,
                dtype=weight.dtype,
            )
            with torch.no_grad():
                dense.weight.copy_(weight)
                if bias is not None:
                    dense.bias.copy_(bias)
            dense.tqla_untied_head = True  # made by compress: saved with the compressed modules
            _set_module(model, head_name, dense)
        hf_config = getattr(model, "config", None)
        if hf_config is not None and getattr(hf_config, "tie_word_embeddings", False):
            # The tie is now held by the head module (or dropped); stop transformers from
            # trying to re-tie ``lm_head.weight`` to an embedding weight that no longer exists.
            hf_config.tie_word_embeddings = False


class _CallableModule(types.ModuleType):
    """``tqla_torch.compress`` is both this module and its main function.

    Importing the submodule (``from tqla_torch.compress import ...``) rebinds the package
    attribute ``tqla_torch.compress`` to the module; making the module callable keeps
    ``tqla_torch.compress(model, config)`` working either way.
    """

    def __call__(self, model: nn.Module, config: CompressionConfig) -> CompressionReport:
        return compress(model, config)


sys.modules[__name__].__class__ = _CallableModule
