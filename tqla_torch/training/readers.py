r"""Readers of local text sources for :func:`tqla_torch.training.data.load_texts`: plain text,
JSON lines, Parquet files (``pyarrow``) and folders written by ``datasets``' ``save_to_disk``.

Every reader returns the documents as a list of str and refuses what would silently become
wrong text: a missing field or column (the documents come from the one named by
``text_field``), nulls and non-string values, damaged files.

Examples
--------
>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "docs.jsonl"
>>> _ = p.write_text('{"text": "a"}\n{"body": "b"}\n')
>>> read_file(p, "text")
Traceback (most recent call last):
...
ValueError: ...docs.jsonl:2: expected a JSON object with a 'text' field (text_field='text')
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["SUFFIXES", "is_hf_dataset_dir", "read_file", "read_hf_dataset"]

_TEXT_SUFFIXES = (".txt", ".text", ".raw")
_JSONL_SUFFIXES = (".jsonl",)
_PARQUET_SUFFIXES = (".parquet",)
SUFFIXES = _TEXT_SUFFIXES + _JSONL_SUFFIXES + _PARQUET_SUFFIXES
"""File suffixes read from a plain folder."""


def _read_jsonl(path: Path, text_field: str) -> list[str]:
    texts: list[str] = []
    with path.open("r", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({err.msg})") from err
            if not isinstance(record, dict) or text_field not in record:
                raise ValueError(
                    f"{path}:{line_no}: expected a JSON object with a {text_field!r} field "
                    f"(text_field={text_field!r})"
                )
            value = record[text_field]
            if not isinstance(value, str):
                raise ValueError(
                    f"{path}:{line_no}: field {text_field!r} must be a string, "
                    f"got {type(value).__name__}"
                )
            texts.append(value)
    return texts


def _text_column(values: Iterable[Any], where: str, text_field: str) -> list[str]:
    """The values of a text column as str, refusing nulls and non-strings (never ``str()``-ed
    into documents such as ``"None"`` or ``"3"``)."""
    texts = []
    for row, value in enumerate(values):
        if not isinstance(value, str):
            kind = "null" if value is None else type(value).__name__
            raise ValueError(
                f"{where}: column {text_field!r} (text_field) must hold strings; row {row} is "
                f"{kind}"
            )
        texts.append(value)
    return texts


def _missing_column(where: str, text_field: str, columns: Sequence[str]) -> ValueError:
    return ValueError(
        f"{where}: no column {text_field!r}; the documents are read from the column named by "
        f"text_field (default 'text'), and the columns here are {list(columns)}: pass "
        "text_field=<one of them> (--text-field on the command line)"
    )


def _read_parquet(path: Path, text_field: str) -> list[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(
            f"reading {path} needs the 'pyarrow' package: pip install pyarrow"
        ) from err
    try:
        schema = pq.read_schema(path)
    except Exception as err:  # pyarrow raises ArrowInvalid/OSError for damaged files
        raise ValueError(f"{path}: not a readable Parquet file ({err})") from err
    if text_field not in schema.names:
        raise _missing_column(os.fspath(path), text_field, schema.names)
    table = pq.read_table(path, columns=[text_field])  # only the text column is read
    return _text_column(table.column(text_field).to_pylist(), os.fspath(path), text_field)


def read_file(path: Path, text_field: str) -> list[str]:
    """The documents of one ``.txt``/``.text``/``.raw``, ``.jsonl`` or ``.parquet`` file."""
    suffix = path.suffix.lower()
    if suffix in _TEXT_SUFFIXES:
        return [path.read_text(encoding="utf-8")]
    if suffix in _JSONL_SUFFIXES:
        return _read_jsonl(path, text_field)
    if suffix in _PARQUET_SUFFIXES:
        return _read_parquet(path, text_field)
    raise ValueError(
        f"source {str(path)!r}: unsupported file type {suffix!r}; expected one of "
        f"{_TEXT_SUFFIXES + _JSONL_SUFFIXES + _PARQUET_SUFFIXES}"
    )


def is_hf_dataset_dir(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``Dataset``/``DatasetDict.save_to_disk``."""
    return (path / "dataset_dict.json").is_file() or (
        (path / "dataset_info.json").is_file() and (path / "state.json").is_file()
    )


def read_hf_dataset(path: Path, text_field: str, split: str) -> list[str]:
    """The column ``text_field`` of a ``save_to_disk`` folder (split ``split`` of a
    ``DatasetDict``)."""
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            f"{path} is a Hugging Face dataset folder; reading it needs the 'datasets' package: "
            "pip install datasets"
        ) from err
    loaded = datasets.load_from_disk(os.fspath(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise ValueError(f"{path}: dataset has splits {sorted(loaded)}, not split={split!r}")
        loaded = loaded[split]
    if text_field not in loaded.column_names:
        raise _missing_column(os.fspath(path), text_field, loaded.column_names)
    return _text_column(loaded[text_field], os.fspath(path), text_field)
