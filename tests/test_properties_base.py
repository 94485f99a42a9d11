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
