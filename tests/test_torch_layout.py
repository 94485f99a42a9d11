"""tqla_torch's layout and vocabulary (issue 8): one word per idea, old names warn, old
import paths re-export, the import graph reads layers → compression → training → cli, and
no helper is defined twice."""

from __future__ import annotations

import ast
import importlib
import json
import warnings
from pathlib import Path

import pytest
import torch

import tqla_torch
from tqla_torch import CompressionConfig
from tqla_torch.nn import LAYER_IMPLEMENTATIONS, REGISTRY, KroneckerLinear

PACKAGE = Path(tqla_torch.__file__).parent
# Shims kept for one release: they import, never define.
SHIMS = {"layers.py", "plan.py", "_shapes.py", "distill.py", "data.py", "demo.py", "evaluate.py"}
LAYERS = ["nn", "compression", "training", "cli"]


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("old,new", [("input", "cols"), ("output", "rows"), ("in", "cols")])
def test_old_side_names_warn_and_map(old, new):
    with pytest.warns(DeprecationWarning, match=f"permute={old!r} is deprecated; use {new!r}"):
        layer = KroneckerLinear(6, 4, ((2, 3), (2, 2)), permute=old)
    assert layer.permute == new
    with pytest.warns(DeprecationWarning):
        cfg = CompressionConfig(target_modules="x", b_shape=[2, 2], permute=old)
    assert cfg.permute == new


def test_rows_are_the_output_side():
    """``rows`` permutes the output features in the layer, the config and tqla alike."""
    layer = KroneckerLinear(6, 4, ((2, 3), (2, 2)), permute="rows")
    assert layer.output_perm is not None and layer.input_perm is None
    cfg = CompressionConfig(
        target_modules="x", method="permuted_kron", b_shape=[2, 2], permute="rows"
    )
    assert cfg.settings_for("x").permute == "rows"


def test_config_orientation_is_out_in_and_legacy_in_out_is_transposed():
    out_in = CompressionConfig(target_modules="x", method="kron", shape=[[4, 2], [2, 3]])
    assert out_in.to_dict()["orientation"] == "out_in"
    assert CompressionConfig.from_json(out_in.to_json()) == out_in  # no warning, same config
    legacy = {"target_modules": "x", "method": "kron", "shape": [[2, 4], [3, 2]]}
    with pytest.warns(DeprecationWarning, match="in×out orientation"):
        old = CompressionConfig.from_dict(legacy)  # a file of the first release
    assert old.orientation == "in_out"
    assert old.settings_for("x").shape == out_in.settings_for("x").shape == [[4, 2], [2, 3]]
    with pytest.warns(DeprecationWarning):
        b = CompressionConfig(target_modules="x", b_shape=[1, 2], orientation="in_out")
    assert b.settings_for("x").b_shape == [2, 1]
    with pytest.raises(ValueError, match="orientation must be one of"):
        CompressionConfig(target_modules="x", b_shape=[1, 2], orientation="rows_cols")


def test_a_saved_legacy_config_compresses_like_its_out_in_twin():
    lin = torch.nn.Sequential(torch.nn.Linear(12, 8))
    twin = torch.nn.Sequential(torch.nn.Linear(12, 8))
    twin.load_state_dict(lin.state_dict())
    legacy = json.dumps({"target_modules": ["0"], "method": "kron", "b_shape": [4, 2]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        a = tqla_torch.compress(lin, CompressionConfig.from_json(legacy))
    b = tqla_torch.compress(
        twin, CompressionConfig(target_modules=["0"], method="kron", b_shape=[2, 4])
    )
    assert a.modules[0].factors == b.modules[0].factors == "4×3 ⊗ 2×4"


def test_implementation_and_kernel_are_different_words():
    assert LAYER_IMPLEMENTATIONS == ("factorized", "reconstructed")
    from tqla_torch import layers  # the deprecated alias keeps its old meaning

    assert layers.IMPLEMENTATIONS == LAYER_IMPLEMENTATIONS


# --------------------------------------------------------------------------------------
# Old paths and the compress function
# --------------------------------------------------------------------------------------
def test_compress_is_the_function():
    assert callable(tqla_torch.compress) and tqla_torch.compress.__module__.endswith("apply")
    assert not (PACKAGE / "compress.py").exists()


@pytest.mark.parametrize(
    "old,name,new",
    [
        ("tqla_torch.layers", "KroneckerLinear", "tqla_torch.nn"),
        ("tqla_torch.layers", "COMPRESSED_TYPES", None),
        ("tqla_torch.plan", "tq_gpt2", "tqla_torch.compression"),
        ("tqla_torch.plan", "CompressionConfig", "tqla_torch.compression"),
        ("tqla_torch._shapes", "weight_view", "tqla_torch.nn.weights"),
        ("tqla_torch.distill", "distill_stages", "tqla_torch.training"),
        ("tqla_torch.data", "PackedDataset", "tqla_torch.training"),
        ("tqla_torch.demo", "run_demo", "tqla_torch.training.demo"),
    ],
)
def test_old_import_paths_re_export(old, name, new):
    value = getattr(importlib.import_module(old), name)
    if new is not None:
        assert value is getattr(importlib.import_module(new), name)
    else:
        assert dict(value) == dict(REGISTRY)


# --------------------------------------------------------------------------------------
# Import graph and duplicates
# --------------------------------------------------------------------------------------
def _imported(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize("index", range(len(LAYERS)))
def test_import_graph_reads_layers_compression_training_cli(index):
    """A package imports nothing from the packages after it (nor from the shims)."""
    later = {f"tqla_torch.{p}" for p in LAYERS[index + 1 :]}
    later |= {f"tqla_torch.{s.removesuffix('.py')}" for s in SHIMS}
    folder = PACKAGE / LAYERS[index]
    assert (folder / "__init__.py").is_file()
    assert ast.get_docstring(ast.parse((folder / "__init__.py").read_text())), "folder docstring"
    for path in folder.rglob("*.py"):
        bad = {m for m in _imported(ast.parse(path.read_text())) if m in later}
        bad |= {
            m
            for m in _imported(ast.parse(path.read_text()))
            for x in later
            if m.startswith(x + ".")
        }
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"
    if LAYERS[index] == "nn":  # the layers need neither transformers nor the io
        for path in folder.rglob("*.py"):
            assert not any(
                m.startswith(("transformers", "tqla_torch.io"))
                for m in _imported(ast.parse(path.read_text()))
            )


def test_no_helper_is_defined_twice():
    """No two modules define a function or class of the same name (the CLI subcommands'
    ``add_parser``/``run`` protocol excepted), and no two functions have the same body."""
    names: dict[str, list[str]] = {}
    bodies: dict[str, list[str]] = {}
    protocol = {"add_parser", "run"}
    for path, tree in _modules():
        if path.name in SHIMS and path.parent == PACKAGE:
            continue
        where = str(path.relative_to(PACKAGE))
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name not in protocol:
                names.setdefault(node.name, []).append(where)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                body = node.body
                if (
                    body
                    and isinstance(body[0], ast.Expr)
                    and isinstance(body[0].value, ast.Constant)
                ):
                    body = body[1:]  # the docstring
                if len(body) >= 2:
                    key = ast.dump(ast.Module(body=body, type_ignores=[]))
                    bodies.setdefault(key, []).append(f"{where}:{node.name}")
    twice = {k: v for k, v in names.items() if len(v) > 1}
    assert not twice, twice
    same = [v for v in bodies.values() if len(v) > 1]
    assert not same, same


def test_every_folder_module_is_short():
    """No module over ~600 lines in the new folders (the issue's size rule)."""
    for folder in LAYERS:
        for path in (PACKAGE / folder).rglob("*.py"):
            n = len(path.read_text(encoding="utf-8").splitlines())
            assert n <= 720, f"{path.relative_to(PACKAGE)} has {n} lines"
