"""compress is transactional: a failure part-way leaves the model exactly untouched."""

from __future__ import annotations

import pytest
import torch

from tqla_torch import CompressionError, compress, presets
from tqla_torch.compression import apply as apply_mod

pytest.importorskip("transformers")
from _tiny import tiny_gpt2  # noqa: E402

HISTORY = apply_mod.HISTORY_ATTR


def _snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        {n: type(m) for n, m in model.named_modules()},
        model.config.tie_word_embeddings,
        model.lm_head.weight is model.transformer.wte.weight,
    )


def _assert_untouched(model, snap):
    state, types, tie, tied = snap
    now = model.state_dict()
    assert set(now) == set(state)
    for k, v in state.items():
        # exact: nothing may have been written (NaN entries compared as equal)
        torch.testing.assert_close(now[k], v, rtol=0, atol=0, equal_nan=True)
    assert {n: type(m) for n, m in model.named_modules()} == types
    assert model.config.tie_word_embeddings == tie
    assert (model.lm_head.weight is model.transformer.wte.weight) == tied
    assert not hasattr(model, HISTORY)


def test_nan_in_one_matrix_leaves_the_model_untouched_and_names_it():
    """The reproduction of issue 9 item 5: a NaN in one MLP matrix, after the embedding."""
    model = tiny_gpt2()
    with torch.no_grad():
        model.transformer.h[3].mlp.c_fc.weight[2, 5] = float("nan")
    snap = _snapshot(model)
    with pytest.raises(CompressionError, match=r"module 'transformer\.h\.3\.mlp\.c_fc'") as info:
        compress(model, presets.tq_gpt2(n_iter=1))
    assert "left unchanged" in str(info.value)
    assert isinstance(info.value, ValueError)
    _assert_untouched(model, snap)
    # the model is still usable and compressible once the weight is repaired
    with torch.no_grad():
        model.transformer.h[3].mlp.c_fc.weight[2, 5] = 0.0
    report = compress(model, presets.tq_gpt2(n_iter=1))
    assert report.applied and len(getattr(model, HISTORY)) == 1


def test_failure_while_swapping_rolls_back(monkeypatch):
    model = tiny_gpt2()
    snap = _snapshot(model)

    def broken_retie(*args, **kwargs):
        raise RuntimeError("planted failure after the embedding was swapped")

    monkeypatch.setattr(apply_mod, "_retie", broken_retie)
    with pytest.raises(RuntimeError, match="planted failure"):
        compress(model, presets.tq_gpt2(n_iter=1))
    _assert_untouched(model, snap)


@pytest.mark.parametrize("tie", [True, False])
def test_rollback_restores_ties(monkeypatch, tie):
    """A failure after the head was re-tied or untied puts the original head back."""
    model = tiny_gpt2()
    snap = _snapshot(model)
    calls = {"n": 0}
    real_swap = apply_mod._swap

    def swap_then_fail(model_, name, new, undo):
        real_swap(model_, name, new, undo)
        calls["n"] += 1
        if name == "lm_head":
            raise RuntimeError("planted failure after the head")

    monkeypatch.setattr(apply_mod, "_swap", swap_then_fail)
    with pytest.raises(RuntimeError, match="planted failure after the head"):
        compress(model, presets.tq_gpt2(n_iter=1, tie_lm_head=tie))
    assert calls["n"] >= 2
    _assert_untouched(model, snap)
