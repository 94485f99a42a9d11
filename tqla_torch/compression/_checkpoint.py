"""The source of a streaming compression: a Hugging Face checkpoint folder read lazily.

Its architecture is built on the ``meta`` device (:func:`meta_model`), its safetensors
files are indexed from their headers (:func:`source_entries`) and checked against the
architecture (:func:`check_checkpoint`) before anything is fitted or written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from tqla_torch.compression import _st_files

__all__ = ["check_checkpoint", "meta_model", "source_entries", "tensor_groups"]

logger = logging.getLogger(__name__)

_INDEX = "model.safetensors.index.json"
_SINGLE = "model.safetensors"


def _source_files(src: Path) -> list[Path]:
    from tqla_torch import _trust

    if (src / _SINGLE).exists():
        return [_trust.file_inside(src, _SINGLE, str(src / "config.json"))]
    index = src / _INDEX
    if not index.is_file():
        if (src / "pytorch_model.bin").exists():
            raise ValueError(
                f"{src} holds pickle weights (pytorch_model.bin) only; weights are read from "
                f"safetensors only: save the model with safe_serialization (the default)"
            )
        raise FileNotFoundError(f"{src} holds no {_SINGLE} or {_INDEX} (the weights)")
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{index}: not a safetensors index ({err})") from None
    files = [_trust.file_inside(src, name, str(index)) for name in names]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{src}: shard(s) {missing} named by {_INDEX} are missing; copy the complete "
            f"checkpoint folder"
        )
    return files


def source_entries(src: Path) -> dict[str, _st_files.Entry]:
    entries: dict[str, _st_files.Entry] = {}
    for path in _source_files(src):
        for name, entry in _st_files.read_header(path)[0].items():
            if name in entries:
                raise ValueError(f"{src}: tensor {name!r} is stored in two shards")
            entries[name] = entry
    return entries


def meta_model(src: str | Path) -> nn.Module:
    """The architecture of Hugging Face folder ``src`` on the ``meta`` device (no weights).

    Built from ``config.json`` through transformers' registry only (``architectures`` must
    name one registered class; remote code is never run).

    Raises
    ------
    FileNotFoundError
        If ``src`` has no ``config.json``.
    ValueError
        If the config asks for code, names an unregistered class, or already records a
        tqla compression (load such a folder with :func:`tqla_torch.from_pretrained`).
    """
    from tqla_torch import _trust
    from tqla_torch._hf_folder import HF_RECORD_KEY, read_hf_config

    src = Path(src)
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src}: no config.json (not a Hugging Face model folder)")
    config = read_hf_config(src)
    if HF_RECORD_KEY in config:
        raise ValueError(
            f"{src / 'config.json'} records a tqla compression already; compress it in memory "
            f"(tqla_torch.from_pretrained, then tqla_torch.compress)"
        )
    archs = config.get("architectures")
    if not (isinstance(archs, list) and len(archs) == 1):
        raise ValueError(f"{src}/config.json: 'architectures' must name one class, got {archs!r}")
    model_cls, config_cls = _trust.resolve_classes(config.get("model_type"), archs[0])
    with torch.device("meta"):
        model = _trust.build_model(model_cls, config_cls, config)
    return model.eval()


def tensor_groups(model: nn.Module) -> list[list[str]]:
    """State-dict names grouped by tensor identity (ties), first name canonical."""
    seen: dict[int, list[str]] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        seen.setdefault(id(t), []).append(name)
    return list(seen.values())


def check_checkpoint(model: nn.Module, entries: dict[str, _st_files.Entry], src: Path) -> None:
    """Every tensor the architecture needs is in the checkpoint, with the config's shape."""
    missing, bad = [], []
    for names in tensor_groups(model):
        found = [n for n in names if n in entries]
        if not found:
            missing.append(names[0])
            continue
        want = tuple(model.state_dict(keep_vars=True)[names[0]].shape)
        for n in found:
            if entries[n].shape != want:
                bad.append(f"{n}: checkpoint {list(entries[n].shape)} vs config {list(want)}")
    known = {n for names in tensor_groups(model) for n in names}
    extra = sorted(set(entries) - known)
    if extra:  # e.g. attention-mask buffers older transformers saved: not copied
        logger.warning("%s: %d tensors the architecture does not use are skipped: %s",
                       src, len(extra), extra[:5])
    if missing:
        raise ValueError(
            f"{src}: the checkpoint lacks tensors the config's architecture needs: "
            f"{missing[:10]}{' ...' if len(missing) > 10 else ''}"
        )
    if bad:
        raise ValueError(
            f"{src}: tensors whose shape does not match config.json (a different model "
            f"size?): " + "; ".join(bad[:10])
        )
