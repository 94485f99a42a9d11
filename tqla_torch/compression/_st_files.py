"""safetensors files read by their headers and assembled from byte ranges, in bounded memory.

A safetensors file is an 8-byte little-endian header length, a JSON header
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`` and the
tensor bytes.  :func:`read_header` parses only the header (data, never code);
:func:`write_assembled` writes a new file whose tensors are byte ranges copied from other
files in chunks, hashing as it goes, so a multi-gigabyte checkpoint is rewritten with a few
megabytes of memory.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Entry", "read_header", "write_assembled"]

_MAX_HEADER = 100 * 2**20
_CHUNK = 16 * 2**20
_ITEMSIZE = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip


@dataclass(frozen=True)
class Entry:
    """One tensor of a safetensors file: where its bytes are and what they hold."""

    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute offset in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def read_header(path: Path) -> tuple[dict[str, Entry], dict[str, str]]:
    """The tensors (name → :class:`Entry`) and metadata of the safetensors file ``path``.

    Raises
    ------
    FileNotFoundError
        If the file is missing.
    ValueError
        If the header is not a valid safetensors header or a tensor's byte range is
        inconsistent with its dtype and shape or lies outside the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 2 or n > min(_MAX_HEADER, size - 8):
            raise ValueError(f"{path} is not a safetensors file (header length {n})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
            raise ValueError(f"{path} is not a safetensors file (header: {err})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors file (header is not an object)")
    meta = header.pop("__metadata__", None) or {}
    base = 8 + n
    out: dict[str, Entry] = {}
    for name, info in header.items():
        try:
            dtype, shape = info["dtype"], tuple(int(d) for d in info["shape"])
            begin, end = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: tensor {name!r} has a malformed header entry") from None
        item = _ITEMSIZE.get(dtype)
        if item is None or end - begin != item * math.prod(shape) or base + end > size:
            raise ValueError(
                f"{path}: tensor {name!r} ({dtype}, shape {list(shape)}) has an inconsistent "
                f"byte range [{begin}, {end}) (truncated or corrupted file?)"
            )
        out[name] = Entry(path, dtype, shape, base + begin, base + end)
    return out, meta if isinstance(meta, dict) else {}


def write_assembled(
    handle: Any, entries: dict[str, Entry], metadata: dict[str, str]
) -> tuple[int, str]:
    """Write a safetensors file of ``entries`` (name → source byte range) to ``handle``.

    Returns
    -------
    (int, str)
        The number of bytes written and their SHA-256 (hex).
    """
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for name, e in entries.items():
        header[name] = {
            "dtype": e.dtype,
            "shape": list(e.shape),
            "data_offsets": [offset, offset + e.nbytes],
        }
        offset += e.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    digest = hashlib.sha256()

    def put(data: bytes) -> None:
        handle.write(data)
        digest.update(data)

    put(len(text).to_bytes(8, "little"))
    put(text)
    by_file: dict[Path, Any] = {}
    try:
        for e in entries.values():
            src = by_file.get(e.file)
            if src is None:
                src = by_file[e.file] = open(e.file, "rb")  # noqa: SIM115 - closed below
            src.seek(e.start)
            left = e.nbytes
            while left:
                chunk = src.read(min(_CHUNK, left))
                if not chunk:
                    raise ValueError(f"{e.file} ended early (changed while being read?)")
                put(chunk)
                left -= len(chunk)
    finally:
        for src in by_file.values():
            src.close()
    return 8 + len(text) + offset, digest.hexdigest()


def file_size(path: Path) -> int:
    """Size of ``path`` in bytes (``-1`` when missing)."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return -1
