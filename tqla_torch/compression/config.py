"""Compression configs: which modules to compress, how, and named presets.

A :class:`CompressionConfig` says which modules of a model to replace (``target_modules``,
``exclude_modules`` with peft's matching rules), with which method (``"permuted_kron"``,
``"kron"``, ``"svd"``), factor shapes and rank — with per-pattern ``overrides`` — and how to
treat an LM head tied to a compressed embedding.  It is a plain JSON-serialisable dataclass;
:func:`tqla_torch.inspect` shows what it would do to a model and
:func:`tqla_torch.compress` does it.

Orientation
-----------
Factor shapes are stated on the module's matrix in ``torch.nn.Linear``'s **out×in**
orientation (tqla's M×N, the orientation of the layers): rows = output features, cols =
input features.  For GPT-2's ``Conv1D`` (stored in×out) that is ``weight.T``; for an
embedding (a lookup from V tokens to d features) it is the d×V matrix ``weight.T``.
``shape=((p, q), (s, t))`` needs ``p·s = out`` and ``q·t = in``; ``b_shape=(s, t)`` gives B
alone and derives ``A = (out/s, in/t)``, a rule that fits every model size.  GPT-2's c_fc
768→3072 as published (``A 384×768 ⊗ B 2×4`` on the stored in×out matrix) is
``b_shape=[4, 2]`` here; halving an embedding is ``b_shape=[2, 1]``.  ``permute`` names
the sides the same way: ``"rows"`` (output features), ``"cols"`` (input features),
``"both"``, ``"none"`` (``"output"``/``"input"`` are deprecated aliases).

The in×out orientation of the first release is still read for one release, with a
DeprecationWarning: ``orientation="in_out"``, and any config dict without an
``orientation`` key (files written by that release).

Presets live in :mod:`tqla_torch.compression.presets`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tqla_torch.compression._tt_config import _v_eps, _v_int_list, _v_tt_modes, check_tt_fields
from tqla_torch.nn.base import LAYER_IMPLEMENTATIONS, PERMUTES, check_permute

__all__ = ["METHODS", "CompressionConfig", "ModuleSettings"]

METHODS = ("permuted_kron", "kron", "svd", "spectral_kron", "hetero_kron", "tt")
NORMS = ("fro", "spectral")
PERMUTE_VALUES = PERMUTES
ORIENTATIONS = ("out_in", "in_out")

# Fields an override may set (everything about *how* a module is compressed).
OVERRIDABLE = (
    "method",
    "shape",
    "b_shape",
    "rank",
    "n_params",
    "permute",
    "rule",
    "n_iter",
    "tol",
    "n_restarts",
    "seed",
    "repeat",
    "implementation",
    "p",
    "shapes",
    "norm",
    "tt_cores",
    "tt_modes",
    "tt_ranks",
    "eps",
)
# Setting one member of a group in an override clears the others inherited from the base.
_GROUPS = (("shape", "b_shape"), ("rank", "n_params", "tt_ranks", "eps"))
_EXCLUSIVE = {k: tuple(o for o in g if o != k) for g in _GROUPS for k in g}


# --------------------------------------------------------------------------------------
# Field validation: each validator returns the normalised value or raises ValueError
# --------------------------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _v_pos_int(where: str, v: Any, *, allow_none: bool = True, minimum: int = 1) -> Any:
    if v is None and allow_none:
        return None
    if not _is_int(v) or v < minimum:
        raise ValueError(f"{where} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _v_pair(where: str, v: Any) -> list[int]:
    if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(_is_int(x) and x >= 1 for x in v):
        raise ValueError(f"{where} must be a pair [rows, cols] of positive integers, got {v!r}")
    return [int(v[0]), int(v[1])]


def _v_shape(where: str, v: Any) -> Any:
    if v is None:
        return None
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ValueError(
            f"{where} must be [[p, q], [s, t]] (factors A and B, out×in orientation), got {v!r}"
        )
    return [_v_pair(f"{where}[0] (factor A)", v[0]), _v_pair(f"{where}[1] (factor B)", v[1])]


def _v_b_shape(where: str, v: Any) -> Any:
    return None if v is None else _v_pair(where, v)


def _v_choice(where: str, v: Any, choices: Sequence[str], *, allow_none: bool = False) -> Any:
    if v is None and allow_none:
        return None
    if v not in choices:
        raise ValueError(f"{where} must be one of {tuple(choices)}, got {v!r}")
    return v


def _v_permute(where: str, v: Any) -> Any:
    if v is None:
        return None
    if v == "columns":
        v = "cols"
    return check_permute(v, where, stacklevel=5)


def _v_rule(where: str, v: Any) -> Any:
    if v is None:
        return None
    if not isinstance(v, str) or not v:
        raise ValueError(f"{where} must be a rule name of tqla.permuted_kron, got {v!r}")
    return v


def _v_tol(where: str, v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{where} must be a finite number >= 0, got {v!r}")
    return float(v)


def _v_p(where: str, v: Any) -> Any:
    """spectral_kron's Schatten-p schedule: a number >= 2 or a non-decreasing list of them."""
    if v is None:
        return None
    from tqla.spectral import check_p_schedule

    try:
        check_p_schedule(list(v) if isinstance(v, (list, tuple)) else v)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None
    return [float(x) for x in v] if isinstance(v, (list, tuple)) else float(v)


def _v_shapes(where: str, v: Any) -> Any:
    """hetero_kron's candidate factor shapes: a non-empty list of [[p, q], [s, t]]."""
    if v is None:
        return None
    if not isinstance(v, (list, tuple)) or not v:
        raise ValueError(
            f"{where} must be a non-empty list of factor shapes [[p, q], [s, t]], got {v!r}"
        )
    return [_v_shape(f"{where}[{i}]", sh) for i, sh in enumerate(v)]


def _v_seed(where: str, v: Any) -> Any:
    return _v_pos_int(where, v, minimum=0)


_VALIDATORS = {
    "method": lambda w, v: _v_choice(w, v, METHODS),
    "shape": _v_shape,
    "b_shape": _v_b_shape,
    "rank": lambda w, v: _v_pos_int(w, v),
    "n_params": lambda w, v: _v_pos_int(w, v),
    "permute": _v_permute,
    "rule": _v_rule,
    "n_iter": lambda w, v: _v_pos_int(w, v, minimum=0),
    "tol": _v_tol,
    "n_restarts": lambda w, v: _v_pos_int(w, v, allow_none=False),
    "seed": _v_seed,
    "repeat": lambda w, v: _v_pos_int(w, v, allow_none=False),
    "implementation": lambda w, v: _v_choice(w, v, LAYER_IMPLEMENTATIONS),
    "p": _v_p,
    "shapes": _v_shapes,
    "norm": lambda w, v: _v_choice(w, v, NORMS, allow_none=True),
    "tt_cores": lambda w, v: _v_pos_int(w, v),
    "tt_modes": _v_tt_modes,
    "tt_ranks": lambda w, v: None if v is None else _v_int_list(w, v),
    "eps": _v_eps,
}


def _v_patterns(where: str, v: Any, *, allow_none: bool) -> Any:
    if v is None:
        if allow_none:
            return None
        raise ValueError(f"{where} is required: a regex (str) or a list of module names")
    if isinstance(v, str):
        if not v:
            raise ValueError(f"{where} must not be an empty string")
        try:
            re.compile(v)
        except re.error as err:
            raise ValueError(f"{where} is not a valid regular expression: {err}") from None
        return v
    if isinstance(v, (list, tuple)):
        if not v or not all(isinstance(s, str) and s for s in v):
            raise ValueError(
                f"{where} as a list must hold at least one non-empty module name, got {v!r}"
            )
        return list(v)
    raise ValueError(f"{where} must be a regex (str) or a list of module names, got {v!r}")


def _matches(patterns: str | list[str], name: str) -> bool:
    """peft's rule: a str is a regex that must match the whole name; a list holds names
    or suffixes matched at dot boundaries."""
    if isinstance(patterns, str):
        return re.fullmatch(patterns, name) is not None
    return any(name == p or name.endswith("." + p) for p in patterns)


def _override_matches(key: str, name: str) -> bool:
    """An override key is a regex matched against the name's dot-separated suffixes."""
    return re.fullmatch(rf"(?:.*\.)?(?:{key})", name) is not None


# --------------------------------------------------------------------------------------
# Settings of one module
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModuleSettings:
    """The resolved settings of one module (the config's fields after its overrides).

    Attributes are those of :class:`CompressionConfig` that an override may set; see there.
    ``permute`` is resolved ("both" for permuted_kron, "none" otherwise, unless given) and
    ``rank`` defaults to 1 for the Kronecker methods.
    """

    method: str
    shape: list | None
    b_shape: list | None
    rank: int | None
    n_params: int | None
    permute: str
    rule: str | None
    n_iter: int | None
    tol: float | None
    n_restarts: int
    seed: int | None
    repeat: int
    implementation: str
    p: float | list | None = None
    shapes: list | None = None
    norm: str | None = None
    tt_cores: int | None = None
    tt_modes: list | None = None
    tt_ranks: list | None = None
    eps: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _both(given: list[str], group: tuple[str, ...]) -> str:
    return (
        f"give at most one of {given[0]} and {given[1]}, got both "
        f"(the fields {', '.join(group)} exclude each other)"
    )


# --------------------------------------------------------------------------------------
# The config
# --------------------------------------------------------------------------------------
@dataclass
class CompressionConfig:
    """Which modules to compress, and how.

    Parameters
    ----------
    target_modules : str or list of str
        A regex (str) that must match a module's whole dotted name, or a list of names
        matched exactly or as a suffix at a dot boundary (``"c_fc"`` matches
        ``"transformer.h.1.mlp.c_fc"``, not ``"xc_fc"``) — peft's semantics.  Matched
        modules must be ``torch.nn.Linear``, transformers ``Conv1D``, ``torch.nn.Embedding``
        or an already compressed embedding (compressed again); with ``method="tt"`` also
        ``torch.nn.Conv2d`` (groups = 1).
    exclude_modules : str or list of str, optional
        Same rules; wins over ``target_modules``.
    method : {"permuted_kron", "kron", "svd", "spectral_kron", "hetero_kron", "tt"}
        :func:`tqla.permuted_kron`, :func:`tqla.kron_svd`, a truncated SVD (low rank),
        :func:`tqla.kron_spectral` (a Kronecker sum fitted in the spectral norm; with
        ``permute``, :func:`tqla.permuted_kron_spectral`), :func:`tqla.kron_hetero` (a
        sum of Kronecker terms of the candidate ``shapes``, within ``n_params`` or ``rank``
        terms) or a tensor train (:class:`tqla_torch.TTLinear` for linear layers,
        :class:`tqla_torch.TTConv2d` for ``Conv2d``; docs/tt.md).
    shape : [[p, q], [s, t]], optional
        Kronecker factor shapes A (p×q) and B (s×t) in the out×in orientation
        (``p·s = out``, ``q·t = in``).  Give this or ``b_shape``.
    b_shape : [s, t], optional
        B's shape alone; A is ``(out/s, in/t)`` for each module.  Embeddings take
        ``[k, 1]``: the d×V matrix becomes (d/k)×V ⊗ k×1 (the V×d table V×(d/k) ⊗ 1×k).
    rank : int, optional
        Kronecker rank (default 1), SVD rank, or the TT rank of every bond (capped at each
        bond's bound).
    n_params : int, optional
        SVD and TT only, instead of ``rank``: the parameter budget of each module (factors
        plus bias); SVD takes the nearest rank, TT the largest uniform rank within it.
    permute : {"both", "rows", "cols", "none"}, optional
        Sides to permute (permuted_kron only; default "both"): rows = output features,
        cols = input features (``nn.Linear``'s (out, in) weight).  For an embedding the
        output side is its feature columns; its vocabulary is never permuted ("both" means
        the features).  ``"output"``/``"input"`` are deprecated aliases of rows/cols.
    rule, n_iter, tol, n_restarts : optional
        Options of :func:`tqla.permuted_kron` (its defaults when None).
    seed : int, optional
        Seed of the random restarts, mixed with each module's name; None for fresh
        entropy.
    p : number or list of numbers, optional
        spectral_kron: the Schatten-p continuation schedule (default 4, 8, ..., 128); its
        ``n_iter``/``tol`` are the iterations per p and the stage tolerance.
    shapes : list of [[p, q], [s, t]], optional
        hetero_kron: the candidate factor shapes (out×in orientation).
    norm : {"fro", "spectral"}, optional
        hetero_kron: the norm the greedy and back-fitting minimise (default "fro").
    repeat : int, default 1
        Embeddings only: factor the table this many times in a row (the published plan
        halves GPT-2's embedding twice: ``b_shape=[1, 2], repeat=2``).
    implementation : {"factorized", "reconstructed"}
        Forward of the compressed layers (see :class:`tqla_torch.nn.KroneckerLinear`).
    tt_cores : int, optional
        TT only: number of cores d; each dimension is split into d modes as equal as its
        prime factors allow (:func:`tqla_torch.nn.tt.tt_modes`; default 3 for linear
        layers, 2 for the channels of a ``Conv2d``, whose kernel window is one more core).
    tt_modes : [row_modes, col_modes], optional
        TT only: explicit modes (out = Π row_modes, in = Π col_modes), for an override.
    tt_ranks : list of int, optional
        TT only, instead of ``rank``: the inner ranks of one module (an override per layer,
        what a rank allocation such as LWIQ sets).
    eps : float, optional
        TT only, instead of ``rank``: 0 < eps < 1, the ranks are the smallest with
        ‖W − Ŵ‖_F ≤ eps·‖W‖_F for each weight.
    tie_lm_head : bool, default True
        When a compressed embedding has an LM head tied to it: keep it tied (logits through
        the embedding's factors) or replace it by an untied dense copy of the original head
        (what the published TQCompressedGPT-2 did, +V·d parameters).
    overrides : dict of str to dict, optional
        ``{pattern: {field: value}}``: per-module settings.  A pattern is a regex matched
        against the end of the module name at a dot boundary (``r"mlp\\.c_fc"`` matches
        ``"transformer.h.1.mlp.c_fc"``); every matching override applies, later ones
        winning.  Setting ``shape`` clears an inherited ``b_shape`` (and vice versa), and
        one of ``rank``, ``n_params``, ``tt_ranks``, ``eps`` clears the others.

    Raises
    ------
    ValueError
        On construction, naming the field and the rule, for any invalid value.

    Examples
    --------
    >>> cfg = CompressionConfig(target_modules=["c_fc"], method="kron", b_shape=[2, 4], rank=4)
    >>> cfg.settings_for("transformer.h.0.mlp.c_fc").b_shape
    [2, 4]
    >>> CompressionConfig.from_json(cfg.to_json()) == cfg
    True
    """

    target_modules: str | list[str] = field(
        metadata={"help": "regex (full match) or list of module names/suffixes to compress"}
    )
    exclude_modules: str | list[str] | None = field(
        default=None, metadata={"help": "regex or list of names/suffixes to leave alone"}
    )
    method: str = field(default="permuted_kron", metadata={"help": "permuted_kron, kron or svd"})
    shape: list | None = field(
        default=None, metadata={"help": "[[p, q], [s, t]]: factors A and B, out×in orientation"}
    )
    b_shape: list | None = field(
        default=None, metadata={"help": "[s, t]: factor B; A = (in/s, out/t)"}
    )
    rank: int | None = field(default=None, metadata={"help": "Kronecker, SVD or TT rank"})
    n_params: int | None = field(
        default=None, metadata={"help": "svd, tt: parameter budget per module instead of rank"}
    )
    permute: str | None = field(
        default=None, metadata={"help": "both, rows, cols or none (permuted_kron)"}
    )
    rule: str | None = field(default=None, metadata={"help": "tqla.permuted_kron rule"})
    n_iter: int | None = field(default=None, metadata={"help": "permuted_kron iterations"})
    tol: float | None = field(default=None, metadata={"help": "permuted_kron tolerance"})
    n_restarts: int = field(default=1, metadata={"help": "permuted_kron random restarts"})
    seed: int | None = field(default=0, metadata={"help": "seed of the restarts"})
    repeat: int = field(default=1, metadata={"help": "embeddings: factor the table n times"})
    implementation: str = field(
        default="factorized", metadata={"help": "factorized or reconstructed forward"}
    )
    p: Any = field(default=None, metadata={"help": "spectral_kron: Schatten-p schedule"})
    shapes: list | None = field(
        default=None, metadata={"help": "hetero_kron: candidate shapes [[[p, q], [s, t]], ...]"}
    )
    norm: str | None = field(default=None, metadata={"help": "hetero_kron: fro or spectral"})
    tt_cores: int | None = field(default=None, metadata={"help": "tt: number of cores"})
    tt_modes: list | None = field(
        default=None, metadata={"help": "tt: [row_modes, col_modes] (out×in)"}
    )
    tt_ranks: list | None = field(default=None, metadata={"help": "tt: inner ranks"})
    eps: float | None = field(default=None, metadata={"help": "tt: relative error bound"})
    tie_lm_head: bool = field(
        default=True, metadata={"help": "keep an LM head tied to a compressed embedding"}
    )
    overrides: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata={"help": "{pattern: {field: value}} per module"}
    )
    orientation: str = field(
        default="out_in",
        metadata={"help": "out_in (shapes on the out×in matrix); in_out is deprecated"},
    )

    def __post_init__(self) -> None:
        self.orientation = _v_choice("orientation", self.orientation, ORIENTATIONS)
        if self.orientation == "in_out":
            warnings.warn(
                "shapes in the in×out orientation (orientation='in_out') are deprecated; state "
                "them out×in like nn.Linear's weight (transpose each pair) and drop the field",
                DeprecationWarning,
                stacklevel=3,
            )
        self.target_modules = _v_patterns("target_modules", self.target_modules, allow_none=False)
        self.exclude_modules = _v_patterns("exclude_modules", self.exclude_modules, allow_none=True)
        for name in OVERRIDABLE:
            setattr(self, name, _VALIDATORS[name](name, getattr(self, name)))
        if self.shape is not None and self.b_shape is not None:
            raise ValueError("give at most one of shape and b_shape, got both")
        given = [k for k in _GROUPS[1] if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(_both(given, _GROUPS[1]))
        if not isinstance(self.tie_lm_head, bool):
            raise ValueError(f"tie_lm_head must be True or False, got {self.tie_lm_head!r}")
        if not isinstance(self.overrides, dict):
            raise ValueError(
                f"overrides must be a dict {{pattern: {{field: value}}}}, got "
                f"{type(self.overrides).__name__}"
            )
        clean: dict[str, dict[str, Any]] = {}
        for key, values in self.overrides.items():
            where = f"overrides[{key!r}]"
            if not isinstance(key, str) or not key:
                raise ValueError(f"overrides keys must be non-empty patterns, got {key!r}")
            try:
                re.compile(key)
            except re.error as err:
                raise ValueError(f"{where}: key is not a valid regular expression: {err}") from None
            if not isinstance(values, dict):
                raise ValueError(f"{where} must be a dict of settings, got {values!r}")
            unknown = sorted(set(values) - set(OVERRIDABLE))
            if unknown:
                raise ValueError(
                    f"{where}: unknown or non-overridable fields {unknown}; an override may set "
                    f"{list(OVERRIDABLE)}"
                )
            for group in _GROUPS:
                given = [k for k in group if values.get(k) is not None]
                if len(given) > 1:
                    raise ValueError(f"{where}: {_both(given, group)}")
            clean[key] = {k: _VALIDATORS[k](f"{where}.{k}", v) for k, v in values.items()}
        self.overrides = clean

    # -- matching ----------------------------------------------------------------------
    def matches(self, name: str) -> bool:
        """Whether module ``name`` is targeted (and not excluded)."""
        if not _matches(self.target_modules, name):
            return False
        return self.exclude_modules is None or not _matches(self.exclude_modules, name)

    def settings_for(self, name: str) -> ModuleSettings:
        """The settings of module ``name``: the base fields, then each matching override.

        Raises
        ------
        ValueError
            If the merged settings contradict each other (naming the module and rule).
        """
        values = {k: getattr(self, k) for k in OVERRIDABLE}
        for key, over in self.overrides.items():
            if _override_matches(key, name):
                for k, v in over.items():
                    values[k] = v
                    if k in _EXCLUSIVE and v is not None:
                        for other in _EXCLUSIVE[k]:
                            values[other] = None
        method = values["method"]
        where = f"module {name!r}"
        self._check_method_fields(values, where)
        check_tt_fields(values, where)
        if method == "hetero_kron":
            if values["shapes"] is None:
                raise ValueError(
                    f"{where}: method='hetero_kron' needs shapes, a list of candidate factor "
                    f"shapes [[p, q], [s, t]] (out×in orientation)"
                )
            if values["rank"] is None and values["n_params"] is None:
                raise ValueError(
                    f"{where}: method='hetero_kron' needs n_params (a parameter budget) or "
                    f"rank (a number of terms)"
                )
            if values["permute"] not in (None, "none"):
                raise ValueError(
                    f"{where}: permute={values['permute']!r} is not supported by "
                    f"method='hetero_kron'"
                )
            values["permute"] = "none"
        elif method == "svd":
            if values["permute"] not in (None, "none"):
                raise ValueError(
                    f"{where}: permute={values['permute']!r} needs method='permuted_kron'; "
                    f"method='svd' has no permutations"
                )
            if values["rank"] is None and values["n_params"] is None:
                raise ValueError(f"{where}: method='svd' needs rank or n_params")
            values["permute"] = "none"
        elif method != "tt":  # the Kronecker methods (tt: completed above)
            if values["n_params"] is not None:
                raise ValueError(
                    f"{where}: n_params (a parameter budget) applies to method='svd'; "
                    f"method={method!r} takes shape/b_shape and rank"
                )
            if values["shape"] is None and values["b_shape"] is None:
                raise ValueError(
                    f"{where}: method={method!r} needs factor shapes: shape [[p, q], [s, t]] "
                    f"or b_shape [s, t] (out×in orientation)"
                )
            if values["rank"] is None:
                values["rank"] = 1
            if values["permute"] is None:
                values["permute"] = "both" if method == "permuted_kron" else "none"
            elif method in ("kron",) and values["permute"] != "none":
                raise ValueError(
                    f"{where}: permute={values['permute']!r} needs method='permuted_kron'; "
                    f"method='kron' has no permutations"
                )
        if self.orientation == "in_out":  # deprecated: settings are always out×in
            if values["tt_modes"] is not None:
                values["tt_modes"] = values["tt_modes"][::-1]
            if values["shape"] is not None:
                values["shape"] = [values["shape"][0][::-1], values["shape"][1][::-1]]
            if values["b_shape"] is not None:
                values["b_shape"] = values["b_shape"][::-1]
            if values.get("shapes") is not None:
                values["shapes"] = [[sh[0][::-1], sh[1][::-1]] for sh in values["shapes"]]
        return ModuleSettings(**values)

    @staticmethod
    def _check_method_fields(values: dict[str, Any], where: str) -> None:
        """p belongs to spectral_kron, shapes and norm to hetero_kron."""
        method = values["method"]
        if values.get("p") is not None and method != "spectral_kron":
            raise ValueError(f"{where}: p (a Schatten-p schedule) applies to "
                             f"method='spectral_kron', not {method!r}")
        for k in ("shapes", "norm"):
            if values.get(k) is not None and method != "hetero_kron":
                raise ValueError(f"{where}: {k} applies to method='hetero_kron', not {method!r}")

    # -- serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (lists, not tuples)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompressionConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError.

        A dict without ``orientation`` was written by the first release, whose shapes were
        in×out: it is read as ``orientation="in_out"`` (with a DeprecationWarning).
        """
        from tqla_torch._dataclasses import dataclass_from_dict

        if isinstance(data, dict) and "orientation" not in data:
            data = {**data, "orientation": "in_out"}
        return dataclass_from_dict(cls, data, required=("target_modules",))

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> CompressionConfig:
        """Parse :meth:`to_json` output (a JSON string, not a path)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"CompressionConfig JSON is malformed: {err}") from None
        return cls.from_dict(data)

    def save(self, path: Any) -> None:
        """Write :meth:`to_json` to ``path`` atomically."""
        from tqla_torch._atomic import atomic_write_text

        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: Any) -> CompressionConfig:
        """Read a config written by :meth:`save` (or any ``to_dict`` JSON file)."""
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        try:
            return cls.from_json(text)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    @classmethod
    def preset(cls, name: str, *args: Any, **kwargs: Any) -> CompressionConfig:
        """A named preset (see :data:`tqla_torch.compression.presets.presets`), e.g.
        ``CompressionConfig.preset("tq_gpt2")``."""
        from tqla_torch.compression.presets import presets

        return presets.get(name)(*args, **kwargs)
