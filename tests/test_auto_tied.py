"""The automatic plan's tied token table (two-sided error: input lookup + LM head), the
per-row sensitivities it is weighted by, and the staged GPT-2 recipe (split_plan,
auto_gpt2_steps)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import tqla_torch  # noqa: E402
from tqla_torch.compression.auto_gpt2 import (  # noqa: E402
    auto_gpt2_steps,
    schedule_stages,
    split_plan,
)
from tqla_torch.compression.budget_plan import plan_for_budget  # noqa: E402
from tqla_torch.compression.calibrate import collect_statistics  # noqa: E402

TARGETS = r"transformer\.(wte|h\..*)"


def _gpt2(seed=0, n_layer=2):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=n_layer, n_embd=16, n_head=2, n_positions=16, vocab_size=64,
                     bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def _data(n=3, seed=0, vocab=48):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (2, 12), generator=g) for _ in range(n)]


def test_row_sensitivities_sum_to_the_module_sensitivity():
    model = _gpt2()
    mods = {"transformer.wte": model.transformer.wte, "lm_head": model.lm_head,
            "transformer.h.0.mlp.c_fc": model.transformer.h[0].mlp.c_fc}
    st = collect_statistics(model, _data(), mods)
    emb = st.row_sensitivity["transformer.wte"]
    assert emb.shape == (64,)
    assert float(emb.sum()) == pytest.approx(st.sensitivity["transformer.wte"], rel=1e-12)
    assert bool((emb[48:] == 0).all()) and bool((emb[:48] >= 0).all())  # unseen tokens: 0
    for name, width in (("lm_head", 64), ("transformer.h.0.mlp.c_fc", 64)):
        row = st.row_sensitivity[name]
        assert row.shape == (width,)
        assert float(row.mean()) == pytest.approx(st.sensitivity[name], rel=1e-12)
    assert float(st.row_sensitivity["lm_head"].min()) > 0  # every logit has a gradient
    assert not collect_statistics(model, _data(), mods, sensitivity=False).row_sensitivity


def test_row_sensitivity_of_a_linear_is_the_mean_squared_output_gradient():
    model = _gpt2()
    data = _data(n=1)
    head = model.lm_head
    grads = []

    def keep(module, args, out):
        out.register_hook(grads.append)

    h = head.register_forward_hook(keep)
    out = model(input_ids=data[0])
    lg = out.logits[:, :-1]
    torch.nn.functional.cross_entropy(lg.reshape(-1, 64), data[0][:, 1:].reshape(-1)).backward()
    h.remove()
    g = grads[0].double().reshape(-1, 64)
    st = collect_statistics(model, data, {"lm_head": head})
    torch.testing.assert_close(st.row_sensitivity["lm_head"], (g**2).mean(0), rtol=1e-9,
                               atol=0)


@pytest.mark.parametrize("sensitivity", ["fisher", "uniform"])
def test_tied_table_prediction_is_the_two_sided_error_of_the_fitted_table(sensitivity):
    model = _gpt2()
    data = _data()
    cfg = plan_for_budget(model, 0.6, data, target_modules=TARGETS, embeddings=True,
                          allow_dense=False, methods=["svd"], sensitivity=sensitivity)
    p, C = cfg.auto_plan.moments["transformer.wte"]
    assert p.shape == (64,) and C.shape == (16, 16)
    row = next(r for r in cfg.auto_plan.rows if r.name == "transformer.wte")
    # the error the plan predicted, measured on the fitted table: lookup + head terms
    mods = {"transformer.wte": model.transformer.wte, "lm_head": model.lm_head}
    st = collect_statistics(model, data, mods, sensitivity=sensitivity == "fisher")
    if sensitivity == "fisher":
        look, logit = st.row_sensitivity["transformer.wte"], st.row_sensitivity["lm_head"]
    else:
        look, logit = st.moments["transformer.wte"], torch.ones(64, dtype=torch.float64)
    S = st.moments["lm_head"]
    E = model.transformer.wte.weight.detach().double()
    student = copy.deepcopy(model)
    tqla_torch.compress(student, cfg)
    dE = E - student.transformer.wte.to_dense().detach().double()
    err2 = float((look[:, None] * dE * dE).sum() + (logit[:, None] * dE * (dE @ S)).sum())
    ref = float((look[:, None] * E * E).sum() + (logit[:, None] * E * (E @ S)).sum())
    assert row.predicted_error == pytest.approx((err2 / ref) ** 0.5, rel=1e-4)


def test_two_sided_fit_beats_one_sided_fits_on_the_summed_error():
    """The tied table's summed (lookup + head) Fisher error of the plan's two-sided fit is
    below that of the lookup-only (token frequencies) and the plain fit at the same rank."""
    from tqla_torch.nn.lowrank import LowRankEmbedding

    model = _gpt2()
    data = _data()
    cfg = plan_for_budget(model, 0.6, data, target_modules=TARGETS, embeddings=True,
                          allow_dense=False, methods=["svd"])
    r = next(r for r in cfg.auto_plan.rows if r.name == "transformer.wte").rank
    mods = {"transformer.wte": model.transformer.wte, "lm_head": model.lm_head}
    st = collect_statistics(model, data, mods)
    look, logit = st.row_sensitivity["transformer.wte"], st.row_sensitivity["lm_head"]
    S, E = st.moments["lm_head"], model.transformer.wte.weight.detach().double()

    def err(moment):
        fit = LowRankEmbedding.from_embedding(model.transformer.wte, r, moment=moment,
                                              damp=0.01)
        dE = E - fit.to_dense().detach().double()
        return float((look[:, None] * dE * dE).sum() + (logit[:, None] * dE * (dE @ S)).sum())

    two = err(cfg.auto_plan.moments["transformer.wte"])
    assert two < err(st.moments["transformer.wte"]) and two < err(None)


def test_pair_moment_with_identity_weights_is_the_plain_fit():
    from tqla_torch.nn.lowrank import LowRankEmbedding

    emb = _gpt2().transformer.wte
    plain = LowRankEmbedding.from_embedding(emb, 3).to_dense()
    pair = (torch.ones(64, dtype=torch.float64), torch.eye(16, dtype=torch.float64))
    same = LowRankEmbedding.from_embedding(emb, 3, moment=pair).to_dense()
    torch.testing.assert_close(same, plain, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="column weight must be a"):
        LowRankEmbedding.from_embedding(emb, 3, moment=(pair[0], torch.eye(15)))
    with pytest.raises(ValueError, match="row weights must be a"):
        LowRankEmbedding.from_embedding(emb, 3, moment=(torch.ones(63), pair[1]))


def test_split_plan_stages_compose_to_the_whole_plan():
    model = _gpt2()
    cfg = plan_for_budget(model, 0.6, _data(), target_modules=TARGETS, embeddings=True,
                          allow_dense=False, methods=["svd"])
    names = list(cfg.target_modules)
    stages = split_plan(cfg, [names[:2], [], names[2:]])
    assert stages[1] is None
    whole, staged = copy.deepcopy(model), copy.deepcopy(model)
    tqla_torch.compress(whole, cfg)
    for s in stages:
        if s is not None:
            tqla_torch.compress(staged, s)
    for (k, a), (k2, b) in zip(whole.state_dict().items(), staged.state_dict().items()):
        assert k == k2
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the same fits
    with pytest.raises(ValueError, match="exactly once"):
        split_plan(cfg, [names, names[:1]])
    with pytest.raises(ValueError, match="plan_for_budget"):
        split_plan(tqla_torch.CompressionConfig(target_modules="x", method="svd", rank=1), [[]])


def test_auto_gpt2_steps_schedules():
    model = _gpt2(n_layer=4)
    data = _data()
    budget = 0.7
    front = auto_gpt2_steps(model, data, budget=budget, methods=["svd"])
    assert front[0] is not None and front[1] is None and front[2] is None
    split = schedule_stages(front[0], "split")
    assert split[2] is None
    assert sorted(split[0].target_modules + split[1].target_modules) == sorted(
        front[0].target_modules)
    assert all(".h.2." in n or ".h.3." in n for n in split[1].target_modules)
    legacy = auto_gpt2_steps(model, data, budget=budget, methods=["svd"],
                             schedule="permuted-embedding")
    from tqla_torch.compression.presets import tq_gpt2_steps

    assert legacy[0].to_dict() == tq_gpt2_steps()[0].to_dict()
    total = model.num_parameters()
    for stages in (front, legacy):
        m = copy.deepcopy(model)
        for s in stages:
            if s is not None:
                tqla_torch.compress(m, s)
        assert sum(p.numel() for p in m.parameters()) <= int(budget * total)
    with pytest.raises(ValueError, match="schedule must be one of"):
        auto_gpt2_steps(model, data, schedule="back")
    np.testing.assert_equal(len(front), 3)
