"""Save and load compressed models: safetensors weights plus one JSON description.

A folder written by :func:`save_pretrained` holds

* ``model.safetensors`` — the state dict.  Tensors that share storage (a tied LM head) are
  stored once; the JSON names the aliases and :func:`from_pretrained` ties them again.
* ``tqla_config.json`` — the tqla and torch versions, the model class and its base config
  (``GPT2Config.to_dict()``), the compression history (every ``CompressionConfig`` applied,
  in order), every compressed module's layer type, shapes, rank and permutation flags, the
  tied heads, and the size and save id of the weights file.

:func:`from_pretrained` rebuilds the architecture (from the recorded class and config, or
from a ``base_model`` you pass), swaps in empty compressed layers of the recorded shapes and
loads the weights: the loaded model's logits equal the saved model's bit for bit.  Both
files are written atomically (temporary file, fsync, rename), weights first; a folder whose
files come from different saves, or a truncated, missing or mismatched file, raises an
error naming the file and the problem.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tqla_torch._atomic import atomic_write_bytes, atomic_write_json
from tqla_torch.compression.apply import HISTORY_ATTR
from tqla_torch.nn import REGISTRY as COMPRESSED_TYPES
from tqla_torch.nn import TiedEmbeddingHead
from tqla_torch.nn.base import set_module as _set_module

__all__ = [
    "CONFIG_NAME",
    "FORMAT",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "from_pretrained",
    "is_compressed_folder",
    "read_config",
    "save_pretrained",
]

logger = logging.getLogger(__name__)

CONFIG_NAME = "tqla_config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "tqla_torch.compressed"
FORMAT_VERSION = 1
_SCOPES = ("all", "compressed")


# --------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------
def _storage_key(t: torch.Tensor) -> tuple:
    return (
        t.device.type,
        t.device.index,
        t.untyped_storage().data_ptr(),
        t.storage_offset(),
        tuple(t.shape),
        tuple(t.stride()),
        t.dtype,
    )


def _dedupe(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Drop tensors identical (same storage, offset, shape, strides) to an earlier key."""
    seen: dict[tuple, str] = {}
    kept: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for key, t in state.items():
        k = _storage_key(t)
        if t.numel() > 0 and k in seen:
            aliases[key] = seen[k]
            continue
        seen.setdefault(k, key)
        kept[key] = t
    # tensors that overlap another's storage without being identical: store copies
    by_ptr: dict[tuple, list[str]] = {}
    for key, t in kept.items():
        if t.numel() > 0:
            by_ptr.setdefault((t.device.type, t.untyped_storage().data_ptr()), []).append(key)
    for keys in by_ptr.values():
        for key in keys[1:]:
            logger.debug(
                "save_pretrained: %s shares storage with %s; stored as a copy", key, keys[0]
            )
            kept[key] = kept[key].clone()
    return kept, aliases


def _compressed_modules(model: nn.Module) -> dict[str, dict[str, Any]]:
    names = {id(m): n for n, m in model.named_modules()}
    specs: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        if isinstance(module, tuple(COMPRESSED_TYPES.values())):
            specs[name] = module.spec()
        elif isinstance(module, TiedEmbeddingHead):
            emb_name = names.get(id(module.embedding))
            if emb_name is None:
                raise ValueError(
                    f"{name} is tied to an embedding that is not part of the model; "
                    f"cannot save the tie"
                )
            specs[name] = {**module.spec(), "embedding": emb_name}
        elif getattr(module, "tqla_untied_head", False) and isinstance(module, nn.Linear):
            specs[name] = {
                "type": "UntiedHead",
                "in_features": module.in_features,
                "out_features": module.out_features,
                "bias": module.bias is not None,
            }
    return specs


def _dtype_name(model: nn.Module) -> str | None:
    counts: dict[torch.dtype, int] = {}
    for p in model.parameters():
        if p.is_floating_point():
            counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
    if not counts:
        return None
    return str(max(counts, key=counts.get)).removeprefix("torch.")


def _versions() -> dict[str, str | None]:
    import sys

    import tqla
    import tqla_torch

    tf = sys.modules.get("transformers")
    return {
        "tqla": getattr(tqla, "__version__", None),
        "tqla_torch": getattr(tqla_torch, "__version__", None),
        "torch": torch.__version__,
        "transformers": getattr(tf, "__version__", None) if tf is not None else None,
    }


def save_pretrained(
    model: nn.Module,
    save_directory: str | os.PathLike[str],
    *,
    weights: str = "all",
) -> Path:
    """Save a (compressed) model to a folder: ``model.safetensors`` + ``tqla_config.json``.

    Parameters
    ----------
    model : torch.nn.Module
        Typically a transformers model after :func:`tqla_torch.compress`; any module works
        (without a ``config``, :func:`from_pretrained` then needs ``base_model``).
    save_directory : str or os.PathLike
        Created if missing; other files in it are left alone.
    weights : {"all", "compressed"}
        Store the whole state dict (default; the folder is self-contained) or only the
        compressed modules (and untied head copies made by compress) — smaller, but loading
        then needs the uncompressed ``base_model`` for everything else.

    Returns
    -------
    pathlib.Path
        The folder.

    Notes
    -----
    Tensors sharing storage (tied weights) are written once and recorded as aliases;
    a :class:`~tqla_torch.layers.TiedEmbeddingHead` holds no tensor of its own and is
    recorded with the name of its embedding.  Writes are atomic per file, weights first,
    and both files carry the same random save id, so a crash between the two leaves a
    folder that :func:`from_pretrained` rejects with a clear message rather than loads
    wrongly.
    """
    from safetensors.torch import save as st_save

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if weights not in _SCOPES:
        raise ValueError(f"weights must be one of {_SCOPES}, got {weights!r}")
    directory = Path(save_directory)
    directory.mkdir(parents=True, exist_ok=True)
    specs = _compressed_modules(model)
    state = model.state_dict()
    if weights == "compressed":
        prefixes = tuple(f"{n}." for n in specs)
        state = {k: v for k, v in state.items() if k.startswith(prefixes)}
    kept, aliases = _dedupe(state)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in kept.items()}
    save_id = uuid.uuid4().hex
    blob = st_save(tensors, metadata={"format": "pt", "tqla_save_id": save_id})

    hf_config = getattr(model, "config", None)
    base_config = hf_config.to_dict() if callable(getattr(hf_config, "to_dict", None)) else None
    cls = type(model)
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": _versions(),
        "model_class": f"{cls.__module__}:{cls.__qualname__}",
        "config_class": (
            f"{type(hf_config).__module__}:{type(hf_config).__qualname__}"
            if base_config is not None
            else None
        ),
        "base_config": base_config,
        "dtype": _dtype_name(model),
        "compression_history": list(getattr(model, HISTORY_ATTR, []) or []),
        "modules": specs,
        "tied_parameters": aliases,
        "weights": {
            "file": WEIGHTS_NAME,
            "scope": weights,
            "size": len(blob),
            "n_tensors": len(tensors),
            "save_id": save_id,
        },
    }
    json.dumps(document)  # fail before touching the disk if anything is not serialisable
    write_bytes, write_json = atomic_write_bytes, atomic_write_json
    write_bytes(directory / WEIGHTS_NAME, blob)
    write_json(directory / CONFIG_NAME, document)
    logger.info(
        "saved %d tensors (%d aliases, %d compressed modules) to %s",
        len(tensors),
        len(aliases),
        len(specs),
        directory,
    )
    return directory


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------
def is_compressed_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder written by :func:`save_pretrained`."""
    cfg = Path(path) / CONFIG_NAME
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated ``tqla_config.json`` of a saved folder.

    Raises
    ------
    FileNotFoundError
        If the folder or its ``tqla_config.json`` is missing.
    ValueError
        If the file is not valid JSON or not a tqla_torch description this version reads.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such directory")
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: {directory} is not a folder written by "
            f"tqla_torch.save_pretrained (or the save was interrupted before its config)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON (truncated or corrupted?): {err}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a tqla_torch description (format != {FORMAT!r})")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {version!r} is not supported by this tqla_torch "
            f"(reads up to {FORMAT_VERSION}); upgrade tqla"
        )
    for key in ("modules", "tied_parameters", "weights"):
        if not isinstance(data.get(key), dict):
            raise ValueError(f"{path}: field {key!r} is missing or not an object")
    return data


def _import(path: str) -> Any:
    module, _, qual = path.partition(":")
    obj = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


def _build_base(data: dict[str, Any], cfg_path: Path) -> nn.Module:
    if not data.get("model_class") or data.get("base_config") is None:
        raise ValueError(
            f"{cfg_path} records no model config to rebuild the architecture from; pass "
            f"base_model= (the uncompressed model)"
        )
    try:
        model_cls = _import(data["model_class"])
        config_cls = _import(data["config_class"])
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(
            f"{cfg_path}: cannot import {data.get('model_class')!r} / "
            f"{data.get('config_class')!r} ({err}); pass base_model="
        ) from None
    config = config_cls.from_dict(dict(data["base_config"]))
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            no_init_weights = None
    if no_init_weights is None:
        return model_cls(config)
    with no_init_weights():  # every tensor is loaded afterwards: skip the random init
        return model_cls(config)


def _check_base_module(name: str, spec: dict[str, Any], base: nn.Module, cfg_path: Path) -> None:
    from tqla_torch.nn.weights import weight_view

    kind = spec["type"]
    if kind in ("TiedEmbeddingHead", "UntiedHead"):
        return
    if type(base).__name__ == kind:
        return
    try:
        v = weight_view(base)
    except TypeError:
        raise ValueError(
            f"{cfg_path}: module {name!r} is a {kind} in the save, but the base model's "
            f"{name!r} is a {type(base).__name__}"
        ) from None
    if kind.endswith("Embedding"):
        want = (spec["num_embeddings"], spec["embedding_dim"])
    else:
        want = (spec["in_features"], spec["out_features"])
    if (v.in_features, v.out_features) != tuple(want):
        raise ValueError(
            f"{cfg_path}: module {name!r} is {want[0]}→{want[1]} in the save, but "
            f"{v.in_features}→{v.out_features} in the base model (a different model size?)"
        )


def _install(model: nn.Module, specs: dict[str, dict[str, Any]], cfg_path: Path) -> None:
    """Swap empty compressed layers of the recorded shapes into ``model``."""
    heads = []
    for name, spec in specs.items():
        if not isinstance(spec, dict) or "type" not in spec:
            raise ValueError(f"{cfg_path}: modules[{name!r}] has no layer type")
        try:
            base = model.get_submodule(name)
        except AttributeError:
            raise ValueError(
                f"{cfg_path} names module {name!r}, which the model does not have"
            ) from None
        kind = spec["type"]
        if kind in ("TiedEmbeddingHead", "UntiedHead"):
            heads.append((name, spec, base))
            continue
        if kind not in COMPRESSED_TYPES:
            raise ValueError(f"{cfg_path}: module {name!r} has unknown layer type {kind!r}")
        _check_base_module(name, spec, base, cfg_path)
        ref = next(iter(base.parameters()), None)
        device = ref.device if ref is not None and ref.device.type != "meta" else None
        try:
            layer = COMPRESSED_TYPES[kind].from_spec(spec, device=device)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{cfg_path}: modules[{name!r}] is invalid: {err}") from None
        _set_module(model, name, layer)
    for name, spec, _base in heads:
        if spec["type"] == "TiedEmbeddingHead":
            try:
                emb = model.get_submodule(spec["embedding"])
            except (AttributeError, KeyError):
                raise ValueError(
                    f"{cfg_path}: head {name!r} is tied to {spec.get('embedding')!r}, which "
                    f"the model does not have"
                ) from None
            bias = torch.empty(emb.num_embeddings) if spec.get("bias") else None
            _set_module(model, name, TiedEmbeddingHead(emb, bias=bias))
        else:
            dense = nn.Linear(spec["in_features"], spec["out_features"], bias=spec["bias"])
            dense.tqla_untied_head = True
            _set_module(model, name, dense)


def _load_tensors(path: Path, info: dict[str, Any]) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (the weights of this folder)")
    size = path.stat().st_size
    if isinstance(info.get("size"), int) and size != info["size"]:
        raise ValueError(
            f"{path} has {size} bytes but {CONFIG_NAME} records {info['size']}: the file is "
            f"truncated or comes from another save"
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(
            f"{path} is not a readable safetensors file (truncated or corrupted?): {err}"
        ) from None
    if info.get("save_id") and meta.get("tqla_save_id") != info["save_id"]:
        raise ValueError(
            f"{path} and {CONFIG_NAME} come from different saves (save ids differ): the "
            f"folder was written partially or files were mixed"
        )
    return tensors


def from_pretrained(
    directory: str | os.PathLike[str],
    base_model: nn.Module | None = None,
    *,
    device: Any = None,
) -> nn.Module:
    """Load a model saved by :func:`save_pretrained`.

    Parameters
    ----------
    directory : str or os.PathLike
    base_model : torch.nn.Module, optional
        The uncompressed model (same architecture and sizes) to rebuild into, modified in
        place; needed when the save records no rebuildable class/config or stores only the
        compressed modules (``weights="compressed"``).  Without it the model is built from
        the recorded transformers class and config.
    device : optional
        Move the model there after loading.

    Returns
    -------
    torch.nn.Module
        In eval mode, with the saved dtypes, ties restored and
        ``tqla_compression_history`` set.

    Raises
    ------
    FileNotFoundError
        The folder, ``tqla_config.json`` or ``model.safetensors`` is missing.
    ValueError
        A file is truncated, corrupted or from another save; tensor names or shapes do not
        match the architecture; or the base model does not fit the save.
    """
    directory = Path(directory)
    data = read_config(directory)
    cfg_path = directory / CONFIG_NAME
    info = data["weights"]
    scope = info.get("scope", "all")
    if scope not in _SCOPES:
        raise ValueError(f"{cfg_path}: weights.scope {scope!r} is not one of {_SCOPES}")
    tensors = _load_tensors(directory / info.get("file", WEIGHTS_NAME), info)
    if base_model is None:
        if scope == "compressed":
            raise ValueError(
                f"{directory} stores only the compressed modules (weights='compressed'); pass "
                f"base_model= (the uncompressed model they were made from)"
            )
        model = _build_base(data, cfg_path)
    else:
        if not isinstance(base_model, nn.Module):
            raise TypeError(
                f"base_model must be a torch.nn.Module, got {type(base_model).__name__}"
            )
        model = base_model
    _install(model, data["modules"], cfg_path)
    hf_config = getattr(model, "config", None)
    base_config = data.get("base_config") or {}
    if hf_config is not None and "tie_word_embeddings" in base_config:
        hf_config.tie_word_embeddings = base_config["tie_word_embeddings"]

    aliases: dict[str, str] = data["tied_parameters"]
    expected = model.state_dict()
    if scope == "compressed":
        prefixes = tuple(f"{n}." for n in data["modules"])
        expected = {k: v for k, v in expected.items() if k.startswith(prefixes)}
    wanted = {k: v for k, v in expected.items() if k not in aliases}
    missing = sorted(set(wanted) - set(tensors))
    unexpected = sorted(set(tensors) - set(wanted))
    weights_path = directory / info.get("file", WEIGHTS_NAME)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:10]}" + (" ..." if len(missing) > 10 else ""))
        if unexpected:
            parts.append(
                f"unexpected tensors {unexpected[:10]}" + (" ..." if len(unexpected) > 10 else "")
            )
        raise ValueError(
            f"{weights_path} does not match the model described by {CONFIG_NAME}: "
            + "; ".join(parts)
        )
    bad = [
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
        for k, v in wanted.items()
        if tuple(tensors[k].shape) != tuple(v.shape)
    ]
    if bad:
        raise ValueError(
            f"{weights_path} has tensors of the wrong shape for the model described by "
            f"{CONFIG_NAME}: " + "; ".join(bad[:10])
        )
    ref_device = next((v.device for v in wanted.values() if v.device.type != "meta"), None)
    if ref_device is not None and ref_device.type != "cpu":
        tensors = {k: v.to(ref_device) for k, v in tensors.items()}
    model.load_state_dict(tensors, strict=False, assign=True)
    for alias, canonical in aliases.items():
        parent_name, _, attr = alias.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        try:
            target = model.get_parameter(canonical)
        except AttributeError:
            try:
                target = model.get_buffer(canonical)
            except AttributeError:
                raise ValueError(
                    f"{cfg_path}: tied tensor {alias!r} refers to {canonical!r}, which the "
                    f"model does not have"
                ) from None
        setattr(parent, attr, target)
    object.__setattr__(model, HISTORY_ATTR, list(data.get("compression_history") or []))
    if device is not None:
        model.to(device)
    model.eval()
    return model
