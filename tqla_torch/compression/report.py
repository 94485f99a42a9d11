"""What :func:`tqla_torch.inspect` and :func:`tqla_torch.compress` report.

:class:`CompressionReport` holds one :class:`ModuleReport` per matched module (its resolved
factor shapes, rank, parameter counts and, after compressing, the approximation error) and
prints as a fixed-width table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["CompressionReport", "ModuleReport"]


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
        Readable factor shapes in the out×in orientation, e.g. ``768×384 ⊗ 4×2`` (GPT-2's
        c_fc; embeddings: the d×V matrix, ``192×50257 ⊗ 2×1 ⊗ 2×1``).
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
    spectral_error : float or None
        Relative spectral error ‖W − Ŵ‖₂/‖W‖₂ (after compress, for layers that record it:
        the spectral_kron and hetero_kron layers).
    predicted_error : float or None
        For a config made by :func:`tqla_torch.plan_for_budget`: the relative
        activation-aware error ‖(W − Ŵ)·S‖/‖W·S‖ its error curve predicted.
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
    spectral_error: float | None = None
    predicted_error: float | None = None


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
            "factors (out×in)",
            "rank",
            "perm",
            "params before",
            "params after",
        ]
        show_err = any(m.error is not None for m in self.modules)
        show_spec = any(m.spectral_error is not None for m in self.modules)
        show_time = any(m.seconds is not None for m in self.modules)
        if show_err:
            head.append("rel. error")
        show_pred = any(m.predicted_error is not None for m in self.modules)
        if show_spec:
            head.append("rel. spectral error")
        if show_pred:
            head.append("pred. error")
        if show_time:
            head.append("seconds")
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
            if show_spec:
                row.append("" if m.spectral_error is None else f"{m.spectral_error:.4f}")
            if show_pred:
                row.append("" if m.predicted_error is None else f"{m.predicted_error:.4f}")
            if show_time:
                row.append("" if m.seconds is None else f"{m.seconds:.2f}")
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
        for shown in (show_err, show_spec, show_pred):
            if shown:
                total.append("")
                model.append("")
        if show_time:
            secs = sum(m.seconds or 0.0 for m in self.modules)
            total.append(f"{secs:.2f}")
            model.append("")
        allrows = [head, *rows, total, model]
        widths = [max(len(r[i]) for r in allrows) for i in range(len(head))]
        right = {2, 5, 7, 8, 9, 10, 11, 12}

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
