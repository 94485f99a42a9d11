"""Tests of tqla_torch.distill: loss, config, training loop, stages, checkpoints, DDP."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _distill_run import LowRank, low_rank_mlp, tiny_data, tiny_pair, two_stages

from tqla_torch._atomic import atomic_torch_save, atomic_write_json, remove_stale_temporaries
from tqla_torch.distill import (
    DistillConfig,
    Stage,
    distill,
    distill_stages,
    distillation_loss,
    hidden_state_mse,
    latest_checkpoint,
    published_recipe,
)

RUNNER = Path(__file__).with_name("_distill_run.py")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    return tiny_data()


def _cfg(**kwargs) -> DistillConfig:
    base = dict(lr=3e-3, batch_size=2, log_every=1, device="cpu", progress=False, seed=3)
    base.update(kwargs)
    return DistillConfig(**base)


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ---- loss --------------------------------------------------------------------------------------


def test_kl_is_zero_when_student_equals_teacher():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 50) * 4
    labels = torch.randint(0, 50, (3, 7))
    terms = distillation_loss(logits, logits.clone(), labels, alpha=0.3, temperature=2.5)
    assert terms.kl.item() == 0.0
    assert terms.loss.item() == pytest.approx(
        0.3 * F.cross_entropy(logits.view(-1, 50), labels.view(-1)).item()
    )


def test_loss_matches_the_formula():
    torch.manual_seed(1)
    s = torch.randn(2, 5, 11, requires_grad=True)
    t = torch.randn(2, 5, 11)
    y = torch.randint(0, 11, (2, 5))
    y[0, 0] = -100  # ignored position
    alpha, T = 0.25, 3.0
    terms = distillation_loss(s, t, y, alpha, T)
    keep = y.view(-1) != -100
    s2, t2, y2 = s.view(-1, 11)[keep], t.view(-1, 11)[keep], y.view(-1)[keep]
    ce = -torch.log_softmax(s2, -1).gather(1, y2[:, None]).mean()
    p_t = torch.softmax(t2 / T, -1)
    kl = (p_t * (torch.log(p_t) - torch.log_softmax(s2 / T, -1))).sum(-1).mean()
    assert terms.ce.item() == pytest.approx(ce.item(), rel=1e-5)
    assert terms.kl.item() == pytest.approx(kl.item(), rel=1e-5)
    expected = alpha * ce + (1 - alpha) * T**2 * kl
    assert terms.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    terms.loss.backward()
    assert s.grad is not None and s.grad[0, 0].abs().sum() == 0  # ignored position
    only_ce = distillation_loss(s, t, y, 1.0, T)
    assert only_ce.loss.item() == pytest.approx(ce.item(), rel=1e-5)


def test_loss_bad_inputs():
    z = torch.zeros(2, 3, 5)
    y = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="same shape"):
        distillation_loss(z, torch.zeros(2, 3, 6), y, 0.5, 1.0)
    with pytest.raises(ValueError, match="labels must have shape"):
        distillation_loss(z, z, y[:, :2], 0.5, 1.0)
    with pytest.raises(ValueError, match="alpha must be in"):
        distillation_loss(z, z, y, 1.5, 1.0)
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(z, z, y, 0.5, 0.0)
    with pytest.raises(ValueError, match="every position equals ignore_index"):
        distillation_loss(z, z, torch.full((2, 3), -100), 0.5, 1.0)
    with pytest.raises(ValueError, match="integer"):
        distillation_loss(z, z, y.float(), 0.5, 1.0)


def test_hidden_state_mse():
    a = [torch.ones(1, 2, 3), torch.full((1, 2, 3), 2.0)]
    b = [torch.zeros(1, 2, 3), torch.zeros(1, 2, 3)]
    assert hidden_state_mse(a, b).item() == pytest.approx((1 + 4) / 2)
    with pytest.raises(ValueError, match="same non-zero number of blocks"):
        hidden_state_mse(a, b[:1])
    with pytest.raises(ValueError, match="block 0"):
        hidden_state_mse([torch.ones(1, 2, 3)], [torch.ones(1, 2, 4)])


# ---- config ------------------------------------------------------------------------------------


def test_config_json_round_trip(tmp_path):
    cfg = DistillConfig(alpha=0.1, max_tokens=1000, checkpoint_dir=tmp_path, mixed_precision="no")
    assert isinstance(cfg.checkpoint_dir, str)
    text = json.dumps(cfg.to_dict())
    assert DistillConfig.from_dict(json.loads(text)) == cfg
    with pytest.raises(ValueError, match=r"unknown DistillConfig fields \['learning_rate'\]"):
        DistillConfig.from_dict({"learning_rate": 1.0})


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("alpha", -0.1, "alpha must be in"),
        ("alpha", float("nan"), "alpha must be a finite number"),
        ("temperature", 0, "temperature must be > 0"),
        ("hidden_mse", -1.0, "hidden_mse must be >= 0"),
        ("lr", 0.0, "lr must be > 0"),
        ("weight_decay", -0.1, "weight_decay must be >= 0"),
        ("warmup_steps", -1, "warmup_steps must be an int >= 0"),
        ("min_lr_ratio", 2.0, "min_lr_ratio must be in"),
        ("max_steps", 0, "max_steps must be an int >= 1"),
        ("max_tokens", 2.5, "max_tokens must be an int >= 1"),
        ("batch_size", 0, "batch_size must be an int >= 1"),
        ("grad_accum", True, "grad_accum must be an int >= 1"),
        ("max_grad_norm", 0.0, "max_grad_norm must be > 0 or None"),
        ("mixed_precision", "fp16", "mixed_precision must be one of"),
        ("seed", -1, "seed must be an int >= 0"),
        ("checkpoint_dir", 3, "checkpoint_dir must be a path or None"),
        ("checkpoint_every", -2, "checkpoint_every must be an int >= 0"),
        ("keep_checkpoints", 0, "keep_checkpoints must be an int >= 1"),
        ("log_every", 0, "log_every must be an int >= 1"),
        ("device", "tpu:x", "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        ("device", "meta", "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'meta'"),
        ("progress", "yes", "progress must be a bool"),
    ],
)
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        DistillConfig(**{field: value})


def test_stage_validation():
    with pytest.raises(ValueError, match="name must be a non-empty str"):
        Stage("")
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        Stage("a", steps=0)
    with pytest.raises(ValueError, match="compress must be None, a callable"):
        Stage("a", compress="embedding")
    recipe = published_recipe(lambda m: None, lambda m: None, steps=5)
    assert [s.name for s in recipe] == ["embedding", "mlp", "embedding-2"]
    assert recipe[2].compress is recipe[0].compress


# ---- training loop -----------------------------------------------------------------------------


def test_loss_decreases_and_teacher_stays_frozen(data):
    student, teacher = tiny_pair()
    teacher_before = copy.deepcopy(teacher.state_dict())
    student.eval()
    teacher.train()
    seen = []

    def check_frozen(module, inputs):
        grad_enabled = torch.is_grad_enabled()
        frozen = not any(p.requires_grad for p in module.parameters())
        seen.append((module.training, grad_enabled, frozen))

    handle = teacher.register_forward_pre_hook(check_frozen)
    result = distill(student, teacher, data, _cfg(max_steps=30, lr=1e-2, log_every=5))
    handle.remove()
    assert seen == [(False, False, True)] * 30  # eval mode, no_grad, requires_grad False
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 6
    assert losses[-1] < 0.95 * losses[0]
    assert result.history[-1]["ce"] < result.history[0]["ce"] - 0.4
    assert result.step == 30 and result.tokens_seen == 30 * 2 * 32
    _assert_same_weights(teacher_before, teacher.state_dict())
    # the teacher's flags and both modes are restored: a deep copy is trainable again
    assert all(p.requires_grad for p in teacher.parameters())
    assert teacher.training and not student.training
    record = result.history[0]
    assert set(record) >= {"loss", "ce", "kl", "lr", "tokens_per_s", "tokens", "stage"}
    assert record["tokens_per_s"] > 0


def test_schedule_warmup_then_cosine(data):
    student, teacher = tiny_pair()
    result = distill(student, teacher, data, _cfg(max_steps=10, warmup_steps=4, lr=1e-3))
    lrs = [h["lr"] for h in result.history]
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    progress = [(i - 4) / 6 for i in range(4, 10)]
    assert lrs[4:] == pytest.approx([1e-3 * 0.5 * (1 + math.cos(math.pi * p)) for p in progress])


def test_max_tokens_sets_the_step_budget(data):
    student, teacher = tiny_pair()
    cfg = _cfg(max_tokens=5 * 2 * 2 * 32 - 7, grad_accum=2)  # rounds up to 5 steps
    result = distill(student, teacher, data, cfg)
    assert result.step == 5
    both = _cfg(max_tokens=10_000, max_steps=2)
    assert distill(*tiny_pair(), data, both).step == 2


def test_grad_accum_matches_a_larger_batch(data):
    runs = []
    for batch_size, accum in [(4, 1), (2, 2), (1, 4)]:
        student, teacher = tiny_pair(dropout=0.0)
        distill(student, teacher, data, _cfg(max_steps=4, batch_size=batch_size, grad_accum=accum))
        runs.append(student.state_dict())
    for other in runs[1:]:
        for key in runs[0]:
            torch.testing.assert_close(other[key], runs[0][key], rtol=1e-4, atol=1e-5)


def test_hidden_mse_term(data):
    student, teacher = tiny_pair()
    result = distill(student, teacher, data, _cfg(max_steps=2, hidden_mse=0.5))
    assert all(h["hidden_mse"] > 0 for h in result.history)
    no_hidden = distill(*tiny_pair(), data, _cfg(max_steps=2))
    assert all(h["hidden_mse"] == 0 for h in no_hidden.history)


def test_plain_tensor_model_and_data():
    class Bigram(torch.nn.Module):
        def __init__(self, table=None):
            super().__init__()
            self.table = torch.nn.Parameter(torch.randn(16, 16) if table is None else table)

        def forward(self, ids):
            return self.table[ids]

    torch.manual_seed(0)
    teacher = Bigram()
    student = Bigram(torch.zeros(16, 16))
    blocks = torch.randint(0, 16, (8, 6))
    result = distill(student, teacher, blocks, _cfg(max_steps=20, alpha=0.0, lr=5e-2))
    assert result.history[-1]["kl"] < result.history[0]["kl"]


def test_non_finite_gradients_stop_the_run(data):
    student, teacher = tiny_pair()
    with torch.no_grad():
        student.transformer.wte.weight[5] = float("nan")
    before = student.transformer.h[0].mlp.c_fc.weight.detach().clone()
    with pytest.raises(
        FloatingPointError, match="stage 'distill' step 1: the gradient norm is nan"
    ):
        distill(student, teacher, data, _cfg(max_steps=2))
    assert torch.equal(student.transformer.h[0].mlp.c_fc.weight, before)


def test_distill_errors(data, tmp_path):
    student, teacher = tiny_pair()
    with pytest.raises(ValueError, match="set max_steps or max_tokens"):
        distill(student, teacher, data, _cfg())
    with pytest.raises(ValueError, match="student and teacher must be different"):
        distill(teacher, teacher, data, _cfg(max_steps=1))
    shared = copy.copy(teacher)  # shallow copy shares parameters
    with pytest.raises(ValueError, match="shares parameters"):
        distill(shared, teacher, data, _cfg(max_steps=1))
    long_blocks = torch.zeros(4, 65, dtype=torch.long)
    with pytest.raises(ValueError, match="block_size 65 exceeds the student's n_positions 64"):
        distill(student, teacher, long_blocks, _cfg(max_steps=1))
    with pytest.raises(ValueError, match="token id 600, outside the student's vocab_size 512"):
        distill(student, teacher, torch.full((4, 8), 600), _cfg(max_steps=1))
    with pytest.raises(TypeError, match="data must be a PackedDataset"):
        distill(student, teacher, [[1, 2]], _cfg(max_steps=1))
    with pytest.raises(ValueError, match="fewer than one global batch"):
        distill(student, teacher, data.blocks[:1], _cfg(max_steps=1))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="bf16.*needs a CUDA device"):
            distill(student, teacher, data, _cfg(max_steps=1, mixed_precision="bf16"))
    with pytest.raises(ValueError, match="stage 'b' has no budget"):
        distill_stages(student, teacher, data, [Stage("a", steps=1), Stage("b")], _cfg())
    with pytest.raises(ValueError, match="stage names must be unique"):
        distill_stages(student, teacher, data, [Stage("a", steps=1)] * 2, _cfg())
    with pytest.raises(ValueError, match="stages must not be empty"):
        distill_stages(student, teacher, data, [], _cfg())

    def freeze_all(model):
        model.requires_grad_(False)

    with pytest.raises(ValueError, match="stage 'frozen': the student has no trainable"):
        distill_stages(
            student, teacher, data, [Stage("frozen", compress=freeze_all, steps=1)], _cfg()
        )


# ---- stages ------------------------------------------------------------------------------------


def test_stages_compress_then_train_with_fresh_optimizer(data):
    student, teacher = tiny_pair()
    seen = []

    def freeze_embeddings(model):
        seen.append("freeze")
        model.transformer.wpe.requires_grad_(False)

    factors = {}

    def compress_and_record(model):
        low_rank_mlp(model)
        factors["u"] = model.transformer.h[0].mlp.c_fc.u.detach().clone()

    wpe_before = student.transformer.wpe.weight.detach().clone()
    stages = [
        Stage("dense", steps=3),
        Stage("low-rank", compress=compress_and_record, steps=4),
        Stage("freeze-wpe", compress=freeze_embeddings, steps=3),
    ]
    cfg = _cfg(warmup_steps=2)
    result = distill_stages(student, teacher, data, stages, cfg)
    assert seen == ["freeze"]
    assert all(isinstance(b.mlp.c_fc, LowRank) for b in student.transformer.h)
    assert result.step == 10
    assert [h["stage"] for h in result.history] == ["dense"] * 3 + ["low-rank"] * 4 + [
        "freeze-wpe"
    ] * 3
    # every stage restarts the warm-up with a fresh optimizer and scheduler
    firsts = [h["lr"] for h in result.history if h["stage_step"] == 1]
    assert firsts == pytest.approx([cfg.lr / 2] * 3)
    assert not torch.equal(student.transformer.wpe.weight, wpe_before)  # trained in stages 1-2
    # the low-rank factors were trained after their creation
    assert not torch.equal(student.transformer.h[0].mlp.c_fc.u, factors["u"])


def test_compression_config_goes_through_tqla_compress(data, monkeypatch):
    from tqla_torch.compression import apply

    calls = []

    def compress(model, config):
        calls.append(config.to_dict())
        low_rank_mlp(model)
        return {"replaced": 2}

    monkeypatch.setattr(apply, "compress", compress)

    class Plan:
        def to_dict(self):
            return {"target_modules": "mlp.c_fc"}

    student, teacher = tiny_pair()
    distill_stages(student, teacher, data, [Stage("mlp", compress=Plan(), steps=1)], _cfg())
    assert calls == [{"target_modules": "mlp.c_fc"}]
    assert isinstance(student.transformer.h[1].mlp.c_fc, LowRank)


# ---- checkpoints and resumption ----------------------------------------------------------------


class _Interrupt(Exception):
    pass


def _interrupt_after(module, n_forwards):
    count = {"n": 0}

    def hook(mod, inputs):
        count["n"] += 1
        if count["n"] > n_forwards:
            raise _Interrupt

    return module.register_forward_pre_hook(hook)


@pytest.fixture(scope="module")
def reference_weights(data):
    """Final weights of an uninterrupted two-stage run without checkpoints."""
    student, teacher = tiny_pair()
    distill_stages(student, teacher, data, two_stages(), _cfg())
    return student.state_dict()


@pytest.mark.parametrize(
    "interrupt_at", [2, 4, 6], ids=["mid-dense", "stage-boundary", "mid-low-rank"]
)
def test_resume_in_process_is_bit_exact(data, tmp_path, interrupt_at, reference_weights):
    """Interrupt (exception) after ``interrupt_at`` optimizer steps, rerun, compare."""

    cfg = _cfg(checkpoint_dir=tmp_path / "run", checkpoint_every=1, keep_checkpoints=2)
    student, teacher = tiny_pair()
    handle = _interrupt_after(student, interrupt_at)
    with pytest.raises(_Interrupt):
        distill_stages(student, teacher, data, two_stages(), cfg)
    handle.remove()
    assert latest_checkpoint(cfg.checkpoint_dir).name == f"checkpoint-{interrupt_at:08d}.pt"

    student, teacher = tiny_pair()  # "the same command": fresh models
    result = distill_stages(student, teacher, data, two_stages(), cfg)
    assert result.resumed_from is not None
    assert result.step == 10
    assert [h["step"] for h in result.history] == list(range(1, 11))
    _assert_same_weights(student.state_dict(), reference_weights)
    assert len(list(Path(cfg.checkpoint_dir).iterdir())) == 2  # keep_checkpoints

    # rerunning a finished run loads the final weights and trains no further
    again, teacher = tiny_pair()
    result = distill_stages(again, teacher, data, two_stages(), cfg)
    assert result.step == 10
    _assert_same_weights(again.state_dict(), reference_weights)


def test_resume_refuses_a_different_schedule(data, tmp_path):
    cfg = _cfg(checkpoint_dir=tmp_path, checkpoint_every=1)
    distill_stages(*tiny_pair(), data, [Stage("a", steps=2)], cfg)
    with pytest.raises(ValueError, match="was written for the schedule"):
        distill_stages(*tiny_pair(), data, [Stage("a", steps=3)], cfg)
    with pytest.raises(ValueError, match="global batch of 2 blocks.*this run has 4") as info:
        distill_stages(
            *tiny_pair(), data, [Stage("a", steps=2)], _cfg(checkpoint_dir=tmp_path, batch_size=4)
        )
    assert "global_batch_size=2" in str(info.value)


def _interrupted(data, cfg, at):
    """Run two_stages with ``cfg`` until an interruption after ``at`` optimizer steps."""
    student, teacher = tiny_pair()
    handle = _interrupt_after(student, at)
    with pytest.raises(_Interrupt):
        distill_stages(student, teacher, data, two_stages(), cfg)
    handle.remove()


def test_resume_refuses_changed_settings_and_names_them(data, tmp_path):
    cfg = _cfg(checkpoint_dir=tmp_path / "run", checkpoint_every=1)
    _interrupted(data, cfg, 3)
    changed = _cfg(checkpoint_dir=tmp_path / "run", checkpoint_every=1, lr=1e-3, alpha=0.9)
    with pytest.raises(ValueError, match="changed settings") as info:
        distill_stages(*tiny_pair(), data, two_stages(), changed)
    message = str(info.value)
    assert "alpha: 0.5 in the checkpoint, 0.9 now" in message
    assert "lr: 0.003 in the checkpoint, 0.001 now" in message
    assert "seed" not in message and "\n" not in message
    # where and how often checkpoints go may change: the run resumes
    moved = _cfg(checkpoint_dir=tmp_path / "run", checkpoint_every=2, keep_checkpoints=3)
    result = distill_stages(*tiny_pair(), data, two_stages(), moved)
    assert result.resumed_from is not None and result.step == 10


def _records(history):
    return [{k: v for k, v in h.items() if k != "tokens_per_s"} for h in history]


def test_resume_does_not_change_the_records_or_final_loss(data, tmp_path):
    """A resume in the middle of a logging window: same records, same final_loss."""
    reference = distill_stages(*tiny_pair(), data, two_stages(), _cfg(log_every=4))
    cfg = _cfg(checkpoint_dir=tmp_path / "run", checkpoint_every=1, log_every=4)
    for at in (2, 7):  # inside the first window of each stage
        _interrupted(data, cfg, at)
    result = distill_stages(*tiny_pair(), data, two_stages(), cfg)
    assert result.resumed_from is not None
    assert _records(result.history) == _records(reference.history)
    assert result.final_loss == reference.final_loss


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_unreadable_newest_checkpoint_falls_back(data, tmp_path, damage, reference_weights, caplog):
    cfg = _cfg(checkpoint_dir=tmp_path / "run", checkpoint_every=1, keep_checkpoints=2)
    _interrupted(data, cfg, 5)
    newest = latest_checkpoint(cfg.checkpoint_dir)
    assert newest.name == "checkpoint-00000005.pt"
    blob = newest.read_bytes()
    newest.write_bytes(blob[: len(blob) // 2] if damage == "truncated" else b"")
    student, teacher = tiny_pair()
    with caplog.at_level("WARNING", logger="tqla_torch.training"):
        result = distill_stages(student, teacher, data, two_stages(), cfg)
    assert result.resumed_from.endswith("checkpoint-00000004.pt")
    assert "checkpoint-00000005.pt cannot be read" in caplog.text
    _assert_same_weights(student.state_dict(), reference_weights)


def test_no_readable_checkpoint_is_one_clear_error(data, tmp_path):
    cfg = _cfg(checkpoint_dir=tmp_path / "run", checkpoint_every=1, keep_checkpoints=2)
    _interrupted(data, cfg, 3)
    for path in Path(cfg.checkpoint_dir).iterdir():
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="no readable checkpoint in .*checkpoint-00000003.pt") as e:
        distill_stages(*tiny_pair(), data, two_stages(), cfg)
    assert "\n" not in str(e.value)


def test_checkpoint_contents(data, tmp_path):
    cfg = _cfg(checkpoint_dir=tmp_path, checkpoint_every=2, keep_checkpoints=3)
    student, teacher = tiny_pair()
    distill(student, teacher, data, cfg.__class__(**{**cfg.to_dict(), "max_steps": 5}))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint-00000002.pt", "checkpoint-00000004.pt", "checkpoint-00000005.pt"]
    state = torch.load(tmp_path / names[-1], weights_only=True)
    assert state["stage"] == 0 and state["stage_step"] == 5 and state["stage_done"]
    assert set(state) >= {"model", "optimizer", "scheduler", "rng", "data", "history", "config"}
    assert state["data"]["index"] > 0
    _assert_same_weights(state["model"], student.state_dict())


def test_atomic_writers(tmp_path):
    target = tmp_path / "x.json"
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    with pytest.raises(TypeError):
        atomic_write_json(target, {"a": object()})
    assert json.loads(target.read_text()) == {"a": 1}  # untouched
    atomic_torch_save({"t": torch.arange(3)}, tmp_path / "t.pt")
    assert torch.load(tmp_path / "t.pt")["t"].tolist() == [0, 1, 2]
    (tmp_path / ".t.pt.abc.tmp").write_bytes(b"partial")
    assert [p.name for p in remove_stale_temporaries(tmp_path)] == [".t.pt.abc.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.pt", "x.json"]
    with pytest.raises(FileNotFoundError, match="parent directory"):
        atomic_write_json(tmp_path / "missing" / "x.json", {})


def _run_script(args, **kwargs):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(RUNNER.parent), os.environ.get("PYTHONPATH")])
        ),
    }
    return subprocess.Popen([sys.executable, str(RUNNER), *args], env=env, **kwargs)


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_exact(tmp_path):
    """A real SIGKILL in the middle of the compressed stage, then the same command again."""
    common = ["--sleep", "0.3"]  # slow enough to be caught between checkpoints 6 and 9
    reference = _run_script(
        ["--checkpoint-dir", str(tmp_path / "ref"), "--out", str(tmp_path / "ref.pt"), *common]
    )
    assert reference.wait(timeout=120) == 0

    ckpt_dir = tmp_path / "run"
    args = ["--checkpoint-dir", str(ckpt_dir), "--out", str(tmp_path / "run.pt"), *common]
    victim = _run_script(args)
    deadline = time.monotonic() + 120
    target = {f"checkpoint-{i:08d}.pt" for i in range(6, 10)}  # inside stage "low-rank"
    while not (ckpt_dir.is_dir() and target & {p.name for p in ckpt_dir.iterdir()}):
        assert victim.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=30) == -signal.SIGKILL
    assert not (tmp_path / "run.pt").exists()

    restarted = _run_script(args)
    assert restarted.wait(timeout=120) == 0
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["resumed_from"] is not None and summary["step"] == 10
    _assert_same_weights(torch.load(tmp_path / "run.pt"), torch.load(tmp_path / "ref.pt"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    """torchrun, 2 CPU processes (gloo), batch 1 each == 1 process with batch 2."""
    common = ["--dropout", "0", "--checkpoint-every", "3"]
    single = _run_script(
        [
            "--checkpoint-dir",
            str(tmp_path / "one"),
            "--out",
            str(tmp_path / "one.pt"),
            "--batch-size",
            "2",
            *common,
        ]
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(RUNNER.parent), os.environ.get("PYTHONPATH")])
        ),
        "OMP_NUM_THREADS": "1",
    }
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "1",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(_free_port()),
            str(RUNNER),
            "--checkpoint-dir",
            str(tmp_path / "two"),
            "--out",
            str(tmp_path / "two.pt"),
            "--batch-size",
            "1",
            *common,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert single.wait(timeout=300) == 0
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-4, msg=key)
    # the DDP run checkpointed every rank's RNG state (rank 0 wrote it)
    state = torch.load(latest_checkpoint(tmp_path / "two"), weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
