"""save_pretrained / from_pretrained: bit-equal round trips, ties, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tqla_torch import CompressionConfig, compress, count_parameters, from_pretrained, presets
from tqla_torch.io import CONFIG_NAME, WEIGHTS_NAME, is_compressed_folder, save_pretrained
from tqla_torch.layers import KroneckerLinear, TiedEmbeddingHead

transformers = pytest.importorskip("transformers")
GPT2Config, GPT2LMHeadModel = transformers.GPT2Config, transformers.GPT2LMHeadModel

IDS = torch.randint(0, 96, (2, 10), generator=torch.Generator().manual_seed(1))


from _tiny import tiny_gpt2 as _tiny_gpt2  # noqa: E402


def tiny_gpt2(*, seed: int = 0, dtype: torch.dtype = torch.float32) -> GPT2LMHeadModel:
    """The shared tiny GPT-2, in float32 by default here."""
    return _tiny_gpt2(seed=seed, dtype=dtype)


@pytest.fixture(scope="module")
def compressed():
    model = tiny_gpt2()
    compress(model, presets.tq_gpt2(n_iter=1))
    return model


def logits(model):
    with torch.no_grad():
        return model(IDS, attention_mask=torch.ones_like(IDS)).logits


# --------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------
def test_round_trip_is_bit_exact_and_keeps_the_tie(compressed, tmp_path):
    out = save_pretrained(compressed, tmp_path / "tq")
    assert sorted(p.name for p in out.iterdir()) == [WEIGHTS_NAME, CONFIG_NAME]
    assert is_compressed_folder(out) and not is_compressed_folder(tmp_path)
    loaded = from_pretrained(out)
    assert type(loaded) is GPT2LMHeadModel and not loaded.training
    assert torch.equal(logits(loaded), logits(compressed))
    assert isinstance(loaded.lm_head, TiedEmbeddingHead)
    assert loaded.lm_head.embedding is loaded.transformer.wte
    assert count_parameters(loaded) == count_parameters(compressed)
    assert loaded.tqla_compression_history == compressed.tqla_compression_history
    fc = loaded.transformer.h[1].mlp.c_fc
    assert isinstance(fc, KroneckerLinear) and fc.source == "conv1d"
    sd, ref = loaded.state_dict(), compressed.state_dict()
    assert sd.keys() == ref.keys() and all(torch.equal(sd[k], ref[k]) for k in sd)
    assert any(k.endswith("_perm") for k in sd)  # permutation buffers travel with the weights
    doc = json.loads((out / CONFIG_NAME).read_text())
    assert doc["base_config"]["n_embd"] == 32 and doc["dtype"] == "float32"
    assert doc["versions"]["tqla"] and doc["versions"]["torch"]
    assert doc["modules"]["lm_head"] == {
        "type": "TiedEmbeddingHead",
        "bias": False,
        "embedding": "transformer.wte",
    }
    assert doc["modules"]["transformer.h.1.mlp.c_fc"]["shape"] == [
        [32, 16],
        [4, 2],
    ]  # layer (out, in)
    assert CompressionConfig.from_dict(doc["compression_history"][0]) == presets.tq_gpt2(n_iter=1)
    # the loaded model trains: one tie, gradients into the shared factors from both ends
    loaded.train()
    loaded(IDS, attention_mask=torch.ones_like(IDS), labels=IDS).loss.backward()
    assert loaded.transformer.wte.table.grad is not None


def test_round_trip_into_a_base_model(compressed, tmp_path):
    save_pretrained(compressed, tmp_path / "tq")
    base = tiny_gpt2(seed=5)  # different weights: everything comes from the file
    assert base.lm_head.weight is base.transformer.wte.weight
    loaded = from_pretrained(tmp_path / "tq", base_model=base)
    assert loaded is base and torch.equal(logits(loaded), logits(compressed))
    assert loaded.config.tie_word_embeddings is False


def test_dense_tie_is_stored_once_and_restored(tmp_path):
    model = tiny_gpt2()  # only MLPs compressed: lm_head.weight is wte.weight (dense tie)
    compress(model, presets.kron_gpt2_steps()[1])
    save_pretrained(model, tmp_path / "m")
    doc = json.loads((tmp_path / "m" / CONFIG_NAME).read_text())
    assert doc["tied_parameters"] == {"lm_head.weight": "transformer.wte.weight"}
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m" / WEIGHTS_NAME), "pt") as fh:
        assert "lm_head.weight" not in fh.keys() and "transformer.wte.weight" in fh.keys()
    loaded = from_pretrained(tmp_path / "m")
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    assert torch.equal(logits(loaded), logits(model))


def test_untied_head_round_trip(tmp_path):
    model = tiny_gpt2()
    compress(model, presets.tq_gpt2(n_iter=1, tie_lm_head=False))
    save_pretrained(model, tmp_path / "u")
    loaded = from_pretrained(tmp_path / "u")
    assert isinstance(loaded.lm_head, nn.Linear)
    assert loaded.lm_head.weight is not getattr(loaded.transformer.wte, "weight", None)
    assert torch.equal(logits(loaded), logits(model))
    assert count_parameters(loaded) == count_parameters(model)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dtype_is_kept(dtype, tmp_path):
    model = tiny_gpt2(dtype=dtype)
    compress(model, presets.kron_gpt2())
    save_pretrained(model, tmp_path / "d")
    loaded = from_pretrained(tmp_path / "d")
    assert loaded.transformer.h[1].mlp.c_fc.A.dtype == dtype
    assert torch.equal(logits(loaded), logits(model))


def test_compressed_only_weights_need_the_base(tmp_path):
    base_state = tiny_gpt2().state_dict()
    model = tiny_gpt2()
    compress(model, presets.kron_gpt2())
    save_pretrained(model, tmp_path / "c", weights="compressed")
    with pytest.raises(ValueError, match="stores only the compressed modules.*base_model="):
        from_pretrained(tmp_path / "c")
    base = tiny_gpt2(seed=0)
    base.load_state_dict(base_state)
    loaded = from_pretrained(tmp_path / "c", base_model=base)
    assert torch.equal(logits(loaded), logits(model))
    full = (tmp_path / "c" / WEIGHTS_NAME).stat().st_size
    save_pretrained(model, tmp_path / "f")
    assert full < (tmp_path / "f" / WEIGHTS_NAME).stat().st_size


def test_plain_torch_model_round_trip(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 12), nn.GELU(), nn.Linear(12, 8))
    compress(model, CompressionConfig(target_modules=["0"], b_shape=[3, 2], rank=2, n_iter=1))
    save_pretrained(model, tmp_path / "s")
    with pytest.raises(ValueError, match="records no model config.*base_model="):
        from_pretrained(tmp_path / "s")
    base = nn.Sequential(nn.Linear(8, 12), nn.GELU(), nn.Linear(12, 8))
    loaded = from_pretrained(tmp_path / "s", base_model=base)
    x = torch.randn(3, 8)
    assert torch.equal(loaded(x), model(x))


def test_overwrite_is_atomic_and_leaves_other_files(compressed, tmp_path):
    d = tmp_path / "tq"
    d.mkdir()
    (d / "tokenizer.json").write_text("{}")
    save_pretrained(compressed, d)
    save_pretrained(compressed, d)  # again, over the first save
    names = sorted(p.name for p in d.iterdir())
    assert names == sorted([WEIGHTS_NAME, CONFIG_NAME, "tokenizer.json"])  # no temporaries
    assert torch.equal(logits(from_pretrained(d)), logits(compressed))


# --------------------------------------------------------------------------------------
# Bad folders
# --------------------------------------------------------------------------------------
@pytest.fixture()
def saved(compressed, tmp_path):
    return save_pretrained(compressed, tmp_path / "tq")


def test_missing_files(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        from_pretrained(tmp_path / "nope")
    (saved / WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{WEIGHTS_NAME} is missing"):
        from_pretrained(saved)
    (saved / CONFIG_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{CONFIG_NAME} is missing"):
        from_pretrained(saved)


def test_truncated_weights(saved):
    path = saved / WEIGHTS_NAME
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"{WEIGHTS_NAME} has \d+ bytes but .* truncated"):
        from_pretrained(saved)
    # without the recorded size, safetensors itself rejects the file; the message names it
    doc = json.loads((saved / CONFIG_NAME).read_text())
    del doc["weights"]["size"]
    (saved / CONFIG_NAME).write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=rf"{WEIGHTS_NAME} is not a readable safetensors file"):
        from_pretrained(saved)


def test_truncated_or_foreign_config(saved):
    path = saved / CONFIG_NAME
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=rf"{CONFIG_NAME} is not valid JSON"):
        from_pretrained(saved)
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a tqla_torch description"):
        from_pretrained(saved)
    doc = json.loads(text)
    doc["format_version"] = 99
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="format_version 99 is not supported"):
        from_pretrained(saved)


def test_files_from_different_saves(compressed, saved, tmp_path):
    other = save_pretrained(compressed, tmp_path / "other")
    (saved / WEIGHTS_NAME).write_bytes((other / WEIGHTS_NAME).read_bytes())
    with pytest.raises(ValueError, match="come from different saves"):
        from_pretrained(saved)


def test_mismatched_shapes_and_names(saved):
    path = saved / CONFIG_NAME
    doc = json.loads(path.read_text())
    good = json.dumps(doc)
    doc["modules"]["transformer.h.1.mlp.c_fc"]["shape"] = [[32, 32], [4, 1]]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"wrong shape .*transformer\.h\.1\.mlp\.c_fc\.A"):
        from_pretrained(saved)
    doc = json.loads(good)
    doc["modules"]["transformer.h.1.mlp.c_fc"]["permute"] = "none"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"unexpected tensors .*c_fc\.(in|out)put_perm"):
        from_pretrained(saved)
    doc = json.loads(good)
    doc["modules"]["transformer.h.0.mlp.c_fc"] = doc["modules"]["transformer.h.1.mlp.c_fc"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"missing tensors .*h\.0\.mlp\.c_fc\.A"):
        from_pretrained(saved)
    doc = json.loads(good)
    doc["modules"]["transformer.h.9.mlp.c_fc"] = doc["modules"]["transformer.h.1.mlp.c_fc"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"names module 'transformer\.h\.9\.mlp\.c_fc'"):
        from_pretrained(saved)


def test_base_model_of_another_size(saved):
    other = GPT2LMHeadModel(GPT2Config(vocab_size=96, n_embd=64, n_layer=4, n_head=2))
    with pytest.raises(ValueError, match=r"'transformer\.wte' is 96→32 in the save, but 96→64"):
        from_pretrained(saved, base_model=other)
