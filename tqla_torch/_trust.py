"""What loading a model folder may trust, and the checks that enforce it.

A model folder is data, never code. Everything here exists so that reading one can neither run
code the folder names nor read files outside it, and so that a damaged folder is refused
instead of loaded wrongly:

* :func:`resolve_classes` turns a recorded ``model_type`` and class names into classes **only**
  through transformers' own registries (``CONFIG_MAPPING`` and the auto-model mappings). A name
  that is not one of those registered classes is refused; nothing is imported by name and
  ``auto_map`` / remote code is never honoured.
* :func:`check_config_dict` refuses config dictionaries that ask for remote code, hub kernels
  or quantizers (``auto_map``, ``trust_remote_code``, ``quantization_config``, an attention
  implementation that is not a built-in one) or whose keys are not attribute names.
* :func:`file_inside` resolves a file name recorded in a folder and refuses anything outside
  the folder (``..``, absolute paths, symbolic links that escape).
* :func:`sha256_hex` is the checksum stored with the weights and verified on load.
* :func:`check_output_folder` keeps ``tqla compress --overwrite`` from writing over its input.

Examples
--------
>>> model_cls, config_cls = resolve_classes("gpt2", "GPT2LMHeadModel", "GPT2Config")
>>> model_cls.__name__, config_cls.__name__
('GPT2LMHeadModel', 'GPT2Config')
>>> resolve_classes("gpt2", "subprocess:Popen", None)
Traceback (most recent call last):
...
ValueError: model class 'subprocess:Popen' is not one of the transformers classes ...
>>> resolve_classes("gpt2", "BertModel", None)
Traceback (most recent call last):
...
ValueError: model class 'BertModel' is not one of the transformers classes registered ...
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = [
    "FORBIDDEN_CONFIG_KEYS",
    "build_model",
    "check_config_dict",
    "check_output_folder",
    "load_checked",
    "read_weights",
    "file_inside",
    "resolve_classes",
    "sha256_hex",
]

#: transformers auto-model registries a recorded model class may come from (text and vision
#: models with a config of their own). Only names of classes these registries hold for the
#: recorded ``model_type`` are accepted.
_MODEL_REGISTRIES = (
    "MODEL_FOR_CAUSAL_LM_MAPPING",
    "MODEL_MAPPING",
    "MODEL_FOR_PRETRAINING_MAPPING",
    "MODEL_FOR_MASKED_LM_MAPPING",
    "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING",
    "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING",
    "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING",
    "MODEL_FOR_QUESTION_ANSWERING_MAPPING",
    "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING",
)

#: Config keys that would make transformers fetch or run code, or load through a quantizer.
FORBIDDEN_CONFIG_KEYS = frozenset(
    {"auto_map", "trust_remote_code", "quantization_config", "custom_pipelines"}
)
#: Attention/expert implementations transformers ships; anything else (e.g. a hub kernel
#: repository "org/name") would be downloaded and run.
_BUILTIN_IMPLEMENTATIONS = frozenset(
    {None, "eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention"}
)
_IMPLEMENTATION_KEYS = ("attn_implementation", "_attn_implementation", "experts_implementation")
_MAX_DEPTH = 16


def _registered_models(config_cls: type) -> dict[str, type]:
    """Every model class the registries above hold for ``config_cls``, by class name."""
    from transformers.models.auto import modeling_auto

    found: dict[str, type] = {}
    for registry_name in _MODEL_REGISTRIES:
        registry = getattr(modeling_auto, registry_name, None)
        if registry is None:
            continue
        try:
            entry = registry[config_cls]
        except (KeyError, ValueError, ImportError, AttributeError):
            continue
        for cls in entry if isinstance(entry, (tuple, list)) else (entry,):
            if isinstance(cls, type):
                found.setdefault(cls.__name__, cls)
    return found


def _class_name(recorded: Any, what: str) -> tuple[str, str | None]:
    """``(name, module or None)`` from ``"Name"`` or the older ``"module:Name"`` spelling."""
    if not isinstance(recorded, str) or not recorded:
        raise ValueError(f"{what} must be a class name (a string), got {recorded!r}")
    module, sep, name = recorded.rpartition(":")
    if not sep:
        module, name = "", recorded
    if not name.isidentifier() or (sep and not module):
        raise ValueError(f"{what} {recorded!r} is not a class name")
    return name, module or None


def resolve_classes(
    model_type: Any, model_class: Any, config_class: Any = None
) -> tuple[type, type]:
    """The transformers model and config classes a folder records, from transformers' registry.

    Parameters
    ----------
    model_type : str
        The config's ``model_type`` (``"gpt2"``); looked up in ``CONFIG_MAPPING``.
    model_class : str
        The model class name (``"GPT2LMHeadModel"``, or the older ``"module:Name"``); it must be
        a class the auto-model registries hold for this ``model_type``.
    config_class : str, optional
        The config class name; when given it must be the registered config class.

    Returns
    -------
    (type, type)
        The model class and the config class.

    Raises
    ------
    ValueError
        If ``model_type`` is unknown to transformers or a name is not the registered class.
        Nothing named by the arguments is ever imported.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    name, module = _class_name(model_class, "model class")
    if module is not None and module.split(".")[0] != "transformers":
        raise ValueError(
            f"model class {model_class!r} is not one of the transformers classes a folder may "
            f"name (only classes of transformers' auto-model registry are built)"
        )
    if not isinstance(model_type, str) or not model_type:
        raise ValueError(f"model_type must be a non-empty string, got {model_type!r}")
    try:
        config_cls = CONFIG_MAPPING[model_type]
    except KeyError:
        raise ValueError(
            f"model_type {model_type!r} is not a model type this transformers knows; "
            f"remote code is never run (upgrade transformers or pass base_model=)"
        ) from None
    if config_class is not None:
        cfg_name, cfg_module = _class_name(config_class, "config class")
        if cfg_name != config_cls.__name__ or cfg_module not in (None, config_cls.__module__):
            raise ValueError(
                f"config class {config_class!r} is not the transformers config class of "
                f"model_type {model_type!r} ({config_cls.__name__})"
            )
    registered = _registered_models(config_cls)
    cls = registered.get(name)
    if cls is None or module not in (None, cls.__module__):
        allowed = ", ".join(sorted(registered)) or "none"
        raise ValueError(
            f"model class {model_class!r} is not one of the transformers classes registered "
            f"for model_type {model_type!r} (allowed: {allowed})"
        )
    return cls, config_cls


def check_config_dict(config: Any, where: str) -> dict[str, Any]:
    """Refuse a config dictionary that could make transformers fetch or run code.

    Parameters
    ----------
    config : dict
        A ``PretrainedConfig.to_dict()``-style dictionary read from a file.
    where : str
        The file, for messages.

    Returns
    -------
    dict
        ``config`` itself.

    Raises
    ------
    ValueError
        If it is not a dict of attribute names, or anywhere in it a key of
        :data:`FORBIDDEN_CONFIG_KEYS` appears, or an attention implementation that is not
        built into transformers.
    """
    if not isinstance(config, dict):
        raise ValueError(f"{where}: the model config must be a JSON object, got {config!r:.80}")
    bad = [k for k in config if not isinstance(k, str) or not k.isidentifier()]
    if bad:
        raise ValueError(f"{where}: config keys must be attribute names, got {bad[:5]!r}")
    _scan(config, where, "config", 0)
    return config


def refuse_code_keys(data: Any, where: str) -> None:
    """Refuse ``data`` (a JSON document) if anywhere in it asks for code, as
    :func:`check_config_dict` does, without its rule on key names."""
    _scan(data, where, "file", 0)


def _scan(value: Any, where: str, path: str, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise ValueError(f"{where}: {path} is nested more than {_MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        for key, item in value.items():
            if key in FORBIDDEN_CONFIG_KEYS:
                raise ValueError(
                    f"{where}: {path}[{key!r}] is not allowed: loading never runs remote code, "
                    f"hub kernels or quantizers named by a folder"
                )
            if key in _IMPLEMENTATION_KEYS and item not in _BUILTIN_IMPLEMENTATIONS:
                raise ValueError(
                    f"{where}: {path}[{key!r}] = {item!r} is not an implementation built into "
                    f"transformers (allowed: eager, sdpa, flash/flex attention); hub kernels "
                    f"are never loaded"
                )
            _scan(item, where, f"{path}[{key!r}]", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _scan(item, where, f"{path}[{i}]", depth + 1)


def build_model(model_cls: type, config_cls: type, config: dict[str, Any]) -> Any:
    """``model_cls(config_cls.from_dict(config))`` without the random initialisation.

    Every tensor is loaded from the folder afterwards and the loader checks that none is
    left out, so the skipped initialisation can never leave a random weight in the model.
    """
    cfg = config_cls.from_dict(dict(config))
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            no_init_weights = None
    if no_init_weights is None:
        model = model_cls(cfg)
    else:
        with no_init_weights():
            model = model_cls(cfg)
    if callable(getattr(model, "tie_weights", None)):
        model.tie_weights()  # no_init_weights also skips the ties the config asks for
    return model


def file_inside(directory: Path, name: Any, where: str) -> Path:
    """The file ``name`` recorded in ``where``, refused unless it lies inside ``directory``.

    Parameters
    ----------
    directory : pathlib.Path
        The model folder.
    name : str
        A file name relative to it (as recorded in the folder's JSON).
    where : str
        The JSON file, for messages.

    Returns
    -------
    pathlib.Path
        ``directory / name``.

    Raises
    ------
    ValueError
        If ``name`` is not a relative path of plain components, or it (following symbolic
        links) resolves outside ``directory``.
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ValueError(f"{where}: weights.file must be a file name, got {name!r}")
    parts = Path(name).parts
    if Path(name).is_absolute() or os.path.isabs(name) or "\\" in name or ".." in parts:
        raise ValueError(
            f"{where}: weights.file {name!r} must name a file inside the folder (no absolute "
            f"path, no '..')"
        )
    path = directory / name
    root = directory.resolve()
    real = path.resolve()
    if real != root and root not in real.parents:
        raise ValueError(
            f"{where}: weights.file {name!r} resolves to {str(real)!r}, outside the folder "
            f"(a symbolic link?); weights are read from inside the folder only"
        )
    return path


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    """Hex SHA-256 of ``data``.

    >>> sha256_hex(b"")[:16]
    'e3b0c44298fc1c14'
    """
    return hashlib.sha256(data).hexdigest()


def check_output_folder(
    output: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None]
) -> Path:
    """Refuse an output folder that is one of the inputs or contains one.

    Parameters
    ----------
    output : str or os.PathLike
        The folder a command will write into.
    inputs : iterable of str, os.PathLike or None
        The model folders (or files) it reads; entries that are not existing paths (hub ids,
        None) are skipped.

    Returns
    -------
    pathlib.Path
        ``output``.

    Raises
    ------
    ValueError
        If ``output`` resolves to an input or to a folder above one.
    """
    out = Path(output).expanduser()
    out_real = out.resolve()
    for item in inputs:
        if item is None:
            continue
        path = Path(item).expanduser()
        if not path.exists():
            continue
        real = path.resolve()
        if real == out_real or out_real in real.parents:
            raise ValueError(
                f"--output {str(out)!r} is the input {str(item)!r} or contains it; write to "
                f"another folder (tqla never writes over the model it reads)"
            )
    return out


def read_weights(
    path: Path, info: dict[str, Any], cfg_name: str, while_checking: Any = None
) -> tuple[dict[str, Any], Any]:
    """Read a safetensors file once and check it against what ``cfg_name`` records.

    Size, SHA-256 and save id (each when recorded) are checked on the very bytes that are
    then parsed, so the file cannot change between the check and the use.  The digest is
    computed on a second thread (hashlib releases the GIL) while the bytes are parsed and
    ``while_checking()`` runs (building the architecture from the JSON, which uses nothing
    read from the weights); nothing is returned before the digest has been compared.

    Returns
    -------
    (dict, object)
        The tensors and what ``while_checking`` returned (None without it).

    Raises
    ------
    FileNotFoundError
        If the file is missing.
    ValueError
        If its size or checksum differs, it is not safetensors, or it comes from another save.
    """
    from safetensors.torch import load as st_load

    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (the weights of this folder)")
    size = path.stat().st_size
    if isinstance(info.get("size"), int) and size != info["size"]:
        raise ValueError(
            f"{path} has {size} bytes but {cfg_name} records {info['size']}: the file is "
            f"truncated or comes from another save"
        )
    data = path.read_bytes()
    try:
        meta = _safetensors_metadata(data)
    except (ValueError, TypeError, AttributeError):
        meta = None  # a damaged header: the checksum or the parser below names the problem
    if meta is not None and info.get("save_id") and meta.get("tqla_save_id") != info["save_id"]:
        raise ValueError(
            f"{path} and {cfg_name} come from different saves (save ids differ): the "
            f"folder was written partially or files were mixed"
        )
    expected = info.get("sha256")
    # hashlib releases the GIL: hash on a second thread while safetensors parses the same
    # immutable bytes; nothing parsed is returned before the digest is compared
    with ThreadPoolExecutor(max_workers=1) as pool:
        digest = pool.submit(sha256_hex, data) if expected is not None else None
        try:
            tensors, parse_error = st_load(data), None
        except Exception as err:  # safetensors raises its own error types
            tensors, parse_error = None, err
        extra = while_checking() if while_checking is not None and parse_error is None else None
        if digest is not None and digest.result() != expected.lower():
            raise ValueError(
                f"{path} is corrupted: its SHA-256 differs from the one {cfg_name} records (a "
                f"changed byte); restore the file from a good copy or save the model again"
            )
    if parse_error is not None:
        raise ValueError(
            f"{path} is not a readable safetensors file (truncated or corrupted?): {parse_error}"
        ) from None
    if meta is None:
        raise ValueError(f"{path} is not a readable safetensors file: damaged header")
    return tensors, extra


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob (its JSON header)."""
    n = int.from_bytes(data[:8], "little")
    if len(data) < 8 or n > len(data) - 8:
        raise ValueError("header length out of range")
    header = json.loads(bytes(data[8 : 8 + n]))
    meta = header.get("__metadata__") or {}
    return meta if isinstance(meta, dict) else {}


def load_checked(
    model: Any,
    tensors: dict[str, Any],
    aliases: dict[str, str],
    *,
    prefixes: tuple[str, ...] | None,
    weights_path: Path,
    cfg_path: Path,
) -> None:
    """Load ``tensors`` into ``model`` exactly: every expected tensor present with its shape,
    nothing unexpected, ties (``aliases``) restored.  ``prefixes`` limits the expected
    tensors to those modules (a save of the compressed modules only)."""
    expected = model.state_dict()
    if prefixes is not None:
        expected = {k: v for k, v in expected.items() if k.startswith(prefixes)}
    wanted = {k: v for k, v in expected.items() if k not in aliases}
    missing = sorted(set(wanted) - set(tensors))
    unexpected = sorted(set(tensors) - set(wanted))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:10]}" + (" ..." if len(missing) > 10 else ""))
        if unexpected:
            parts.append(
                f"unexpected tensors {unexpected[:10]}" + (" ..." if len(unexpected) > 10 else "")
            )
        raise ValueError(
            f"{weights_path} does not match the model described by {cfg_path.name}: "
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
            f"{cfg_path.name}: " + "; ".join(bad[:10])
        )
    ref_device = next((v.device for v in wanted.values() if v.device.type != "meta"), None)
    if ref_device is not None and ref_device.type != "cpu":
        tensors = {k: v.to(ref_device) for k, v in tensors.items()}
    model.load_state_dict(tensors, strict=False, assign=True)
    for alias, canonical in aliases.items():
        parent_name, _, attr = alias.rpartition(".")
        try:
            parent = model.get_submodule(parent_name) if parent_name else model
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
