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


# Every subcommand lists exactly the common flags it reads (issue 8: no flag that does nothing).
LISTED = {
    "inspect": {"--verbose"},
    "compress": {"--device", "--tokenizer", "--verbose"},
    "distill": {"--device", "--seed", "--tokenizer", "--verbose"},
    "evaluate": {"--device", "--tokenizer", "--verbose"},
    "demo": {"--device", "--seed", "--tokenizer", "--verbose"},
}
OPTIONAL = {"--device", "--seed", "--tokenizer", "--verbose"}


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_subcommand_help(command, capsys):
    code, out, _ = run([command, "--help"], capsys)
    assert code == 0
    assert "examples:" in out
    assert f"tqla {command}" in out
    for flag in OPTIONAL:
        assert (flag in out) == (flag in LISTED[command]), (command, flag)


@pytest.mark.parametrize(
    "argv",
    [
        ["inspect", "m", "--preset", "tq_gpt2", "--device", "cpu"],
        ["inspect", "m", "--preset", "tq_gpt2", "--tokenizer", "t"],
        ["compress", "m", "--preset", "tq_gpt2", "-o", "x", "--seed", "1"],
        ["evaluate", "m", "--seed", "1"],
    ],
)
def test_unread_flags_are_refused(argv, capsys):
    code, _, err = run(argv, capsys)
    assert code == 2 and "unrecognized arguments" in err


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
        "\n".join(
            json.dumps({"text": f"the class statement defines a new {w}"})
            for w in ["class", "type", "object"]
        )
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
        [
            "evaluate",
            str(tiny_gpt2),
            "--config",
            str(cfg),
            "--window",
            "32",
            "--json",
            str(out_json),
        ],
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


# ------------------------------------------------------------------------------------------
# inspect / compress
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["tq_gpt2", "kron_gpt2", "svd_gpt2"])
def test_inspect_presets(tiny_gpt2, tmp_path, preset, capsys):
    out_json = tmp_path / "report.json"
    code, out, err = run(
        ["inspect", str(tiny_gpt2), "--preset", preset, "--json", str(out_json)], capsys
    )
    assert code == 0, err
    assert "transformer.wte" in out
    assert "transformer.h.1.mlp.c_fc" in out
    assert "transformer.h.0.mlp.c_fc" not in out  # odd blocks only
    report = json.loads(out_json.read_text())
    assert report["applied"] is False
    assert report["params_after"] < report["params_before"]
    assert not (tiny_gpt2 / "tqla_config.json").exists()  # a dry run writes nothing


def test_inspect_config_file(tiny_gpt2, tmp_path, capsys):
    cfg = tmp_path / "plan.json"
    cfg.write_text(
        json.dumps({"target_modules": ["c_fc"], "method": "kron", "b_shape": [2, 4], "rank": 2})
    )
    code, out, err = run(["inspect", str(tiny_gpt2), "--config", str(cfg)], capsys)
    assert code == 0, err
    assert "transformer.h.0.mlp.c_fc" in out and "transformer.h.1.mlp.c_fc" in out


@pytest.fixture(scope="module")
def compressed_tq(tiny_gpt2, tmp_path_factory) -> Path:
    """tiny_gpt2 compressed with the tq_gpt2 preset through the CLI."""
    out = tmp_path_factory.mktemp("compressed") / "tiny-tq"
    assert main(["compress", str(tiny_gpt2), "--preset", "tq_gpt2", "-o", str(out)]) == 0
    return out


def test_compress_writes_loadable_folder(tiny_gpt2, compressed_tq):
    from tqla_torch._models import count_parameters, load_model
    from tqla_torch.io import from_pretrained, is_compressed_folder

    assert is_compressed_folder(compressed_tq)
    assert (compressed_tq / "tokenizer.json").is_file()
    report = json.loads((compressed_tq / "tqla_compress_report.json").read_text())
    model = from_pretrained(compressed_tq)
    assert count_parameters(model) == report["params_after"] < report["params_before"]
    loaded = load_model(compressed_tq)
    assert loaded.kind == "tqla"
    ids = torch.arange(20).unsqueeze(0)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, loaded.model(ids).logits)


def test_compressed_folder_evaluates(compressed_tq, small_text, capsys):
    code, out, err = run(
        [
            "evaluate",
            str(compressed_tq),
            "--data",
            str(small_text),
            "--window",
            "64",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    assert "(tqla)" in out


def test_compress_refuses_non_empty_output(tiny_gpt2, compressed_tq, capsys):
    code, _, err = run(
        ["compress", str(tiny_gpt2), "--preset", "kron_gpt2", "-o", str(compressed_tq)], capsys
    )
    _assert_clean_error(code, err, "not empty", "--overwrite")


def test_compress_overwrite(tiny_gpt2, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    code, _, err = run(
        ["compress", str(tiny_gpt2), "--preset", "svd_gpt2", "-o", str(out), "--overwrite"],
        capsys,
    )
    assert code == 0, err
    assert not (out / "stale.txt").exists()
    assert (out / "tqla_config.json").is_file()


def test_unknown_preset(tiny_gpt2, tmp_path, capsys):
    code, _, err = run(
        ["compress", str(tiny_gpt2), "--preset", "tq_gpt3", "-o", str(tmp_path / "o")], capsys
    )
    _assert_clean_error(code, err, "unknown preset 'tq_gpt3'", "tq_gpt2")


def test_malformed_compression_config(tiny_gpt2, tmp_path, capsys):
    bad = tmp_path / "plan.json"
    bad.write_text('{"target_modules": ["c_fc"],')
    code, _, err = run(["inspect", str(tiny_gpt2), "--config", str(bad)], capsys)
    _assert_clean_error(code, err, "not valid JSON")


def test_invalid_compression_config(tiny_gpt2, tmp_path, capsys):
    bad = tmp_path / "plan.json"
    bad.write_text(json.dumps({"target_modules": ["c_fc"], "method": "tucker"}))
    code, _, err = run(["inspect", str(tiny_gpt2), "--config", str(bad)], capsys)
    _assert_clean_error(code, err, "method")


def test_config_matching_nothing(tiny_gpt2, tmp_path, capsys):
    bad = tmp_path / "plan.json"
    bad.write_text(json.dumps({"target_modules": ["nothing_here"], "method": "svd", "rank": 2}))
    code, _, err = run(["inspect", str(tiny_gpt2), "--config", str(bad)], capsys)
    _assert_clean_error(code, err)


def test_preset_and_config_are_exclusive(tiny_gpt2, tmp_path, capsys):
    code, _, err = run(
        ["inspect", str(tiny_gpt2), "--preset", "tq_gpt2", "--config", str(tmp_path / "x.json")],
        capsys,
    )
    assert code == 2
    assert "not allowed with" in err


# ------------------------------------------------------------------------------------------
# distill
# ------------------------------------------------------------------------------------------


def _distill_args(teacher: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "distill",
        "--teacher",
        str(teacher),
        "--data",
        str(data),
        "--output",
        str(out),
        "--block-size",
        "32",
        "--batch-size",
        "2",
        "--no-progress",
        "--device",
        "cpu",
        *extra,
    ]


def test_distill_preset_three_stages_and_resume(tiny_gpt2, small_text, tmp_path, capsys):
    out = tmp_path / "run"
    args = _distill_args(
        tiny_gpt2,
        small_text,
        out,
        "--preset",
        "tq_gpt2",
        "--steps-per-stage",
        "2",
        "--lr",
        "1e-3",
        "--alpha",
        "0.3",
    )
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    summary = json.loads((out / "distill.json").read_text())
    assert [s["name"] for s in summary["stages"]] == ["embedding", "mlp", "embedding-2"]
    assert summary["steps"] == 6
    assert summary["config"]["alpha"] == 0.3
    assert summary["resumed_from"] is None
    assert summary["params_student"] < summary["params_teacher"]
    from tqla_torch.io import from_pretrained, is_compressed_folder

    assert is_compressed_folder(out / "model")
    assert (out / "model" / "tokenizer.json").is_file()
    before = from_pretrained(out / "model").state_dict()

    # the same command again resumes from the final checkpoint and changes nothing
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    summary = json.loads((out / "distill.json").read_text())
    assert summary["resumed_from"] is not None
    assert summary["steps"] == 6
    after = from_pretrained(out / "model").state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_distill_compressed_student_with_config_file(
    tiny_gpt2, compressed_tq, small_text, tmp_path, capsys
):
    cfg = tmp_path / "distill.json"
    cfg.write_text(json.dumps({"max_steps": 3, "temperature": 1.5, "batch_size": 4}))
    out = tmp_path / "run"
    code, stdout, err = run(
        _distill_args(
            tiny_gpt2, small_text, out, "--student", str(compressed_tq), "--config", str(cfg)
        ),
        capsys,
    )
    assert code == 0, err
    summary = json.loads((out / "distill.json").read_text())
    assert summary["steps"] == 3
    assert summary["config"]["temperature"] == 1.5
    # the command-line --batch-size 2 wins over the file's 4
    assert summary["config"]["batch_size"] == 2
    assert [s["name"] for s in summary["stages"]] == ["distill"]


def test_distill_compression_config_file(tiny_gpt2, small_text, tmp_path, capsys):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"target_modules": ["c_proj"], "method": "svd", "rank": 4}))
    out = tmp_path / "run"
    code, _, err = run(
        _distill_args(
            tiny_gpt2,
            small_text,
            out,
            "--compression-config",
            str(plan),
            "--max-steps",
            "2",
            "--max-grad-norm",
            "none",
        ),
        capsys,
    )
    assert code == 0, err
    summary = json.loads((out / "distill.json").read_text())
    assert summary["stages"][0]["name"] == "compress"
    assert summary["config"]["max_grad_norm"] is None


def test_distill_needs_a_budget(tiny_gpt2, small_text, tmp_path, capsys):
    code, _, err = run(
        _distill_args(tiny_gpt2, small_text, tmp_path / "run", "--preset", "tq_gpt2"), capsys
    )
    _assert_clean_error(code, err, "no training budget")


def test_distill_missing_data_file(tiny_gpt2, tmp_path, capsys):
    code, _, err = run(
        _distill_args(
            tiny_gpt2,
            tmp_path / "missing.jsonl",
            tmp_path / "run",
            "--preset",
            "tq_gpt2",
            "--max-steps",
            "1",
        ),
        capsys,
    )
    _assert_clean_error(code, err, "missing.jsonl")


def test_distill_malformed_config(tiny_gpt2, small_text, tmp_path, capsys):
    bad = tmp_path / "distill.json"
    bad.write_text("[1, 2")
    code, _, err = run(
        _distill_args(
            tiny_gpt2, small_text, tmp_path / "run", "--preset", "tq_gpt2", "--config", str(bad)
        ),
        capsys,
    )
    _assert_clean_error(code, err, "not valid JSON")


def test_distill_bad_config_value(tiny_gpt2, small_text, tmp_path, capsys):
    bad = tmp_path / "distill.json"
    bad.write_text(json.dumps({"alpha": 3, "max_steps": 1}))
    code, _, err = run(
        _distill_args(
            tiny_gpt2, small_text, tmp_path / "run", "--preset", "tq_gpt2", "--config", str(bad)
        ),
        capsys,
    )
    _assert_clean_error(code, err, "alpha")


def test_distill_missing_teacher(small_text, tmp_path, capsys):
    code, _, err = run(
        _distill_args(
            tmp_path / "no-teacher",
            small_text,
            tmp_path / "run",
            "--preset",
            "tq_gpt2",
            "--max-steps",
            "1",
        ),
        capsys,
    )
    _assert_clean_error(code, err, "does not exist")


def test_python_m_distill_subprocess(tiny_gpt2, small_text, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tqla_torch",
            *_distill_args(tiny_gpt2, small_text, out, "--preset", "kron_gpt2", "--max-steps", "1"),
        ],
        capture_output=True,
        text=True,
        env=_subprocess_env(),
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "model" / "tqla_config.json").is_file()


def test_logging_configuration_is_restored(tiny_gpt2, small_text, capsys):
    import logging

    package = logging.getLogger("tqla_torch")
    before = (package.level, package.propagate, list(package.handlers))
    code, _, err = run(
        ["evaluate", str(tiny_gpt2), "--data", str(small_text), "--window", "64", "-v"], capsys
    )
    assert code == 0
    assert "INFO tqla_torch._models: loaded hf model" in err
    assert (package.level, package.propagate, list(package.handlers)) == before
