"""One rule for building a config dataclass from a JSON object (shared by every config)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def dataclass_from_dict(cls: type[T], values: Any, *, required: tuple[str, ...] = ()) -> T:
    """``cls(**values)`` after checking that ``values`` is a dict of known fields.

    Raises
    ------
    ValueError
        If ``values`` is not a dict, has keys that are not fields of ``cls`` (naming them
        and the known ones), or lacks a ``required`` field.
    """
    name = cls.__name__
    if not isinstance(values, dict):
        raise ValueError(f"a {name} must be a JSON object (dict), got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {name} fields {unknown}; known: {sorted(known)}")
    missing = [k for k in required if k not in values]
    if missing:
        raise ValueError(f"{', '.join(missing)} is required")
    return cls(**values)
