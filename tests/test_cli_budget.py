"""``tqla compress/inspect --budget``: the automatic plan from the command line."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_cli import _assert_clean_error, _offline, run, small_text, tiny_gpt2  # noqa: E402,F401


def test_inspect_budget_shows_the_plan(tiny_gpt2, small_text, capsys):
    code, out, err = run(
        ["inspect", str(tiny_gpt2), "--budget", "0.8", "--data", str(small_text),
         "--calib-batches", "2", "--calib-block-size", "32"],
        capsys,
    )
    assert code == 0, err
    assert "pred. error" in out and "pred. err" in out


def test_compress_budget_writes_a_model_within_budget(tiny_gpt2, small_text, tmp_path, capsys):
    out_dir = tmp_path / "auto"
    code, out, err = run(
        ["compress", str(tiny_gpt2), "--budget", "0.8", "--data", str(small_text),
         "--calib-batches", "2", "--calib-block-size", "32", "-o", str(out_dir)],
        capsys,
    )
    assert code == 0, err
    report = json.loads((out_dir / "tqla_compress_report.json").read_text())
    assert report["params_after"] <= int(0.8 * report["params_before"])


def test_budget_errors_are_clean(tiny_gpt2, small_text, tmp_path, capsys):
    code, _, err = run(["inspect", str(tiny_gpt2), "--budget", "1.5"], capsys)
    _assert_clean_error(code, err, "--budget", "(0, 1]")
    code, _, err = run(
        ["inspect", str(tiny_gpt2), "--budget", "10", "--data", str(small_text),
         "--calib-batches", "1", "--calib-block-size", "32"],
        capsys,
    )
    _assert_clean_error(code, err, "below the smallest possible plan")


def test_budget_with_embeddings_and_a_sensitivity(tiny_gpt2, small_text, capsys):
    code, out, err = run(
        ["inspect", str(tiny_gpt2), "--budget", "0.6", "--data", str(small_text),
         "--calib-batches", "2", "--calib-block-size", "32", "--embeddings",
         "--sensitivity", "uniform"],
        capsys,
    )
    assert code == 0, err
    assert "wte" in out  # the token embedding is planned too
    code, _, err = run(
        ["inspect", str(tiny_gpt2), "--budget", "0.6", "--sensitivity", "hessian"], capsys
    )
    assert code != 0 and "--sensitivity" in err


def test_compress_budget_defaults_to_the_model_context(tiny_gpt2, small_text, tmp_path, capsys):
    # the command line as is: the calibration rows default to the model's 64 positions
    out_dir = tmp_path / "auto65"
    code, out, err = run(
        ["compress", str(tiny_gpt2), "--budget", "0.65", "--data", str(small_text),
         "--calib-batches", "2", "-o", str(out_dir)],
        capsys,
    )
    assert code == 0, err
    report = json.loads((out_dir / "tqla_compress_report.json").read_text())
    assert report["params_after"] <= int(0.65 * report["params_before"])
    code, _, err = run(
        ["inspect", str(tiny_gpt2), "--budget", "0.65", "--data", str(small_text),
         "--calib-block-size", "100"],
        capsys,
    )
    _assert_clean_error(code, err, "--calib-block-size 100", "64 positions")
