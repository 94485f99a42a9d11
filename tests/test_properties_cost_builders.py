"""tqla.assignment's cost builders stated whole (issue 15, fifth pass).

* Every argument's error names the argument, every message matched whole.
* ``assign_cost`` equals −W·(K P_c)ᵀ (rows) / −Wᵀ·(P_r K) (cols) for dense and Kronecker K,
  with only the other side's permutation used (both validated).
* ``slots_cost``/``SlotsCost``: the column problem is the row problem of the transposes;
  ``row_perm``/``col_perm`` bring W into K's frame; the sweep's routes (the m2 = 2 pair
  path that needs no kernel call, the identity-assignment shortcut), its attributes, the
  layouts it keeps, and the memory estimate's ``what`` and ``max_bytes``.
* The memory ceiling: the environment variable, the physical-memory default, messages.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import tqla.assignment as asg
from tqla import KroneckerShape, KroneckerSum
from tqla.assignment import (
    SlotsCost,
    assign_cost,
    check_cost_memory,
    check_max_bytes,
    default_max_cost_bytes,
    slots_basis,
    slots_cost,
)
from tqla.kron import kron_svd

KS = KroneckerShape
GiB = 1024**3


def _whole(msg: str) -> str:
    return "^" + re.escape(msg) + "$"


def _problem(s: KroneckerShape, r: int = 1, seed: int = 0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal(s.matrix_shape).astype(dtype)
    return rng, W, kron_svd(W, s, min(r, s.max_rank))


# --------------------------------------------------------------------------------------
# Memory ceiling
# --------------------------------------------------------------------------------------
def test_default_ceiling_follows_the_physical_memory(monkeypatch):
    monkeypatch.delenv("TQLA_MAX_COST_BYTES", raising=False)
    cases = [(4 * GiB, GiB), (6 * GiB + 4, 3 * GiB // 2 + 1), (4 * GiB + 3, GiB),
             (16 * GiB, 2 * GiB), (9 * GiB, 2 * GiB), (0, 2 * GiB), (None, 2 * GiB)]  # fmt: skip
    for phys, want in cases:
        monkeypatch.setattr(asg, "physical_memory", lambda phys=phys: phys)
        got = default_max_cost_bytes()
        assert got == want and type(got) is int, (phys, got)
        assert check_max_bytes(None) == want
    for blank in ("", "   "):
        monkeypatch.setenv("TQLA_MAX_COST_BYTES", blank)
        assert default_max_cost_bytes() == 2 * GiB
    for text, want in (("1", 1), (" 4e9 ", 4 * 10**9), ("1000.7", 1000), ("2048", 2048)):
        monkeypatch.setenv("TQLA_MAX_COST_BYTES", text)
        assert default_max_cost_bytes() == want
        assert check_max_bytes(None) == want
        if want >= 16:
            assert check_cost_memory(1, 8, what="w", max_bytes=None) == 16
        else:  # the default ceiling applies
            with pytest.raises(MemoryError, match=f"over the limit of {want} B"):
                check_cost_memory(1, 8, what="w", max_bytes=None)


@pytest.mark.parametrize("bad", ["lots", "0x10", "1e9b"])
def test_environment_ceiling_that_is_not_a_number(monkeypatch, bad):
    monkeypatch.setenv("TQLA_MAX_COST_BYTES", bad)
    msg = (
        "environment variable TQLA_MAX_COST_BYTES must be a positive number of bytes "
        f"(e.g. 4e9), got {bad!r}"
    )
    with pytest.raises(ValueError, match=_whole(msg)):
        default_max_cost_bytes()


@pytest.mark.parametrize("bad", ["0", "0.5", "-3", "inf", "-inf", "nan", "1e400"])
def test_environment_ceiling_that_is_not_positive_and_finite(monkeypatch, bad):
    monkeypatch.setenv("TQLA_MAX_COST_BYTES", bad)
    msg = (
        "environment variable TQLA_MAX_COST_BYTES must be a positive, finite number of bytes "
        f"(e.g. 4e9), got {bad!r}"
    )
    with pytest.raises(ValueError, match=_whole(msg)):
        default_max_cost_bytes()


def test_max_bytes_messages_name_the_argument():
    assert check_max_bytes(4e9) == 4 * 10**9 and check_max_bytes(7, "x") == 7
    msg = "max_bytes must be None or a positive whole number of bytes, got 0"
    with pytest.raises(ValueError, match=_whole(msg)):
        check_max_bytes(0)
    msg = "limit must be None or a positive whole number of bytes, got 1.5"
    with pytest.raises(ValueError, match=_whole(msg)):
        check_max_bytes(1.5, "limit")
    s = KS((3, 2), (2, 2))
    _, W, K = _problem(s)
    msg = "max_bytes must be None or a positive number of bytes, got str 'a'"
    with pytest.raises(TypeError, match=_whole(msg)):
        assign_cost(W, K, max_bytes="a")
    with pytest.raises(TypeError, match=_whole(msg)):
        slots_cost(W, s, K, 0, max_bytes="a")


@given(n=st.integers(1, 3000), item=st.sampled_from([2, 4, 8]), extra=st.integers(0, 10**7))
@example(n=1, item=4, extra=0)
def test_refusal_message_is_whole(n, item, extra):
    need = n * n * (item + 8) + extra
    fb = asg.fmt_bytes
    plus = f", plus {fb(extra)} of temporaries" if extra else ""
    msg = (
        f"what: the {n}×{n} cost matrix would need about {fb(need)} ({n}² entries × ({item} "
        f"bytes + 8 for the float64 host copy the LSAP solver needs) = {fb(need - extra)}"
        f"{plus}), over the limit of {fb(need - 1)}. Permute only the other side "
        "(permute='rows'/'cols'), use rule='slots' whose cost matrices are m1×m1 instead of "
        "M×M, choose factor shapes with a smaller side, or raise the limit with "
        "max_cost_bytes= (or the TQLA_MAX_COST_BYTES environment variable)."
    )
    if need > 1:
        with pytest.raises(MemoryError, match=_whole(msg)):
            check_cost_memory(n, item, what="what", extra_bytes=extra, max_bytes=need - 1)
    assert check_cost_memory(n, item, what="what", extra_bytes=extra, max_bytes=need) == need
    assert check_cost_memory(n, item, what="what", max_bytes=need) == need - extra


@pytest.mark.parametrize("side", ["rows", "cols"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_builders_name_themselves_and_their_side_in_refusals(side, dtype):
    s = KS((4, 3), (3, 2))
    _, W, K = _problem(s, 2, dtype=dtype)
    with pytest.raises(MemoryError, match=rf"^assign cost \({side}\): the "):
        assign_cost(W, K, side=side, max_bytes=1)
    with pytest.raises(MemoryError, match=rf"^slots cost \({side}\): the "):
        slots_cost(W, s, K, 0, side=side, max_bytes=1)
    so = s if side == "rows" else s.T
    item = np.dtype(dtype).itemsize
    need = so.m1**2 * (item + 8) + (3 * so.m1 * so.n1 * 2 + so.m1 * so.n1 * so.n2) * item
    SlotsCost(W, s, K, side=side, max_bytes=need)
    with pytest.raises(MemoryError, match=rf"^slots cost \({side}\): the {so.m1}×{so.m1} "):
        SlotsCost(W, s, K, side=side, max_bytes=need - 1)


def test_itemsize_of_a_library_without_it_counts_eight_bytes():
    xp = pytest.importorskip("array_api_strict")
    s = KS((3, 2), (2, 2))
    _, W, K = _problem(s, dtype=np.float32)
    Wx = xp.asarray(W)
    item = getattr(Wx.dtype, "itemsize", 8)
    need = 36 * (item + 8) + 2 * 24 * item
    assign_cost(Wx, xp.asarray(K.to_dense()), max_bytes=need)
    with pytest.raises(MemoryError):
        assign_cost(Wx, xp.asarray(K.to_dense()), max_bytes=need - 1)
    need = 9 * (item + 8) + (3 * 3 * 2 * 1 + 3 * 2 * 2) * item
    Vx = xp.asarray(slots_basis(K))
    SlotsCost(Wx, s, Vx, max_bytes=need)
    with pytest.raises(MemoryError):
        SlotsCost(Wx, s, Vx, max_bytes=need - 1)


# --------------------------------------------------------------------------------------
# assign_cost
# --------------------------------------------------------------------------------------
@given(
    m1=st.integers(1, 4), n1=st.integers(1, 4), m2=st.integers(1, 3), n2=st.integers(1, 3),
    side=st.sampled_from(["rows", "cols"]), dense=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**32 - 1),
)  # fmt: skip
@example(m1=3, n1=2, m2=2, n2=3, side="cols", dense=False, dtype=np.float64, seed=0)
def test_assign_cost_is_the_negated_product(m1, n1, m2, n2, side, dense, dtype, seed):
    s = KS((m1, n1), (m2, n2))
    rng, W, K = _problem(s, 2, seed, dtype)
    M, N = s.matrix_shape
    rp, cp = rng.permutation(M), rng.permutation(N)
    Kd = K.to_dense()
    Karg = Kd if dense else K
    C = assign_cost(W, Karg, side=side, row_perm=rp, col_perm=cp)
    ref = -(W @ Kd[:, cp].T) if side == "rows" else -(W.T @ Kd[rp])
    assert C.dtype == dtype and C.flags.c_contiguous
    np.testing.assert_array_equal(C, ref)  # the same product, negated: exact
    # only the other side's permutation is used; no permutation = the identity
    other = {"col_perm": cp} if side == "rows" else {"row_perm": rp}
    np.testing.assert_array_equal(assign_cost(W, Karg, side=side, **other), ref)
    ident = -(W @ Kd.T) if side == "rows" else -(W.T @ Kd)
    np.testing.assert_array_equal(assign_cost(W, Karg, side=side), ident)
    own = {"row_perm": rp} if side == "rows" else {"col_perm": cp}
    np.testing.assert_array_equal(assign_cost(W, Karg, side=side, **own), ident)


def test_assign_cost_messages_name_each_argument():
    s = KS((3, 2), (2, 2))
    _, W, K = _problem(s)
    Kd = K.to_dense()
    cases = [
        (ValueError, "W must be 2-D, got 3-D array of shape (6, 4, 1)", (W[..., None], K), {}),
        (TypeError, "W must have a real floating dtype (float32 or float64), got int64; "
         "convert it with .astype(float64) / .to(torch.float64)",
         (W.astype(np.int64), K), {}),
        (ValueError, "K must be 2-D, got 3-D array of shape (6, 4, 1)", (W, Kd[..., None]), {}),
        (TypeError, "K must have a real floating dtype (float32 or float64), got int64; "
         "convert it with .astype(float64) / .to(torch.float64)", (W, Kd.astype(np.int64)), {}),
        (ValueError, "K of shape (4, 6) does not match W of shape (6, 4)", (W, Kd.T), {}),
        (ValueError, "K of shape (4, 6) does not match W of shape (6, 4)", (W, K.T), {}),
        (ValueError, "side must be 'rows' or 'cols', got 'both'", (W, K), {"side": "both"}),
        (ValueError, "row_perm must be a permutation of range(6): it repeats entries",
         (W, K), {"row_perm": [0, 0, 1, 2, 3, 4]}),
        (ValueError, "row_perm must have shape (6,), got (3,)", (W, K),
         {"side": "cols", "row_perm": [0, 1, 2]}),
        (ValueError, "col_perm must have shape (4,), got (3,)", (W, K), {"col_perm": [0, 1, 2]}),
    ]  # fmt: skip
    for exc, msg, args, kw in cases:
        with pytest.raises(exc, match=_whole(msg)):
            assign_cost(*args, **kw)
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=_whole("W and K must be arrays of the same library")):
        assign_cost(W, torch.from_numpy(Kd))
    got = assign_cost(torch.from_numpy(W), torch.from_numpy(Kd), side="cols")
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), -(W.T @ Kd), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------
# slots_cost / SlotsCost: frames, sides, messages
# --------------------------------------------------------------------------------------
shapes = st.builds(
    lambda m1, n1, m2, n2: KS((m1, n1), (m2, n2)),
    st.integers(2, 5), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4),
)  # fmt: skip


@given(s=shapes, r=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
@example(s=KS((4, 2), (3, 2)), r=2, seed=0)
def test_slots_cost_columns_are_the_rows_of_the_transposes(s, r, seed):
    rng, W, K = _problem(s, r, seed)
    M, N = s.matrix_shape
    rp, cp = rng.permutation(M), rng.permutation(N)
    Kt = KroneckerSum(np.transpose(K.A, (0, 2, 1)), np.transpose(K.B, (0, 2, 1)))
    for slot in range(s.n2):
        got = slots_cost(W, s, K, slot, side="cols", row_perm=rp, col_perm=cp)
        want = slots_cost(W.T.copy(), s.T, Kt, slot, row_perm=cp, col_perm=rp)
        assert got.shape == (s.n1, s.n1)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * (1 + np.abs(want).max()))
        # an explicit basis of the transposed problem is the same as K
        V = slots_basis(K, "cols")
        also = slots_cost(W, s, V, slot, side="cols", row_perm=rp, col_perm=cp)
        np.testing.assert_allclose(also, got, rtol=1e-12, atol=1e-12 * (1 + np.abs(got).max()))


@given(s=shapes, r=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_permutations_bring_W_into_Ks_frame(s, r, seed):
    """slots_cost(W, ..., row_perm, col_perm) is slots_cost(U) with U[rp[i], cp[j]] = W[i, j]."""
    rng, W, K = _problem(s, r, seed)
    M, N = s.matrix_shape
    rp, cp = rng.permutation(M), rng.permutation(N)
    U = np.empty_like(W)
    U[np.ix_(rp, cp)] = W
    for side in ("rows", "cols"):
        for slot in range(s.m2 if side == "rows" else s.n2):
            got = slots_cost(W, s, K, slot, side=side, row_perm=rp, col_perm=cp)
            want = slots_cost(U, s, K, slot, side=side)
            tol = 1e-12 * (1 + np.abs(want).max())
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=tol)
            rows_only = slots_cost(W, s, K, slot, side=side, row_perm=rp)
            U1 = W[np.argsort(rp)]
            np.testing.assert_allclose(rows_only, slots_cost(U1, s, K, slot, side=side),
                                       rtol=1e-12, atol=tol)  # fmt: skip
            cols_only = slots_cost(W, s, K, slot, side=side, col_perm=cp)
            U2 = W[:, np.argsort(cp)]
            np.testing.assert_allclose(cols_only, slots_cost(U2, s, K, slot, side=side),
                                       rtol=1e-12, atol=tol)  # fmt: skip


def test_slots_messages_name_each_argument():
    s = KS((3, 2), (2, 2))
    _, W, K = _problem(s)
    cases = [
        (ValueError, "W must be 2-D, got 3-D array of shape (6, 4, 1)",
         (W[..., None], s, K, 0), {}),
        (ValueError, "W of shape (6, 4) does not match the Kronecker shape A (3, 2) ⊗ B (2, 3), "
         "which needs (3·2, 2·3) = (6, 6)", (W, ((3, 2), (2, 3)), K, 0), {}),
        (ValueError, "K has factor shapes (2, 2) ⊗ (3, 2), expected (3, 2) ⊗ (2, 2)",
         (W, s, kron_svd(W, ((2, 2), (3, 2)), 1), 0), {}),
        (TypeError, "V must be a KroneckerSum or an array, got str", (W, s, "V", 0), {}),
        (ValueError, "V must be an (m2·n2, r) = (4, r) orthonormal basis, got shape (4,)",
         (W, s, np.zeros(4), 0), {}),
        (ValueError, "V must be an (m2·n2, r) = (4, r) orthonormal basis, got shape (3, 1)",
         (W, s, np.zeros((3, 1)), 0), {}),
        (ValueError, "slot must be <= 1, got 2", (W, s, K, 2), {}),
        (ValueError, "slot must be >= 0, got -1", (W, s, K, -1), {}),
        (TypeError, "slot must be an integer, got float 1.5", (W, s, K, 1.5), {}),
        (ValueError, "side must be 'rows' or 'cols', got 'up'", (W, s, K, 0), {"side": "up"}),
        (ValueError, "row_perm must have shape (6,), got (1,)", (W, s, K, 0), {"row_perm": [0]}),
        (ValueError, "col_perm must have shape (4,), got (1,)", (W, s, K, 0), {"col_perm": [0]}),
        (ValueError, "row_perm must have shape (6,), got (1,)", (W, s, K, 0),
         {"side": "cols", "row_perm": [0]}),
        (ValueError, "col_perm must have shape (4,), got (1,)", (W, s, K, 0),
         {"side": "cols", "col_perm": [0]}),
    ]  # fmt: skip
    for exc, msg, args, kw in cases:
        with pytest.raises(exc, match=_whole(msg)):
            slots_cost(*args, **kw)
    with pytest.raises(ValueError, match=_whole("side must be 'rows' or 'cols', got 'up'")):
        slots_basis(K, "up")
    with pytest.raises(TypeError, match=_whole("K must be a KroneckerSum, got ndarray")):
        slots_basis(W)
    sweep = SlotsCost(W, s, K)
    with pytest.raises(ValueError, match=_whole("assign(slot=0) must follow cost(0)")):
        sweep.assign(0, [0, 1, 2])
    sweep.cost(0)
    with pytest.raises(ValueError, match=_whole("assign(slot=1) must follow cost(1)")):
        sweep.assign(1, [0, 1, 2])
    with pytest.raises(ValueError, match=_whole("col_ind must have shape (3,), got (2,)")):
        sweep.assign(0, [0, 1])


@pytest.mark.parametrize("side", ["rows", "cols"])
def test_sweep_attributes(side):
    s = KS((4, 3), (3, 2))
    _, W, K = _problem(s, 2)
    sweep = SlotsCost(W, s, K, side=side, kernel="numpy")
    so = s if side == "rows" else s.T
    assert sweep.shape == so and sweep.kernel == "numpy" and sweep.xp is not None
    assert sweep.order.dtype == np.int64
    np.testing.assert_array_equal(sweep.order, np.arange(so.matrix_shape[0]))
    np.testing.assert_array_equal(sweep.V, slots_basis(K, side))
    assert sweep._Y.flags.c_contiguous and sweep._Y.shape == (so.m1, so.n1, 2)
    assert sweep._U4.shape == (so.m1, so.m2, so.n1, so.n2)
    strided = np.repeat(W, 2, axis=1)[:, ::2]  # a strided view: blocks from a C copy
    for Wv in (strided, np.asfortranarray(W)):
        U4 = SlotsCost(Wv, s, K, side=side)._U4
        assert U4.flags.c_contiguous
        np.testing.assert_array_equal(U4, sweep._U4)
    c = sweep.cost(0)
    assert c.shape == (so.m1, so.m1) and c.dtype == np.float64
    W32 = W.astype(np.float32)
    c32 = SlotsCost(W32, s, kron_svd(W32, s, 2), side=side).cost(0)
    assert c32.dtype == np.float32


# --------------------------------------------------------------------------------------
# The sweep's routes
# --------------------------------------------------------------------------------------
def _count_kernel_calls(monkeypatch) -> list:
    calls = []
    real = asg.get_kernel

    def spy(name, impl="auto", *arrays):
        fn = real(name, impl, *arrays)
        if name != "slots_cost":
            return fn

        def counted(*a):
            calls.append(impl)
            return fn(*a)

        return counted

    monkeypatch.setattr(asg, "get_kernel", spy)
    return calls


@given(
    m1=st.integers(2, 6), n1=st.integers(1, 4), m2=st.integers(1, 4), n2=st.integers(1, 4),
    move=st.booleans(), seed=st.integers(0, 2**32 - 1),
)  # fmt: skip
@example(m1=3, n1=2, m2=2, n2=2, move=True, seed=0)
@example(m1=3, n1=2, m2=3, n2=2, move=True, seed=0)
def test_only_a_two_slot_sweep_skips_the_kernel_for_slot_1(m1, n1, m2, n2, move, seed):
    """m2 = 2: slot 1's cost after assign(0) is slot 0's transposed cost (no kernel call);
    any other m2, or slot 1 after another slot, calls the slot kernel; costs always equal
    those of a fresh build on the re-ordered rows."""
    s = KS((m1, n1), (m2, n2))
    rng, W, K = _problem(s, 2, seed)
    V = slots_basis(K)
    with pytest.MonkeyPatch.context() as mp:
        calls = _count_kernel_calls(mp)
        sweep = SlotsCost(W, s, V, kernel="numpy")
        for slot in range(m2):
            n0 = len(calls)
            got = sweep.cost(slot)
            want = SlotsCost(W[sweep.order], s, V, kernel="numpy").cost(slot)
            expect_call = not (m2 == 2 and slot == 1)
            assert len(calls) - n0 - 1 == int(expect_call), (slot, calls)  # + the fresh one
            tol = 1e-10 * (1 + np.abs(want).max())
            np.testing.assert_allclose(got, want, rtol=0, atol=tol)
            sweep.assign(slot, rng.permutation(m1) if move else np.arange(m1))
        assert all(impl == "numpy" for impl in calls)
        # a second pass: slot 1 after slot 0 again (m2 = 2 only) and slot 0 after slot 1
        for slot in range(m2):
            n0 = len(calls)
            sweep.cost(slot)
            assert len(calls) - n0 == int(not (m2 == 2 and slot == 1))
            sweep.assign(slot, rng.permutation(m1))
        if m2 >= 2:  # slot 1 straight after slot 1: the kernel again
            n0 = len(calls)
            sweep.cost(1)
            sweep.assign(1, rng.permutation(m1))
            sweep.cost(1)
            assert len(calls) - n0 == 2


@pytest.mark.parametrize("m2", [2, 3])
def test_cost_matrices_belong_to_the_caller(m2):
    s = KS((4, 2), (m2, 3))
    _, W, K = _problem(s, 2, 1)
    V = slots_basis(K)
    sweep = SlotsCost(W, s, V)
    sweep.cost(0)[...] = 1e9  # the caller may overwrite what it gets
    sweep.assign(0, [1, 0, 3, 2])
    got = sweep.cost(1)
    assert got.flags.c_contiguous and got.dtype == W.dtype
    want = SlotsCost(W[sweep.order], s, V).cost(1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * (1 + np.abs(want).max()))


def test_identity_assignments_change_nothing():
    s = KS((4, 2), (3, 2))
    _, W, K = _problem(s, 2, 2)
    sweep = SlotsCost(W, s, K)
    Y = sweep._Y
    for slot in range(3):
        sweep.cost(slot)
        sweep.assign(slot, np.arange(4))
        assert sweep._Y is Y  # no update of the held projections
        np.testing.assert_array_equal(sweep.order, np.arange(12))
    sweep.cost(1)
    sweep.assign(1, [1, 0, 2, 3])
    assert sweep._Y is not Y
    with pytest.raises(ValueError, match=_whole("assign(slot=1) must follow cost(1)")):
        sweep.assign(1, [1, 0, 2, 3])  # each cost() allows one assign()
    assert sweep.order.tolist() == [0, 4, 2, 3, 1, 5, 6, 7, 8, 9, 10, 11]


@pytest.mark.parametrize("kernel", ["numpy", "array_api", "numba"])
def test_kernel_argument_reaches_both_operations(kernel, monkeypatch):
    from tqla._kernels import available

    if kernel not in available("slots_cost"):
        pytest.skip(f"{kernel} missing")
    seen = []
    real = asg.get_kernel

    def spy(name, impl="auto", *arrays):
        seen.append((name, impl))
        return real(name, impl, *arrays)

    monkeypatch.setattr(asg, "get_kernel", spy)
    s = KS((3, 2), (3, 2))
    _, W, K = _problem(s, 1, 3)
    ref = slots_cost(W, s, K, 1, kernel="numpy")
    seen.clear()
    got = slots_cost(W, s, K, 1, kernel=kernel)
    rm = kernel if kernel in available("rearranged_matmul") else "auto"
    assert seen == [("rearranged_matmul", rm), ("slots_cost", kernel)]
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * (1 + np.abs(ref).max()))
    seen.clear()
    SlotsCost(W, s, K).cost(0)
    assert seen == [("rearranged_matmul", "auto"), ("slots_cost", "auto")]  # the defaults
