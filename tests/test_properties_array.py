"""tqla._array's helpers against their documentation (found by mutation testing; listed in
benchmarks/results/mutation_2026-11-30.md, third pass)."""

from __future__ import annotations

import numpy as np
import pytest

from tqla._array import check_has_data, check_permutation, lib_name, to_numpy


def test_a_tensor_on_a_meta_device_is_refused_by_name():
    class Meta:  # a library whose arrays say only device == "meta" (no is_meta)
        device = "meta"

    with pytest.raises(ValueError, match="W is a tensor on the 'meta' device"):
        check_has_data(Meta(), "W")
    check_has_data(np.zeros(2), "W")  # real data: nothing raised


def test_permutation_length_must_be_a_count():
    with pytest.raises(ValueError, match=r"n must be >= 0, got -1"):
        check_permutation([], -1)
    assert check_permutation([], 0).shape == (0,)


def test_lib_name_of_a_namespace_without_a_module_name():
    class Namespace:
        def __str__(self):
            return "mylib"

    assert lib_name(Namespace()) == "mylib"
    assert lib_name(np) == "numpy"


def test_to_numpy_does_not_copy_what_is_already_a_host_array_of_the_dtype():
    a = np.arange(6.0).reshape(2, 3)
    assert to_numpy(a, np.float64) is a and to_numpy(a) is a
    b = to_numpy(a, np.float32)
    assert b.dtype == np.float32 and not np.shares_memory(a, b)
