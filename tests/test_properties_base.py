"""tqla_torch.nn.base: the shared pieces every layer family relies on (found by mutation
testing; listed in benchmarks/results/mutation_2026-11-30.md)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from tqla_torch.nn.base import (  # noqa: E402
    CompressedModule,
    check_permute,
    decomposition_dtype,
    set_module,
)


class _Probe(CompressedModule, register=False):
    """A family without its own ``extra_repr``: the base class's default describes it."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3, 2))

    def _spec_values(self) -> dict:
        return {"size": 6, "implementation": self.implementation}


def test_default_implementation_and_description():
    p = _Probe()
    assert p.implementation == "factorized" and p.approximation_error is None
    assert p.extra_repr() == "size=6, implementation=factorized, params=6"


def test_half_precision_weights_are_decomposed_in_float32():
    for dt, want in ((torch.float16, torch.float32), (torch.bfloat16, torch.float32),
                     (torch.float32, torch.float32), (torch.float64, torch.float64)):  # fmt: skip
        assert decomposition_dtype(torch.zeros(2, dtype=dt)) == want


def test_set_module_replaces_a_nested_and_a_top_level_child():
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU(), nn.Linear(2, 3)))
    new, top = nn.Linear(2, 3, bias=False), nn.Identity()
    set_module(model, "1.1", new)
    assert model[1][1] is new and isinstance(model[1][0], nn.ReLU)
    set_module(model, "0", top)
    assert model[0] is top and model[1][1] is new


def test_deprecated_permute_spelling_warns_at_the_caller():
    with pytest.warns(DeprecationWarning, match=r"permute='input' is deprecated; use 'cols'") as w:
        assert check_permute("input", stacklevel=2) == "cols"
    # under mutation testing (benchmarks/mutation.py) check_permute is mutmut's wrapper, and
    # its caller's frame is the wrapper's own file
    wrapped = hasattr(check_permute, "__wrapped__")
    assert w[0].filename == (check_permute.__code__.co_filename if wrapped else __file__)


# Found by a fresh sample (seed 6) of tqla_torch/nn/base.py's mutants
def test_relative_error_is_its_definition_for_every_shape_and_form(monkeypatch):
    """‖approx − ref‖ / ‖ref‖ for scalars, vectors, matrices and 3-way arrays, a broadcast
    approximation, the row-function form, several row blocks, and a zero reference."""
    import math

    import tqla_torch.nn.base as base

    g = torch.Generator().manual_seed(0)

    def want(a, r):
        a, r = a.double().expand_as(r), r.double()
        return float(torch.linalg.norm((a - r).flatten()) / torch.linalg.norm(r.flatten()))

    monkeypatch.setattr(base, "_ERROR_BLOCK", 6)  # blocks of a few rows
    for shape in ((), (7,), (5, 3), (4, 3, 2), (9, 1)):
        ref = torch.randn(shape, generator=g)
        approx = ref + 0.1 * torch.randn(shape, generator=g)
        got = base.relative_error(approx, ref)
        assert got == pytest.approx(want(approx, ref), rel=1e-12)
        if ref.ndim:
            assert base.relative_error(lambda i, j: approx[i:j], ref) == pytest.approx(got)
    ref = torch.randn(4, 3, generator=g)
    row = torch.randn(3, generator=g)  # broadcast over the rows
    assert base.relative_error(row, ref) == pytest.approx(want(row, ref), rel=1e-12)
    zero = torch.zeros(3, 2)
    assert base.relative_error(zero, zero) == 0.0
    assert base.relative_error(torch.ones(3, 2), zero) == math.inf


def test_helpers_name_what_they_check():
    from tqla_torch.nn.base import check_padding_idx

    assert check_padding_idx(None, 5) is None
    assert [check_padding_idx(p, 5) for p in (-5, -1, 0, 4)] == [0, 4, 0, 4]
    for bad in (-6, 5):
        with pytest.raises(ValueError, match=rf"^padding_idx must be within num_embeddings, "
                                             rf"got {bad}$"):  # fmt: skip
            check_padding_idx(bad, 5)
    with pytest.raises(ValueError, match=r"^a layer spec must be a dict, got list$"):
        CompressedModule.from_spec([1])

    class _Bare(CompressedModule, register=False):
        pass

    with pytest.raises(NotImplementedError, match=r"^_Bare\._spec_values$"):
        _Bare().spec()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_dense_linear_stays_on_the_weight_device():
    from tqla_torch.nn.base import dense_linear

    lin = dense_linear(torch.randn(3, 2, device="cuda"), torch.randn(3, device="cuda"))
    assert lin.weight.device.type == "cuda" and lin.bias.device.type == "cuda"


# Found by a fresh sample (seed 7)
def test_every_family_initialises_its_bias_like_linear():
    """Bias entries U(−1/√fan_in, 1/√fan_in), as torch.nn.Linear / Conv2d (400 entries:
    both ends of the interval are reached within 10% with probability 1 − 1e-8)."""
    import math

    from tqla_torch.nn import (
        HeteroKroneckerLinear,
        KroneckerLinear,
        LowRankLinear,
        TTConv2d,
        TTLinear,
    )

    torch.manual_seed(0)
    layers = [
        (LowRankLinear(16, 400, 2), 16),
        (KroneckerLinear(16, 400, ((20, 4), (20, 4))), 16),
        (HeteroKroneckerLinear(16, 400, [[[20, 4], [20, 4]]], [1]), 16),
        (TTLinear(16, 400, (20, 20), (4, 4), [1]), 16),
        (TTConv2d(4, 400, 3, (20, 20), (2, 2), [1, 1]), 4 * 9),
    ]
    for layer, fan_in in layers:
        b, bound = layer.bias.detach(), 1.0 / math.sqrt(fan_in)
        assert float(b.abs().max()) <= bound, type(layer).__name__
        assert float(b.max()) > 0.9 * bound and float(b.min()) < -0.9 * bound, type(layer).__name__


def test_check_pos_int_accepts_exactly_the_positive_integers():
    import numpy as np

    from tqla_torch.nn.base import check_pos_int

    for v in (1, 2, np.int64(1), np.int32(7)):
        got = check_pos_int(v, "n")
        assert got == int(v) and type(got) is int
    for bad in (0, -1, True, 1.0, "1", None):
        with pytest.raises(ValueError, match=rf"^n must be a positive integer, got {bad!r}$"):
            check_pos_int(bad, "n")
