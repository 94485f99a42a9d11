"""Budget presets (tqla_torch.compression.auto): per-module ranks from LWIQ, Python and CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tqla_torch import compress, count_parameters, presets
from tqla_torch.compression.auto import auto_ranks, auto_svd, auto_tt, block_of


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _gpt2(vocab: int = 64):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=vocab,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(cfg).eval()


def _batches(vocab: int = 64):
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, vocab, (4, 16), generator=g) for _ in range(3)]


def test_block_of():
    assert block_of("transformer.h.11.mlp.c_proj") == "transformer.h.11"
    assert block_of("layers.0.conv1") == "layers.0"
    assert block_of("features.3") == "features.3" and block_of("fc") == "fc"


@pytest.mark.parametrize("budget", [0.9, 0.8])
def test_auto_svd_meets_the_budget_after_compress(budget):
    model = _gpt2()
    total = count_parameters(model)
    cfg = auto_svd(model, budget=budget, data=_batches(), n_classes=8)
    assert cfg.method == "svd" and len(cfg.overrides) == 4  # 2 blocks × (c_fc, c_proj)
    report = compress(model, cfg)
    assert count_parameters(model) <= int(budget * total)
    assert report.params_after == count_parameters(model)


@pytest.mark.parametrize("budget", [0.9, 0.75])
def test_auto_tt_meets_the_budget_after_compress(budget):
    from tqla_torch.nn import TTLinear

    model = _gpt2()
    total = count_parameters(model)
    cfg = auto_tt(model, budget=budget, data=_batches(), n_classes=8)
    assert cfg.method == "tt" and len(cfg.overrides) == 4
    compress(model, cfg)
    assert count_parameters(model) <= int(budget * total)
    assert isinstance(model.transformer.h[0].mlp.c_fc, TTLinear)
    assert presets.get("auto_tt") is auto_tt


def test_auto_tt_on_a_cnn_scores_blocks_and_compresses_convolutions():
    from torch import nn

    from tqla_torch.nn import TTConv2d

    torch.manual_seed(0)
    blocks = nn.Sequential(
        nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)),
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()),
    )
    model = nn.Sequential(blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (90,), generator=g)
    x = torch.randn(90, 4, 6, 6, generator=g) + y[:, None, None, None]
    data = [(x[:45], y[:45]), (x[45:], y[45:])]
    total = count_parameters(model)
    cfg = auto_tt(model, budget=0.6, data=data, target_modules=r"0\.\d+\.\d+")
    assert len(cfg.overrides) == 3
    compress(model, cfg)
    assert isinstance(model[0][0][0], TTConv2d)
    assert count_parameters(model) <= int(0.6 * total)


def test_auto_svd_is_deterministic_and_uniform_allocation_is_equal():
    a = auto_svd(_gpt2(), budget=0.85, data=_batches(), n_classes=8, seed=3)
    b = auto_svd(_gpt2(), budget=0.85, data=_batches(), n_classes=8, seed=3)
    assert a == b
    uni = auto_ranks(_gpt2(), budget=0.85, data=None, method="svd", allocation="uniform")
    assert len({o["rank"] for o in uni.overrides.values()}) == 1


def test_auto_bad_input():
    model = _gpt2()
    with pytest.raises(ValueError, match=r"budget=0\.01 .*between"):
        auto_svd(model, budget=0.01, data=_batches(), n_classes=8)
    with pytest.raises(ValueError, match="needs data"):
        auto_svd(model, budget=0.9)
    with pytest.raises(ValueError, match="matched no compressible module"):
        auto_svd(model, budget=0.9, data=_batches(), target_modules=r"nothing")
    with pytest.raises(ValueError, match="allocation"):
        auto_svd(model, budget=0.9, data=_batches(), allocation="greedy")
    assert presets.get("auto_svd") is auto_svd


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    from tqla_torch.training.data import builtin_tokenizer

    folder = tmp_path_factory.mktemp("models") / "tiny"
    tok = builtin_tokenizer(vocab_size=512)
    model = _gpt2(vocab=len(tok))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_cli_compress_auto_tt_with_budget(tiny_folder, tmp_path, capsys):
    from tqla_torch import from_pretrained
    from tqla_torch.cli import main

    out = tmp_path / "auto"
    code = main(
        [
            "compress",
            str(tiny_folder),
            "--preset",
            "auto_svd",
            "--budget",
            "0.9",
            "--calibration-blocks",
            "16",
            "-o",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    dense = count_parameters(_gpt2(vocab=512))
    assert count_parameters(from_pretrained(out)) <= int(0.9 * dense)


@pytest.mark.parametrize(
    "extra,needle",
    [
        ([], "needs --budget"),
        (["--budget", "0.001"], "cannot be met"),
        (["--budget", "abc"], "fraction"),
    ],
)
def test_cli_budget_errors(tiny_folder, tmp_path, capsys, extra, needle):
    from tqla_torch.cli import main

    try:
        code = main(
            [
                "compress",
                str(tiny_folder),
                "--preset",
                "auto_svd",
                "-o",
                str(tmp_path / "o"),
                *extra,
            ]
        )
    except SystemExit as exc:  # argparse type errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err


def test_cli_budget_only_for_budget_presets(tiny_folder, tmp_path, capsys):
    from tqla_torch.cli import main

    code = main(
        [
            "compress",
            str(tiny_folder),
            "--preset",
            "svd_gpt2",
            "--budget",
            "0.5",
            "-o",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "budget presets" in capsys.readouterr().err
