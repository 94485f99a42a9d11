"""LWIQ layer importance (tqla_torch.compression.importance) and budget-aware ranks
(tqla_torch.compression.ranks)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from tqla_torch.compression.importance import lwiq, softmax_weights
from tqla_torch.compression.ranks import (
    RankAllocator,
    allocate_by_error,
    allocate_ranks,
    resolve_budget,
    uniform_ranks,
)

# --------------------------------------------------------------------------------------------
# Models and data
# --------------------------------------------------------------------------------------------


class _ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.fc = nn.Linear(6, 3)
        self.fc_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        self.fc_calls += 1
        return self.fc(h.mean(dim=(2, 3)))


def _image_data(
    n: int = 240, batch: int = 50, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 1, 6, 6, generator=g, dtype=torch.float64)
    x[:, 0, :3] += y[:, None, None].double() - 1.0  # class signal in the top half
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


def _convnet(seed: int = 0) -> _ConvNet:
    torch.manual_seed(seed)
    return _ConvNet().double().eval()


def _brute_accuracy(feats, labels, held, n_classes):
    """Imprinted cosine classifier written out plainly in NumPy."""
    f = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    means = np.stack([f[~held & (labels == c)].mean(axis=0) for c in range(n_classes)])
    w = means / np.linalg.norm(means, axis=1, keepdims=True)
    pred = np.argmax(f[held] @ w.T, axis=1)
    return float(np.mean(pred == labels[held]))


def _held_mask(data, holdout, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([torch.rand(len(y), generator=gen) < holdout for _, y in data]).numpy()


# --------------------------------------------------------------------------------------------
# LWIQ: classifiers
# --------------------------------------------------------------------------------------------


def test_lwiq_matches_plain_imprinting_on_a_cnn():
    model, data = _convnet(), _image_data()
    res = lwiq(model, data, layers=["conv1", "conv2"], seed=3, holdout=0.3)
    x = torch.cat([b[0] for b in data])
    y = torch.cat([b[1] for b in data]).numpy()
    held = _held_mask(data, 0.3, 3)
    with torch.no_grad():
        h1 = model.conv1(x)
        h2 = model.conv2(torch.relu(h1))
    feats = {
        "input": x.mean(dim=(2, 3)).numpy(),
        "conv1": h1.mean(dim=(2, 3)).numpy(),
        "conv2": h2.mean(dim=(2, 3)).numpy(),
    }
    acc = {k: _brute_accuracy(v, y, held, 3) for k, v in feats.items()}
    assert res.layers == ("conv1", "conv2")
    assert res.n_heldout == int(held.sum()) and res.n_imprint == int((~held).sum())
    assert res.input_accuracy == pytest.approx(acc["input"], abs=1e-12)
    assert res.accuracy == pytest.approx((acc["conv1"], acc["conv2"]), abs=1e-12)
    assert res.gains == pytest.approx((acc["conv1"] - acc["input"], acc["conv2"] - acc["conv1"]))
    assert res.importance == pytest.approx(softmax_weights(res.gains, 0.1))
    assert res.classes == (0, 1, 2) and res.task == "classification"


def test_lwiq_is_deterministic_for_a_seed():
    data = _image_data()
    a = lwiq(_convnet(), data, seed=7)
    b = lwiq(_convnet(), data, seed=7)
    assert a == b  # the same code path twice: exact
    c = lwiq(_convnet(), data, seed=8)
    assert (c.n_imprint, c.accuracy) != (a.n_imprint, a.accuracy)


def test_layer_that_destroys_information_gets_low_importance():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():  # layer "2" maps everything to one constant vector
        model[2].weight.zero_()
        model[2].bias.fill_(1.0)
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 3, (300,), generator=g)
    x = torch.randn(300, 4, generator=g) + 3 * nn.functional.one_hot(y, 4).float()
    res = lwiq(model, [(x[:150], y[:150]), (x[150:], y[150:])], layers=["0", "2"])
    assert res.accuracy[0] > 0.9
    assert res.gains[1] < -0.5  # chance level after the constant layer
    assert res.weights["2"] < res.weights["0"]
    assert sum(res.importance) == pytest.approx(1.0)


def test_forward_stops_after_the_last_layer_and_hooks_are_removed():
    model, data = _convnet(), _image_data()
    model.train()
    lwiq(model, data, layers=["conv1", "conv2"])
    assert model.fc_calls == 1  # only the first forward, which learns the layer order, runs on
    assert model.training  # mode restored
    assert not any(m._forward_hooks for m in model.modules())


def test_layers_regex_and_default():
    model, data = _convnet(), _image_data()
    assert lwiq(model, data, layers=r"conv\d").layers == ("conv1", "conv2")
    assert lwiq(model, data).layers == ("conv1", "conv2", "fc")


def test_lwiq_bad_input():
    model, data = _convnet(), _image_data()
    with pytest.raises(ValueError, match=r"layers names \['conv9'\]"):
        lwiq(model, data, layers=["conv1", "conv9"])
    with pytest.raises(ValueError, match="float tensor without labels"):
        lwiq(model, [b[0] for b in data])
    with pytest.raises(ValueError, match="class labels|pairs"):
        lwiq(model, [(b[0], None) for b in data])
    with pytest.raises(ValueError, match="labels must be < n_classes=2"):
        lwiq(model, data, n_classes=2)
    with pytest.raises(TypeError, match="re-iterable"):
        lwiq(model, iter(data))
    with pytest.raises(ValueError, match="holdout"):
        lwiq(model, data, holdout=1.0)
    with pytest.raises(ValueError, match="temperature"):
        lwiq(model, data, temperature=0)
    with pytest.raises(ValueError, match="task"):
        lwiq(model, data, task="regression")


def test_data_that_changes_between_passes_is_refused():
    model, data = _convnet(), _image_data()

    class Shuffled:
        calls = 0

        def __iter__(self):
            Shuffled.calls += 1
            return iter(data if Shuffled.calls % 2 else data[::-1])

    with pytest.raises(ValueError, match="different batches"):
        lwiq(model, Shuffled())


# --------------------------------------------------------------------------------------------
# LWIQ: causal language models
# --------------------------------------------------------------------------------------------


class _TinyLM(nn.Module):
    def __init__(self, vocab: int = 12, width: int = 8) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        self.mix = nn.Linear(width, width)
        self.head = nn.Linear(width, vocab)

    def forward(self, ids: torch.Tensor, **_: object) -> torch.Tensor:
        return self.head(torch.tanh(self.mix(self.emb(ids))))


def _lm_data(n: int = 24, seq: int = 10, vocab: int = 12, batch: int = 6):
    g = torch.Generator().manual_seed(0)
    start = torch.randint(0, vocab, (n, 1), generator=g)
    ids = (start + torch.arange(seq) * 1) % vocab  # next token = token + 1: learnable
    ids[:, 5] = torch.randint(0, vocab, (n,), generator=g)
    return [ids[i : i + batch] for i in range(0, n, batch)]


def test_lwiq_on_a_causal_lm_matches_plain_imprinting():
    torch.manual_seed(0)
    model, data = _TinyLM().double(), _lm_data()
    k = 5
    res = lwiq(model, data, layers=["mix"], n_classes=k, seed=1, holdout=0.4)
    ids = torch.cat(data)
    nxt = ids[:, 1:].numpy()
    values, counts = np.unique(nxt, return_counts=True)
    top = [int(v) for v, _ in sorted(zip(values, counts), key=lambda t: (-t[1], t[0]))[:k]]
    assert res.classes == tuple(top) and res.task == "lm"
    with torch.no_grad():
        h = model.mix(model.emb(ids))[:, :-1].numpy()
        e = model.emb(ids)[:, :-1].numpy()
    held_seq = _held_mask([(None, b) for b in data], 0.4, 1)
    keep = np.isin(nxt, top)
    lab = np.vectorize({t: i for i, t in enumerate(top)}.get)(np.where(keep, nxt, top[0]))
    held = np.broadcast_to(held_seq[:, None], nxt.shape)[keep]
    acc_mix = _brute_accuracy(h[keep], lab[keep], held, k)
    acc_in = _brute_accuracy(e[keep], lab[keep], held, k)
    assert res.accuracy[0] == pytest.approx(acc_mix, abs=1e-12)
    assert res.input_accuracy == pytest.approx(acc_in, abs=1e-12)
    assert res.n_heldout == int(held.sum())


def test_lwiq_lm_dict_batches_with_mask_equal_tensor_batches():
    torch.manual_seed(0)
    model, data = _TinyLM(), _lm_data()
    a = lwiq(model, data, layers=["mix", "head"], seed=2)
    dicts = [{"input_ids": b, "attention_mask": torch.ones_like(b)} for b in data]
    b = lwiq(model, dicts, layers=["mix", "head"], seed=2)
    assert a == b
    masked = [
        {"input_ids": d["input_ids"], "attention_mask": d["attention_mask"].clone()} for d in dicts
    ]
    for d in masked:
        d["attention_mask"][:, 6:] = 0
    c = lwiq(model, masked, layers=["mix", "head"], seed=2)
    assert c.n_imprint + c.n_heldout < a.n_imprint + a.n_heldout


def test_lwiq_on_tiny_gpt2_is_deterministic():
    from _tiny import tiny_gpt2

    model = tiny_gpt2()
    g = torch.Generator().manual_seed(0)
    data = [torch.randint(0, 96, (4, 16), generator=g) for _ in range(3)]
    a = lwiq(model, data, layers=r"transformer\.h\.\d+\.mlp\.c_fc", n_classes=16, seed=0)
    b = lwiq(model, data, layers=r"transformer\.h\.\d+\.mlp\.c_fc", n_classes=16, seed=0)
    assert a == b and len(a.layers) == 4 and len(a.classes) == 16
    with pytest.raises(ValueError, match="pairs"):
        lwiq(model, [{"input_ids": d} for d in data], task="classification")


# --------------------------------------------------------------------------------------------
# Budget-aware ranks
# --------------------------------------------------------------------------------------------


def _tt_like(a: int, b: int):
    """Parameters of a 3-core TT-like layer with both inner ranks r: a·r + r²·b + a·r."""
    return lambda r: 2 * a * r + b * r * r


layer_spec = st.tuples(
    st.integers(1, 40), st.integers(0, 30), st.integers(1, 24), st.floats(0.05, 5)
)


@given(st.lists(layer_spec, min_size=1, max_size=6), st.floats(0, 1), st.integers(0, 500))
def test_bisection_meets_the_budget_within_one_rank_step(specs, where, fixed):
    names = [f"l{i}" for i in range(len(specs))]
    params = {n: _tt_like(a, b) for n, (a, b, _, _) in zip(names, specs)}
    r_max = {n: rm for n, (_, _, rm, _) in zip(names, specs)}
    weights = {n: w for n, (*_, w) in zip(names, specs)}
    alloc_ = RankAllocator(weights, params, r_max=r_max, fixed_params=fixed)
    lo, hi = alloc_.feasible
    budget = int(lo + where * (hi - lo))
    alloc = alloc_.allocate(budget)
    assert alloc.params == alloc_.total(alloc.ranks) <= budget
    assert alloc.ranks == alloc_.ranks(alloc.kappa)  # the κ rule, nothing else
    assert all(1 <= alloc.ranks[n] <= r_max[n] for n in names)
    if alloc.next_params is None:
        assert alloc.ranks == r_max
    else:  # the next κ breakpoint adds one rank to some layers and exceeds the budget
        assert alloc.next_params > budget
        nxt = alloc_.ranks(alloc.kappa * (1 + 1e-9))
        assert all(0 <= nxt[n] - alloc.ranks[n] <= 1 for n in names)
        assert alloc_.total(nxt) == alloc.next_params
        if len(set(weights.values())) == len(names):  # no ties: one layer's rank step
            steps = [
                params[n](alloc.ranks[n] + 1) - params[n](alloc.ranks[n])
                for n in names
                if alloc.ranks[n] < r_max[n]
            ]
            assert budget - alloc.params < max(steps)


def test_a_new_budget_only_moves_kappa():
    params = {n: _tt_like(a, 4) for n, a in zip("abcd", (8, 16, 16, 32))}
    alloc_ = RankAllocator({"a": 0.1, "b": 0.4, "c": 0.2, "d": 0.3}, params, r_max=32)
    prev = None
    for budget in np.linspace(alloc_.feasible[0], alloc_.feasible[1], 12).astype(int):
        alloc = alloc_.allocate(int(budget))
        if prev is not None:  # larger budget: larger κ, no rank smaller
            assert alloc.kappa >= prev.kappa
            assert all(alloc.ranks[n] >= prev.ranks[n] for n in params)
        prev = alloc
    # more important layers never get smaller ranks (same r_ref, same r_max)
    mid = alloc_.allocate(int(np.mean(alloc_.feasible)))
    assert mid.ranks["b"] >= mid.ranks["d"] >= mid.ranks["c"] >= mid.ranks["a"]


def test_impossible_budget_names_budget_and_range():
    params = {"a": lambda r: 10 * r, "b": lambda r: 10 * r}
    with pytest.raises(ValueError, match=r"budget=15 .*between 20 and 160"):
        allocate_ranks({"a": 1, "b": 2}, params, 15, r_max=8)
    with pytest.raises(ValueError, match=r"budget=0\.1 \(100 parameters\).*between 1020 and 1160"):
        allocate_ranks({"a": 1, "b": 2}, params, 0.1, r_max=8, fixed_params=1000, total_params=1000)
    with pytest.raises(ValueError, match=r"budget=15 .*between 20 and 160"):
        allocate_by_error({"a": [1.0] * 8, "b": [1.0] * 8}, params, 15)
    with pytest.raises(ValueError, match=r"fraction must lie in \(0, 1\]"):
        resolve_budget(1.5, 100)
    with pytest.raises(ValueError, match="exceeds"):
        resolve_budget(101, 100)


def test_allocator_bad_input():
    p = {"a": lambda r: r}
    with pytest.raises(ValueError, match="same layers"):
        allocate_ranks({"b": 1.0}, p, 3, r_max=4)
    with pytest.raises(ValueError, match="never decreases"):
        allocate_ranks({"a": 1.0}, {"a": lambda r: 10 - r}, 9, r_max=4)
    with pytest.raises(ValueError, match="r_max must be >= 1"):
        allocate_ranks({"a": 1.0}, p, 3, r_max=0)
    with pytest.raises(ValueError, match="weights must be finite"):
        allocate_ranks({"a": -1.0}, p, 3, r_max=4)


def test_large_budget_gives_r_max_and_uniform_gives_equal_ranks():
    params = {n: (lambda r, c=c: c * r) for n, c in zip("abc", (5, 10, 20))}
    alloc = allocate_ranks({"a": 1, "b": 2, "c": 3}, params, 10_000, r_max=6)
    assert alloc.ranks == {"a": 6, "b": 6, "c": 6} and alloc.next_params is None
    uni = uniform_ranks(params, 35 * 3 + 1, r_max=16)
    assert uni.ranks == {"a": 3, "b": 3, "c": 3} and uni.method == "uniform"


@given(
    st.lists(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5), min_size=1, max_size=3),
    st.integers(0, 12),
)
def test_error_greedy_is_optimal_for_convex_curves_and_unit_costs(drops, extra):
    names = [f"l{i}" for i in range(len(drops))]
    curves = {}
    for n, d in zip(names, drops):  # decreasing drops -> convex, non-increasing curve
        steps = sorted(d, reverse=True)
        curves[n] = [10.0 - s for s in itertools.accumulate([0.0, *steps])]
    params = {n: (lambda r: r) for n in names}
    budget = len(names) + extra
    alloc = allocate_by_error(curves, params, budget)
    assert alloc.params <= budget
    best = min(
        sum(curves[n][r - 1] for n, r in zip(names, rs))
        for rs in itertools.product(*[range(1, len(curves[n]) + 1) for n in names])
        if sum(rs) <= budget
    )
    got = sum(curves[n][alloc.ranks[n] - 1] for n in names)
    assert got == pytest.approx(best, abs=1e-9)


def test_error_greedy_looks_past_flat_stretches():
    curves = {"flat": [1.0, 1.0, 1.0, 0.0], "slope": [1.0, 0.9, 0.8, 0.7]}
    params = {"flat": lambda r: r, "slope": lambda r: r}
    alloc = allocate_by_error(curves, params, 5)  # 3 extra parameters to spend
    assert alloc.ranks == {"flat": 4, "slope": 1}
    weighted = allocate_by_error(curves, params, 5, weights={"flat": 0.01, "slope": 1.0})
    assert weighted.ranks == {"flat": 1, "slope": 4}
    assert math.isclose(sum(softmax_weights([0.3, -0.2, 0.1])), 1.0)


@pytest.mark.parametrize(
    "module", ["tqla_torch.compression.importance", "tqla_torch.compression.ranks"]
)
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_plan_ranks_on_a_cnn_meets_the_budget():
    from tqla_torch.compression.ranks import plan_ranks, weight_params

    model, data = _convnet(), _image_data()
    names = ["conv1", "conv2"]
    params = {"conv1": lambda r: r * (9 + 4), "conv2": lambda r: r * (36 + 6)}
    total, fixed = weight_params(model, names)
    assert total - fixed == 4 * 9 + 6 * 36
    for method in ("lwiq", "uniform"):
        alloc, scores = plan_ranks(
            model, params, 0.8, r_max={"conv1": 4, "conv2": 6}, method=method, data=data, seed=0
        )
        assert alloc.params <= int(0.8 * total) and (scores is None) == (method != "lwiq")
    # scoring both convolutions at conv2's output gives them the same weight
    alloc, scores = plan_ranks(
        model, params, 0.8, r_max=6, data=data, score_at={"conv1": "conv2", "conv2": "conv2"}
    )
    assert scores.layers == ("conv2",) and alloc.ranks["conv1"] == alloc.ranks["conv2"]
    with pytest.raises(ValueError, match="no scoring module"):
        plan_ranks(model, params, 0.8, r_max=6, data=data, score_at={"conv1": "conv2"})
    with pytest.raises(ValueError, match="needs data"):
        plan_ranks(model, params, 0.8, r_max=4)
    with pytest.raises(ValueError, match="needs errors"):
        plan_ranks(model, params, 0.8, r_max=4, method="frobenius")


def test_blocks_with_image_outputs_pool_over_space():
    """A non-conv module with a (batch, channels, h, w) output is pooled over h, w."""
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(1, 5, 3, padding=1), nn.ReLU())
    model = nn.Sequential(block, nn.Flatten(), nn.Linear(5 * 36, 3)).double().eval()
    data = _image_data()
    res = lwiq(model, data, layers=["0"], seed=1)
    x = torch.cat([b[0] for b in data])
    y = torch.cat([b[1] for b in data]).numpy()
    held = _held_mask(data, 0.25, 1)
    with torch.no_grad():
        feats = block(x).mean(dim=(2, 3)).numpy()
    assert res.accuracy[0] == pytest.approx(_brute_accuracy(feats, y, held, 3), abs=1e-12)
    assert res.input_accuracy == pytest.approx(
        _brute_accuracy(x.mean(dim=(2, 3)).numpy(), y, held, 3), abs=1e-12
    )
