"""No silent wrong model: the Hugging Face habit restores exactly or is refused (issue 9).

Item 4: after ``tqla_torch.compress``, transformers' own ``model.save_pretrained`` writes a folder
that ``tqla_torch.from_pretrained``, ``load_model`` and ``tqla evaluate`` restore exactly; any
folder that cannot be restored exactly is refused with what to do, never filled with random
weights.  Item 6: ``tqla evaluate`` refuses a text shorter than one window.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tqla_torch import CompressionConfig, compress, from_pretrained, presets  # noqa: E402
from tqla_torch._models import ModelLoadError, load_model  # noqa: E402
from tqla_torch.cli import main  # noqa: E402
from tqla_torch.layers import KroneckerLinear, TiedEmbeddingHead  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_gpt2  # noqa: E402

IDS = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(3))


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def logits(model):
    with torch.no_grad():
        return model(IDS, attention_mask=torch.ones_like(IDS)).logits


PLANS = {
    "tied head (tq_gpt2)": lambda: presets.tq_gpt2(n_iter=1),
    "dense tie (MLPs only)": lambda: presets.kron_gpt2_steps()[1],
    "untied head": lambda: presets.tq_gpt2(n_iter=1, tie_lm_head=False),
    "low rank": lambda: CompressionConfig(target_modules=["c_fc", "c_proj"], method="svd", rank=4),
}


@pytest.mark.parametrize("plan", PLANS.values(), ids=PLANS.keys())
def test_transformers_save_pretrained_round_trip_is_exact(plan, tmp_path):
    model = tiny_gpt2(dtype=torch.float32)
    compress(model, plan())
    model.save_pretrained(tmp_path / "hf")  # transformers' own method
    assert "tqla_compression" in json.loads((tmp_path / "hf" / "config.json").read_text())
    for loaded in (from_pretrained(tmp_path / "hf"), load_model(tmp_path / "hf").model):
        assert type(loaded) is type(model) and not loaded.training
        assert torch.equal(logits(loaded), logits(model))  # same tensors, same code path
        sd, ref = loaded.state_dict(), model.state_dict()
        assert sd.keys() == ref.keys() and all(torch.equal(sd[k], ref[k]) for k in sd)
        assert loaded.tqla_compression_history == model.tqla_compression_history
        assert [type(m) for m in loaded.modules()] == [type(m) for m in model.modules()]
        head = loaded.lm_head
        if isinstance(model.lm_head, TiedEmbeddingHead):
            assert head.embedding is loaded.transformer.wte
        elif model.lm_head.weight is getattr(model.transformer.wte, "weight", None):
            assert head.weight is loaded.transformer.wte.weight  # the dense tie is kept
        else:
            assert head.weight is not getattr(loaded.transformer.wte, "weight", None)
    # the loaded model saves the same way again
    loaded.save_pretrained(tmp_path / "again")
    assert torch.equal(logits(from_pretrained(tmp_path / "again")), logits(model))


def test_tqla_evaluate_scores_the_saved_weights(tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tqla_torch.data import builtin_documents, builtin_tokenizer
    from tqla_torch.training.evaluate import text_perplexity

    tok = builtin_tokenizer(vocab_size=512)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=len(tok))
    ).eval()
    compress(model, presets.kron_gpt2())
    model.save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")
    text = tmp_path / "small.txt"
    text.write_text(builtin_documents("validation")[0][:3000])
    expected = text_perplexity(model, tok, text, window=32).ppl
    capsys.readouterr()
    code = main(
        [
            "evaluate",
            str(tmp_path / "hf"),
            "--data",
            str(text),
            "--window",
            "32",
            "--device",
            "cpu",
            "--json",
            str(tmp_path / "r.json"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["kind"] == "tqla"
    assert report["perplexity"]["ppl"] == expected  # the compressed weights, not random ones


@pytest.fixture()
def compressed_hf(tmp_path):
    model = tiny_gpt2(dtype=torch.float32)
    compress(model, presets.kron_gpt2())
    model.save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


def _load_both(folder: Path, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        from_pretrained(folder)
    with pytest.raises((ValueError, ModelLoadError), match=match):
        load_model(folder)


def test_record_without_the_compressed_weights_is_refused(compressed_hf, tmp_path):
    """config.json says compressed, the weights are the dense model's: refused, not random."""
    plain = tmp_path / "plain"
    tiny_gpt2(dtype=torch.float32).save_pretrained(plain)
    shutil.copy(compressed_hf / "config.json", plain / "config.json")
    _load_both(plain, r"missing tensors \[.*c_fc\.A.*Refusing to fill the gaps with random")


def test_compressed_weights_without_the_record_are_refused(compressed_hf):
    """A folder saved from a compressed model without the record (an older tqla)."""
    config = json.loads((compressed_hf / "config.json").read_text())
    del config["tqla_compression"]
    (compressed_hf / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="without tqla's record: compress and save it again"):
        load_model(compressed_hf)
    with pytest.raises(ValueError, match="compressed by an older tqla_torch.*compress the model"):
        from_pretrained(compressed_hf)


def test_plain_folder_missing_a_tensor_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "hf"
    tiny_gpt2(dtype=torch.float32).save_pretrained(folder)
    tensors = load_file(folder / "model.safetensors")
    del tensors["transformer.h.1.mlp.c_fc.weight"]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    _load_both(folder, r"h\.1\.mlp\.c_fc\.weight.*random")


def test_plain_folder_round_trip_through_from_pretrained(tmp_path):
    model = tiny_gpt2(dtype=torch.float32)
    model.save_pretrained(tmp_path / "hf")
    loaded = from_pretrained(tmp_path / "hf")
    assert torch.equal(logits(loaded), logits(model))
    assert loaded.lm_head.weight is loaded.transformer.wte.weight


def test_pickle_weights_are_never_loaded(tmp_path):
    folder = tmp_path / "hf"
    tiny_gpt2(dtype=torch.float32).save_pretrained(folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    _load_both(folder, "safetensors only")


def test_compress_records_the_spec_in_the_config():
    model = tiny_gpt2(dtype=torch.float32)
    compress(model, presets.kron_gpt2())
    record = model.config.tqla_compression
    fc = model.transformer.h[1].mlp.c_fc
    assert isinstance(fc, KroneckerLinear)
    assert record["modules"]["transformer.h.1.mlp.c_fc"] == fc.spec()
    assert record["compression_history"] == model.tqla_compression_history


# --------------------------------------------------------------------------------------
# Item 6: an empty or too short text is refused with the count
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", ["", "a few words"])
def test_tqla_evaluate_refuses_a_text_shorter_than_one_window(tmp_path, capsys, content):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tqla_torch.data import builtin_tokenizer

    tok = builtin_tokenizer(vocab_size=512)
    GPT2LMHeadModel(
        GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=64, vocab_size=len(tok))
    ).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    (tmp_path / "t.txt").write_text(content)
    capsys.readouterr()
    code = main(["evaluate", str(tmp_path / "m"), "--data", str(tmp_path / "t.txt")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "fewer than one window of 64" in err and " token" in err
    assert len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------
# Item 11: one clear line, exit status 2, no traceback
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A 1-block GPT-2 with a 300-token vocabulary and a 300-token tokenizer, and a text."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from tqla_torch.data import builtin_documents, builtin_tokenizer

    root = tmp_path_factory.mktemp("small")
    tok = builtin_tokenizer(vocab_size=300)
    torch.manual_seed(0)
    GPT2LMHeadModel(
        GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=64, vocab_size=len(tok))
    ).save_pretrained(root / "m")
    tok.save_pretrained(root / "m")
    (root / "t.txt").write_text(builtin_documents("validation")[0][:2000])
    (root / "binary.json").write_bytes(bytes(range(256)) * 4)
    return root


def _clean_error(capsys, argv, *needles):
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_device_meta_is_refused(small_model, tmp_path, capsys):
    m, t = str(small_model / "m"), str(small_model / "t.txt")
    _clean_error(capsys, ["evaluate", m, "--data", t, "--device", "meta"], "device must be")
    _clean_error(capsys, ["evaluate", m, "--data", t, "--device", "cuda:7"], "'cuda:7'")
    distill = ["distill", "--teacher", m, "--data", t, "--output", str(tmp_path / "o")]
    distill += ["--preset", "kron_gpt2", "--max-steps", "1", "--no-progress"]
    _clean_error(capsys, [*distill, "--device", "meta"], "device must be")
    _clean_error(
        capsys,
        ["compress", m, "--preset", "kron_gpt2", "-o", str(tmp_path / "c"), "--device", "meta"],
        "device must be",
    )


def test_tokenizer_larger_than_the_vocabulary_is_refused(small_model, capsys):
    argv = ["evaluate", str(small_model / "m"), "--data", str(small_model / "t.txt")]
    _clean_error(
        capsys,
        [*argv, "--tokenizer", "builtin:512"],
        "the tokenizer has 512 tokens but the model's vocabulary has 300",
    )


@pytest.mark.parametrize("command", ["evaluate", "compress"])
def test_binary_config_file_is_refused(small_model, tmp_path, capsys, command):
    argv = [command, str(small_model / "m"), "--config", str(small_model / "binary.json")]
    if command == "compress":
        argv += ["-o", str(tmp_path / "out")]
    _clean_error(capsys, argv, "is a binary file, not a JSON text file")
