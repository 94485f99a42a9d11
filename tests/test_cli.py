"""The ``tqla`` command: every subcommand end to end on a tiny GPT-2, help texts, clear errors.

The models are built from ``GPT2Config`` and saved locally (the hub is never contacted:
``HF_HUB_OFFLINE=1`` is set for every test), with the built-in tokenizer saved next to them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tqla_torch.cli import build_parser, main  # noqa: E402

SUBCOMMANDS = ["inspect", "compress", "distill", "evaluate", "demo"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory) -> Path:
    """A 2-block GPT-2 (n_embd 32, vocab 512, 64 positions) with its tokenizer, saved."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from tqla_torch.data import builtin_tokenizer

    folder = tmp_path_factory.mktemp("models") / "tiny-gpt2"
    tok = builtin_tokenizer(vocab_size=512)
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        n_positions=64,
        vocab_size=len(tok),
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def small_text(tmp_path_factory) -> Path:
    """A short text file (a few hundred tokens) for quick evaluations and distillations."""
    from tqla_torch.data import builtin_documents

    path = tmp_path_factory.mktemp("data") / "small.txt"
    path.write_text(builtin_documents("validation")[0][:3000])
    return path


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------------------------------
# help
# ------------------------------------------------------------------------------------------


def test_top_level_help(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    for name in SUBCOMMANDS:
        assert name in out
    assert "examples:" in out


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_subcommand_help(command, capsys):
    code, out, _ = run([command, "--help"], capsys)
    assert code == 0
    assert "examples:" in out
    assert f"tqla {command}" in out
    for flag in ("--device", "--seed", "--verbose"):
        assert flag in out


def test_version(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0
    assert out.startswith("tqla ")


def test_no_command_is_a_usage_error(capsys):
    code, _, err = run([], capsys)
    assert code == 2
    assert "usage:" in err


def test_parser_lists_every_subcommand():
    parser = build_parser()
    text = parser.format_help()
    for name in SUBCOMMANDS:
        assert name in text


# ------------------------------------------------------------------------------------------
# evaluate
# ------------------------------------------------------------------------------------------


def test_evaluate_builtin_and_json(tiny_gpt2, tmp_path, capsys):
    out_json = tmp_path / "scores.json"
    code, out, err = run(
        [
            "evaluate",
            str(tiny_gpt2),
            "--window",
            "64",
            "--device",
            "cpu",
            "--no-progress",
            "--json",
            str(out_json),
        ],
        capsys,
    )
    assert code == 0, err
    assert "perplexity" in out
    report = json.loads(out_json.read_text())
    ppl = report["perplexity"]["ppl"]
    # an untrained model is close to uniform over the 512-token vocabulary
    assert 100 < ppl < 2000
    assert report["perplexity"]["window"] == 64
    assert report["parameters"] > 0


def test_evaluate_stride_text_file_and_lambada(tiny_gpt2, tmp_path, capsys):
    text = tmp_path / "wiki.test.raw"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    lam = tmp_path / "lambada.jsonl"
    lam.write_text(
        "\n".join(json.dumps({"text": f"the class statement defines a new {w}"}) for w in
                  ["class", "type", "object"])
        + "\n"
    )
    out_json = tmp_path / "scores.json"
    code, out, err = run(
        [
            "evaluate",
            str(tiny_gpt2),
            "--data",
            str(text),
            "--window",
            "32",
            "--stride",
            "16",
            "--lambada",
            str(lam),
            "--json",
            str(out_json),
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    report = json.loads(out_json.read_text())
    assert report["perplexity"]["stride"] == 16
    assert report["lambada"]["n_examples"] == 3
    assert "LAMBADA accuracy" in out


def test_evaluate_config_json_gives_defaults_flags_win(tiny_gpt2, small_text, tmp_path, capsys):
    cfg = tmp_path / "eval.json"
    cfg.write_text(
        json.dumps({"window": 16, "batch_size": 4, "progress": False, "data": str(small_text)})
    )
    out_json = tmp_path / "scores.json"
    code, _, err = run(
        ["evaluate", str(tiny_gpt2), "--config", str(cfg), "--json", str(out_json)], capsys
    )
    assert code == 0, err
    assert json.loads(out_json.read_text())["perplexity"]["window"] == 16
    code, _, err = run(
        ["evaluate", str(tiny_gpt2), "--config", str(cfg), "--window", "32", "--json",
         str(out_json)],
        capsys,
    )
    assert code == 0, err
    assert json.loads(out_json.read_text())["perplexity"]["window"] == 32


# ------------------------------------------------------------------------------------------
# errors: one line on stderr, exit code 2, no traceback unless -v
# ------------------------------------------------------------------------------------------


def _assert_clean_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    assert "error:" in err
    for needle in needles:
        assert needle in err, err


def test_missing_model_folder(tmp_path, capsys):
    code, _, err = run(["evaluate", str(tmp_path / "nope")], capsys)
    _assert_clean_error(code, err, "does not exist")


def test_folder_without_config_json(tmp_path, capsys):
    code, _, err = run(["evaluate", str(tmp_path)], capsys)
    _assert_clean_error(code, err, "config.json")


def test_unreachable_hub_id(capsys):
    code, _, err = run(["evaluate", "gpt2"], capsys)
    _assert_clean_error(
        code, err, "model 'gpt2' not found locally and the hub is unreachable; pass a local folder"
    )


def test_missing_data_file(tiny_gpt2, tmp_path, capsys):
    code, _, err = run(["evaluate", str(tiny_gpt2), "--data", str(tmp_path / "x.txt")], capsys)
    _assert_clean_error(code, err, "x.txt")


def test_malformed_config_json(tiny_gpt2, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = run(["evaluate", str(tiny_gpt2), "--config", str(bad)], capsys)
    _assert_clean_error(code, err, "not valid JSON")


def test_unknown_config_key(tiny_gpt2, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"windw": 3}))
    code, _, err = run(["evaluate", str(tiny_gpt2), "--config", str(bad)], capsys)
    _assert_clean_error(code, err, "windw")


def test_verbose_shows_traceback(tmp_path, capsys):
    code, _, err = run(["evaluate", str(tmp_path / "nope"), "-v"], capsys)
    assert code == 2
    assert "Traceback" in err


def test_bad_device(tiny_gpt2, capsys):
    code, _, err = run(["evaluate", str(tiny_gpt2), "--device", "tpu7"], capsys)
    _assert_clean_error(code, err, "device")


def test_unknown_flag_is_usage_error(capsys):
    code, _, err = run(["evaluate", "x", "--frobnicate"], capsys)
    assert code == 2
    assert "unrecognized arguments" in err


# ------------------------------------------------------------------------------------------
# python -m tqla_torch in a subprocess
# ------------------------------------------------------------------------------------------


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def test_python_m_evaluate_subprocess(tiny_gpt2, small_text, tmp_path):
    out_json = tmp_path / "scores.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tqla_torch",
            "evaluate",
            str(tiny_gpt2),
            "--data",
            str(small_text),
            "--window",
            "64",
            "--no-progress",
            "--json",
            str(out_json),
        ],
        capture_output=True,
        text=True,
        env=_subprocess_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "perplexity" in proc.stdout
    assert out_json.is_file()


def test_python_m_error_exit_code_subprocess(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tqla_torch", "evaluate", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        env=_subprocess_env(),
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "does not exist" in proc.stderr
