"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Each writer puts the bytes into a temporary file in the destination's directory (so the final
rename never crosses a file system), flushes and ``fsync``-s it, renames it over the destination
with :func:`os.replace` and finally ``fsync``-s the directory so the rename itself is durable. A
process killed at any moment leaves either the previous file untouched or the complete new one;
at worst a stray temporary file named ``.<name>.<random>.tmp`` stays behind, which
:func:`remove_stale_temporaries` cleans up.

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> atomic_write_json(d / "config.json", {"alpha": 0.5})
>>> (d / "config.json").read_text()
'{\\n  "alpha": 0.5\\n}\\n'
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_torch_save",
    "atomic_write_stream",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "remove_stale_temporaries",
]

_TMP_SUFFIX = ".tmp"


def _fsync_directory(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows cannot open directories; the rename is durable enough there.
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to ``path`` atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file. Its parent directory must exist.
    data : bytes-like
        The complete new contents.

    Raises
    ------
    FileNotFoundError
        If the parent directory of ``path`` does not exist.
    TypeError
        If ``data`` is not bytes-like.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "blob.bin"
    >>> atomic_write_bytes(p, b"abc")
    >>> p.read_bytes()
    b'abc'
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes-like, got {type(data).__name__}")
    atomic_write_stream(path, lambda handle: handle.write(data))


def atomic_write_stream(path: str | os.PathLike[str], write: Any) -> None:
    """Write ``path`` atomically by calling ``write(handle)`` on a binary file handle.

    For files too large to hold in memory: ``write`` streams the contents into the
    temporary file, which is then flushed, ``fsync``-ed and renamed over ``path`` as in
    :func:`atomic_write_bytes`; if ``write`` raises, the temporary file is removed and
    ``path`` is untouched.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file. Its parent directory must exist.
    write : callable
        ``write(handle)`` writes the complete contents to the open binary ``handle``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "big.bin"
    >>> atomic_write_stream(p, lambda f: f.write(b"x" * 3))
    >>> p.read_bytes()
    b'xxx'
    """
    path = Path(path)
    directory = path.parent
    if not directory.is_dir():
        raise FileNotFoundError(f"path: parent directory {str(directory)!r} does not exist")
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`).

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    text : str
        The complete new contents.
    encoding : str, default "utf-8"
        Text encoding.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> None:
    """Serialise ``obj`` as JSON and write it to ``path`` atomically.

    Serialisation happens before anything touches the disk, so an object that is not
    JSON-serialisable raises :class:`TypeError` and leaves no file behind.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    obj : object
        Anything :func:`json.dumps` accepts.
    indent : int or None, default 2
        Passed to :func:`json.dumps`; a trailing newline is always added.
    """
    text = json.dumps(obj, indent=indent, sort_keys=False) + "\n"
    atomic_write_text(path, text)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """:func:`torch.save` ``obj`` to ``path`` atomically.

    The object is serialised into memory first, then written with :func:`atomic_write_bytes`.

    Parameters
    ----------
    obj : object
        Anything :func:`torch.save` accepts (state dicts, tensors, plain containers).
    path : str or os.PathLike
        Destination file.
    """
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files that an interrupted atomic write left in ``directory``.

    Only call this when no other process is writing into ``directory``.

    Parameters
    ----------
    directory : str or os.PathLike
        Directory to clean; a missing directory is treated as empty.

    Returns
    -------
    list of pathlib.Path
        The files that were removed.
    """
    directory = Path(directory)
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        if entry.name.startswith(".") and entry.name.endswith(_TMP_SUFFIX) and entry.is_file():
            try:
                entry.unlink()
            except FileNotFoundError:
                continue
            removed.append(entry)
    return removed
