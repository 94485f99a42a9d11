"""plan_for_budget, calibration statistics and activation-aware compress (tqla_torch)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from torch import nn  # noqa: E402

import tqla_torch  # noqa: E402
from tqla_torch.compression.budget_plan import (  # noqa: E402
    allocate,
    layer_curves,
    plan_for_budget,
)
from tqla_torch.compression.calibrate import collect_statistics  # noqa: E402


def _gpt2(seed=0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=2, n_embd=16, n_head=2, n_positions=16, vocab_size=64,
                     bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def _data(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 64, (2, 12), generator=g) for _ in range(n)]


B_SHAPES = [(2, 2), (4, 2)]


class ZeroFed(nn.Module):
    """lin2 only ever sees zeros; lin3 is never called."""

    def __init__(self):
        super().__init__()
        self.lin1 = nn.Linear(8, 8)
        self.lin2 = nn.Linear(8, 8)
        self.lin3 = nn.Linear(8, 8)

    def forward(self, x):
        return self.lin1(x) + self.lin2(torch.zeros_like(x))


# --------------------------------------------------------------------------------------
# budget, determinism
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", [0.6, 0.75, 0.9, 5_500])
def test_plan_never_exceeds_the_budget(budget):
    model = _gpt2()
    cfg = plan_for_budget(model, budget, _data(), b_shapes=B_SHAPES)
    total = tqla_torch.count_parameters(model)
    limit = budget if isinstance(budget, int) else int(np.floor(budget * total))
    rep = tqla_torch.inspect(model, cfg)
    assert rep.params_after <= limit
    assert rep.params_after == cfg.auto_plan.params_after
    # and it uses the budget: no single further step of any module would have fit
    assert rep.params_after >= limit - 2 * (16 + 64) - 64


def test_plan_is_deterministic_for_a_seed():
    a = plan_for_budget(_gpt2(), 0.7, _data(), b_shapes=B_SHAPES, seed=3)
    b = plan_for_budget(_gpt2(), 0.7, _data(), b_shapes=B_SHAPES, seed=3)
    assert a.to_dict() == b.to_dict()
    assert [r.predicted_error for r in a.auto_plan.rows] == [r.predicted_error for r in b.auto_plan.rows]


def test_compress_meets_the_plan_and_reports_predicted_errors():
    model = _gpt2()
    cfg = plan_for_budget(model, 0.7, _data(), b_shapes=B_SHAPES)
    insp = tqla_torch.inspect(model, cfg)
    assert "pred. error" in str(insp)
    # inspect shows each module's chosen method, shape, rank and predicted error
    shown = {m.name: m for m in insp.modules}
    assert set(shown) == {r.name for r in cfg.auto_plan.rows if r.method != "dense"}
    for r in cfg.auto_plan.rows:
        if r.method != "dense":
            m = shown[r.name]
            assert (m.method, m.rank, m.params_after) == (r.method, r.rank, r.params_after)
            assert m.predicted_error == r.predicted_error
            if r.shape is not None:
                assert [list(v) for v in m.shape] == r.shape
    rep = tqla_torch.compress(model, cfg)
    assert rep.params_after == cfg.auto_plan.params_after
    assert all(m.predicted_error is not None for m in rep.modules)


def test_zero_inputs_get_the_smallest_representation():
    model = ZeroFed()
    data = [torch.randn(5, 8) for _ in range(2)]
    cfg = plan_for_budget(model, 0.9, data, target_modules=["lin1", "lin2"], sensitivity="uniform",
                          b_shapes=[(2, 2), (1, 2)])
    rows = {r.name: r for r in cfg.auto_plan.rows}
    W = model.lin2.weight
    smallest = min(c.params for c in layer_curves(W, torch.zeros(8, 8), bias=8, b_shapes=[(2, 2), (1, 2)]))
    assert rows["lin2"].params_after == smallest
    assert rows["lin2"].predicted_error == 0.0
    assert rows["lin1"].params_after > smallest


def test_allocation_follows_the_weights():
    # two identical curves: the heavier-weighted module gets at least as many parameters
    W = torch.randn(8, 8, generator=torch.Generator().manual_seed(0))
    C = torch.eye(8, dtype=torch.float64)
    cur = layer_curves(W, C, bias=0, methods=["svd"], allow_dense=False)
    got = allocate({"a": cur, "b": cur}, {"a": 10.0, "b": 1.0}, 4 * 16)
    assert got["a"].params > got["b"].params


# --------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------
def test_moments_stream_over_batches_and_dataloader_of_dicts():
    model = _gpt2()
    mods = {"transformer.h.0.mlp.c_fc": model.transformer.h[0].mlp.c_fc}
    ids = torch.cat(_data())
    seen = []
    h = mods["transformer.h.0.mlp.c_fc"].register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().reshape(-1, 16)))
    st = collect_statistics(model, [{"input_ids": b} for b in _data()], mods, sensitivity=False)
    h.remove()
    X = torch.cat(seen).double()
    torch.testing.assert_close(st.moments["transformer.h.0.mlp.c_fc"], X.T @ X / X.shape[0])
    loader = torch.utils.data.DataLoader([{"input_ids": r} for r in ids], batch_size=2)
    st2 = collect_statistics(model, loader, mods, sensitivity=True)
    torch.testing.assert_close(st2.moments["transformer.h.0.mlp.c_fc"], st.moments["transformer.h.0.mlp.c_fc"])
    assert st2.sensitivity["transformer.h.0.mlp.c_fc"] > 0
    assert all(p.grad is None for p in model.parameters())


# --------------------------------------------------------------------------------------
# activation-aware compress
# --------------------------------------------------------------------------------------
FIT_OPTIONS = {
    "svd": {"rank": 3},
    "kron": {"b_shape": [2, 2], "rank": 2},
    "permuted_kron": {"b_shape": [2, 2], "rank": 2, "n_iter": 2},
    "spectral_kron": {"b_shape": [2, 2], "rank": 2, "p": [8], "n_iter": 5},
    "tt": {"rank": 3, "tt_cores": 2},
}


@pytest.mark.parametrize("method", sorted(FIT_OPTIONS))
def test_identity_moments_give_the_plain_fit(method):
    extra = FIT_OPTIONS[method]
    cfg = tqla_torch.CompressionConfig(target_modules=["c_fc"], method=method, **extra)
    a, b = _gpt2(), _gpt2()
    tqla_torch.compress(a, cfg)
    names = [n for n, _ in b.named_modules() if n.endswith("c_fc")]
    tqla_torch.compress(b, cfg, moments={n: torch.eye(16, dtype=torch.float64) for n in names})
    for n in names:
        wa, wb = a.get_submodule(n).to_dense(), b.get_submodule(n).to_dense()
        torch.testing.assert_close(wa, wb, atol=1e-5, rtol=1e-5)


def test_activation_aware_svd_reduces_the_output_error():
    model = _gpt2()
    name = "transformer.h.0.mlp.c_proj"
    mod = model.get_submodule(name)
    g = torch.Generator().manual_seed(1)
    X = torch.randn(400, 64, generator=g) * torch.linspace(0.05, 3, 64)
    C = (X.T @ X / 400).double()
    cfg = tqla_torch.CompressionConfig(target_modules=[name], method="svd", rank=4)
    plain, aware = copy.deepcopy(model), copy.deepcopy(model)
    tqla_torch.compress(plain, cfg)
    tqla_torch.compress(aware, cfg, moments={name: C}, damp=0.0)
    y = mod(X)
    e_plain = (plain.get_submodule(name)(X) - y).norm()
    e_aware = (aware.get_submodule(name)(X) - y).norm()
    assert e_aware < e_plain  # the whitened fit is optimal on these inputs


@pytest.mark.parametrize("method", ["spectral_kron", "tt"])
def test_activation_aware_spectral_and_tt_fit_the_inputs(method):
    # inputs whose moment is C1⊗C2 over the column split: the whitened fit is the right one
    model = _gpt2()
    name = "transformer.h.0.mlp.c_proj"  # 64 → 16
    mod = model.get_submodule(name)
    g = torch.Generator().manual_seed(2)
    X = torch.randn(2000, 64, generator=g) * torch.kron(torch.linspace(0.1, 3, 32),
                                                        torch.tensor([1.0, 0.2]))
    C = (X.T @ X / 2000).double()
    opts = {"b_shape": [2, 2], "rank": 2, "p": [8], "n_iter": 20} if method == "spectral_kron" else {
        "rank": 2, "tt_cores": 2}
    cfg = tqla_torch.CompressionConfig(target_modules=[name], method=method, **opts)
    plain, aware = copy.deepcopy(model), copy.deepcopy(model)
    tqla_torch.compress(plain, cfg)
    tqla_torch.compress(aware, cfg, moments={name: C}, damp=0.0)
    with torch.no_grad():
        y = mod(X)
        e_plain = (plain.get_submodule(name)(X) - y).norm()
        e_aware = (aware.get_submodule(name)(X) - y).norm()
    assert e_aware < 0.9 * e_plain


def test_methods_without_an_activation_aware_fit_are_named():
    cfg = tqla_torch.CompressionConfig(
        target_modules=["c_fc"], method="hetero_kron", shapes=[[[8, 8], [8, 2]]], rank=1)
    n = "transformer.h.0.mlp.c_fc"
    with pytest.raises(ValueError, match=r"moments\['transformer.h.0.mlp.c_fc'\]: "
                                         r"HeteroKroneckerLinear .* no activation-aware fit"):
        tqla_torch.compress(_gpt2(), cfg, moments={n: torch.eye(16, dtype=torch.float64)})


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------
def test_budget_below_the_smallest_plan_or_above_the_model():
    model = _gpt2()
    total = tqla_torch.count_parameters(model)
    with pytest.raises(ValueError, match="below the smallest possible plan"):
        plan_for_budget(model, 1000, _data(), b_shapes=B_SHAPES)
    with pytest.raises(ValueError, match="above the model"):
        plan_for_budget(model, total + 1, _data())
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        plan_for_budget(model, 1.5, _data())
    with pytest.raises(TypeError, match="budget must be an int"):
        plan_for_budget(model, "half", _data())


def test_data_that_does_not_fit_the_model():
    model = _gpt2()
    with pytest.raises(ValueError, match="batch 0 does not fit the model"):
        plan_for_budget(model, 0.7, [torch.randint(100, 200, (2, 8))])
    with pytest.raises(TypeError, match="batch 0 is a str"):
        plan_for_budget(model, 0.7, ["some text"])
    with pytest.raises(ValueError, match="no calibration batch"):
        plan_for_budget(model, 0.7, [])


def test_modules_without_inputs_are_named():
    model = ZeroFed()
    with pytest.raises(ValueError, match="modules without inputs.*lin3"):
        plan_for_budget(model, 0.9, [torch.randn(5, 8)], sensitivity="uniform")


def test_moments_of_the_wrong_shape_are_named():
    cfg = tqla_torch.CompressionConfig(target_modules=["c_fc"], method="svd", rank=2)
    with pytest.raises(ValueError, match=r"moments\['transformer.h.0.mlp.c_fc'\] must be the \(16, 16\)"):
        tqla_torch.compress(_gpt2(), cfg, moments={"transformer.h.0.mlp.c_fc": torch.eye(3)})


@pytest.mark.parametrize("method", ["svd", "kron"])
def test_curve_errors_are_the_exact_errors_of_the_fits(method):
    import tqla
    from tqla.whiten import whitened_error

    g = torch.Generator().manual_seed(2)
    W = torch.randn(8, 12, generator=g, dtype=torch.float64)
    X = torch.randn(60, 12, generator=g, dtype=torch.float64) * torch.linspace(0.1, 2, 12)
    C = X.T @ X / 60
    damp = 0.01
    Creg = (C + damp * torch.trace(C) / 12 * torch.eye(12, dtype=torch.float64)).numpy()
    curves = layer_curves(W, C, bias=0, methods=[method], b_shapes=[(2, 3)], damp=damp,
                          allow_dense=False)
    for c in curves:
        if method == "svd":
            U, s, Vh = tqla.whitened_svd(W.numpy(), C.numpy(), c.rank, damp=damp)
            approx = (U * s) @ Vh
        else:
            approx = tqla.whitened_kron_svd(W.numpy(), C.numpy(), c.shape, c.rank, damp=damp).to_dense()
        err = whitened_error(W.numpy(), approx, Creg, relative=False) ** 2
        assert c.error2 == pytest.approx(err, rel=1e-7, abs=1e-9)


# --------------------------------------------------------------------------------------
# permuted Kronecker candidates
# --------------------------------------------------------------------------------------
def _wc(seed=3, m=8, n=12):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(m, n, generator=g, dtype=torch.float64)
    X = torch.randn(60, n, generator=g, dtype=torch.float64) * torch.linspace(0.1, 2, n)
    return W, X.T @ X / 60


def test_permuted_curve_is_the_exact_error_of_the_permuted_fit():
    import tqla
    from tqla.whiten import whitened_error

    _, C = _wc()
    # a Kronecker product with shuffled rows and columns: the search finds permutations
    g = torch.Generator().manual_seed(7)
    K = torch.kron(torch.randn(4, 4, generator=g, dtype=torch.float64),
                   torch.randn(2, 3, generator=g, dtype=torch.float64))
    W = K[torch.randperm(8, generator=g)][:, torch.randperm(12, generator=g)]
    damp = 0.01
    cache = {}
    curves = layer_curves(W, C, bias=0, methods=["permuted_kron"], permuted_b_shapes=[(2, 3)],
                          damp=damp, allow_dense=False, cache=cache, key="m")
    assert curves and all(c.method == "permuted_kron" for c in curves)
    ((key, shape), (rp, cp)), = cache.items()
    assert key == "m" and shape == ((4, 4), (2, 3))
    assert not np.array_equal(cp, np.arange(12))  # so the moment must follow the columns
    inv_r, inv_c = np.argsort(rp), np.argsort(cp)
    Wk, Ck = W.numpy()[inv_r][:, inv_c], C.numpy()[inv_c][:, inv_c]
    Creg = Ck + damp * np.trace(Ck) / 12 * np.eye(12)
    for c in curves:
        approx = tqla.whitened_kron_svd(Wk, Ck, shape, c.rank, damp=damp).to_dense()
        err = whitened_error(Wk, approx, Creg, relative=False) ** 2
        assert c.error2 == pytest.approx(err, rel=1e-7, abs=1e-9)
        assert c.params == c.rank * (16 + 6)


def test_permuted_search_runs_once_per_module_and_shape(monkeypatch):
    import tqla.permuted

    W, C = _wc()
    cache = {}
    kw = dict(bias=0, methods=["permuted_kron"], permuted_b_shapes=[(2, 3), (2, 2)], cache=cache)
    first = layer_curves(W, C, key="m", **kw)
    assert len(cache) == 2

    def boom(*a, **k):
        raise AssertionError("searched again")

    monkeypatch.setattr(tqla.permuted, "permuted_kron", boom)
    assert layer_curves(W, C, key="m", **kw) == first  # served from the cache
    with pytest.raises(AssertionError, match="searched again"):
        layer_curves(W, C, key="other", **kw)  # another module: a new search


def test_plan_with_permuted_candidates_compresses_to_its_count():
    model = _gpt2()
    cfg = plan_for_budget(model, 0.6, _data(), methods=("permuted_kron",), allow_dense=False,
                          permuted_b_shapes=[(2, 2)], sensitivity="uniform")
    assert {r.method for r in cfg.auto_plan.rows} == {"permuted_kron"}
    rep = tqla_torch.compress(model, cfg)
    assert rep.params_after == cfg.auto_plan.params_after


# --------------------------------------------------------------------------------------
# activation-aware embeddings (one-hot inputs: C = diag(token frequencies))
# --------------------------------------------------------------------------------------
def test_statistics_of_an_embedding_are_the_token_frequencies():
    model = _gpt2()
    data = _data()
    st = collect_statistics(model, data, {"transformer.wte": model.transformer.wte})
    ids = torch.cat([b.reshape(-1) for b in data])
    f = torch.bincount(ids, minlength=64).double() / ids.numel()
    torch.testing.assert_close(st.moments["transformer.wte"], f, rtol=0, atol=0)
    assert st.sensitivity["transformer.wte"] > 0


def test_embedding_fit_is_the_frequency_weighted_closed_form():
    from tqla_torch.nn.lowrank import LowRankEmbedding

    emb = _gpt2().transformer.wte
    g = torch.Generator().manual_seed(5)
    f = torch.rand(64, generator=g, dtype=torch.float64) + 0.05
    got = LowRankEmbedding.from_embedding(emb, 3, moment=f).to_dense().double()
    # closed form by hand: rows of the table weighted by √f, truncated, unweighted
    E = emb.weight.detach().double()
    u, s, vh = torch.linalg.svd(f.sqrt()[:, None] * E, full_matrices=False)
    ref = ((u[:, :3] * s[:3]) @ vh[:3]) / f.sqrt()[:, None]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    # equal frequencies (S = I up to scale): the plain fit
    plain = LowRankEmbedding.from_embedding(emb, 3).to_dense()
    same = LowRankEmbedding.from_embedding(emb, 3, moment=torch.ones(64)).to_dense()
    torch.testing.assert_close(same, plain, atol=1e-6, rtol=1e-5)


def test_plan_with_embeddings_sizes_the_table_and_compress_fits_it():
    model = _gpt2()
    cfg = plan_for_budget(model, 0.55, _data(), embeddings=True, allow_dense=False,
                          target_modules=r"transformer\.(wte|h\..*)", b_shapes=B_SHAPES)
    rows = {r.name: r for r in cfg.auto_plan.rows}
    assert rows["transformer.wte"].method == "svd"
    p, C = cfg.auto_plan.moments["transformer.wte"]  # tied LM head: two-sided weight
    assert p.shape == (64,) and C.shape == (16, 16)
    rep = tqla_torch.compress(model, cfg)
    assert rep.params_after == cfg.auto_plan.params_after
    assert type(model.transformer.wte).__name__ == "LowRankEmbedding"
    # embeddings are planned only when asked
    plain = plan_for_budget(_gpt2(), 0.55, _data(), target_modules=r"transformer\.(wte|h\..*)",
                            b_shapes=B_SHAPES)
    assert "transformer.wte" not in {r.name for r in plain.auto_plan.rows}


def test_embedding_moments_are_checked():
    f = torch.ones(64, dtype=torch.float64)
    svd = tqla_torch.CompressionConfig(target_modules=["wte"], method="svd", rank=2)
    with pytest.raises(ValueError, match=r"must be the \(64,\) vector of token frequencies"):
        tqla_torch.compress(_gpt2(), svd, moments={"transformer.wte": torch.ones(5)})
    kron = tqla_torch.CompressionConfig(target_modules=["wte"], method="kron", b_shape=[2, 1])
    with pytest.raises(ValueError, match="method 'svd' only"):
        tqla_torch.compress(_gpt2(), kron, moments={"transformer.wte": f})


# --------------------------------------------------------------------------------------
# sensitivities
# --------------------------------------------------------------------------------------
def test_lwiq_sensitivity_is_the_lwiq_importance():
    from tqla_torch.compression.budget_plan import _weights
    from tqla_torch.compression.importance import lwiq

    model, data = _gpt2(), _data(4)
    cfg = plan_for_budget(model, 0.7, data, sensitivity="lwiq", b_shapes=B_SHAPES)
    names = [r.name for r in cfg.auto_plan.rows]
    ref = lwiq(model, data, names, seed=0).weights
    assert {r.name: r.sensitivity for r in cfg.auto_plan.rows} == pytest.approx(ref)
    assert _weights(model, data, {n: None for n in names}, None, "uniform", 0) == dict.fromkeys(names, 1.0)


def test_bad_methods_and_sensitivity_are_named():
    with pytest.raises(ValueError, match="methods must be a non-empty subset"):
        plan_for_budget(_gpt2(), 0.7, _data(), methods=("tucker",))
    with pytest.raises(ValueError, match="sensitivity must be one of"):
        plan_for_budget(_gpt2(), 0.7, _data(), sensitivity="hessian")


@pytest.mark.parametrize("order", ["pairs", "A", "B", None])
def test_kron_gram_orders_agree_with_the_definition(order):
    from tqla_torch.compression.curves import _kron_gram

    rng = np.random.default_rng(0)
    for top, m1, n1, m2, n2 in [(3, 4, 3, 2, 5), (4, 3, 2, 5, 4)]:
        A, B = rng.standard_normal((top, m1, n1)), rng.standard_normal((top, m2, n2))
        X = rng.standard_normal((50, n1 * n2))
        C = X.T @ X
        T = [np.kron(A[k], B[k]) for k in range(top)]
        ref = np.array([[np.sum((T[k] @ C) * T[j]) for j in range(top)] for k in range(top)])
        got = _kron_gram(A, B, C, order)
        np.testing.assert_allclose(got, np.triu(ref), atol=1e-12 * np.abs(ref).max())


def test_calibration_names_why_a_batch_does_not_fit():
    model = _gpt2()  # vocab 64, 16 positions
    with pytest.raises(ValueError, match="longer than the model's 16 positions"):
        plan_for_budget(model, 0.7, [torch.randint(0, 64, (2, 20))])
    with pytest.raises(ValueError, match="token id 70 is not below the model's vocab_size 64"):
        plan_for_budget(model, 0.7, [{"input_ids": torch.full((2, 8), 70)}])


def test_target_modules_follow_the_config_matching_rules():
    model = _gpt2()
    for target, exclude in [(r".*\.c_fc", None), (r"transformer\.h\.1\..*", "c_attn"),
                            (["transformer.h.0.mlp.c_proj", "c_fc"], None)]:
        cfg = plan_for_budget(model, 0.9, _data(), target_modules=target, exclude_modules=exclude,
                              b_shapes=B_SHAPES, allow_dense=False)
        probe = tqla_torch.CompressionConfig(target_modules=target, exclude_modules=exclude,
                                             method="svd", rank=1)
        want = sorted(n for n, m in model.named_modules()
                      if n and probe.matches(n) and type(m).__name__ == "Conv1D")
        assert sorted(r.name for r in cfg.auto_plan.rows) == want


def test_data_as_a_dataloader_of_id_tensors_gives_the_same_plan():
    ids = torch.cat(_data())
    a = plan_for_budget(_gpt2(), 0.7, [ids[i : i + 2] for i in range(0, len(ids), 2)],
                        b_shapes=B_SHAPES)
    loader = torch.utils.data.DataLoader(ids, batch_size=2)
    b = plan_for_budget(_gpt2(), 0.7, loader, b_shapes=B_SHAPES)
    ds = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids), batch_size=2)
    c = plan_for_budget(_gpt2(), 0.7, ds, b_shapes=B_SHAPES)
    assert a.to_dict() == b.to_dict() == c.to_dict()
