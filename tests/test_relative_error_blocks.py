"""``relative_error`` sums over blocks of rows (bounded float64 temporaries): it equals the
one-shot float64 formula to rounding, for tensors and for row functions."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from tqla_torch.nn import KroneckerEmbedding  # noqa: E402
from tqla_torch.nn import base  # noqa: E402


def _direct(a: torch.Tensor, b: torch.Tensor) -> float:
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    return float(torch.linalg.norm(a64 - b64) / torch.linalg.norm(b64))


@pytest.mark.parametrize("block", [1, 7, 64, 1 << 21])
@pytest.mark.parametrize("shape", [(37, 5), (3, 4, 5), (11,)])
def test_blocks_equal_the_one_shot_formula(monkeypatch, block, shape):
    monkeypatch.setattr(base, "_ERROR_BLOCK", block)
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(shape, generator=g)
    approx = ref + 0.1 * torch.randn(shape, generator=g)
    want = _direct(approx, ref)
    # float64 sums in another order: a few ulps per element at most
    tol = 64 * torch.finfo(torch.float64).eps * math.sqrt(ref.numel())
    assert base.relative_error(approx, ref) == pytest.approx(want, rel=tol)
    if ref.ndim == 2:
        got = base.relative_error(lambda i, j: approx[i:j], ref)
        assert got == pytest.approx(want, rel=tol)


def test_every_block_counts(monkeypatch):
    """An error only in the last, partial block is seen (no block dropped)."""
    monkeypatch.setattr(base, "_ERROR_BLOCK", 10)  # 2 rows of 5 per block: 37 rows → 19
    ref = torch.ones(37, 5, dtype=torch.float64)
    approx = ref.clone()
    approx[-1, -1] += 1.0
    assert base.relative_error(approx, ref) == pytest.approx(1 / math.sqrt(37 * 5), rel=1e-12)
    assert base.relative_error(ref, torch.zeros_like(ref)) == math.inf
    assert base.relative_error(torch.zeros(3, 2), torch.zeros(3, 2)) == 0.0


def test_two_level_embedding_error_is_that_of_the_dense_table(monkeypatch):
    """The embedding's error (rows by lookup, by blocks) equals the dense formula."""
    monkeypatch.setattr(base, "_ERROR_BLOCK", 64)
    from types import SimpleNamespace

    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 8).double()
    settings = SimpleNamespace(shape=None, b_shape=[2, 1], rank=1, permute="rows", repeat=2,
                               method="permuted_kron", implementation="factorized", rule=None,
                               n_iter=2, tol=None, n_restarts=1, seed=0)  # fmt: skip
    layer = KroneckerEmbedding.from_module(emb, settings)
    want = _direct(layer.to_dense().detach(), emb.weight.detach())
    assert layer.approximation_error == pytest.approx(want, rel=1e-12)
