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
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}"
        ) from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    return resolved


def _check_hf_folder(path: Path) -> None:
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


def _load_hf(name: str, *, local_files_only: bool, dtype: torch.dtype | None) -> nn.Module:
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"local_files_only": local_files_only}
    if dtype is not None:
        kwargs["dtype"] = dtype
    return AutoModelForCausalLM.from_pretrained(name, **kwargs)


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
        if is_compressed_folder(path):
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
        try:
            return AutoTokenizer.from_pretrained(os.fspath(path), local_files_only=True)
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"could not load the tokenizer in {str(path)!r}: {err}") from err
    if path.exists() or _looks_like_path(spec):
        raise ModelLoadError(f"tokenizer folder {spec!r} does not exist")
    try:
        return AutoTokenizer.from_pretrained(spec, local_files_only=True)
    except OSError:
        pass
    if hub_is_offline() or not _hub_reachable():
        raise ModelLoadError(
            f"tokenizer {spec!r} not found locally and the hub is unreachable; pass a local "
            "folder or 'builtin'"
        )
    try:
        return AutoTokenizer.from_pretrained(spec)
    except OSError as err:
        raise ModelLoadError(f"tokenizer {spec!r} could not be loaded: {err}") from err


def save_tokenizer(tokenizer: Any, folder: str | os.PathLike[str]) -> None:
    """Save ``tokenizer`` next to a model so the folder is self-contained.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
    folder : str or os.PathLike
    """
    tokenizer.save_pretrained(os.fspath(folder))


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
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{what}: {str(path)!r} is not valid JSON (line {err.lineno}, column {err.colno}: "
            f"{err.msg})"
        ) from err
