"""Module fits spread over torch.distributed ranks (gloo on CPU, two spawned processes)."""

from __future__ import annotations

import logging
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st

from tqla_torch.compression.distributed import assign_lpt, cpus_per_rank, pack, unpack

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config():
    from tqla_torch.compression.presets import tq_gpt2

    return tq_gpt2(blocks="all")


CASES = ("ok", "nan", "too_many", "folder", "folder_too_many", "cpus")


def _run_folder_case(rank: int, case: str, out: str) -> None:
    import tqla_torch
    from tqla_torch.compression.streaming import compress_folder

    cfg = _config()
    if case == "folder_too_many":
        cfg = tqla_torch.CompressionConfig(
            target_modules=r"transformer\.h\.0\.mlp\.c_fc", method="kron", b_shape=[2, 4],
            rank=2,
        )
    units: list[list[str]] = []
    try:
        compress_folder(
            f"{out}/src", f"{out}/{case}_out", cfg, callback=lambda d, t, names: units.append(names)
        )
    except ValueError as err:
        torch.save({"error": str(err), "type": type(err).__name__}, f"{out}/{case}{rank}.pt")
        return
    torch.save({"units": units}, f"{out}/{case}{rank}.pt")


AFFINITIES = {  # label → the CPU set each of the 2 ranks pretends to have
    "shared": [{0, 1, 2, 3}, {0, 1, 2, 3}],
    "own": [{0, 1, 2, 3}, {4, 5, 6, 7}],
    "overlapping": [{0, 1, 2, 3}, {3, 4, 5, 6, 7, 8}],
}


def _run_cpus_case(rank: int, out: str) -> None:
    """cpus_per_rank under pretended CPU sets (os.sched_getaffinity patched in this rank)."""
    from tqla_torch.compression.distributed import cpus_per_rank

    real = os.sched_getaffinity
    got = {}
    try:
        for label, sets in AFFINITIES.items():
            os.sched_getaffinity = lambda pid, s=sets[rank]: set(s)
            got[label] = cpus_per_rank()
    finally:
        os.sched_getaffinity = real
    torch.save(got, f"{out}/cpus{rank}.pt")


def _run_case(rank: int, case: str, out: str) -> None:
    from _tiny import tiny_gpt2

    import tqla_torch

    model = tiny_gpt2()
    if case == "too_many":
        cfg = tqla_torch.CompressionConfig(
            target_modules=r"transformer\.h\.0\.mlp\.c_fc", method="kron", b_shape=[2, 4],
            rank=2,
        )
    else:
        cfg = _config()
    if case == "nan":
        with torch.no_grad():
            model.transformer.h[3].mlp.c_proj.weight[0, 0] = float("nan")
    from tqla_torch.compression import apply

    fitted_here: list[str] = []
    real_fit = apply._fit

    def counting_fit(it, *args):
        fitted_here.append(it.name)
        return real_fit(it, *args)

    timeline: list[dict] = []
    grab = logging.Handler()
    grab.emit = lambda record: timeline.append(getattr(record, "tqla_timeline", None))
    log = logging.getLogger("tqla_torch.compression.distributed")
    log.addHandler(grab)
    log.setLevel(logging.INFO)
    apply._fit = counting_fit
    try:
        report = tqla_torch.compress(model, cfg)
    except ValueError as err:
        torch.save({"error": str(err), "type": type(err).__name__}, f"{out}/{case}{rank}.pt")
        return
    finally:
        apply._fit = real_fit
        log.removeHandler(grab)
    torch.save(
        {"state": model.state_dict(), "report": report.to_dict(), "fitted": fitted_here,
         "timeline": timeline},
        f"{out}/{case}{rank}.pt",
    )  # fmt: skip


def _worker(rank: int, size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=size)
    try:
        for case in CASES:
            if case.startswith("folder"):
                _run_folder_case(rank, case, out)
            elif case == "cpus":
                _run_cpus_case(rank, out)
            else:
                _run_case(rank, case, out)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def spawned(tmp_path_factory) -> dict[str, list[dict]]:
    """All cases run in one pair of spawned gloo processes (one start-up for all tests)."""
    from _tiny import tiny_gpt2

    out = tmp_path_factory.mktemp("ranks")
    tiny_gpt2().save_pretrained(out / "src", max_shard_size="20KB")
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return {
        "out": out,
        **{case: [torch.load(out / f"{case}{r}.pt", weights_only=False) for r in range(2)]
        for case in CASES},
    }


def test_assign_lpt_balances_and_is_deterministic():
    costs = [7.0, 5.0, 4.0, 3.0, 2.0, 2.0]
    out = assign_lpt(costs, 2)
    assert sorted(sum(out, [])) == list(range(6))
    loads = [sum(costs[j] for j in js) for js in out]
    assert max(loads) - min(loads) <= max(costs)
    assert loads == [12.0, 11.0]  # 7+3+2 | 5+4+2
    assert assign_lpt(costs, 2) == out
    with pytest.raises(ValueError, match="n_ranks"):
        assign_lpt(costs, 0)


@pytest.mark.slow
def test_two_gloo_ranks_equal_single_process(spawned):
    """Each rank fits half the modules; every rank ends with the single-process model."""
    from _tiny import tiny_gpt2

    import tqla_torch

    results = spawned["ok"]
    ref = tiny_gpt2()
    ref_report = tqla_torch.compress(ref, _config(), n_jobs=1)
    want = ref.state_dict()
    shares = [set(res["fitted"]) for res in results]
    names = {m.name for m in ref_report.modules}
    assert shares[0] | shares[1] == names and not shares[0] & shares[1]  # each fit once
    assert shares[0] and shares[1]
    for res in results:
        got = res["state"]
        assert set(got) == set(want)
        for k in want:
            assert torch.equal(got[k], want[k]), k
        errs = {m["name"]: m["error"] for m in res["report"]["modules"]}
        for m in ref_report.to_dict()["modules"]:
            assert errs[m["name"]] == pytest.approx(m["error"], rel=1e-12)


@pytest.mark.slow
def test_failed_fit_on_one_rank_raises_on_every_rank(spawned):
    results = spawned["nan"]
    for res in results:
        assert res["type"] == "CompressionError"
        assert "transformer.h.3.mlp.c_proj" in res["error"]


@pytest.mark.slow
def test_world_larger_than_modules_is_refused(spawned):
    results = spawned["too_many"]
    for res in results:
        assert res["type"] == "ValueError"
        assert "2 processes" in res["error"] and "only 1 target modules" in res["error"]


@pytest.mark.slow
def test_folder_compressed_by_two_ranks_equals_in_memory_path(spawned):
    """compress_folder under 2 gloo ranks: units split, rank 0 assembles the same model."""
    from _tiny import tiny_gpt2

    import tqla_torch

    shares = [[tuple(u) for u in res["units"]] for res in spawned["folder"]]
    assert shares[0] and shares[1] and not set(shares[0]) & set(shares[1])
    assert len(shares[0]) + len(shares[1]) == 5  # wte + 4 folded MLPs
    loaded = tqla_torch.from_pretrained(spawned["out"] / "folder_out")
    ref = tiny_gpt2()
    tqla_torch.compress(ref, _config(), n_jobs=1)
    want = ref.state_dict()
    got = loaded.state_dict()
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k


@pytest.mark.slow
def test_folder_world_larger_than_units_is_refused(spawned):
    for res in spawned["folder_too_many"]:
        assert res["type"] == "ValueError" and "2 processes" in res["error"]
    assert not (spawned["out"] / "folder_too_many_out").exists()


@pytest.mark.slow
def test_threads_per_rank_follow_the_ranks_cpu_sets(spawned):
    """Ranks sharing CPUs split them; ranks pinned to their own CPUs keep all of theirs."""
    got = spawned["cpus"]
    assert [g["shared"] for g in got] == [2, 2]
    assert [g["own"] for g in got] == [4, 4]
    assert [g["overlapping"] for g in got] == [2, 3]


@pytest.mark.slow
def test_each_rank_logs_its_timeline(spawned):
    results = spawned["ok"]
    lines = [res["timeline"] for res in results]
    assert all(len(t) == 1 and t[0] is not None for t in lines)
    lines = [t[0] for t in lines]
    assert [t["rank"] for t in lines] == [0, 1] and all(t["world"] == 2 for t in lines)
    assert [t["modules"] for t in lines] == [len(res["fitted"]) for res in results]
    for t in lines:
        assert t["estimated_s"] > 0 and t["fit_s"] >= 0 and t["exchange_s"] >= 0


def test_cpus_per_rank_without_a_group_is_the_usable_cpus():
    assert cpus_per_rank() == len(os.sched_getaffinity(0))


DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
          torch.int32, torch.uint8, torch.bool]  # fmt: skip


@settings(deadline=None)
@given(st.lists(st.tuples(st.sampled_from(DTYPES),
                          st.lists(st.integers(0, 4), min_size=0, max_size=3)), max_size=6))
def test_pack_unpack_round_trip_is_exact(specs):
    """Tensors of any dtypes and shapes (empty and 0-d included) survive pack/unpack."""
    gen = torch.Generator().manual_seed(len(specs))
    ts = [(torch.randn(tuple(shape), generator=gen) * 50).to(dtype) for dtype, shape in specs]
    back = unpack(pack(ts), [(t.shape, t.dtype) for t in ts])
    assert len(back) == len(ts)
    for a, b in zip(ts, back):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)


def test_unpack_refuses_a_layout_of_another_size():
    buf = pack([torch.ones(3), torch.arange(2)])
    with pytest.raises(ValueError, match="layout"):
        unpack(buf, [((3,), torch.float32)])


def test_cost_model_balances_gpt2_medium_like_the_measured_fits():
    """On GPT-2 medium's tq_gpt2 plan the token table costs about one MLP matrix (measured,
    benchmarks/results/scaling_costs_cpu.md), so LPT splits the 25 modules 12/13 with the
    estimated loads at most one matrix apart (the old V·d² model gave 11/14)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from tqla_torch.compression import apply
    from tqla_torch.compression.distributed import estimated_cost
    from tqla_torch.compression.presets import tq_gpt2

    with torch.device("meta"):
        model = GPT2LMHeadModel(GPT2Config(n_embd=1024, n_layer=24, n_head=16))
    items, _ = apply._resolve(model, tq_gpt2())
    costs = [estimated_cost(it.report, it.settings) for it in items]
    wte = costs[[it.name for it in items].index("transformer.wte")]
    mlp = max(c for it, c in zip(items, costs) if it.name != "transformer.wte")
    assert 0.5 < wte / mlp < 2.0
    shares = assign_lpt(costs, 2)
    assert sorted(len(s) for s in shares) == [12, 13]
    loads = [sum(costs[i] for i in s) for s in shares]
    assert abs(loads[0] - loads[1]) <= mlp
