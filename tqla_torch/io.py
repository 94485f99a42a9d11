"""Save and load compressed models: safetensors weights plus one JSON description.

A folder written by :func:`save_pretrained` holds

* ``model.safetensors`` — the state dict.  Tensors that share storage (a tied LM head) are
  stored once; the JSON names the aliases and :func:`from_pretrained` ties them again.
* ``tqla_config.json`` — the tqla and torch versions, the model class and its base config
  (``GPT2Config.to_dict()``), the compression history (every ``CompressionConfig`` applied,
  in order), every compressed module's layer type, shapes, rank and permutation flags, the
  tied heads, and the size, SHA-256 and save id of the weights file.

:func:`from_pretrained` rebuilds the architecture (from the recorded ``model_type`` and class
names, resolved through transformers' own registry only — nothing named in the folder is
ever imported — or from a ``base_model`` you pass), swaps in empty compressed layers of the
recorded shapes and loads the weights: the loaded model's logits equal the saved model's bit
for bit.  Both files are written atomically (temporary file, fsync, rename), weights first; a
folder whose files come from different saves, or a truncated, missing, corrupted (checksum)
or mismatched file, raises an error naming the file and the problem.

It also restores a folder written by transformers' own ``model.save_pretrained`` after
:func:`tqla_torch.compress` (the compression record travels in ``config.json``, see
:mod:`tqla_torch._hf_folder`), and refuses any folder it cannot restore exactly.  What loading
trusts is described in ``docs/security.md``.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tqla_torch import _trust
from tqla_torch._atomic import atomic_write_bytes, atomic_write_json
from tqla_torch._hf_folder import HF_RECORD_KEY, record_compression  # re-exported
from tqla_torch.compression.apply import HISTORY_ATTR
from tqla_torch.nn import REGISTRY as COMPRESSED_TYPES
from tqla_torch.nn import TiedEmbeddingHead
from tqla_torch.nn.base import set_module as _set_module

__all__ = [
    "CONFIG_NAME",
    "FORMAT",
    "FORMAT_VERSION",
    "HF_RECORD_KEY",
    "WEIGHTS_NAME",
    "from_pretrained",
    "is_compressed_folder",
    "prepare_output_folder",
    "read_config",
    "record_compression",
    "save_pretrained",
]

logger = logging.getLogger(__name__)

CONFIG_NAME = "tqla_config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "tqla_torch.compressed"
FORMAT_VERSION = 2  # 2: class names resolved by model_type, sha256 of the weights
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


def describe(
    model: nn.Module,
    specs: dict[str, dict[str, Any]],
    aliases: dict[str, str],
    weights: dict[str, Any],
    dtype: str | None = None,
) -> dict[str, Any]:
    """The ``tqla_config.json`` document of ``model`` (refreshing its compression record).

    ``specs`` are the compressed modules (:func:`_compressed_modules`), ``aliases`` the tied
    tensor names, ``weights`` the description of the weights file; ``dtype`` defaults to
    the parameters' most common floating dtype.  Shared by :func:`save_pretrained` and the
    streaming compression of a folder (:mod:`tqla_torch.compression.streaming`).
    """
    hf_config = getattr(model, "config", None)
    if callable(getattr(hf_config, "to_dict", None)):
        record_compression(model)
        base_config = hf_config.to_dict()
    else:
        base_config = None
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": _versions(),
        # names only: loading resolves them through transformers' registry by model_type
        "model_type": getattr(hf_config, "model_type", None) if base_config else None,
        "model_class": type(model).__name__,
        "config_class": type(hf_config).__name__ if base_config is not None else None,
        "base_config": base_config,
        "dtype": dtype if dtype is not None else _dtype_name(model),
        "compression_history": list(getattr(model, HISTORY_ATTR, []) or []),
        "modules": specs,
        "tied_parameters": aliases,
        "weights": weights,
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
        Created if missing; other files in it are left alone (only ``model.safetensors``
        and ``tqla_config.json`` are replaced, each atomically).
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
    wrongly.  The JSON records the SHA-256 of the weights file, verified on load.  A model
    with a transformers ``config`` also gets its compression record refreshed in
    ``model.config`` (see :func:`record_compression`).
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

    document = describe(
        model,
        specs,
        aliases,
        {
            "file": WEIGHTS_NAME,
            "scope": weights,
            "size": len(blob),
            "n_tensors": len(tensors),
            "save_id": save_id,
            "sha256": _trust.sha256_hex(blob),
        },
    )
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


#: Files ``tqla compress`` writes into its output folder besides the tokenizer's.
WRITTEN_FILES = (WEIGHTS_NAME, CONFIG_NAME, "tqla_compress_report.json")


def prepare_output_folder(
    output: str | os.PathLike[str],
    *,
    inputs: tuple[str | os.PathLike[str] | None, ...] | list[Any] = (),
    overwrite: bool = False,
) -> Path:
    """Check and create the output folder of a command that saves a model.

    The folder is refused when it is one of ``inputs`` or contains one (nothing is ever
    written over the model being read), when it exists as a file, or when it holds files and
    ``overwrite`` is False.  With ``overwrite=True`` nothing is deleted: the save then
    replaces only the files tqla writes (:data:`WRITTEN_FILES` and the tokenizer's), each
    atomically, and leaves every other file alone.

    Parameters
    ----------
    output : str or os.PathLike
    inputs : sequence of str, os.PathLike or None
        Model folders the command reads (hub ids and None are skipped).
    overwrite : bool, default False

    Returns
    -------
    pathlib.Path
        The folder (not created here: the save creates it once there is something to write).

    Raises
    ------
    ValueError
        For the refusals above, with what to do.
    """
    path = _trust.check_output_folder(output, inputs)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--output {str(path)!r} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ValueError(
            f"--output {str(path)!r} is not empty; pass --overwrite to replace the files tqla "
            f"writes there ({', '.join(WRITTEN_FILES)}, tokenizer files; others are kept)"
        )
    return path


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
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"{path} is not valid JSON (truncated or corrupted?): {err}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a tqla_torch description (format != {FORMAT!r})")
    check_record(data, path)
    info = data["weights"]
    for key in ("size", "n_tensors"):
        if key in info and (isinstance(info[key], bool) or not isinstance(info[key], int)):
            raise ValueError(f"{path}: weights.{key} must be an integer, got {info[key]!r}")
    for key in ("save_id", "sha256", "scope"):
        if key in info and not isinstance(info[key], str):
            raise ValueError(f"{path}: weights.{key} must be a string, got {info[key]!r}")
    return data


def check_record(data: dict[str, Any], path: Path) -> None:
    """Check the version and the types of a compression record (tqla_config.json or the
    ``tqla_compression`` entry of a config.json)."""
    version = data.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {version!r} is not supported by this tqla_torch "
            f"(reads up to {FORMAT_VERSION}); upgrade tqla"
        )
    keys = ("modules", "tied_parameters", "weights") if path.name == CONFIG_NAME else ("modules",)
    for key in keys:
        if not isinstance(data.get(key), dict):
            raise ValueError(f"{path}: field {key!r} is missing or not an object")
    for name, spec in data["modules"].items():
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            raise ValueError(f"{path}: modules[{name!r}] has no layer type")
    for alias, canonical in (data.get("tied_parameters") or {}).items():
        if not isinstance(canonical, str):
            raise ValueError(f"{path}: tied_parameters[{alias!r}] must be a tensor name")
    history = data.get("compression_history")
    if history is not None and not isinstance(history, list):
        raise ValueError(f"{path}: compression_history must be a list, got {history!r:.80}")


def _build_base(data: dict[str, Any], cfg_path: Path) -> nn.Module:
    """Rebuild the architecture from the recorded names, through transformers' registry."""
    if not data.get("model_class") or data.get("base_config") is None:
        raise ValueError(
            f"{cfg_path} records no model config to rebuild the architecture from; pass "
            f"base_model= (the uncompressed model)"
        )
    base_config = data["base_config"]
    model_type = data.get("model_type")
    if model_type is None and isinstance(base_config, dict):
        model_type = base_config.get("model_type")
    try:
        model_cls, config_cls = _trust.resolve_classes(
            model_type, data["model_class"], data.get("config_class")
        )
    except ValueError as err:
        raise ValueError(f"{cfg_path}: {err}; pass base_model= to load into your model") from None
    _trust.check_config_dict(base_config, str(cfg_path))
    if base_config.get("model_type", model_type) != model_type:
        raise ValueError(
            f"{cfg_path}: base_config.model_type {base_config.get('model_type')!r} differs "
            f"from model_type {model_type!r}"
        )
    try:
        return _trust.build_model(model_cls, config_cls, base_config)
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise ValueError(
            f"{cfg_path}: base_config does not build a {model_cls.__name__}: {err}"
        ) from None


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
        try:
            _check_base_module(name, spec, base, cfg_path)
        except (KeyError, TypeError) as err:
            raise ValueError(f"{cfg_path}: modules[{name!r}] is invalid: {err!r}") from None
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
            try:
                bias = torch.empty(emb.num_embeddings) if spec.get("bias") else None
                head: nn.Module = TiedEmbeddingHead(emb, bias=bias)
            except (AttributeError, TypeError, ValueError) as err:
                raise ValueError(f"{cfg_path}: head {name!r} is invalid: {err}") from None
        else:
            try:
                head = torch.nn.utils.skip_init(  # every tensor is loaded next: no random init
                    nn.Linear, spec["in_features"], spec["out_features"], bias=spec["bias"]
                )
            except (KeyError, TypeError, ValueError, RuntimeError) as err:
                raise ValueError(f"{cfg_path}: head {name!r} is invalid: {err!r}") from None
            head.tqla_untied_head = True
        _set_module(model, name, head)


def from_pretrained(
    directory: str | os.PathLike[str],
    base_model: nn.Module | None = None,
    *,
    device: Any = None,
) -> nn.Module:
    """Load a model saved by :func:`save_pretrained` or by transformers' ``save_pretrained``.

    Parameters
    ----------
    directory : str or os.PathLike
        A folder with ``tqla_config.json`` (:func:`save_pretrained`), or a Hugging Face folder
        (``config.json`` + safetensors weights, e.g. ``model.save_pretrained`` after
        :func:`tqla_torch.compress`: the compression record travels in ``config.json``).
    base_model : torch.nn.Module, optional
        The uncompressed model (same architecture and sizes) to rebuild into, modified in
        place; needed when the save records no rebuildable class/config or stores only the
        compressed modules (``weights="compressed"``).  Without it the model is built from
        the recorded ``model_type`` and class names, resolved through transformers' registry
        (nothing named in the folder is imported; remote code is never run).
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
        A file is truncated, corrupted (checksum) or from another save; the weights file
        lies outside the folder; a recorded class is not an allowed transformers class;
        tensor names or shapes do not match the architecture (nothing is ever left randomly
        initialised); or the base model does not fit the save.

    Examples
    --------
    >>> import tempfile
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> import tqla_torch
    >>> model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    >>> cfg = tqla_torch.CompressionConfig(target_modules=["c_fc"], method="kron", b_shape=[2, 4],
    ...                                    rank=4)
    >>> report = tqla_torch.compress(model, cfg)
    >>> folder = tempfile.mkdtemp()
    >>> model.save_pretrained(folder)  # transformers' own method
    >>> type(tqla_torch.from_pretrained(folder).transformer.h[0].mlp.c_fc).__name__
    'KroneckerLinear'
    """
    directory = Path(directory)
    if directory.is_dir() and not (directory / CONFIG_NAME).exists():
        if (directory / "config.json").is_file():
            from tqla_torch._hf_folder import load_hf_folder

            model = load_hf_folder(directory, base_model)
            if device is not None:
                model.to(device)
            return model.eval()
    data = read_config(directory)
    cfg_path = directory / CONFIG_NAME
    info = data["weights"]
    scope = info.get("scope", "all")
    if scope not in _SCOPES:
        raise ValueError(f"{cfg_path}: weights.scope {scope!r} is not one of {_SCOPES}")
    weights_path = _trust.file_inside(directory, info.get("file", WEIGHTS_NAME), str(cfg_path))
    if info.get("sha256") is None:
        logger.warning(
            "%s records no checksum of its weights (saved by an older tqla_torch): corruption "
            "is caught only when it breaks the file; save the model again to add one",
            cfg_path,
        )
    if base_model is None and scope == "compressed":
        raise ValueError(
            f"{directory} stores only the compressed modules (weights='compressed'); pass "
            f"base_model= (the uncompressed model they were made from)"
        )
    if base_model is not None and not isinstance(base_model, nn.Module):
        raise TypeError(f"base_model must be a torch.nn.Module, got {type(base_model).__name__}")
    # the architecture is built from the JSON alone while the weights' checksum is computed
    tensors, model = _trust.read_weights(
        weights_path,
        info,
        CONFIG_NAME,
        while_checking=(lambda: _build_base(data, cfg_path)) if base_model is None else None,
    )
    model = base_model if model is None else model
    _install(model, data["modules"], cfg_path)
    hf_config = getattr(model, "config", None)
    base_config = data.get("base_config") or {}
    if hf_config is not None and "tie_word_embeddings" in base_config:
        hf_config.tie_word_embeddings = base_config["tie_word_embeddings"]
    prefixes = tuple(f"{n}." for n in data["modules"]) if scope == "compressed" else None
    _trust.load_checked(
        model,
        tensors,
        data["tied_parameters"],
        prefixes=prefixes,
        weights_path=weights_path,
        cfg_path=cfg_path,
    )
    object.__setattr__(model, HISTORY_ATTR, list(data.get("compression_history") or []))
    if device is not None:
        model.to(device)
    model.eval()
    return model
