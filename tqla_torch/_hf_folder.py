"""Compressed models in Hugging Face folders: what transformers' own ``save_pretrained`` writes.

After :func:`tqla_torch.compress`, ``model.config`` holds a ``tqla_compression`` record (the
layer type, shapes and rank of every compressed module and the compression history), so
``model.save_pretrained(folder)`` / ``push_to_hub`` — transformers' own methods — write it into
``config.json`` next to the safetensors weights.  :func:`load_hf_folder` rebuilds the
architecture through transformers' registry (:func:`tqla_torch._trust.resolve_classes`),
swaps in empty compressed layers of the recorded shapes and loads every tensor, refusing the
folder when any tensor the model needs is missing, unexpected or of another shape: a load
never leaves a randomly initialised weight behind.

Examples
--------
>>> import tempfile
>>> from transformers import GPT2Config, GPT2LMHeadModel
>>> import tqla_torch
>>> model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
>>> cfg = tqla_torch.CompressionConfig(target_modules=["c_fc"], method="kron", b_shape=[2, 4],
...                                    rank=4)
>>> report = tqla_torch.compress(model, cfg)
>>> sorted(model.config.tqla_compression["modules"])
['transformer.h.0.mlp.c_fc']
>>> folder = tempfile.mkdtemp()
>>> model.save_pretrained(folder)
>>> is_hf_compressed_folder(folder)
True
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tqla_torch import _trust

__all__ = ["HF_RECORD_KEY", "is_hf_compressed_folder", "load_hf_folder", "record_compression"]

logger = logging.getLogger(__name__)

#: Attribute of a transformers config (and key of ``config.json``) holding the compression
#: record, so that ``model.save_pretrained`` (transformers' own) writes a restorable folder.
HF_RECORD_KEY = "tqla_compression"
HF_CONFIG = "config.json"
_SAFETENSORS = "model.safetensors"
_SAFETENSORS_INDEX = "model.safetensors.index.json"
_PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
_MAX_CONFIG_BYTES = 64 * 2**20


def record_compression(model: nn.Module) -> dict[str, Any] | None:
    """Store ``model``'s compression record in ``model.config`` (``tqla_compression``).

    :func:`tqla_torch.compress` calls it, so that transformers' own ``model.save_pretrained``
    (and ``push_to_hub``) carries the record in ``config.json`` and
    :func:`tqla_torch.from_pretrained` can rebuild the compressed layers before loading their
    weights.  Models without a transformers config are left alone.

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    dict or None
        The record (layer specs and compression history), or None when the model has no
        transformers config or nothing compressed.
    """
    from tqla_torch.compression.apply import HISTORY_ATTR
    from tqla_torch.io import FORMAT, FORMAT_VERSION, _compressed_modules

    hf_config = getattr(model, "config", None)
    if hf_config is None or not callable(getattr(hf_config, "to_dict", None)):
        return None
    specs = _compressed_modules(model)
    history = list(getattr(model, HISTORY_ATTR, []) or [])
    if not specs and not history:
        if HF_RECORD_KEY in vars(hf_config):
            delattr(hf_config, HF_RECORD_KEY)
        return None
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "modules": specs,
        "compression_history": history,
    }
    json.dumps(record)  # plain JSON: fail here rather than inside transformers' save
    setattr(hf_config, HF_RECORD_KEY, record)
    return record


def read_hf_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """``config.json`` of a Hugging Face folder, checked by
    :func:`tqla_torch._trust.check_config_dict` (no remote code, hub kernels or quantizers).

    Raises
    ------
    ValueError
        If it is not a JSON object, too large, or asks for code the folder would supply.
    """
    path = Path(directory) / HF_CONFIG
    if path.stat().st_size > _MAX_CONFIG_BYTES:
        raise ValueError(f"{path} is larger than {_MAX_CONFIG_BYTES} bytes; not a model config")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"{path} is not valid JSON (truncated or corrupted?): {err}") from None
    return _trust.check_config_dict(config, str(path))


def is_hf_compressed_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a Hugging Face folder whose ``config.json`` has a tqla record."""
    cfg = Path(path) / HF_CONFIG
    if not cfg.is_file():
        return False
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and HF_RECORD_KEY in data


def _weight_files(directory: Path, cfg_path: Path) -> list[Path]:
    """The safetensors files of a folder (one file or the shards of an index), inside it."""
    where = str(cfg_path)
    if (directory / _SAFETENSORS).exists():
        return [_trust.file_inside(directory, _SAFETENSORS, where)]
    index = directory / _SAFETENSORS_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{index}: not a safetensors index ({err})") from None
        return [_trust.file_inside(directory, name, str(index)) for name in names]
    if any((directory / name).exists() for name in _PICKLES):
        raise ValueError(
            f"{directory} holds pickle weights (pytorch_model.bin) only; weights are loaded "
            f"from safetensors only (a pickle can run code): save the model with "
            f"safe_serialization (the default of save_pretrained)"
        )
    raise FileNotFoundError(f"{directory} holds no {_SAFETENSORS} (the weights of this folder)")


def load_hf_folder(directory: Path, base_model: nn.Module | None = None) -> nn.Module:
    """Restore a Hugging Face folder exactly, with its compressed layers when it records any.

    Raises
    ------
    ValueError
        If the config asks for code, names a class outside transformers' registry, or the
        weights do not fill the model exactly (missing, unexpected or misshapen tensors).
    """
    from tqla_torch.compression.apply import HISTORY_ATTR
    from tqla_torch.io import FORMAT, _dedupe, _install, check_record

    cfg_path = directory / HF_CONFIG
    config = read_hf_config(directory)
    record = config.get(HF_RECORD_KEY)
    if record is not None:
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise ValueError(f"{cfg_path}: {HF_RECORD_KEY} is not a tqla_torch record")
        check_record(record, cfg_path)
    specs = record["modules"] if record else {}
    tensors: dict[str, Any] = {}
    files = _weight_files(directory, cfg_path)
    for path in files:
        tensors.update(_trust.read_weights(path, {}, cfg_path.name)[0])
    if base_model is None:
        archs = config.get("architectures")
        if not (isinstance(archs, list) and len(archs) == 1):
            raise ValueError(
                f"{cfg_path}: 'architectures' must name exactly one model class, got {archs!r}"
            )
        model_cls, config_cls = _trust.resolve_classes(config.get("model_type"), archs[0])
        model = _trust.build_model(model_cls, config_cls, config)
    elif not isinstance(base_model, nn.Module):
        raise TypeError(f"base_model must be a torch.nn.Module, got {type(base_model).__name__}")
    else:
        model = base_model
    _install(model, specs, cfg_path)
    aliases = _dedupe(model.state_dict())[1]  # the ties the architecture itself makes
    for alias, canonical in aliases.items():
        if alias in tensors:  # transformers keeps one name of a tie; load it under the other
            kept = tensors.setdefault(canonical, tensors[alias])
            if kept is not tensors[alias] and not torch.equal(kept, tensors[alias]):
                raise ValueError(
                    f"{cfg_path}: {alias!r} and {canonical!r} are tied in the model but differ "
                    f"in the weights file; the folder does not describe this model"
                )
            del tensors[alias]
    weights_path = files[0] if len(files) == 1 else directory
    try:
        _trust.load_checked(
            model, tensors, aliases, prefixes=None, weights_path=weights_path, cfg_path=cfg_path
        )
    except ValueError as err:
        hint = (
            "it was saved from a model compressed by an older tqla_torch, or edited: compress "
            "the model again and save it (tqla_torch.save_pretrained or model.save_pretrained)"
            if record is None and any(k.endswith((".A", ".B", "_perm")) for k in tensors)
            else "the folder is incomplete or does not match its config.json: save the "
            "complete model again (tqla_torch.save_pretrained after tqla_torch.compress)"
        )
        raise ValueError(f"{err}. Refusing to fill the gaps with random weights: {hint}") from None
    object.__setattr__(model, HISTORY_ATTR, list((record or {}).get("compression_history") or []))
    return model
