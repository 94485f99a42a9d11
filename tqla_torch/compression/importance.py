"""Layer-wise imprinting quantitation (LWIQ): how much each layer adds to class separability.

LWIQ (arXiv 2408.01534) scores each layer of a trained network by the accuracy of a *proxy
classifier* attached to the layer's pooled output. The classifier is not trained: its class
weights are *imprinted* — each class's weight is the normalised mean of that class's normalised
features — and it predicts the class of highest cosine similarity. A layer's importance is the
accuracy it gains over the layer before it; the gains are normalised with a softmax. The scores
then drive budget-aware rank allocation (:mod:`tqla_torch.compression.ranks`).

Choices made here (the paper does not publish the exact formulas; ``docs/lwiq.md`` discusses them):

* **Order and the first layer.** Layers are ordered by when their forward hooks first fire (the
  execution order, which is the depth order for a chain or a residual network). The first layer's
  gain is measured against the same proxy classifier on *its own input*, so every layer's gain is
  "what this layer adds to what it receives".
* **Negative gains** are kept: a layer that makes the classes less separable gets a gain below
  zero, hence a softmax weight below that of a neutral layer, never zero (ranks are clipped to at
  least 1 anyway).
* **Softmax temperature.** Gains are accuracy differences in [-1, 1]; the weights are
  ``softmax(gain / temperature)``. With the default ``temperature=0.1`` a layer that gains ten
  points more than another gets e ≈ 2.7 times its weight.
* **Language models.** The classes are the next tokens, restricted to the ``top_k`` most frequent
  next tokens of the data (default 64): positions whose next token is rarer are skipped. Each
  position is a sample (no pooling over the sequence); the held-out split is by sequence.
* **Pooling.** Outputs of convolutions, and any output with 4 or more axes (batch, channels,
  spatial...), are averaged over their spatial axes (channel axis 1); other outputs keep their
  last axis as features and are averaged over the axes between batch and last (classifiers) or
  taken per position (language models).
* **Streaming, bounded memory.** Samples are split by a seeded draw into an imprinting part and
  a held-out part (``holdout``). The data is read twice (once to imprint, once to score) and each
  sample is run through the model once: imprinting rows in the first pass, held-out rows in the
  second. Memory is ``n_classes × features`` per layer plus one batch. The forward pass stops
  after the last chosen layer.

Examples
--------
>>> import torch
>>> from torch import nn
>>> from tqla_torch.compression.importance import lwiq
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> model = nn.Sequential(
...     nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
... )
>>> x = torch.randn(300, 8)
>>> y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
>>> data = [(x[i : i + 100], y[i : i + 100]) for i in range(0, 300, 100)]
>>> result = lwiq(model, data, layers=["0", "2"], seed=0)
>>> sorted(result.weights) == ["0", "2"] and abs(sum(result.weights.values()) - 1) < 1e-9
True

Over ~600 lines: about half is documentation of the LWIQ protocol (pooling, classes, scoring
point) that a reader needs next to the code.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tqla_torch._lm import lm_forward
from tqla_torch.compression.calibrate import _model_device

__all__ = ["LWIQResult", "lwiq", "softmax_weights"]

_TASKS = ("auto", "classification", "lm")
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class LWIQResult:
    """Per-layer LWIQ scores, in execution order.

    Attributes
    ----------
    layers : tuple of str
        Module names in the order their hooks fired.
    accuracy : tuple of float
        Held-out accuracy of each layer's imprinted proxy classifier.
    input_accuracy : float
        The same classifier on the first layer's input (the baseline of the first gain).
    gains : tuple of float
        ``accuracy[l] - accuracy[l-1]`` (``input_accuracy`` before the first layer).
    importance : tuple of float
        ``softmax(gains / temperature)``; sums to 1.
    n_imprint, n_heldout : int
        Samples (positions, for language models) used to imprint and to score.
    classes : tuple of int
        The class labels (next-token ids for language models) the proxies distinguish.
    task : str
        ``"classification"`` or ``"lm"``.
    temperature : float
        The softmax temperature used.
    """

    layers: tuple[str, ...]
    accuracy: tuple[float, ...]
    input_accuracy: float
    gains: tuple[float, ...]
    importance: tuple[float, ...]
    n_imprint: int
    n_heldout: int
    classes: tuple[int, ...]
    task: str
    temperature: float
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def weights(self) -> dict[str, float]:
        """``{layer name: importance}``, as :func:`~tqla_torch.compression.ranks.allocate_ranks`
        takes them."""
        return dict(zip(self.layers, self.importance, strict=True))

    def table(self) -> str:
        """A plain-text table of accuracy, gain and importance per layer."""
        width = max([len("layer"), *map(len, self.layers)])
        lines = [f"{'layer':<{width}}  accuracy    gain  importance"]
        lines.append(f"{'(input)':<{width}}  {self.input_accuracy:8.4f}")
        for name, acc, gain, imp in zip(
            self.layers, self.accuracy, self.gains, self.importance, strict=True
        ):
            lines.append(f"{name:<{width}}  {acc:8.4f} {gain:+7.4f}  {imp:10.4f}")
        return "\n".join(lines)


def softmax_weights(gains: Sequence[float], temperature: float = 0.1) -> tuple[float, ...]:
    """Normalise gains into importances: ``softmax(gains / temperature)``.

    Examples
    --------
    >>> [round(w, 3) for w in softmax_weights([0.0, 0.1], temperature=0.1)]
    [0.269, 0.731]
    """
    if not (
        isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0
    ):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if len(gains) == 0:
        raise ValueError("gains must not be empty")
    z = [g / temperature for g in gains]
    top = max(z)
    e = [math.exp(v - top) for v in z]
    total = sum(e)
    return tuple(v / total for v in e)


# --------------------------------------------------------------------------------------------
# Inputs: layers and batches
# --------------------------------------------------------------------------------------------


def _default_layers(model: nn.Module) -> list[str]:
    kinds: tuple[type, ...] = (nn.Linear, *_CONV)
    try:
        from transformers.pytorch_utils import Conv1D

        kinds = (*kinds, Conv1D)
    except ImportError:  # pragma: no cover - transformers is a dependency of tqla_torch
        pass
    return [name for name, m in model.named_modules() if name and isinstance(m, kinds)]


def _resolve_layers(model: nn.Module, layers: Any) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    if layers is None:
        names = _default_layers(model)
    elif isinstance(layers, str):
        pattern = re.compile(layers)
        names = [n for n in modules if n and pattern.fullmatch(n)]
        if not names:
            raise ValueError(f"layers={layers!r} (a regular expression) matches no module name")
    elif isinstance(layers, Iterable):
        names = list(layers)
        bad = [n for n in names if not isinstance(n, str)]
        if bad:
            raise TypeError(f"layers must be module names (str), got {bad[:3]!r}")
        missing = [n for n in names if n not in modules or not n]
        if missing:
            some = [n for n in modules if n][:8]
            raise ValueError(
                f"layers names {missing!r} are not modules of the model; names look like {some!r}"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"layers must not repeat a name, got {names!r}")
    else:
        raise TypeError(
            f"layers must be None, a regular expression or a list of module names, got "
            f"{type(layers).__name__}"
        )
    if not names:
        raise ValueError("layers: the model has no Linear/Conv module to score")
    return {n: modules[n] for n in names}


def _split_batch(
    batch: Any, task: str
) -> tuple[str, Any, torch.Tensor | None, torch.Tensor | None]:
    """-> (task, model input, labels or None, attention mask or None)."""
    if isinstance(batch, Mapping):
        if "input_ids" not in batch:
            raise ValueError(
                f"data batches that are dicts must hold 'input_ids', got keys {sorted(batch)!r}"
            )
        if task == "classification":
            raise ValueError(
                "data must yield (inputs, labels) pairs for task='classification'; got a dict "
                "of model inputs without labels"
            )
        return "lm", batch["input_ids"], batch.get("labels"), batch.get("attention_mask")
    if isinstance(batch, (tuple, list)):
        if len(batch) != 2:
            raise ValueError(f"data batches must be (inputs, labels) pairs, got {len(batch)} items")
        inputs, labels = batch
        if task == "lm":
            return "lm", inputs, labels, None
        return "classification", inputs, labels, None
    if isinstance(batch, torch.Tensor):
        if task == "classification":
            raise ValueError(
                "data must yield (inputs, labels) pairs for task='classification'; got a tensor "
                "without labels"
            )
        if batch.is_floating_point():
            raise ValueError(
                "data yielded a float tensor without labels: give (inputs, labels) pairs for a "
                "classifier, or integer token ids for a causal language model"
            )
        return "lm", batch, None, None
    raise TypeError(
        f"data must yield (inputs, labels) pairs, token-id tensors or dicts with 'input_ids', "
        f"got {type(batch).__name__}"
    )


def _take(inputs: Any, rows: torch.Tensor) -> Any:
    if isinstance(inputs, torch.Tensor):
        return inputs[rows]
    if isinstance(inputs, Mapping):
        return {k: (v[rows] if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    raise TypeError(f"data inputs must be tensors or dicts of tensors, got {type(inputs).__name__}")


def _batch_size(inputs: Any) -> int:
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0])
    for value in inputs.values():
        if isinstance(value, torch.Tensor):
            return int(value.shape[0])
    raise ValueError("data inputs hold no tensor to read the batch size from")


# --------------------------------------------------------------------------------------------
# Features and the imprinted proxy classifiers
# --------------------------------------------------------------------------------------------


class _Stop(Exception):
    """Raised by the last layer's hook: nothing after it is needed."""


def _pooled(value: Any, module: nn.Module, task: str, name: str) -> torch.Tensor:
    """A layer's output (or input) -> features: (n, d) for classifiers, (n, T, d) for LMs."""
    if isinstance(value, (tuple, list)):
        value = next((v for v in value if isinstance(v, torch.Tensor)), None)
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise TypeError(f"layer {name!r} produced no float tensor to score")
    x = value.detach()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    # channels first: convolutions, and any (batch, channels, *spatial) tensor of 4+ axes
    if isinstance(module, _CONV) or x.ndim >= 4:
        if x.ndim < 3:
            raise ValueError(f"layer {name!r}: convolution output of shape {tuple(x.shape)}")
        if task == "lm":
            raise ValueError(
                f"layer {name!r}: channels-first outputs of shape {tuple(x.shape)} cannot be "
                "scored per token"
            )
        return x.mean(dim=tuple(range(2, x.ndim)))
    if task == "lm":
        if x.ndim != 3:
            raise ValueError(
                f"layer {name!r}: language-model layers must output (batch, seq, features), "
                f"got shape {tuple(x.shape)}"
            )
        return x
    if x.ndim > 2:
        x = x.mean(dim=tuple(range(1, x.ndim - 1)))
    return x.reshape(x.shape[0], -1)


class _Proxy:
    """Imprinted cosine classifier of one layer: class sums while imprinting, hits while scoring."""

    def __init__(self) -> None:
        self.sums: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None
        self.weight: torch.Tensor | None = None
        self.correct = 0
        self.total = 0

    def imprint(self, feats: torch.Tensor, labels: torch.Tensor, n_classes: int) -> None:
        f = nn.functional.normalize(feats.to(torch.float64), dim=1)
        if self.sums is None:
            self.sums = f.new_zeros(n_classes, f.shape[1])
            self.counts = torch.zeros(n_classes, dtype=torch.int64, device=f.device)
        elif self.sums.shape[0] < n_classes:  # a larger label appeared: grow the table
            grow = n_classes - self.sums.shape[0]
            self.sums = torch.cat([self.sums, self.sums.new_zeros(grow, self.sums.shape[1])])
            self.counts = torch.cat([self.counts, self.counts.new_zeros(grow)])
        self.sums.index_add_(0, labels, f)
        self.counts += torch.bincount(labels, minlength=self.counts.shape[0])

    def finish(self) -> None:
        assert self.sums is not None and self.counts is not None
        w = nn.functional.normalize(self.sums / self.counts.clamp(min=1)[:, None], dim=1)
        # a class never seen while imprinting can never be predicted
        self.weight = torch.where(self.counts[:, None] > 0, w, torch.full_like(w, math.nan))

    def score(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        assert self.weight is not None
        f = nn.functional.normalize(feats.to(torch.float64), dim=1)
        sims = (f @ self.weight.T).nan_to_num(nan=-math.inf)
        self.correct += int((sims.argmax(dim=1) == labels).sum())
        self.total += int(labels.shape[0])

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else math.nan


# --------------------------------------------------------------------------------------------
# The two passes
# --------------------------------------------------------------------------------------------


class _Run:
    """State of one LWIQ computation: hooks, proxies, the current batch's labels."""

    def __init__(self, model: nn.Module, modules: dict[str, nn.Module], task: str) -> None:
        self.model = model
        self.modules = modules
        self.task = task
        self.proxies = {name: _Proxy() for name in modules}
        self.input_proxy = _Proxy()
        self.order: list[str] = []
        self.fired: set[str] = set()
        self.stop_at: str | None = None
        self.mode = "imprint"
        self.labels = torch.empty(0, dtype=torch.int64)
        self.n_classes = 0

    def hook(self, name: str) -> Callable[..., None]:
        module = self.modules[name]

        def fn(_mod: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if name in self.fired:
                raise ValueError(
                    f"layer {name!r} ran more than once in one forward pass; LWIQ scores layers "
                    "that run once per forward (shared modules are not supported)"
                )
            self.fired.add(name)
            if self.stop_at is None:
                self.order.append(name)
            if name == self.order[0] and args:
                self._feed(self.input_proxy, _pooled(args[0], module, self.task, name))
            self._feed(self.proxies[name], _pooled(output, module, self.task, name))
            if name == self.stop_at:
                raise _Stop

        return fn

    def _feed(self, proxy: _Proxy, feats: torch.Tensor) -> None:
        labels = self.labels.to(feats.device)
        if self.task == "lm":
            if feats.shape[1] != labels.shape[1] + 1:
                raise ValueError(
                    f"a layer's output has {feats.shape[1]} positions, the batch has "
                    f"{labels.shape[1] + 1} tokens"
                )
            feats = feats[:, :-1]
            keep = labels >= 0
            feats, labels = feats[keep], labels[keep]
        if self.mode == "imprint":
            proxy.imprint(feats, labels, self.n_classes)
        else:
            proxy.score(feats, labels)

    def forward(self, inputs: Any, mask: torch.Tensor | None, device: torch.device) -> None:
        self.fired.clear()
        first = self.stop_at is None
        try:
            if self.task == "lm":
                lm_forward(
                    self.model,
                    inputs.to(device),
                    attention_mask=None if mask is None else mask.to(device),
                )
            elif isinstance(inputs, Mapping):
                self.model(**{k: v.to(device) for k, v in inputs.items()})
            else:
                self.model(inputs.to(device))
        except _Stop:
            pass
        missing = [n for n in self.modules if n not in self.fired]
        if missing:
            raise ValueError(f"layers {missing!r} did not run during the model's forward pass")
        if first:
            self.stop_at = self.order[-1]


def _lm_labels(
    ids: torch.Tensor, labels: torch.Tensor | None, mask: torch.Tensor | None
) -> torch.Tensor:
    """Next-token targets (n, T-1); -1 where the position has no valid target."""
    if ids.ndim != 2 or ids.is_floating_point():
        raise ValueError(
            f"input_ids must be an integer tensor (batch, seq), got {tuple(ids.shape)}"
        )
    if ids.shape[1] < 2:
        raise ValueError("language-model batches need at least 2 tokens per sequence")
    nxt = (labels if labels is not None else ids)[:, 1:].to(torch.int64)
    valid = nxt >= 0
    if mask is not None:
        m = mask.bool()
        valid &= m[:, :-1] & m[:, 1:]
    return torch.where(valid, nxt, torch.full_like(nxt, -1))


def _class_labels(labels: Any, n: int, n_classes: int | None) -> torch.Tensor:
    if labels is None:
        raise ValueError(
            "data must yield (inputs, labels) pairs: a classifier's LWIQ needs class labels"
        )
    y = torch.as_tensor(labels)
    if y.ndim != 1 or y.shape[0] != n or y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(
            f"labels must be a 1-D integer tensor with one class index per sample ({n}), got "
            f"dtype {y.dtype} and shape {tuple(y.shape)}"
        )
    y = y.to(torch.int64)
    if n and int(y.min()) < 0:
        raise ValueError(f"labels must be class indices >= 0, got {int(y.min())}")
    if n and n_classes is not None and int(y.max()) >= n_classes:
        raise ValueError(f"labels must be < n_classes={n_classes}, got {int(y.max())}")
    return y


def _top_tokens(data: Iterable[Any], task: str, k: int) -> list[int]:
    """The k most frequent next tokens (ties: smaller id first)."""
    counts: Counter[int] = Counter()
    for batch in data:
        _, ids, labels, mask = _split_batch(batch, task)
        nxt = _lm_labels(torch.as_tensor(ids), labels, mask)
        values, n = torch.unique(nxt[nxt >= 0], return_counts=True)
        counts.update(dict(zip(values.tolist(), n.tolist(), strict=True)))
    if not counts:
        raise ValueError("data holds no next-token targets")
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [tok for tok, _ in ranked[:k]]


def _check_args(holdout: float, seed: Any, n_classes: Any, task: str) -> None:
    if task not in _TASKS:
        raise ValueError(f"task must be one of {_TASKS}, got {task!r}")
    if not (isinstance(holdout, (int, float)) and 0 < holdout < 1):
        raise ValueError(f"holdout must be a fraction in (0, 1), got {holdout!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if n_classes is not None and (
        isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2
    ):
        raise ValueError(f"n_classes must be an int >= 2 or None, got {n_classes!r}")


def lwiq(
    model: nn.Module,
    data: Iterable[Any],
    layers: str | Sequence[str] | None = None,
    *,
    n_classes: int | None = None,
    task: str = "auto",
    holdout: float = 0.25,
    temperature: float = 0.1,
    seed: int = 0,
) -> LWIQResult:
    """Score layers by layer-wise imprinting quantitation (LWIQ, arXiv 2408.01534).

    Parameters
    ----------
    model : torch.nn.Module
        A trained classifier (called as ``model(inputs)``) or causal language model (called as
        ``model(input_ids, attention_mask=...)``, returning logits or an object with ``.logits``).
    data : re-iterable of batches
        A list or ``DataLoader`` (read twice, in the same order; a one-shot iterator is refused).
        Classifiers: ``(inputs, labels)`` pairs with integer labels. Language models: token-id
        tensors ``(batch, seq)`` or dicts with ``input_ids`` (and optional ``attention_mask``,
        ``labels`` with -100 for ignored positions, as a tokenizer or collator returns them).
    layers : list of str, str or None
        Module names to score (as in ``model.named_modules()``), a regular expression matched in
        full against the names, or None for every Linear / Conv / GPT-2 ``Conv1D`` module.
    n_classes : int, optional
        Classifiers: the number of classes (default: inferred from the labels). Language models:
        how many of the most frequent next tokens serve as classes (default 64).
    task : {"auto", "classification", "lm"}
        ``"auto"`` reads it from the batches: pairs are classification, tensors or dicts of
        token ids are language modelling.
    holdout : float
        Fraction of the samples (of the sequences, for language models) held out to score the
        proxies; the rest imprints them.
    temperature : float
        Softmax temperature applied to the accuracy gains (see :func:`softmax_weights`).
    seed : int
        Seed of the imprint/held-out split. Same seed, data and model: identical result.

    Returns
    -------
    LWIQResult
        Accuracies, gains and importances in execution order; ``.weights`` maps names to
        importances.

    Raises
    ------
    ValueError
        Unknown layer names, data without labels where labels are needed, a layer that does not
        run, an empty imprint or held-out part, data that changes between the two passes.
    TypeError
        Data that is a one-shot iterator, or batches of an unknown kind.
    """
    _check_args(holdout, seed, n_classes, task)
    softmax_weights([0.0], temperature)  # validates temperature before any work
    if iter(data) is data:  # type: ignore[comparison-overlap]
        raise TypeError(
            "data must be re-iterable (a list, tuple or DataLoader): LWIQ reads it twice, "
            "got a one-shot iterator"
        )
    modules = _resolve_layers(model, layers)
    first = next(iter(data), None)
    if first is None:
        raise ValueError("data is empty")
    task = _split_batch(first, task)[0]
    run = _Run(model, modules, task)
    lookup = None
    classes: tuple[int, ...] = ()
    if task == "lm":
        top = _top_tokens(data, task, 64 if n_classes is None else n_classes)
        lookup = torch.full((max(top) + 1,), -1, dtype=torch.int64)
        lookup[torch.tensor(top)] = torch.arange(len(top))
        classes, run.n_classes = tuple(top), len(top)
    elif n_classes is not None:
        run.n_classes = n_classes

    device = _model_device(model)
    was_training = model.training
    handles = [m.register_forward_hook(run.hook(n)) for n, m in modules.items()]
    try:
        model.eval()
        with torch.no_grad():
            sums = _pass(run, data, "imprint", holdout, seed, lookup, device, n_classes, None)
            if run.input_proxy.sums is None:
                raise ValueError(
                    f"no samples left to imprint: lower holdout={holdout} or give more data"
                )
            for proxy in (run.input_proxy, *run.proxies.values()):
                proxy.finish()
            _pass(run, data, "score", holdout, seed, lookup, device, n_classes, sums)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    n_imprint = int(run.input_proxy.counts.sum()) if run.input_proxy.counts is not None else 0
    n_heldout = run.input_proxy.total
    if n_heldout == 0:
        raise ValueError(f"no held-out samples: raise holdout={holdout} or give more data")
    if task == "classification":
        classes = tuple(range(run.n_classes))
    acc = [run.proxies[n].accuracy for n in run.order]
    base = run.input_proxy.accuracy
    gains = [a - b for a, b in zip(acc, [base, *acc[:-1]], strict=True)]
    return LWIQResult(
        layers=tuple(run.order),
        accuracy=tuple(acc),
        input_accuracy=base,
        gains=tuple(gains),
        importance=softmax_weights(gains, temperature),
        n_imprint=n_imprint,
        n_heldout=n_heldout,
        classes=classes,
        task=task,
        temperature=float(temperature),
    )


def _pass(
    run: _Run,
    data: Iterable[Any],
    mode: str,
    holdout: float,
    seed: int,
    lookup: torch.Tensor | None,
    device: torch.device,
    n_classes: int | None,
    expected: list[tuple[int, int]] | None,
) -> list[tuple[int, int]]:
    """One pass over the data; imprinting rows or held-out rows only. Returns batch checksums."""
    run.mode = mode
    gen = torch.Generator().manual_seed(seed)
    sums: list[tuple[int, int]] = []
    for i, batch in enumerate(data):
        _, inputs, labels, mask = _split_batch(batch, run.task)
        n = _batch_size(inputs)
        if run.task == "lm":
            ids = torch.as_tensor(inputs)
            nxt = _lm_labels(ids, labels, mask)
            inside = (nxt >= 0) & (nxt < lookup.shape[0])
            y = torch.where(inside, lookup[nxt.clamp(0, lookup.shape[0] - 1)], -1)
            check = (n, int(ids.sum()))
        else:
            y = _class_labels(labels, n, n_classes)
            if n:
                run.n_classes = max(run.n_classes, int(y.max()) + 1)
            check = (n, int(y.sum()))
        sums.append(check)
        if expected is not None and (i >= len(expected) or expected[i] != check):
            raise ValueError(
                "data yielded different batches on its second pass (a shuffling DataLoader?); "
                "LWIQ needs the same batches in the same order each time it reads data"
            )
        held = torch.rand(n, generator=gen) < holdout
        rows = torch.nonzero(held if mode == "score" else ~held).flatten()
        if rows.numel() == 0:
            continue
        run.labels = y[rows]
        run.forward(_take(inputs, rows), None if mask is None else mask[rows], device)
    if expected is not None and len(sums) != len(expected):
        raise ValueError("data yielded a different number of batches on its second pass")
    return sums
