"""The demo's report: the results table, the environment it ran in, and the plot."""

from __future__ import annotations

import datetime as _dt
import io
import math
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tqla_torch._atomic import atomic_write_bytes

__all__ = [
    "METHOD_LABELS",
    "DemoResult",
    "environment_info",
    "format_table",
    "load_average",
    "write_plot",
]

METHOD_LABELS = {
    "teacher": "teacher (dense)",
    "permuted_kron": "permuted Kronecker",
    "kron": "Kronecker",
    "svd": "low-rank SVD",
    "auto": "automatic plan (activation-aware)",
    "tt": "tensor train (LWIQ ranks)",
}


@dataclass
class DemoResult:
    """What :func:`run_demo` measured and wrote.

    Attributes
    ----------
    rows : list of dict
        One row per model (the teacher first): ``method``, ``label``, ``params``,
        ``ppl_before``, ``ppl_after``, ``wall_s``.
    report : dict
        Everything written to ``results.json``.
    output_dir : pathlib.Path
        Where the files are.
    files : dict of str to pathlib.Path
        ``"json"``, ``"markdown"`` and (with ``plot=True``) ``"png"``.
    """

    rows: list[dict[str, Any]]
    report: dict[str, Any]
    output_dir: Path
    files: dict[str, Path]

    @property
    def table(self) -> str:
        """The results as a Markdown table."""
        return format_table(self.rows)


def _fmt_params(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def _fmt_ppl(value: float | None) -> str:
    if value is None:
        return "—"
    if not math.isfinite(value):
        return "inf"
    return f"{value:.2f}" if value < 1e5 else f"{value:.3g}"


def _fmt_seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """Format demo rows as a Markdown table.

    Parameters
    ----------
    rows : list of dict
        Rows as in :attr:`DemoResult.rows`.

    Returns
    -------
    str

    Examples
    --------
    >>> print(format_table([{"label": "teacher (dense)", "params": 1000, "ppl_before": None,
    ...                      "ppl_after": 12.5, "wall_s": 3.0}]))
    | method | parameters | ppl before distillation | ppl after distillation | wall time (s) |
    |---|---:|---:|---:|---:|
    | teacher (dense) | 1,000 | — | 12.50 | 3.0 |
    """
    header = (
        "| method | parameters | ppl before distillation | ppl after distillation | wall time (s) |"
    )
    lines = [
        header,
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['label']} | {_fmt_params(row.get('params'))} | "
            f"{_fmt_ppl(row.get('ppl_before'))} | {_fmt_ppl(row.get('ppl_after'))} | "
            f"{_fmt_seconds(row.get('wall_s'))} |"
        )
    return "\n".join(lines)


def _package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (other processes slow the demo down), if known."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # not available on Windows
        return None


def environment_info() -> dict[str, Any]:
    """Versions, machine and date, for result files.

    Returns
    -------
    dict
        ``date`` (UTC, ISO 8601), ``versions``, ``machine`` (with the load average at the
        time of the call) and ``command``.
    """
    import tqla_torch

    cpu_name = platform.processor() or None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu_name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "python": platform.python_version(),
            "tqla": _package_version("tqla") or getattr(tqla_torch, "__version__", None),
            "torch": torch.__version__,
            "transformers": _package_version("transformers"),
            "tokenizers": _package_version("tokenizers"),
            "numpy": np.__version__,
            "scipy": _package_version("scipy"),
        },
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu_name,
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average": load_average(),
        },
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else None,
    }


def write_plot(path: Path, rows: list[dict[str, Any]], curves: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_bar, ax_loss = fig.subplots(1, 2, width_ratios=[1, 1.4])

    compressed = [r for r in rows if r["method"] != "teacher"]
    teacher = next((r for r in rows if r["method"] == "teacher"), None)
    x = np.arange(len(compressed))
    width = 0.38
    before = [r["ppl_before"] if r["ppl_before"] is not None else np.nan for r in compressed]
    after = [r["ppl_after"] if r["ppl_after"] is not None else np.nan for r in compressed]
    ax_bar.bar(x - width / 2, before, width, label="before distillation", color="#bbbbbb")
    ax_bar.bar(x + width / 2, after, width, label="after distillation", color="#3b6ea8")
    if teacher is not None and teacher["ppl_after"] is not None:
        ax_bar.axhline(teacher["ppl_after"], color="black", ls="--", lw=1, label="teacher")
    ax_bar.set_xticks(x, [f"{r['label']}\n{r['params']:,} params" for r in compressed], fontsize=8)
    ax_bar.set_yscale("log")
    ax_bar.set_ylabel("validation perplexity (log scale)")
    ax_bar.set_title("perplexity on the built-in validation split")
    ax_bar.legend(fontsize=8)

    boundaries: set[int] = set()
    for method, history in curves.items():
        if not history:
            continue
        tokens = [h["tokens"] for h in history]
        losses = [h["loss"] for h in history]
        ax_loss.plot(tokens, losses, label=METHOD_LABELS.get(method, method), lw=1.2)
        for previous, record in zip(history, history[1:]):
            if record["stage_index"] != previous["stage_index"]:
                boundaries.add(previous["tokens"])
    for x_boundary in sorted(boundaries):
        ax_loss.axvline(x_boundary, color="#999999", lw=0.8, ls=":")
    ax_loss.set_xlabel("distillation tokens")
    ax_loss.set_ylabel("distillation loss")
    ax_loss.set_title("loss per stage: embedding → MLPs → embedding again")
    ax_loss.legend(fontsize=8)

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(path, buffer.getvalue())
