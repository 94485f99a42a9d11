"""Loading a model folder never runs code, never reads outside the folder, catches corruption.

Issue 9, items 1-3: the reproduced exploit (a ``tqla_config.json`` naming
``subprocess:Popen``) as a test that the command does not run, and a table of hostile
descriptions, each refused with one clear error.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tqla_torch import compress, from_pretrained, presets  # noqa: E402
from tqla_torch.cli import main  # noqa: E402
from tqla_torch.io import CONFIG_NAME, WEIGHTS_NAME, save_pretrained  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_gpt2  # noqa: E402

PROBE = "tqla_hostile_probe"  # a module that, if ever imported, writes a marker file


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def good_doc(tmp_path_factory):
    """A compressed tiny GPT-2 saved by tqla: (folder, its parsed tqla_config.json)."""
    model = tiny_gpt2(dtype=torch.float32)
    compress(model, presets.kron_gpt2())
    folder = save_pretrained(model, tmp_path_factory.mktemp("good") / "m")
    return folder, json.loads((folder / CONFIG_NAME).read_text())


@pytest.fixture()
def folder(good_doc, tmp_path):
    """A fresh copy of the good folder to damage."""
    import shutil

    return Path(shutil.copytree(good_doc[0], tmp_path / "m"))


@pytest.fixture()
def probe(tmp_path, monkeypatch):
    """A module on sys.path whose import writes ``marker``; returns the marker path."""
    marker = tmp_path / "imported.marker"
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / f"{PROBE}.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\n"
        "class Thing:\n"
        "    model_type = 'gpt2'\n"
        "    def __init__(self, *a, **k): pass\n"
        "    @classmethod\n"
        "    def from_dict(cls, d): return cls()\n"
    )
    monkeypatch.syspath_prepend(str(lib))
    monkeypatch.delitem(sys.modules, PROBE, raising=False)
    return marker


def _write(folder: Path, doc: dict) -> None:
    (folder / CONFIG_NAME).write_text(json.dumps(doc))


def _exploit(doc: dict, marker: Path) -> dict:
    """The reported exploit: Popen(Spines(**base_config)) runs ``sh -c <command>``."""
    bad = json.loads(json.dumps(doc))
    bad["format_version"] = 1
    bad["model_class"] = "subprocess:Popen"
    bad["config_class"] = "matplotlib.spines:Spines"
    bad.pop("model_type", None)
    bad["base_config"] = {"sh": 1, "-c": 1, f"echo ran > {marker}": 1}
    return bad


def _never_appears(marker: Path, seconds: float = 1.5) -> bool:
    """Popen returns at once and its child runs later: watch for a while."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if marker.exists():
            return False
        time.sleep(0.05)
    return not marker.exists()


# --------------------------------------------------------------------------------------
# Item 1: the exploit, through the API and through ``tqla evaluate``
# --------------------------------------------------------------------------------------
def test_reported_exploit_does_not_run_on_from_pretrained(good_doc, folder, tmp_path):
    marker = tmp_path / "pwned"
    _write(folder, _exploit(good_doc[1], marker))
    with pytest.raises(ValueError) as info:
        from_pretrained(folder)
    assert _never_appears(marker), "the folder's command ran"
    assert "'subprocess:Popen' is not one of the transformers classes" in str(info.value)


def test_reported_exploit_does_not_run_on_tqla_evaluate(good_doc, folder, tmp_path, capsys):
    marker = tmp_path / "pwned"
    _write(folder, _exploit(good_doc[1], marker))
    code = main(["evaluate", str(folder), "--data", "builtin", "--tokenizer", "builtin:96"])
    err = capsys.readouterr().err
    assert _never_appears(marker), "the folder's command ran"
    assert code == 2 and "Traceback" not in err
    assert "'subprocess:Popen' is not one of the transformers classes" in err
    assert len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------
# Item 1: hostile descriptions, one clear error each, nothing imported
# --------------------------------------------------------------------------------------
def _set(path: str, value):
    def edit(doc: dict) -> None:
        *parents, last = path.split("/")
        target = doc
        for key in parents:
            target = target[key]
        target[last] = value

    return edit


HOSTILE = [
    # class names: nothing outside transformers' registry for the model type
    ("probe model class", _set("model_class", f"{PROBE}:Thing"), "is not one of the transformers"),
    (
        "probe config class",
        _set("config_class", f"{PROBE}:Thing"),
        "is not the transformers config",
    ),
    ("os.system", _set("model_class", "os:system"), "is not one of the transformers"),
    ("builtins.eval", _set("model_class", "builtins:eval"), "is not one of the transformers"),
    ("dotted path", _set("model_class", "a.b.GPT2LMHeadModel"), "is not a class name"),
    ("spoofed module", _set("model_class", f"{PROBE}:GPT2LMHeadModel"), "is not one of the"),
    ("other model type", _set("model_class", "BertModel"), "is not one of the transformers"),
    ("auto class", _set("model_class", "AutoModelForCausalLM"), "is not one of the transformers"),
    ("unknown model_type", _set("model_type", PROBE), f"model_type '{PROBE}' is not a model type"),
    ("model_type mismatch", _set("base_config/model_type", "bert"), "differs from model_type"),
    ("class name type", _set("model_class", 42), "must be a class name"),
    ("model_type type", _set("model_type", ["gpt2"]), "model_type must be a non-empty string"),
    # remote code, hub kernels, quantizers: never honoured
    ("auto_map", _set("base_config/auto_map", {"AutoModel": f"{PROBE}.Thing"}), "'auto_map'"),
    ("trust_remote_code", _set("base_config/trust_remote_code", True), "'trust_remote_code'"),
    (
        "nested auto_map",
        _set("base_config/task_specific_params", {"x": {"auto_map": {"A": "b.C"}}}),
        "'auto_map'] is not allowed",
    ),
    ("quantizer", _set("base_config/quantization_config", {"quant_method": "x"}), "quantization"),
    ("hub kernel", _set("base_config/_attn_implementation", "evil/kernel"), "hub kernels"),
    ("argv keys", _set("base_config/-c", "touch x"), "keys must be attribute names"),
    ("config type", _set("base_config", ["sh", "-c"]), "must be a JSON object"),
    # paths: weights from inside the folder only
    ("parent path", _set("weights/file", "../m/model.safetensors"), "no absolute path, no '..'"),
    ("absolute path", _set("weights/file", "/etc/passwd"), "no absolute path, no '..'"),
    ("backslash path", _set("weights/file", "..\\x.safetensors"), "no absolute path"),
    ("file type", _set("weights/file", 5), "weights.file must be a file name"),
    # types
    ("size type", _set("weights/size", "big"), "weights.size must be an integer"),
    ("checksum type", _set("weights/sha256", 1), "weights.sha256 must be a string"),
    ("module spec type", _set("modules/x", "KroneckerLinear"), r"modules\['x'\] has no layer type"),
    (
        "layer type",
        _set("modules/transformer.h.1.mlp.c_fc/type", "os.system"),
        "unknown layer type",
    ),
    ("tie type", _set("tied_parameters/lm_head.weight", 3), "must be a tensor name"),
    (
        "spec without sizes",
        _set("modules/transformer.h.1.mlp.c_fc", {"type": "KroneckerLinear"}),
        r"modules\['transformer.h.1.mlp.c_fc'\] is invalid",
    ),
    (
        "spec sizes type",
        _set("modules/transformer.h.1.mlp.c_fc/rank", "four"),
        r"modules\['transformer.h.1.mlp.c_fc'\] is invalid",
    ),
    (
        "head to a non-embedding",
        _set("modules/lm_head", {"type": "TiedEmbeddingHead", "embedding": "transformer.ln_f"}),
        "head 'lm_head'",
    ),
    (
        "untied head sizes",
        _set("modules/lm_head", {"type": "UntiedHead", "in_features": "x"}),
        "head 'lm_head' is invalid",
    ),
    ("history type", _set("compression_history", "rm -rf"), "must be a list"),
    ("version type", _set("format_version", True), "format_version True is not supported"),
]


@pytest.mark.parametrize("edit, message", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_descriptions_are_refused(good_doc, folder, probe, edit, message):
    doc = json.loads(json.dumps(good_doc[1]))
    edit(doc)
    _write(folder, doc)
    with pytest.raises(ValueError, match=message) as info:
        from_pretrained(folder)
    assert "\n" not in str(info.value)  # one line
    assert not probe.exists() and PROBE not in sys.modules  # nothing named was imported


def test_old_format_class_paths_still_load_but_only_from_transformers(good_doc, folder, probe):
    """Version-1 folders recorded ``module:Class``: read by name, module checked, never imported."""
    doc = json.loads(json.dumps(good_doc[1]))
    doc["format_version"] = 1
    doc.pop("model_type")
    doc["model_class"] = "transformers.models.gpt2.modeling_gpt2:GPT2LMHeadModel"
    doc["config_class"] = "transformers.models.gpt2.configuration_gpt2:GPT2Config"
    _write(folder, doc)
    assert type(from_pretrained(folder)).__name__ == "GPT2LMHeadModel"
    doc["model_class"] = f"{PROBE}:GPT2LMHeadModel"
    _write(folder, doc)
    with pytest.raises(ValueError, match="is not one of the transformers classes"):
        from_pretrained(folder)
    assert not probe.exists()


# --------------------------------------------------------------------------------------
# Item 1 for Hugging Face folders: auto_map / remote code is never honoured
# --------------------------------------------------------------------------------------
@pytest.fixture()
def hf_folder(tmp_path):
    model = tiny_gpt2(dtype=torch.float32)
    model.save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


REMOTE = [
    ("remote model type", {"model_type": PROBE, "auto_map": {"AutoModelForCausalLM": "x.Y"}}),
    ("auto_map on a known type", {"auto_map": {"AutoModelForCausalLM": f"{PROBE}.Thing"}}),
    ("architectures", {"architectures": [f"{PROBE}:Thing"]}),
    ("hub kernel", {"_attn_implementation": "kernels-community/evil"}),
]


@pytest.mark.parametrize("change", [r[1] for r in REMOTE], ids=[r[0] for r in REMOTE])
@pytest.mark.parametrize("loader", ["from_pretrained", "load_model"])
def test_hf_folder_asking_for_code_is_refused(hf_folder, probe, change, loader):
    from tqla_torch._models import ModelLoadError, load_model

    config = json.loads((hf_folder / "config.json").read_text())
    config.update(change)
    (hf_folder / "config.json").write_text(json.dumps(config))
    # the code the folder would like to run, next to it as transformers' remote code would be
    (hf_folder / "x.py").write_text(f"open({str(probe)!r}, 'w').write('ran')\nclass Y: pass\n")
    with pytest.raises((ValueError, ModelLoadError)) as info:
        if loader == "from_pretrained":
            from_pretrained(hf_folder)
        else:
            load_model(hf_folder)
    assert "\n" not in str(info.value)
    assert not probe.exists() and PROBE not in sys.modules


# --------------------------------------------------------------------------------------
# Item 2: symbolic links out of the folder
# --------------------------------------------------------------------------------------
def test_symlinked_weights_outside_the_folder_are_refused(good_doc, folder, tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes((folder / WEIGHTS_NAME).read_bytes())
    (folder / "link.safetensors").symlink_to(outside)
    doc = json.loads(json.dumps(good_doc[1]))
    doc["weights"]["file"] = "link.safetensors"
    _write(folder, doc)
    with pytest.raises(ValueError, match="outside the folder"):
        from_pretrained(folder)
    (folder / WEIGHTS_NAME).unlink()  # the default name as a link out of the folder
    (folder / WEIGHTS_NAME).symlink_to(outside)
    _write(folder, good_doc[1])
    with pytest.raises(ValueError, match="outside the folder"):
        from_pretrained(folder)


def test_symlink_inside_the_folder_is_fine(good_doc, folder):
    os.replace(folder / WEIGHTS_NAME, folder / "real.safetensors")
    (folder / WEIGHTS_NAME).symlink_to("real.safetensors")
    assert type(from_pretrained(folder)).__name__ == "GPT2LMHeadModel"


# --------------------------------------------------------------------------------------
# Item 3: a flipped byte in the tensor data
# --------------------------------------------------------------------------------------
def test_flipped_byte_in_tensor_data_is_caught(good_doc, folder):
    path = folder / WEIGHTS_NAME
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header + (len(data) - header) // 2] ^= 0x01  # one bit, in the middle of the tensors
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.safetensors is corrupted: its SHA-256 differs"):
        from_pretrained(folder)
    assert good_doc[1]["weights"]["sha256"] and len(good_doc[1]["weights"]["sha256"]) == 64


def test_folder_without_checksum_loads_with_a_warning(good_doc, folder, caplog):
    doc = json.loads(json.dumps(good_doc[1]))
    del doc["weights"]["sha256"]
    _write(folder, doc)
    with caplog.at_level("WARNING", logger="tqla_torch.io"):
        from_pretrained(folder)
    assert "records no checksum" in caplog.text


def test_tokenizer_folder_asking_for_code_is_refused(tmp_path, probe):
    from tqla_torch._models import ModelLoadError, load_tokenizer
    from tqla_torch.data import builtin_tokenizer

    folder = tmp_path / "tok"
    builtin_tokenizer(vocab_size=300).save_pretrained(folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("tokenizer_class", None)  # so that transformers would look at auto_map
    config["auto_map"] = {"AutoTokenizer": ["x.Y", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "x.py").write_text(f"open({str(probe)!r}, 'w').write('ran')\nclass Y: pass\n")
    with pytest.raises(ModelLoadError, match=r"\['auto_map'\] is not allowed") as info:
        load_tokenizer(folder)
    assert "\n" not in str(info.value) and not probe.exists()
