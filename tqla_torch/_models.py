"""Load a causal language model and its tokenizer from a hub id or a local folder.

Three kinds of model argument are understood, tried in this order:

1. a **tqla compressed folder** (written by :func:`tqla_torch.io.save_pretrained`), loaded with
   :func:`tqla_torch.io.from_pretrained`;
2. a **Hugging Face model folder** (``config.json`` plus weights, e.g. from
   ``model.save_pretrained(folder)``), loaded with
   :meth:`transformers.AutoModelForCausalLM.from_pretrained`;
3. a **hub id** such as ``"gpt2"``, looked up in the local Hugging Face cache first and downloaded
   only when the hub can be reached. ``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``) never
   touches the network.

Anything that fails raises :class:`ModelLoadError` with a message that says what was looked for
and what to do instead, for example ``model 'gpt2' not found locally and the hub is
unreachable; pass a local folder``.

Tokenizers are resolved the same way (:func:`load_tokenizer`), with the extra spec
``"builtin"`` / ``"builtin:VOCAB"`` for :func:`tqla_torch.training.builtin_tokenizer`.

Examples
--------
>>> import tempfile
>>> from transformers import GPT2Config, GPT2LMHeadModel
>>> folder = tempfile.mkdtemp()
>>> GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=32,
...                            vocab_size=300)).save_pretrained(folder)
>>> loaded = load_model(folder)
>>> loaded.kind, loaded.model.config.n_embd
('hf', 32)
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from tqla_torch.compression.apply import count_parameters
from tqla_torch.io import is_compressed_folder

__all__ = [
    "LoadedModel",
    "ModelLoadError",
    "check_vocabulary",
    "count_parameters",
    "hub_is_offline",
    "is_compressed_folder",
    "load_model",
    "load_tokenizer",
    "read_json_file",
    "resolve_device",
    "save_tokenizer",
]

logger = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")


class ModelLoadError(RuntimeError):
    """A model or tokenizer argument could not be resolved (missing folder, unreachable hub...).

    The message is meant for the user as is; the CLI prints it without a traceback.
    """


@dataclass
class LoadedModel:
    """A model with where it came from.

    Attributes
    ----------
    model : torch.nn.Module
        The causal LM, in eval mode, on the requested device.
    source : str
        The argument it was loaded from.
    kind : {"tqla", "hf", "hub"}
        A tqla compressed folder, a Hugging Face folder or a hub id.
    path : pathlib.Path or None
        The local folder, when there is one.
    """

    model: nn.Module
    source: str
    kind: str
    path: Path | None = None


def hub_is_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` forbids network access.

    Read from the environment at call time (``huggingface_hub`` reads it once, at import).

    Returns
    -------
    bool
    """
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return True
    try:
        from huggingface_hub import constants

        return bool(getattr(constants, "HF_HUB_OFFLINE", False))
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the hub endpoint (``HF_ENDPOINT``), so that an unreachable hub
    fails in seconds instead of after the download retries."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _looks_like_path(name: str) -> bool:
    """Whether ``name`` can only be a path (a hub id is ``name`` or ``owner/name``)."""
    if name.startswith((".", "/", "~")) or "\\" in name or name.endswith("/"):
        return True
    if name.count("/") > 1:
        return True
    head = name.split("/", 1)[0]
    return "/" in name and Path(head).is_dir()


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None → CUDA when available, else CPU; anything else → :class:`torch.device`.

    Parameters
    ----------
    device : str, torch.device or None

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        If the string is not a device or names CUDA on a machine without it.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    usage = f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}"
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as err:
        raise ValueError(usage) from err
    if resolved.type not in ("cpu", "cuda"):  # meta holds no data; others are not supported
        raise ValueError(usage)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise ValueError(
            f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return resolved


def check_vocabulary(tokenizer: Any, model: nn.Module, *, what: str = "--tokenizer") -> None:
    """Refuse a tokenizer whose token ids do not all fit the model's input embedding.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
    model : torch.nn.Module
        Its ``get_input_embeddings()`` (or ``config.vocab_size``) gives the vocabulary size.
    what : str
        The argument the tokenizer came from, for the message.

    Raises
    ------
    ValueError
        If ``len(tokenizer)`` exceeds the model's vocabulary.
    """
    vocab = None
    get = getattr(model, "get_input_embeddings", None)
    embedding = get() if callable(get) else None
    if embedding is not None:
        vocab = getattr(embedding, "num_embeddings", None)
    if vocab is None:
        vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    try:
        size = len(tokenizer)
    except TypeError:
        return
    if isinstance(vocab, int) and size > vocab:
        raise ValueError(
            f"{what}: the tokenizer has {size:,} tokens but the model's vocabulary has "
            f"{vocab:,}; use the model's own tokenizer"
        )


def _check_hf_folder(path: Path) -> None:
    """A plain Hugging Face folder: config.json that asks for no code, safetensors weights."""
    from tqla_torch._hf_folder import read_hf_config
    from tqla_torch._trust import resolve_classes

    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"model folder {str(path)!r} has no config.json; expected a Hugging Face model "
            "folder (model.save_pretrained) or a tqla compressed folder (tqla compress)"
        )
    if not any((path / name).is_file() for name in _WEIGHT_FILES):
        raise ModelLoadError(
            f"model folder {str(path)!r} has a config.json but no weights "
            f"(looked for {', '.join(_WEIGHT_FILES)})"
        )
    if not any((path / name).is_file() for name in _WEIGHT_FILES[:2]):
        raise ModelLoadError(
            f"model folder {str(path)!r} holds pickle weights (pytorch_model.bin) only; weights "
            "are loaded from safetensors only (a pickle can run code): re-save the model with "
            "save_pretrained (safetensors is its default)"
        )
    try:
        config = read_hf_config(path)
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        if config.get("model_type") not in CONFIG_MAPPING:
            raise ValueError(
                f"model_type {config.get('model_type')!r} is not a model type this "
                "transformers knows; remote code is never run"
            )
        archs = config.get("architectures")
        if isinstance(archs, list) and len(archs) == 1:
            resolve_classes(config["model_type"], archs[0])
    except ValueError as err:
        raise ModelLoadError(f"model folder {str(path)!r}: {err}") from None


def _load_hf(name: str, *, local_files_only: bool, dtype: torch.dtype | None) -> nn.Module:
    """transformers' loader, never running remote code, safetensors only, and refusing a
    checkpoint that would leave any weight randomly initialised."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {
        "local_files_only": local_files_only,
        "trust_remote_code": False,
        "use_safetensors": True,
        "output_loading_info": True,
    }
    if dtype is not None:
        kwargs["dtype"] = dtype
    model, info = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    problems = {
        key: sorted(str(k) for k in (info.get(key) or ()))
        for key in ("missing_keys", "unexpected_keys", "mismatched_keys")
    }
    problems = {k: v for k, v in problems.items() if v}
    if problems:
        detail = "; ".join(
            f"{k.replace('_', ' ')} {v[:8]}" + (" ..." if len(v) > 8 else "")
            for k, v in problems.items()
        )
        compressed = any(
            k.endswith((".A", ".B", "_perm")) for k in problems.get("unexpected_keys", [])
        )
        hint = (
            "it was saved from a tqla-compressed model without tqla's record: compress and "
            "save it again with this tqla_torch (tqla_torch.save_pretrained)"
            if compressed
            else "save the complete model again"
        )
        raise ModelLoadError(
            f"model {name!r} does not fill the architecture exactly ({detail}); refusing to load "
            f"it with randomly initialised weights: {hint}"
        )
    return model


def _is_repo_not_found(err: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ in {"RepositoryNotFoundError", "GatedRepoError"}:
            return True
        text = str(current)
        if "is not a local folder and is not a valid model identifier" in text:
            return True
        current = current.__cause__ or current.__context__
    return False


def _load_from_hub(name: str, dtype: torch.dtype | None) -> nn.Module:
    try:
        return _load_hf(name, local_files_only=True, dtype=dtype)
    except OSError as cached_err:
        logger.debug("%r is not in the local Hugging Face cache: %s", name, cached_err)
    if hub_is_offline():
        raise ModelLoadError(
            f"model {name!r} not found locally and the hub is unreachable; pass a local folder "
            "(HF_HUB_OFFLINE is set)"
        )
    if not _hub_reachable():
        raise ModelLoadError(
            f"model {name!r} not found locally and the hub is unreachable; pass a local folder"
        )
    try:
        return _load_hf(name, local_files_only=False, dtype=dtype)
    except OSError as err:
        if _is_repo_not_found(err):
            raise ModelLoadError(
                f"model {name!r} is neither a local folder nor a model on the Hugging Face hub"
            ) from err
        raise ModelLoadError(
            f"model {name!r} not found locally and the hub is unreachable; pass a local folder "
            f"({err})"
        ) from err


def load_model(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | None = None,
    base_model: str | os.PathLike[str] | None = None,
) -> LoadedModel:
    """Load a causal LM from a tqla compressed folder, a Hugging Face folder or a hub id.

    Parameters
    ----------
    name_or_path : str or os.PathLike
        A local folder (tqla compressed or Hugging Face) or a hub id like ``"gpt2"``.
    device : str, torch.device or None, default "cpu"
        Where to put the model; ``"auto"`` picks CUDA when available.
    dtype : torch.dtype, optional
        Load the weights in this dtype (Hugging Face models only); default: as saved.
    base_model : str or os.PathLike, optional
        For tqla compressed folders that store only the compressed modules: the uncompressed
        model they were made from (passed to :func:`tqla_torch.io.from_pretrained`).

    Returns
    -------
    LoadedModel
        The model in eval mode on ``device``.

    Raises
    ------
    ModelLoadError
        If the folder does not exist or is not a model folder, or the hub id is neither cached
        nor reachable.
    ValueError
        If ``device`` is invalid.
    """
    target = resolve_device(device)
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        from tqla_torch._hf_folder import is_hf_compressed_folder

        if is_compressed_folder(path) or is_hf_compressed_folder(path):
            from tqla_torch.io import from_pretrained

            base = None
            if base_model is not None:
                base = load_model(base_model, device="cpu", dtype=dtype).model
            model = from_pretrained(path, base_model=base)
            kind = "tqla"
        else:
            _check_hf_folder(path)
            try:
                model = _load_hf(os.fspath(path), local_files_only=True, dtype=dtype)
            except (OSError, ValueError, KeyError) as err:
                raise ModelLoadError(f"could not load model folder {str(path)!r}: {err}") from err
            kind = "hf"
        loaded = LoadedModel(model=model, source=name, kind=kind, path=path)
    elif path.exists():
        raise ModelLoadError(f"model {name!r} is a file; pass the folder that holds config.json")
    elif _looks_like_path(name) or Path(name).suffix in {".json", ".safetensors", ".bin"}:
        raise ModelLoadError(f"model folder {name!r} does not exist")
    else:
        model = _load_from_hub(name, dtype)
        loaded = LoadedModel(model=model, source=name, kind="hub", path=None)
    loaded.model.to(target)
    loaded.model.eval()
    logger.info(
        "loaded %s model %r: %s parameters on %s",
        loaded.kind,
        name,
        f"{count_parameters(loaded.model):,}",
        target,
    )
    return loaded


def _builtin_spec(spec: str) -> int | None:
    if spec == "builtin":
        return 4096
    if spec.startswith("builtin:"):
        value = spec.split(":", 1)[1]
        try:
            return int(value)
        except ValueError as err:
            raise ModelLoadError(
                f"tokenizer {spec!r}: expected 'builtin' or 'builtin:VOCAB_SIZE' (an int)"
            ) from err
    return None


def _has_tokenizer_files(path: Path) -> bool:
    return any((path / name).is_file() for name in _TOKENIZER_FILES)


def _refuse_tokenizer_code(path: Path) -> None:
    """A tokenizer folder must not ask for code (``auto_map`` and friends); tqla never runs it."""
    from tqla_torch._trust import refuse_code_keys

    for name in ("tokenizer_config.json", "config.json"):
        file = path / name
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            continue  # transformers reports unreadable files itself
        try:
            refuse_code_keys(data, str(file))
        except ValueError as err:
            raise ModelLoadError(f"tokenizer folder {str(path)!r}: {err}") from None


def load_tokenizer(spec: str | os.PathLike[str] | None, model_source: str | None = None) -> Any:
    """Resolve a tokenizer argument.

    Parameters
    ----------
    spec : str, os.PathLike or None
        ``"builtin"`` / ``"builtin:VOCAB"`` for :func:`tqla_torch.training.builtin_tokenizer`, a
        local folder with tokenizer files, a hub id, or None to use ``model_source``'s.
    model_source : str, optional
        The model argument; its folder (or hub id) is used when ``spec`` is None.

    Returns
    -------
    transformers.PreTrainedTokenizerBase

    Raises
    ------
    ModelLoadError
        If nothing usable is found.
    """
    if spec is None:
        if model_source is None:
            raise ModelLoadError("no tokenizer given and no model to take it from")
        path = Path(model_source).expanduser()
        if path.is_dir() and not _has_tokenizer_files(path):
            raise ModelLoadError(
                f"model folder {str(path)!r} holds no tokenizer files; pass --tokenizer "
                "(a folder, a hub id, or 'builtin' for the built-in tokenizer)"
            )
        spec = model_source
    spec = os.fspath(spec)
    vocab = _builtin_spec(spec)
    if vocab is not None:
        from tqla_torch.training.data import builtin_tokenizer

        try:
            return builtin_tokenizer(vocab_size=vocab)
        except ValueError as err:
            raise ModelLoadError(f"tokenizer {spec!r}: {err}") from err

    from transformers import AutoTokenizer

    path = Path(spec).expanduser()
    if path.is_dir():
        if not _has_tokenizer_files(path):
            raise ModelLoadError(f"tokenizer folder {str(path)!r} holds no tokenizer files")
        _refuse_tokenizer_code(path)
        try:
            return AutoTokenizer.from_pretrained(
                os.fspath(path), local_files_only=True, trust_remote_code=False
            )
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"could not load the tokenizer in {str(path)!r}: {err}") from err
    if path.exists() or _looks_like_path(spec):
        raise ModelLoadError(f"tokenizer folder {spec!r} does not exist")
    try:
        return AutoTokenizer.from_pretrained(spec, local_files_only=True, trust_remote_code=False)
    except OSError:
        pass
    if hub_is_offline() or not _hub_reachable():
        raise ModelLoadError(
            f"tokenizer {spec!r} not found locally and the hub is unreachable; pass a local "
            "folder or 'builtin'"
        )
    try:
        return AutoTokenizer.from_pretrained(spec, trust_remote_code=False)
    except OSError as err:
        raise ModelLoadError(f"tokenizer {spec!r} could not be loaded: {err}") from err


def save_tokenizer(tokenizer: Any, folder: str | os.PathLike[str]) -> None:
    """Save ``tokenizer`` next to a model so the folder is self-contained.

    The tokenizer is written into a temporary folder first and each of its files then moved
    into ``folder`` atomically (``os.replace``): an existing file is replaced whole or not at
    all, and files of other names are left alone.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
    folder : str or os.PathLike
    """
    import shutil
    import tempfile

    from tqla_torch._atomic import _fsync_directory

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tokenizer.", suffix=".tmp", dir=folder))
    try:
        tokenizer.save_pretrained(os.fspath(staging))
        for item in sorted(staging.iterdir()):
            if item.is_file():
                with open(item, "rb+") as handle:
                    os.fsync(handle.fileno())
                os.replace(item, folder / item.name)
        _fsync_directory(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_json_file(path: str | os.PathLike[str], what: str) -> Any:
    """Read a JSON file with errors that name the file and what it was for.

    Parameters
    ----------
    path : str or os.PathLike
    what : str
        What the file holds, for messages ("--config").

    Returns
    -------
    object

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it is not valid JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no such file: {str(path)!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        text = "\0"
    if "\0" in text:
        raise ValueError(f"{what}: {str(path)!r} is a binary file, not a JSON text file")
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"{what}: {str(path)!r} is nested too deeply to be a config") from None
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{what}: {str(path)!r} is not valid JSON (line {err.lineno}, column {err.colno}: "
            f"{err.msg})"
        ) from err
