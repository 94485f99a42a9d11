"""Validation of the tensor-train fields of :class:`~tqla_torch.CompressionConfig`.

``method="tt"`` (:class:`tqla_torch.TTLinear`, :class:`tqla_torch.TTConv2d`) takes
``tt_cores`` or ``tt_modes`` for the structure and one of ``rank``, ``n_params``, ``tt_ranks``
or ``eps`` for the ranks; kept apart from ``config.py`` to keep that file short.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TT_FIELDS"]

#: Fields that only method="tt" reads.
TT_FIELDS = ("tt_cores", "tt_modes", "tt_ranks", "eps")
_RANK_FIELDS = ("rank", "n_params", "tt_ranks", "eps")


def _v_int_list(where: str, v: Any) -> list[int]:
    if (
        not isinstance(v, (list, tuple))
        or not v
        or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v)
    ):
        raise ValueError(f"{where} must be a non-empty list of positive integers, got {v!r}")
    return [int(x) for x in v]


def _v_tt_modes(where: str, v: Any) -> Any:
    if v is None:
        return None
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ValueError(f"{where} must be [row_modes, col_modes] (out×in orientation), got {v!r}")
    rows = _v_int_list(f"{where}[0] (row modes)", v[0])
    cols = _v_int_list(f"{where}[1] (col modes)", v[1])
    if len(rows) != len(cols):
        raise ValueError(f"{where}: row and col modes need the same length, got {rows} and {cols}")
    return [rows, cols]


def _v_eps(where: str, v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
        raise ValueError(f"{where} must satisfy 0 < eps < 1 (a relative error), got {v!r}")
    return float(v)


def _tt_settings(values: dict[str, Any], where: str) -> None:
    """Check and complete the settings of a module compressed by method='tt'."""
    for k in ("shape", "b_shape"):
        if values[k] is not None:
            raise ValueError(
                f"{where}: {k} gives Kronecker factors; method='tt' takes tt_cores or tt_modes"
            )
    if values["permute"] not in (None, "none"):
        raise ValueError(
            f"{where}: permute={values['permute']!r} needs method='permuted_kron'; "
            f"method='tt' has no permutations"
        )
    if all(values[k] is None for k in _RANK_FIELDS):
        raise ValueError(f"{where}: method='tt' needs one of rank, n_params, tt_ranks or eps")
    if values["repeat"] > 1:
        raise ValueError(f"{where}: repeat={values['repeat']} applies to embeddings only")
    values["permute"] = "none"


def check_tt_fields(values: dict[str, Any], where: str) -> None:
    """TT fields belong to method='tt'; for it, check and complete the settings."""
    method = values["method"]
    if method != "tt":
        for k in TT_FIELDS:
            if values[k] is not None:
                raise ValueError(f"{where}: {k} applies to method='tt', not {method!r}")
        return
    _tt_settings(values, where)
