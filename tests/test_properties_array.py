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


# --------------------------------------------------------------------------------------
# Fifth mutation pass: every helper stated whole (messages matched whole, every branch)
# --------------------------------------------------------------------------------------
torch = pytest.importorskip("torch")
xs = pytest.importorskip("array_api_strict")


def test_array_namespace_is_numpy_itself_for_plain_ndarrays_and_names_mixed_libraries():
    from tqla._array import array_namespace

    a = np.zeros(2)
    assert array_namespace(a) is np and array_namespace(a, a) is np
    assert array_namespace(torch.zeros(2)) is not np
    assert array_namespace(torch.zeros(2)).__name__ == "array_api_compat.torch"

    class Sub(np.ndarray):
        pass

    assert array_namespace(a.view(Sub)) is not np  # only the exact ndarray type
    for args, kinds in (((a, torch.zeros(2)), "Tensor, ndarray"), (([1],), "list"), ((), "")):
        with pytest.raises(TypeError) as info:
            array_namespace(*args)
        want = f"tqla needs arrays of one array library (NumPy, CuPy, torch, ...); got {kinds}"
        assert str(info.value) == want
        assert isinstance(info.value.__cause__, TypeError)


def test_lib_name_of_every_library():
    from tqla._array import array_namespace

    class Named:
        def __init__(self, name):
            self.__name__ = name

    assert lib_name(array_namespace(torch.zeros(1))) == "torch"
    assert lib_name(xs) == "array_api_strict"
    names = [("cupy", "cupy"), ("x.cupy.y", "cupy"), ("jaxlib", "jax"), ("a.cupy_numpy", "numpy")]
    names += [("array_api_strict._x", "array_api_strict"), ("my_torch", "torch")]
    for name, want in [*names, ("other", "other")]:
        assert lib_name(Named(name)) == want


def _fm(x, name="W", **kw):
    from tqla._array import as_float_matrix

    return as_float_matrix(x, name, **kw)


def test_as_float_matrix_accepts_every_real_floating_dtype():
    for x in (np.ones((2, 2)), np.ones((2, 2), np.float32), np.ones((2, 2), np.float16),
              torch.ones(2, 2, dtype=torch.bfloat16), torch.ones(2, 2, dtype=torch.float16),
              xs.ones((2, 2)), xs.ones((2, 2), dtype=xs.float32)):  # fmt: skip
        xp, y = _fm(x)
        assert y is x and xp.__name__.split(".")[-1] in ("numpy", "torch", "array_api_strict")
    xp, y = _fm(np.ones((1, 2, 3)), ndim=3)
    assert xp is np and y.shape == (1, 2, 3)
    nan = np.full((2, 2), np.nan)
    assert _fm(nan, finite=False)[1] is nan


def test_as_float_matrix_messages_are_whole():
    cases = [
        ([[1.0]], TypeError, "W must be an array (NumPy, CuPy, torch, ...), got list; "
                             "wrap it with numpy.asarray first"),
        ((1.0,), TypeError, "W must be an array (NumPy, CuPy, torch, ...), got tuple; "
                            "wrap it with numpy.asarray first"),
        (2.5, TypeError, "W must be an array (NumPy, CuPy, torch, ...), got float; "
                         "wrap it with numpy.asarray first"),
        (np.float64(2.5), TypeError, "W must be an array (NumPy, CuPy, torch, ...), got "
                                     "float64; wrap it with numpy.asarray first"),
        (np.ones(3), ValueError, "W must be 2-D, got 1-D array of shape (3,)"),
        (np.ones((2, 2), int), TypeError, "W must have a real floating dtype (float32 or "
         "float64), got int64; convert it with .astype(float64) / .to(torch.float64)"),
        (np.ones((2, 2), bool), TypeError, "W must have a real floating dtype (float32 or "
         "float64), got bool; convert it with .astype(float64) / .to(torch.float64)"),
        (np.ones((2, 2), complex), TypeError, "W must have a real floating dtype (float32 or "
         "float64), got complex128; convert it with .astype(float64) / .to(torch.float64)"),
        (np.ones((2, 0)), ValueError, "W must not be empty, got shape (2, 0)"),
        (np.ones((0, 2)), ValueError, "W must not be empty, got shape (0, 2)"),
        (np.array([[1.0, np.nan]]), ValueError, "W must be finite, but it holds NaN or infinity"),
        (torch.ones(2, 2, dtype=torch.int32), TypeError, "W must have a real floating dtype "
         "(float32 or float64), got torch.int32; convert it with .astype(float64) / "
         ".to(torch.float64)"),
        (torch.ones(2, 2, device="meta"), ValueError, "W is a tensor on the 'meta' device: it "
         "has a shape but no values. Materialise it first (e.g. module.to_empty(device='cpu') "
         "and then load the weights, or build the model on a real device)"),
    ]  # fmt: skip
    for x, exc, msg in cases:
        with pytest.raises(exc) as info:
            _fm(x)
        assert str(info.value) == msg
    with pytest.raises(ValueError) as info:
        _fm(np.ones((2, 2)), "A", ndim=3)
    assert str(info.value) == "A must be 3-D, got 2-D array of shape (2, 2)"


def test_check_has_data_reads_is_meta_and_the_device():
    class IsMeta:
        is_meta = True

    class Cpu:
        device = "cpu"
        is_meta = False

    with pytest.raises(ValueError, match=r"^B is a tensor on the 'meta' device: it has a shape"):
        check_has_data(IsMeta(), "B")
    check_has_data(Cpu(), "B")
    check_has_data(object(), "B")


class _CountingXP:
    """A namespace that records which reductions check_finite runs."""

    def __init__(self):
        self.log = []

    def __getattr__(self, name):
        fn = getattr(np, name)

        def call(*args, **kwargs):
            self.log.append(name)
            return fn(*args, **kwargs)

        return call


def test_check_finite_is_one_sum_unless_the_sum_is_not_finite():
    from tqla._array import check_finite

    xp = _CountingXP()
    check_finite(xp, np.ones((3, 3)), "W")
    assert xp.log == ["sum", "isfinite"]
    xp.log.clear()
    huge = np.full((2, 2), 1e308)  # finite entries whose sum overflows: no error
    with np.errstate(over="ignore"):
        check_finite(xp, huge, "W")
    assert xp.log == ["sum", "isfinite", "isfinite", "all"]
    for bad in (np.inf, -np.inf, np.nan):
        x = np.ones(4)
        x[2] = bad
        with pytest.raises(ValueError) as info:
            check_finite(np, x, "Q")
        assert str(info.value) == "Q must be finite, but it holds NaN or infinity"


def test_check_int_states_its_bounds():
    from tqla._array import check_int

    for v in (3, np.int64(3), np.int8(3), np.uint16(3)):
        out = check_int(v, "k", minimum=3, maximum=3)
        assert out == 3 and type(out) is int
    assert check_int(-7, "k") == -7
    cases = [
        ((True, "k"), {}, TypeError, "k must be an integer, got bool True"),
        ((np.bool_(True), "k"), {}, TypeError, "k must be an integer, got bool np.True_"),
        ((2.0, "k"), {}, TypeError, "k must be an integer, got float 2.0"),
        (("2", "n"), {}, TypeError, "n must be an integer, got str '2'"),
        ((2, "k"), {"minimum": 3}, ValueError, "k must be >= 3, got 2"),
        ((4, "k"), {"maximum": 3}, ValueError, "k must be <= 3, got 4"),
        ((0, "k"), {"minimum": 0, "maximum": 0}, None, None),
    ]
    for args, kw, exc, msg in cases:
        if exc is None:
            assert check_int(*args, **kw) == 0
            continue
        with pytest.raises(exc) as info:
            check_int(*args, **kw)
        assert str(info.value) == msg


def test_check_rng_normalises_every_accepted_kind():
    from tqla._array import check_rng

    g = np.random.default_rng(4)
    assert check_rng(g) is g
    for seed in (5, np.int64(5)):
        np.testing.assert_array_equal(check_rng(seed).random(3), np.random.default_rng(5).random(3))
    a, b = check_rng(None), check_rng(None)
    assert isinstance(a, np.random.Generator) and a is not b
    assert a.random() != b.random()  # fresh entropy each time
    for bad, shown in ((True, "bool"), (1.5, "float"), ("1", "str"), (np.random.RandomState(0),
                                                                      "RandomState")):  # fmt: skip
        with pytest.raises(TypeError) as info:
            check_rng(bad)
        want = f"rng must be None, an int seed or a numpy.random.Generator, got {shown}"
        assert str(info.value) == want


def test_to_numpy_of_every_library(monkeypatch):
    import tqla._array as arr

    t = torch.arange(6.0, requires_grad=True).reshape(2, 3)
    out = to_numpy(t)
    assert type(out) is np.ndarray and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.arange(6.0).reshape(2, 3))
    assert to_numpy(t, np.float64).dtype == np.float64
    s = xs.asarray(np.arange(4.0))
    out = to_numpy(s)
    assert type(out) is np.ndarray
    np.testing.assert_array_equal(out, np.arange(4.0))
    assert to_numpy(s, np.int64).dtype == np.int64

    class Fake:  # another library, whose namespace is named fakelib
        __name__ = "fakelib"

    class NoDLPack(list):  # no DLPack, no __array__: plain numpy.asarray
        pass

    class WithArray:  # no DLPack, __array__ after to_device(x, "cpu")
        def __array__(self, dtype=None, copy=None):
            raise AssertionError("to_device first")

    def no_dlpack(x):
        raise BufferError("no dlpack")

    moved = []

    def to_device(x, dev):
        moved.append(dev)
        return np.array([5.0, 6.0])

    monkeypatch.setattr(np, "from_dlpack", no_dlpack)
    monkeypatch.setattr(arr, "array_namespace", lambda x: Fake())
    monkeypatch.setattr(arr, "to_device", to_device)
    np.testing.assert_array_equal(to_numpy(NoDLPack([1.0, 2.0])), [1.0, 2.0])
    assert moved == []
    np.testing.assert_array_equal(to_numpy(WithArray()), [5.0, 6.0])
    assert moved == ["cpu"]

    class Cupy:  # a library named cupy: its arrays' get() copies to the host
        __name__ = "cupy"

    class CupyArray:
        def get(self):
            return np.array([1.0, 2.0])

    monkeypatch.setattr(arr, "array_namespace", lambda x: Cupy())
    np.testing.assert_array_equal(to_numpy(CupyArray()), [1.0, 2.0])
    assert to_numpy(CupyArray(), np.float32).dtype == np.float32


def test_from_numpy_moves_to_the_library_of_like():
    from tqla._array import from_numpy

    a = np.arange(6.0).reshape(2, 3)
    assert from_numpy(a, np.zeros(1)) is a
    t = from_numpy(a[:, ::-2], torch.zeros(1, dtype=torch.float32))  # a negative-stride view
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64 and t.device.type == "cpu"
    np.testing.assert_array_equal(t.numpy(), a[:, ::-2])
    like = xs.asarray([1.0], device=xs.Device("device1"))
    s = from_numpy(a, like)
    assert s.device == like.device and s.dtype == xs.float64
    np.testing.assert_array_equal(np.asarray(s.to_device(xs.Device("CPU_DEVICE"))), a)


def test_take_gathers_along_the_axis_with_a_host_index():
    from tqla._array import take

    x = np.arange(12.0).reshape(3, 4)
    idx = np.array([2, 0, 1], dtype=np.int32)[::-1]  # a non-contiguous int32 index
    np.testing.assert_array_equal(take(np, x, idx, 0), x[idx])
    np.testing.assert_array_equal(take(np, x, np.array([3, 3, 0]), 1), x[:, [3, 3, 0]])
    t = torch.from_numpy(x)
    from tqla._array import array_namespace

    out = take(array_namespace(t), t, idx, 1)
    np.testing.assert_array_equal(out.numpy(), x[:, idx])


class _Rows(np.ndarray):
    """Records the row slices taken from it (the strips of c_contiguous)."""

    log: list = []

    def __getitem__(self, key):
        _Rows.log.append(key)
        return super().__getitem__(key)


def test_c_contiguous_copies_transposed_matrices_in_strips():
    from tqla._array import c_contiguous

    c = np.arange(12.0).reshape(3, 4)
    assert c_contiguous(c) is c
    for x in (np.asfortranarray(c), c[:, ::2], np.arange(200.0)[::2],
              np.asfortranarray(np.ones((63, 100)))):  # fmt: skip
        out = c_contiguous(x)
        assert out.flags.c_contiguous and out is not x
        np.testing.assert_array_equal(out, x)
    # strips of max(16, 32768 // (row bytes of the C-ordered source)) rows of x.T
    for rows, cols, dtype in ((100, 64, np.float64), (70, 300, np.float32), (64, 1000, np.float64),
                              (64, 10, np.float64), (300, 64, np.float64)):  # fmt: skip
        src = np.arange(rows * cols, dtype=dtype).reshape(cols, rows)  # x = src.T
        x = src.view(_Rows).T
        assert x.flags.f_contiguous
        _Rows.log = []
        out = c_contiguous(x)
        np.testing.assert_array_equal(out, src.T)
        assert type(out) is np.ndarray and out.flags.c_contiguous
        if min(x.shape) < 64:
            continue
        step = max(16, 32768 // (rows * np.dtype(dtype).itemsize))
        want = [slice(i, i + step) for i in range(0, cols, step)]
        assert [k for k in _Rows.log if isinstance(k, slice)] == want


def test_check_permutation_messages_are_whole():
    assert check_permutation(np.array([1, 0], dtype=np.int32), 2).dtype == np.int64
    a = np.array([2, 0, 1])
    assert check_permutation(a, 3) is a
    np.testing.assert_array_equal(check_permutation(torch.tensor([1, 0]), 2), [1, 0])
    np.testing.assert_array_equal(check_permutation((1, 0), 2), [1, 0])
    assert check_permutation((), 0).dtype == np.int64
    cases = [
        ((None, 3), TypeError, "perm must be an integer array of shape (3,), got None"),
        (("012", 3), TypeError, "perm must be an integer array, got str"),
        (([0.0, 1.0], 2), TypeError, "perm must be an integer array, got dtype float64"),
        ((np.array([True, False]), 2), TypeError, "perm must be an integer array, got dtype bool"),
        (([0, 1], 3), ValueError, "perm must have shape (3,), got (2,)"),
        (([[0, 1]], 2), ValueError, "perm must have shape (2,), got (1, 2)"),
        (([0, 2], 2), ValueError, "perm must be a permutation of range(2): entries out of range"),
        (([-1, 0], 2), ValueError, "perm must be a permutation of range(2): entries out of range"),
        (([1, 1], 2), ValueError, "perm must be a permutation of range(2): it repeats entries"),
        (([0], 1.0), TypeError, "n must be an integer, got float 1.0"),
    ]
    for args, exc, msg in cases:
        with pytest.raises(exc) as info:
            check_permutation(*args)
        assert str(info.value) == msg
    with pytest.raises(ValueError) as info:
        check_permutation([0, 0, 1], 3, "rows")
    assert str(info.value) == "rows must be a permutation of range(3): it repeats entries"


def test_check_permutation_marks_entries_in_a_boolean_array():
    """The "seen" marks of check_permutation take one byte per entry (seed-11 survivor: a
    float array of 8 bytes per entry gave the same answers)."""
    import tracemalloc

    n = 1 << 20
    perm = np.arange(n)[::-1].copy()
    tracemalloc.start()
    try:
        check_permutation(perm, n)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * n  # bool marks (n bytes); float marks would take 8·n


def test_c_contiguous_strips_only_fortran_ordered_matrices():
    """Only a 2-D Fortran-ordered x of sides >= 64 is copied in strips: a 2-D view in
    neither order and an array of another ndim (even Fortran-ordered) take NumPy's copy,
    whatever their sides."""
    from tqla._array import c_contiguous

    base = np.arange(130.0 * 132.0).reshape(130, 132)
    x = base.view(_Rows)[::2, ::2]  # (65, 66), neither C- nor Fortran-ordered
    assert not x.flags.c_contiguous and not x.flags.f_contiguous and min(x.shape) >= 64
    _Rows.log = []
    out = c_contiguous(x)
    assert [k for k in _Rows.log if isinstance(k, slice)] == []
    np.testing.assert_array_equal(out, base[::2, ::2])
    assert out.flags.c_contiguous
    y = np.asfortranarray(np.arange(64.0 * 65 * 66).reshape(64, 65, 66))
    assert y.flags.f_contiguous and not y.flags.c_contiguous
    out = c_contiguous(y)
    assert type(out) is np.ndarray and out.flags.c_contiguous and out.shape == y.shape
    np.testing.assert_array_equal(out, y)
