"""Bounded-memory, resumable compression of a checkpoint folder (compress_folder)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _tiny import tiny_gpt2

import tqla_torch
from tqla_torch.compression.presets import tq_gpt2
from tqla_torch.compression.streaming import STATE_DIR, compress_folder

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

_SVD = r"transformer\.h\.\d+\.(?:attn\.c_attn|mlp\.c_proj)"
IDS = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(1))


def _save(folder: Path, shard: str | None) -> Path:
    model = tiny_gpt2()
    kwargs = {} if shard is None else {"max_shard_size": shard}
    model.save_pretrained(folder, **kwargs)
    return folder


def _reference(cfg) -> torch.nn.Module:
    """The in-memory path: the dense model compressed by tqla_torch.compress."""
    model = tiny_gpt2()
    tqla_torch.compress(model, cfg, n_jobs=1)
    return model


def _assert_same_model(loaded: torch.nn.Module, ref: torch.nn.Module) -> None:
    got, want = loaded.state_dict(), ref.state_dict()
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k
    with torch.no_grad():
        assert torch.equal(loaded(IDS).logits, ref(IDS).logits)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("shard", "cfg"),
    [
        (None, tq_gpt2(blocks="all")),
        ("20KB", tq_gpt2(blocks="all")),
        ("20KB", tq_gpt2(tie_lm_head=False)),
        ("20KB", tqla_torch.CompressionConfig(target_modules=_SVD, method="svd", rank=4)),
    ],
    ids=["single-file", "sharded", "untied-head", "svd"],
)
def test_folder_equals_in_memory_path(tmp_path, shard, cfg):
    src = _save(tmp_path / "src", shard)
    if shard is not None:
        assert (src / "model.safetensors.index.json").is_file()
    report = compress_folder(src, tmp_path / "out", cfg)
    ref = _reference(cfg)
    _assert_same_model(tqla_torch.from_pretrained(tmp_path / "out"), ref)
    assert report.params_after == tqla_torch.count_parameters(ref)
    assert not (tmp_path / "out" / STATE_DIR).exists()
    assert {m.name for m in report.modules} == {
        n for n, m in ref.named_modules() if isinstance(m, tqla_torch.CompressedModule)
    }


def test_missing_shard_is_named_and_nothing_written(tmp_path):
    src = _save(tmp_path / "src", "20KB")
    index = json.loads((src / "model.safetensors.index.json").read_text())
    gone = sorted(set(index["weight_map"].values()))[3]
    (src / gone).unlink()
    with pytest.raises(FileNotFoundError, match=gone):
        compress_folder(src, tmp_path / "out", tq_gpt2())
    assert not (tmp_path / "out").exists()


def test_tensor_of_wrong_shape_is_named_and_nothing_written(tmp_path):
    from safetensors.torch import load_file, save_file

    src = _save(tmp_path / "src", None)
    tensors = load_file(src / "model.safetensors")
    tensors["transformer.h.2.mlp.c_fc.weight"] = torch.zeros(32, 64, dtype=torch.float64)
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"transformer\.h\.2\.mlp\.c_fc\.weight.*\[32, 64\]"):
        compress_folder(src, tmp_path / "out", tq_gpt2())
    assert not (tmp_path / "out").exists()


def test_missing_tensor_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    src = _save(tmp_path / "src", None)
    tensors = load_file(src / "model.safetensors")
    del tensors["transformer.h.1.ln_2.bias"]
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"lacks tensors.*transformer\.h\.1\.ln_2\.bias"):
        compress_folder(src, tmp_path / "out", tq_gpt2())


class _Stop(Exception):
    pass


def test_resume_after_failure_and_plan_mismatch(tmp_path):
    src = _save(tmp_path / "src", "20KB")
    out = tmp_path / "out"
    cfg = tq_gpt2(blocks="all")

    def stop_after_two(done, total, names):
        if done == 2:
            raise _Stop("interrupted")

    with pytest.raises(_Stop):
        compress_folder(src, out, cfg, callback=stop_after_two)
    assert len(list((out / STATE_DIR).glob("unit-*.json"))) == 2
    before = _tree(out)
    with pytest.raises(ValueError, match="different plan"):
        compress_folder(src, out, tq_gpt2(blocks="odd"))
    with pytest.raises(ValueError, match="different plan"):
        compress_folder(src, out, cfg, fold_permutations=False)
    assert _tree(out) == before  # nothing overwritten
    seen = []
    compress_folder(src, out, cfg, callback=lambda d, t, names: seen.append(names))
    assert len(seen) == 5 - 2  # wte and 4 MLPs (c_fc + c_proj folded together); 2 were done
    _assert_same_model(tqla_torch.from_pretrained(out), _reference(cfg))


def test_non_empty_output_is_refused(tmp_path):
    src = _save(tmp_path / "src", None)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        compress_folder(src, tmp_path / "out", tq_gpt2())
    compress_folder(src, tmp_path / "out", tq_gpt2(), overwrite=True)
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


_KILLED_RUN = """
import sys, time
from tqla_torch.compression.presets import tq_gpt2
from tqla_torch.compression.streaming import compress_folder
compress_folder(sys.argv[1], sys.argv[2], tq_gpt2(blocks="all"),
                callback=lambda done, total, names: time.sleep(30))
"""


@pytest.mark.slow
def test_sigkill_mid_plan_then_rerun_gives_the_same_model(tmp_path):
    """A real SIGKILL after the first finished unit; the same call again completes it."""
    src = _save(tmp_path / "src", "20KB")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(src), str(out)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not list((out / STATE_DIR).glob("unit-*.json")):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "tqla_config.json").exists()  # nothing loadable was left half-written
    seen = []
    compress_folder(src, out, tq_gpt2(blocks="all"), callback=lambda *a: seen.append(a))
    assert len(seen) == 4  # one of five units survived the kill
    _assert_same_model(tqla_torch.from_pretrained(out), _reference(tq_gpt2(blocks="all")))


def test_cli_compresses_a_folder_module_by_module(tmp_path, capsys):
    from tqla_torch.cli import main

    src = _save(tmp_path / "src", "20KB")
    out = tmp_path / "out"
    assert main(["compress", str(src), "--preset", "tq_gpt2", "-o", str(out)]) == 0
    report = json.loads((out / "tqla_compress_report.json").read_text())
    assert report["streamed"] is True
    _assert_same_model(tqla_torch.from_pretrained(out), _reference(tq_gpt2()))
