"""Elastic resume of distillation: a checkpoint written by 2 gloo processes resumes on 1, and
one written by 1 process resumes on 2, at the same global batch, with the weights of an
uninterrupted single-process run (to rounding: the gradient sums run in another order)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _distill_run import ELASTIC_STEPS, elastic_run, elastic_worker, tiny_data, tiny_pair

from tqla_torch.distill import DistillConfig, Stage, distill_stages, latest_checkpoint
from tqla_torch.training.loop import grad_accum_for

pytestmark = [
    pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing"),
    pytest.mark.usefixtures("one_torch_thread"),
]

GLOBAL_BATCH = 4


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, batch 2 x accumulation 2, never interrupted."""
    directory = tmp_path_factory.mktemp("reference")
    return elastic_run(str(directory), 2, GLOBAL_BATCH, None)


def _spawn_two(tmp_path, checkpoint_dir, batch_size, stop):
    out = tmp_path / "two.pt"
    args = (2, str(tmp_path / "pg-init"), str(checkpoint_dir), str(out), batch_size)
    mp.spawn(elastic_worker, args=(*args, GLOBAL_BATCH, stop), nprocs=2, join=True)
    return out


def _assert_close(weights, reference):
    assert weights.keys() == reference.keys()
    for key in weights:
        torch.testing.assert_close(weights[key], reference[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.slow
def test_two_processes_write_one_resumes(tmp_path, reference):
    ckpt = tmp_path / "run"
    # 2 ranks x batch 1 x accumulation 2, interrupted after step 3
    _spawn_two(tmp_path, ckpt, batch_size=1, stop=3)
    state = torch.load(latest_checkpoint(ckpt), weights_only=True)
    assert state["world_size"] == 2 and state["global_step"] == 3
    assert state["global_batch"] == GLOBAL_BATCH
    # 1 process x batch 4 x accumulation 1 finishes the run
    weights = elastic_run(str(ckpt), 4, GLOBAL_BATCH, None)
    _assert_close(weights, reference)


@pytest.mark.slow
def test_one_process_writes_two_resume(tmp_path, reference):
    ckpt = tmp_path / "run"
    assert elastic_run(str(ckpt), 2, GLOBAL_BATCH, stop_after=2) is None
    state = torch.load(latest_checkpoint(ckpt), weights_only=True)
    assert state["world_size"] == 1 and state["global_step"] == 2
    out = _spawn_two(tmp_path, ckpt, batch_size=2, stop=None)  # 2 ranks x 2 x accumulation 1
    _assert_close(torch.load(out, weights_only=True), reference)
    final = torch.load(latest_checkpoint(ckpt), weights_only=True)
    assert final["world_size"] == 2 and final["global_step"] == ELASTIC_STEPS


def test_resume_with_another_global_batch_names_both(tmp_path):
    data = tiny_data()
    cfg = dict(lr=3e-3, log_every=1, device="cpu", progress=False, seed=3)
    ckpt = str(tmp_path / "run")
    first = DistillConfig(batch_size=2, checkpoint_dir=ckpt, **cfg)
    distill_stages(*tiny_pair(), data, [Stage("a", steps=1)], first)
    bigger = DistillConfig(batch_size=2, global_batch_size=4, checkpoint_dir=ckpt, **cfg)
    with pytest.raises(ValueError, match="global batch of 2 blocks per optimizer step") as info:
        distill_stages(*tiny_pair(), data, [Stage("a", steps=1)], bigger)
    assert "this run has 4" in str(info.value) and "global_batch_size=2" in str(info.value)
    # the same global batch split differently resumes (the run is already complete)
    same = DistillConfig(batch_size=1, global_batch_size=2, checkpoint_dir=ckpt, **cfg)
    assert distill_stages(*tiny_pair(), data, [Stage("a", steps=1)], same).step == 1


def test_global_batch_size_rules():
    with pytest.raises(ValueError, match="set grad_accum or global_batch_size, not both"):
        DistillConfig(grad_accum=2, global_batch_size=8)
    rule = r"global_batch_size \(6\) must be a multiple of batch_size \(4\)"
    with pytest.raises(ValueError, match=rule):
        DistillConfig(batch_size=4, global_batch_size=6)
    with pytest.raises(ValueError, match="global_batch_size must be an int >= 1"):
        DistillConfig(global_batch_size=0)
    config = DistillConfig(batch_size=2, global_batch_size=8)
    assert [grad_accum_for(config, w) for w in (1, 2, 4)] == [4, 2, 1]
    with pytest.raises(ValueError, match=r"multiple of world_size \* batch_size \(3 \* 2 = 6\)"):
        grad_accum_for(config, 3)
    assert grad_accum_for(DistillConfig(grad_accum=3), 2) == 3
