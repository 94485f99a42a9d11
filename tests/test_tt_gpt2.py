"""Tensor-train modes with few multiply-adds and the demo's tensor-train stages."""

from __future__ import annotations

import copy
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from _tiny import tiny_gpt2  # noqa: E402

from tqla.tt import rank_bounds  # noqa: E402
from tqla_torch._models import count_parameters  # noqa: E402
from tqla_torch.compression.apply import compress  # noqa: E402
from tqla_torch.compression.presets import svd_gpt2_steps  # noqa: E402
from tqla_torch.compression.tt_gpt2 import low_mac_tt_modes, tt_gpt2_steps  # noqa: E402
from tqla_torch.nn._tt_forward import _costs, _params  # noqa: E402
from tqla_torch.nn.tt import tt_modes, tt_rank_for_budget  # noqa: E402


@given(
    modes=st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=4),
    r=st.integers(1, 8),
    k=st.integers(1, 5),
)
def test_macs_at_least_params_times_tokens_twice_with_modes_of_two(modes, r, k):
    """The bound docs/tt.md states: ≥ params·k, and ≥ 2·params·k when every mode is ≥ 2."""
    rm = tuple(m for m, _ in modes)
    cm = tuple(n for _, n in modes)
    bounds = rank_bounds([m * n for m, n in modes])
    ranks = (1, *(min(r, b) for b in bounds), 1)
    p = _params(rm, cm, ranks)
    macs = min(_costs(rm, cm, ranks, k))
    assert macs >= p * k
    if len(modes) >= 2 and min(rm + cm) >= 2:
        assert macs >= 2 * p * k


@pytest.mark.parametrize("M,N", [(64, 16), (16, 64), (96, 24)])
def test_low_mac_modes_fit_the_budget_and_beat_balanced_modes(M, N):
    budget = M * N // 2
    rm, cm = low_mac_tt_modes(M, N, budget)
    assert math.prod(rm) == M and math.prod(cm) == N and min(rm + cm) >= 2
    r = tt_rank_for_budget(rm, cm, budget)
    bounds = rank_bounds([m * n for m, n in zip(rm, cm)])
    ranks = (1, *(min(r, b) for b in bounds), 1)
    assert _params(rm, cm, ranks) <= budget
    brm, bcm = tt_modes(M, 3), tt_modes(N, 3)
    br = tt_rank_for_budget(brm, bcm, budget)
    bb = rank_bounds([m * n for m, n in zip(brm, bcm)])
    branks = (1, *(min(br, b) for b in bb), 1)
    assert min(_costs(rm, cm, ranks, 1)) <= min(_costs(brm, bcm, branks, 1))


def test_low_mac_modes_bad_budget():
    with pytest.raises(ValueError, match="n_params"):
        low_mac_tt_modes(64, 16, 3)


def test_tt_gpt2_steps_match_the_low_rank_plan_and_keep_the_modes():
    model = tiny_gpt2()  # 4 blocks, 32 wide, vocabulary 96
    data = [torch.randint(0, 96, (4, 16), generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
    steps = tt_gpt2_steps(model, data=data, n_classes=8)
    svd = svd_gpt2_steps(model)
    assert steps[0] == svd[0] and steps[2] == svd[2]
    mlp = steps[1]
    assert mlp.method == "tt"
    assert sorted(mlp.target_modules) == [
        f"transformer.h.{i}.mlp.{m}" for i in (1, 3) for m in ("c_fc", "c_proj")
    ]
    for name in mlp.target_modules:  # the caller's tt_modes survive next to the LWIQ ranks
        st_ = mlp.settings_for(name)
        assert st_.tt_modes is not None and st_.rank is not None
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    for c in steps:
        compress(a, c)
    for c in svd:
        compress(b, c)
    pa, pb = count_parameters(a), count_parameters(b)
    assert pa <= pb * 1.02 and pa >= pb * 0.9
    x = torch.randint(0, 96, (2, 8))
    assert torch.isfinite(a(x).logits).all()
