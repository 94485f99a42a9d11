"""The documentation stays true: its Python examples run, and the docstring examples pass.

Every ```python fence of the pages below is executed, in order, in one namespace per page
(so a page reads top to bottom like a session); a fence whose first line is
``# doctest: skip`` (e.g. a GPU-only example) is left out.  Docstring examples of the core
modules run as doctests.
"""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = [
    "kron.md", "testing.md", "backends.md", "permuted.md", "assignment.md", "spectral.md", "tt.md"
]
# The tqla_torch pages write files (models, checkpoints): they run in a temporary folder.
TORCH_PAGES = [
    "torch.md",
    "distillation.md",
    "tutorial.md",
    "security.md",
    "lwiq.md",
    "auto.md",
    "distributed_training.md",
    "scaling.md",
]
README = DOCS.parent / "README.md"
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(page: str) -> list[str]:
    text = (DOCS / page).read_text(encoding="utf-8")
    return [b for b in FENCE.findall(text) if not b.lstrip().startswith("# doctest: skip")]


@pytest.mark.parametrize("page", PAGES)
def test_python_examples_run(page):
    blocks = python_blocks(page)
    assert blocks, f"docs/{page} has no python examples"
    namespace: dict = {"__name__": f"docs_{page.replace('.', '_')}"}
    for i, block in enumerate(blocks):
        code = compile(block, f"docs/{page} [python block {i + 1}]", "exec")
        exec(code, namespace)  # noqa: S102 - our own documentation


@pytest.mark.parametrize(
    "page",
    # the tutorial searches permutations and distils a 4-block model: about a minute
    [p if p != "tutorial.md" else pytest.param(p, marks=pytest.mark.slow) for p in TORCH_PAGES],
)
def test_torch_python_examples_run(page, tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    test_python_examples_run(page)


@pytest.mark.parametrize(
    "module",
    [
        "tqla.kron",
        "tqla.shapes",
        "tqla.testing.strategies",
        "tqla.testing.assertions",
        "tqla._array",
        "tqla.assignment",
        "tqla.permuted",
        "tqla.svd",
        "tqla.lsap",
        "tqla._kernels",
        "tqla.spectral",
        "tqla.norms",
        "tqla.hetero",
        "tqla.spectral_permuted",
        "tqla.testing.spectral_checks",
        "tqla_torch._trust",
        "tqla_torch._hf_folder",
        "tqla_torch.training.checkpoint",
        "tqla_torch.training.losses",
        "tqla_torch.training.loop",
        "tqla_torch.training.readers",
        "tqla.batch",
        "tqla.tt",
        "tqla.tt_matrix",
        "tqla.tt_permuted",
        "tqla_torch.nn.tt",
        "tqla_torch.nn.base",
        "tqla_torch.nn.spectral",
        "tqla_torch.nn._tt_forward",
        "tqla_torch.compression.tt_gpt2",
        "tqla.whiten",
        "tqla.whiten_structured",
        "tqla_torch.compression.budget_plan",
        "tqla.two_sided",
        "tqla_torch.compression.auto_gpt2",
        "tqla_torch._atomic",
        "tqla_torch.compression.distributed",
        "tqla_torch.compression.streaming",
    ],
)
def test_docstring_examples(module):
    mod = pytest.importorskip(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctests of {module} failed"


def test_index_links_exist():
    text = (DOCS / "index.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([\w./-]+\.md)(?:#[\w-]+)?\)", text)
    mine = {"kron.md", "testing.md", "backends.md", "permuted.md", "torch.md", "distillation.md"}
    mine |= {"security.md"}
    assert mine <= set(links)
    for link in links:
        assert (DOCS / link).exists(), link


def test_readme_core_example_runs():
    """The README's first python example (the NumPy one) runs as written."""
    text = README.read_text(encoding="utf-8")
    blocks = FENCE.findall(text)
    assert blocks, "README.md has no python examples"
    exec(compile(blocks[0], "README.md [python block 1]", "exec"), {"__name__": "readme"})  # noqa: S102


def test_readme_links_exist():
    text = README.read_text(encoding="utf-8")
    for link in re.findall(r"\]\((docs/[\w./-]+\.md)\)", text):
        assert (README.parent / link).exists(), link
