"""CompressionConfig: validation, peft-style matching, overrides, JSON, presets."""

from __future__ import annotations

import json

import pytest

from tqla_torch.plan import (
    CompressionConfig,
    kron_gpt2,
    presets,
    svd_gpt2,
    tq_gpt2,
    tq_gpt2_steps,
)

# --------------------------------------------------------------------------------------
# Validation: every bad value names its field and the rule
# --------------------------------------------------------------------------------------
BAD = [
    ({"target_modules": None}, "target_modules is required"),
    ({"target_modules": ""}, "target_modules must not be an empty"),
    ({"target_modules": "h.(1"}, "target_modules is not a valid regular expression"),
    ({"target_modules": []}, "target_modules as a list"),
    ({"target_modules": ["c_fc", ""]}, "target_modules as a list"),
    ({"target_modules": 3}, "target_modules must be a regex"),
    ({"exclude_modules": "(("}, "exclude_modules is not a valid"),
    ({"method": "tucker"}, "method must be one of"),
    ({"shape": [[2, 2]]}, r"shape must be \[\[p, q\], \[s, t\]\]"),
    ({"shape": [[2, 0], [1, 1]]}, r"shape\[0\] \(factor A\) must be a pair"),
    ({"b_shape": [2]}, "b_shape must be a pair"),
    ({"b_shape": [2, 2.0]}, "b_shape must be a pair"),
    ({"shape": [[2, 2], [2, 2]], "b_shape": [2, 2]}, "at most one of shape and b_shape"),
    ({"rank": 0}, "rank must be an integer >= 1"),
    ({"rank": True}, "rank must be an integer"),
    ({"rank": 2, "n_params": 10}, "at most one of rank and n_params"),
    ({"permute": "diagonal"}, "permute must be one of"),
    ({"n_iter": -1}, "n_iter must be an integer >= 0"),
    ({"tol": float("nan")}, "tol must be a finite number"),
    ({"n_restarts": 0}, "n_restarts must be an integer >= 1"),
    ({"seed": -3}, "seed must be an integer >= 0"),
    ({"repeat": 0}, "repeat must be an integer >= 1"),
    ({"implementation": "fast"}, "implementation must be one of"),
    ({"tie_lm_head": "yes"}, "tie_lm_head must be True or False"),
    ({"overrides": []}, "overrides must be a dict"),
    ({"overrides": {"c_fc": {"rank": 0}}}, r"overrides\['c_fc'\]\.rank must be"),
    ({"overrides": {"c_fc": {"target_modules": "x"}}}, "non-overridable fields"),
    ({"overrides": {"c_fc": 4}}, r"overrides\['c_fc'\] must be a dict"),
    ({"overrides": {"(": {"rank": 2}}}, "not a valid regular expression"),
    ({"overrides": {"c_fc": {"shape": [[1, 1], [1, 1]], "b_shape": [1, 1]}}}, "at most one"),
]


@pytest.mark.parametrize("kwargs,message", BAD)
def test_bad_configs(kwargs, message):
    base = {"target_modules": "c_fc"}
    base.update(kwargs)
    with pytest.raises(ValueError, match=message):
        CompressionConfig(**base)


def test_normalisation_and_aliases():
    cfg = CompressionConfig(target_modules=("a", "b"), shape=((2, 3), (4, 5)), permute="cols")
    assert cfg.target_modules == ["a", "b"]
    assert cfg.shape == [[2, 3], [4, 5]] and cfg.permute == "cols"
    assert CompressionConfig(target_modules="x", b_shape=[1, 2], permute="rows").permute == "rows"
    for old, new in [("output", "rows"), ("input", "cols"), ("out", "rows"), ("in", "cols")]:
        with pytest.warns(DeprecationWarning, match=f"permute={old!r} is deprecated; use {new!r}"):
            cfg = CompressionConfig(target_modules="x", b_shape=[1, 2], permute=old)
        assert cfg.permute == new


# --------------------------------------------------------------------------------------
# Matching (peft semantics)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "target,exclude,name,expected",
    [
        ("c_fc", None, "transformer.h.0.mlp.c_fc", False),  # a regex must match the whole name
        (r".*\.c_fc", None, "transformer.h.0.mlp.c_fc", True),
        (["c_fc"], None, "transformer.h.0.mlp.c_fc", True),  # list: suffix at a dot boundary
        (["c_fc"], None, "transformer.h.0.mlp.xc_fc", False),
        (["mlp.c_fc"], None, "transformer.h.0.mlp.c_fc", True),
        (["c_fc"], None, "c_fc", True),
        (["c_fc"], ["h.0.mlp.c_fc"], "transformer.h.0.mlp.c_fc", False),
        (["c_fc"], ["h.0.mlp.c_fc"], "transformer.h.1.mlp.c_fc", True),
        (r".*mlp\.c_(fc|proj)", r".*h\.0\..*", "transformer.h.0.mlp.c_proj", False),
        (r".*mlp\.c_(fc|proj)", r".*h\.0\..*", "transformer.h.10.mlp.c_proj", True),
    ],
)
def test_matching(target, exclude, name, expected):
    cfg = CompressionConfig(target_modules=target, exclude_modules=exclude, b_shape=[1, 2])
    assert cfg.matches(name) is expected


def test_overrides_merge_in_order_and_clear_exclusive_fields():
    cfg = CompressionConfig(
        target_modules=r".*",
        method="permuted_kron",
        b_shape=[2, 2],
        rank=2,
        overrides={
            r"mlp\.c_fc": {"shape": [[4, 4], [2, 8]], "rank": 3},
            r"h\.1\.mlp\.c_fc": {"rank": 5, "permute": "cols"},
            "wte": {"method": "svd", "n_params": 1000},
        },
    )
    s = cfg.settings_for("transformer.h.1.mlp.c_fc")
    assert s.shape == [[4, 4], [2, 8]] and s.b_shape is None  # shape cleared the base b_shape
    assert s.rank == 5 and s.permute == "cols"  # later override wins
    s0 = cfg.settings_for("transformer.h.0.mlp.c_fc")
    assert s0.rank == 3 and s0.permute == "both"
    assert cfg.settings_for("transformer.h.0.mlp.c_proj").b_shape == [2, 2]
    w = cfg.settings_for("transformer.wte")
    assert w.method == "svd" and w.rank is None and w.n_params == 1000 and w.permute == "none"
    # a key is matched at dot boundaries only
    assert cfg.settings_for("transformer.xwte").method == "permuted_kron"


def test_settings_errors_name_the_module():
    cfg = CompressionConfig(target_modules=".*", method="kron", permute="both", b_shape=[1, 2])
    with pytest.raises(ValueError, match=r"module 'lin'.*needs method='permuted_kron'"):
        cfg.settings_for("lin")
    with pytest.raises(ValueError, match=r"module 'lin'.*needs factor shapes"):
        CompressionConfig(target_modules=".*").settings_for("lin")
    with pytest.raises(ValueError, match=r"method='svd' needs rank or n_params"):
        CompressionConfig(target_modules=".*", method="svd").settings_for("lin")
    with pytest.raises(ValueError, match="n_params .* applies to method='svd'"):
        CompressionConfig(target_modules=".*", b_shape=[1, 2], n_params=5).settings_for("lin")
    s = CompressionConfig(target_modules=".*", method="kron", b_shape=[1, 2]).settings_for("x")
    assert s.rank == 1 and s.permute == "none"


# --------------------------------------------------------------------------------------
# Serialisation
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cfg", [tq_gpt2(), kron_gpt2(tie_lm_head=False), tq_gpt2(n_iter=3, rule="slots")]
)
def test_json_roundtrip(cfg, tmp_path):
    text = cfg.to_json()
    assert json.loads(text) == cfg.to_dict()
    assert CompressionConfig.from_json(text) == cfg
    assert CompressionConfig.from_dict(cfg.to_dict()) == cfg
    path = tmp_path / "plan.json"
    cfg.save(path)
    assert CompressionConfig.load(path) == cfg
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]  # no temporary left behind


def test_from_dict_and_json_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown CompressionConfig fields \['ranks'\]"):
        CompressionConfig.from_dict({"target_modules": "x", "ranks": 3})
    with pytest.raises(ValueError, match="target_modules is required"):
        CompressionConfig.from_dict({"rank": 3})
    with pytest.raises(ValueError, match="malformed"):
        CompressionConfig.from_json("{not json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"target_modules": "x", "method": "nope"}')
    with pytest.raises(ValueError, match="bad.json: method must be one of"):
        CompressionConfig.load(bad)


# --------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------
def test_tq_gpt2_preset_matches_the_published_plan():
    cfg = tq_gpt2()
    names = [f"transformer.h.{i}.mlp.{m}" for i in range(12) for m in ("c_fc", "c_proj")]
    matched = [n for n in names if cfg.matches(n)]
    assert matched == [
        f"transformer.h.{i}.mlp.{m}" for i in (1, 3, 5, 7, 9, 11) for m in ("c_fc", "c_proj")
    ]
    assert cfg.matches("transformer.wte") and not cfg.matches("transformer.wpe")
    assert not cfg.matches("transformer.h.1.attn.c_attn") and not cfg.matches("lm_head")
    fc = cfg.settings_for("transformer.h.1.mlp.c_fc")
    assert (fc.method, fc.b_shape, fc.rank, fc.permute) == ("permuted_kron", [4, 2], 4, "both")
    proj = cfg.settings_for("transformer.h.11.mlp.c_proj")
    assert (proj.b_shape, proj.rank, proj.permute) == ([2, 4], 4, "both")
    wte = cfg.settings_for("transformer.wte")
    assert (wte.b_shape, wte.rank, wte.repeat, wte.permute) == ([2, 1], 1, 2, "rows")
    assert cfg.tie_lm_head and not tq_gpt2(tie_lm_head=False).tie_lm_head
    assert tq_gpt2(blocks=[0, 2]).matches("transformer.h.2.mlp.c_fc")
    assert not tq_gpt2(blocks="even").matches("transformer.h.1.mlp.c_fc")
    with pytest.raises(ValueError, match="unknown preset options"):
        tq_gpt2(n_iters=3)


def test_steps_and_names():
    emb, mlp, emb2 = tq_gpt2_steps(n_iter=2)
    assert emb.matches("transformer.wte") and not emb.matches("transformer.h.1.mlp.c_fc")
    assert emb.settings_for("transformer.wte").repeat == 1 and emb == emb2
    assert mlp.matches("transformer.h.1.mlp.c_fc") and not mlp.matches("transformer.wte")
    assert mlp.n_iter == 2
    k = kron_gpt2()
    assert k.method == "kron" and k.settings_for("transformer.wte").permute == "none"
    assert presets.get("tq_gpt2") is presets.tq_gpt2
    assert len(presets.steps("kron_gpt2")) == 3
    assert CompressionConfig.preset("tq_gpt2") == tq_gpt2()
    with pytest.raises(ValueError, match="unknown preset 'gpt3'"):
        presets.get("gpt3")
    with pytest.raises(ValueError, match="no permutation options"):
        kron_gpt2(n_iter=3)


def test_svd_preset_ranks_match_the_kronecker_budget():
    from transformers import GPT2Config

    cfg = svd_gpt2()
    assert cfg.method == "svd"
    assert cfg.settings_for("transformer.wte").rank == 189  # 9,649,348 / (50257 + 768)
    assert cfg.settings_for("transformer.h.1.mlp.c_fc").rank == 307
    assert cfg.settings_for("transformer.h.1.mlp.c_proj").rank == 307
    small = svd_gpt2(GPT2Config(vocab_size=1000, n_embd=64, n_layer=2))
    # c_fc 64→256 at rank 4: 4·(32·64 + 8) + 256 = 8480 → (8480 − 256)/320 ≈ 25.7
    assert small.settings_for("transformer.h.1.mlp.c_fc").rank == 26
    steps = presets.svd_gpt2_steps()
    assert [s.settings_for("transformer.wte").rank for s in (steps[0], steps[2])] == [378, 189]
    with pytest.raises(ValueError, match="GPT-2 model or GPT2Config"):
        svd_gpt2(object())
