"""The built-in demo (``tqla demo --quick``): it runs, writes its table, PNG and JSON, is
deterministic, resumes, and rejects bad settings with exit code 2."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("matplotlib")

from tqla_torch.cli import main  # noqa: E402
from tqla_torch.demo import METHODS, DemoConfig, format_table, method_plans, run_demo  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick demo through the CLI, shared by the tests that only read its outputs."""
    out = tmp_path_factory.mktemp("demo") / "tqla-demo"
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["demo", "--quick", "--output", str(out), "--no-progress"])
    return code, buffer.getvalue(), out


def test_quick_demo_cli_prints_table(quick_run):
    code, stdout, _ = quick_run
    assert code == 0
    assert "| method | parameters | ppl before distillation | ppl after distillation |" in stdout
    for label in (
        "teacher (dense)",
        "permuted Kronecker",
        "Kronecker",
        "low-rank SVD",
        "automatic plan (activation-aware)",
        "tensor train (LWIQ ranks)",
    ):
        assert f"| {label} |" in stdout
    assert "total wall time" in stdout


def test_quick_demo_writes_json_png_markdown(quick_run):
    _, _, out = quick_run
    report = json.loads((out / "results.json").read_text())
    for key in ("config", "versions", "machine", "date", "teacher", "methods", "rows", "wall_s"):
        assert key in report
    assert report["versions"]["torch"] == torch.__version__
    assert [m["method"] for m in report["methods"]] == list(METHODS)
    for method in report["methods"]:
        assert method["ppl_before"] > 0 and method["ppl_after"] > 0
        assert method["params"] < report["teacher"]["params"]
        names = ["plan", "train", "train-2"] if method["method"] == "auto" else [
            "embedding", "mlp", "embedding-2"]
        assert [s["name"] for s in method["stages"]] == names
        assert method["history"], "loss curve recorded"
    assert (out / "results.png").read_bytes()[:8] == PNG_MAGIC
    assert "| permuted Kronecker |" in (out / "results.md").read_text()
    # the teacher and the students are saved as loadable folders
    from tqla_torch._models import load_model

    assert load_model(out / "teacher").kind == "hf"
    for method in METHODS:
        assert load_model(out / "models" / method).kind == "tqla"


def test_equal_parameter_budget(quick_run):
    _, _, out = quick_run
    params = {
        m["method"]: m["params"] for m in json.loads((out / "results.json").read_text())["methods"]
    }
    assert params["permuted_kron"] == params["kron"]
    assert abs(params["svd"] - params["kron"]) / params["kron"] < 0.03
    # the automatic plan: at most the permuted plan's count, and within one small step of it
    assert params["kron"] * 0.97 < params["auto"] <= params["kron"]
    assert abs(params["tt"] - params["svd"]) / params["svd"] < 0.03


def test_distillation_helps(quick_run):
    _, _, out = quick_run
    for method in json.loads((out / "results.json").read_text())["methods"]:
        assert method["ppl_after"] < method["ppl_before"], method["method"]


def test_rerun_resumes_and_reproduces(quick_run, capsys):
    _, _, out = quick_run
    first = json.loads((out / "results.json").read_text())
    assert main(["demo", "--quick", "--output", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    second = json.loads((out / "results.json").read_text())
    assert second["teacher"]["reused"] is True
    assert all(m["resumed_from"] for m in second["methods"])
    assert [r["ppl_after"] for r in second["rows"]] == [r["ppl_after"] for r in first["rows"]]
    assert [r["ppl_before"] for r in second["rows"]] == [r["ppl_before"] for r in first["rows"]]


def test_deterministic_from_scratch(quick_run, tmp_path):
    _, _, out = quick_run
    first = json.loads((out / "results.json").read_text())
    result = run_demo(
        DemoConfig.quick(progress=False, plot=False, save_models=False, methods=("permuted_kron",)),
        tmp_path / "again",
    )
    assert [r["ppl_after"] for r in result.rows] == [r["ppl_after"] for r in first["rows"][:2]]
    assert [r["ppl_before"] for r in result.rows] == [r["ppl_before"] for r in first["rows"][:2]]
    assert not (tmp_path / "again" / "results.png").exists()


def test_demo_with_local_model_and_method_subset(tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tqla_torch.data import builtin_tokenizer

    folder = tmp_path / "my-gpt2"
    tok = builtin_tokenizer(vocab_size=512)
    torch.manual_seed(1)
    GPT2LMHeadModel(
        GPT2Config(
            n_layer=2,
            n_embd=32,
            n_head=2,
            n_positions=32,
            vocab_size=len(tok),
            bos_token_id=tok.eos_token_id,
            eos_token_id=tok.eos_token_id,
        )
    ).save_pretrained(folder)
    tok.save_pretrained(folder)
    out = tmp_path / "demo"
    code = main(
        [
            "demo",
            "--quick",
            "--model",
            str(folder),
            "--methods",
            "kron,svd",
            "--steps",
            "1",
            "--output",
            str(out),
            "--no-progress",
            "--no-plot",
            "--no-save-models",
        ]
    )
    assert code == 0
    report = json.loads((out / "results.json").read_text())
    assert report["teacher"]["source"] == str(folder)
    assert [m["method"] for m in report["methods"]] == ["kron", "svd"]
    assert not (out / "results.png").exists()


def test_demo_config_file_and_steps_override(tmp_path, capsys):
    cfg = tmp_path / "demo.json"
    cfg.write_text(json.dumps({"teacher_steps": 5, "methods": ["svd"]}))
    out = tmp_path / "demo"
    code = main(
        [
            "demo",
            "--quick",
            "--config",
            str(cfg),
            "--steps",
            "2",
            "--output",
            str(out),
            "--no-progress",
            "--no-plot",
            "--no-save-models",
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "results.json").read_text())
    assert report["config"]["teacher_steps"] == 5
    assert report["methods"][0]["distill_steps"] == 6  # 2 steps x 3 stages


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--methods", "tucker"], "unknown methods"),
        (["--model", "/nonexistent/gpt2"], "does not exist"),
        (["--teacher-steps", "0"], "teacher_steps"),
    ],
)
def test_demo_bad_settings(tmp_path, capsys, args, needle):
    code = main(["demo", "--quick", "--output", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err
    assert "Traceback" not in err


def test_demo_malformed_config(tmp_path, capsys):
    bad = tmp_path / "demo.json"
    bad.write_text("{")
    code = main(["demo", "--quick", "--config", str(bad), "--output", str(tmp_path / "o")])
    assert code == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_demo_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        DemoConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="unknown DemoConfig fields"):
        DemoConfig.from_dict({"n_embed": 64})
    assert DemoConfig.from_dict(DemoConfig().to_dict()) == DemoConfig()


def test_method_plans_are_three_stages():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(
        GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=16, vocab_size=300)
    )
    data = [torch.randint(0, 300, (4, 16), generator=torch.Generator().manual_seed(0))]
    plans = method_plans(model, data=data)
    assert set(plans) == set(METHODS)
    for method, stages in plans.items():
        names = ["plan", "train", "train-2"] if method == "auto" else [
            "embedding", "mlp", "embedding-2"]
        assert [name for name, _ in stages] == names
    assert plans["permuted_kron"][1][1].method == "permuted_kron"
    assert plans["kron"][1][1].method == "kron"
    assert plans["svd"][1][1].method == "svd"
    # auto: one activation-aware plan over the tied table and the blocks, applied in stage 1,
    # then two stages of training only (equal tokens per stage, like every row)
    first = plans["auto"][0][1]
    assert first.auto_plan.moments and plans["auto"][1][1] is None and plans["auto"][2][1] is None
    planned = {r.name for r in first.auto_plan.rows}
    assert "transformer.wte" in planned and any(".h.0." in n for n in planned)
    with pytest.raises(ValueError, match="'auto' needs calibration data"):
        method_plans(model, ("auto",))
    assert plans["tt"][1][1].method == "tt"
    assert plans["tt"][0][1] == plans["svd"][0][1]  # the same embedding stages as svd
    with pytest.raises(ValueError, match="needs data"):
        method_plans(model, ("tt",))


def test_format_table():
    text = format_table(
        [
            {
                "label": "teacher (dense)",
                "params": 10,
                "ppl_before": None,
                "ppl_after": 3.0,
                "wall_s": 1.0,
            },
            {
                "label": "x",
                "params": 5,
                "ppl_before": float("inf"),
                "ppl_after": 4.25,
                "wall_s": None,
            },
        ]
    )
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines[2] == "| teacher (dense) | 10 | — | 3.00 | 1.0 |"
    assert lines[3] == "| x | 5 | inf | 4.25 | — |"
