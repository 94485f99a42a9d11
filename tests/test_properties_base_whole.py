"""tqla_torch.nn.base stated whole: the shared checks (whole messages, boundaries, return
types), relative_error's blocks and float64 accumulation, the permutation helpers' devices
and dtypes, the registry, the spec round trip and the base class's abstract interface
(fifth mutation pass)."""

from __future__ import annotations

import math
import re
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
from _spies import torch_call_recorder  # noqa: E402
from torch import nn  # noqa: E402

import tqla_torch.nn.base as base  # noqa: E402
from tqla_torch.nn import KroneckerLinear, LowRankLinear  # noqa: E402

_Record = torch_call_recorder()


# --------------------------------------------------------------------------------------
# relative_error
# --------------------------------------------------------------------------------------
@given(
    rows=st.integers(1, 9),
    cols=st.integers(1, 5),
    block=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_relative_error_sums_float64_blocks_of_rows(rows, cols, block, seed):
    g = torch.Generator().manual_seed(seed)
    ref = torch.randn(rows, cols, generator=g)  # float32: summed in float64
    approx = ref + 0.3 * torch.randn(rows, cols, generator=g)
    want = float(
        np.linalg.norm(approx.double().numpy() - ref.double().numpy())
        / np.linalg.norm(ref.double().numpy())
    )
    step = max(1, block // cols)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(base, "_ERROR_BLOCK", block)
        seen = []
        got = base.relative_error(lambda i, j: seen.append((i, j)) or approx[i:j], ref)
        with _Record() as rec:
            got_t = base.relative_error(approx, ref)
    assert seen == [(i, min(rows, i + step)) for i in range(0, rows, step)]
    assert type(got) is float and got == pytest.approx(want, rel=1e-12)
    assert got_t == pytest.approx(want, rel=1e-12)
    assert sum(n == "sum" for n, _, _ in rec.calls) == 2 * len(seen)  # the same blocks


def test_relative_error_flattens_a_vector_into_one_row(monkeypatch):
    monkeypatch.setattr(base, "_ERROR_BLOCK", 4)
    ref = torch.arange(1.0, 11.0)  # 10 entries: one row, one block
    with _Record() as rec:
        got = base.relative_error(ref * 1.5, ref)
    assert got == pytest.approx(0.5, rel=1e-15)
    assert sum(n == "sum" for n, _, _ in rec.calls) == 2


def test_relative_error_of_small_and_zero_references():
    ref = torch.full((3, 2), 1e-3, dtype=torch.float64)  # ‖ref‖ < 1
    assert base.relative_error(ref * 0.75, ref) == pytest.approx(0.25, rel=1e-12)
    zero = torch.zeros(2, 2)
    got = base.relative_error(zero, zero)
    assert got == 0.0 and type(got) is float
    assert base.relative_error(torch.ones(1, 2), zero) == math.inf
    assert base.relative_error(torch.ones(2), torch.full((3, 2), 2.0)) == 0.5  # broadcast
    assert base._ERROR_BLOCK == 1 << 21


# --------------------------------------------------------------------------------------
# the small checks
# --------------------------------------------------------------------------------------
def test_checks_state_their_rule_and_pass_valid_values_through():
    assert base.check_implementation("reconstructed") == "reconstructed"
    msg = "implementation must be one of ('factorized', 'reconstructed'), got 'dense'"
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        base.check_implementation("dense")
    assert [base.check_source(s) for s in ("linear", "conv1d")] == ["linear", "conv1d"]
    with pytest.raises(ValueError, match=r"^source must be 'linear' or 'conv1d', got 'Linear'$"):
        base.check_source("Linear")
    base.check_rank_or_budget(2, None)
    base.check_rank_or_budget(None, 10)
    for r, n in ((None, None), (2, 10)):
        msg = f"give exactly one of rank and n_params, got rank={r!r}, n_params={n!r}"
        with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
            base.check_rank_or_budget(r, n)

    class S:
        repeat = 1

    base.check_linear_repeat(S, "here")
    S.repeat = 2
    with pytest.raises(ValueError, match=r"^here: repeat=2 applies to embeddings only$"):
        base.check_linear_repeat(S, "here")
    for p in base.PERMUTES:
        assert base.check_permute(p) == p
    with pytest.raises(ValueError, match=re.escape(
            "side must be one of ('both', 'rows', 'cols', 'none'), got 'all'")):  # fmt: skip
        base.check_permute("all", "side")
    for old, new in (("output", "rows"), ("out", "rows"), ("input", "cols"), ("in", "cols")):
        msg = (f"side={old!r} is deprecated; use {new!r} (rows = output features, cols = input "
               f"features)")  # fmt: skip
        with pytest.warns(DeprecationWarning, match=f"^{re.escape(msg)}$"):
            assert base.check_permute(old, "side") == new
    with pytest.raises(ValueError, match=r"must be one of"):
        base.check_permute(["rows"])  # not a string: no alias lookup


def test_seed_for_mixes_the_module_name():
    assert base.seed_for(None, "a") is None
    assert base.seed_for(3, "h.0.mlp") == [3, zlib.crc32(b"h.0.mlp")]
    assert base.seed_for(0, "") == [0, 0]


def test_padding_idx_wraps_into_range():
    n = 5
    got = [base.check_padding_idx(p, n) for p in (-5, -1, 0, 4, np.int64(2))]
    assert got == [0, 4, 0, 4, 2] and all(type(v) is int for v in got)


# --------------------------------------------------------------------------------------
# permutations
# --------------------------------------------------------------------------------------
def test_as_perm_validates_and_places_the_permutation():
    assert base.as_perm(None, 3, "p", "meta") is None
    t = base.as_perm(torch.tensor([2, 0, 1], requires_grad=False), 3, "p", None)
    assert t.tolist() == [2, 0, 1] and t.dtype == torch.int64 and t.is_contiguous()
    m = base.as_perm([1, 0, 2], 3, "p", "meta")
    assert m.device.type == "meta" and m.dtype == torch.int64
    ident = base.as_perm(np.arange(4), 4, "p", "cpu")  # an identity is kept
    assert ident.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"^row_perm must have shape \(3,\), got \(2,\)$"):
        base.as_perm([0, 1], 3, "row_perm", None)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_inverse_perm_keeps_dtype_and_device(dtype):
    p = torch.randperm(7, generator=torch.Generator().manual_seed(0)).to(dtype)
    inv = base.inverse_perm(p)
    assert inv.dtype == dtype and torch.equal(p[inv], torch.arange(7, dtype=dtype))
    assert torch.equal(inv[p], torch.arange(7, dtype=dtype))
    with _Record() as rec:
        base.inverse_perm(p)
    ((args, kwargs),) = [(a, k) for n, a, k in rec.calls if n == "arange"]
    assert args == (7,) and kwargs == {"device": p.device, "dtype": dtype}


# --------------------------------------------------------------------------------------
# dense modules and module surgery
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_dense_linear_copies_onto_the_weight_device_and_dtype(bias):
    W = torch.randn(3, 2, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64) if bias else None
    lin = base.dense_linear(W, b)
    assert (lin.in_features, lin.out_features, lin.weight.dtype) == (2, 3, torch.float64)
    assert torch.equal(lin.weight, W) and lin.weight.data_ptr() != W.data_ptr()
    assert (lin.bias is None) if not bias else torch.equal(lin.bias, b)
    m = base.dense_linear(torch.empty(3, 2, device="meta", dtype=torch.float16), None)
    assert (m.weight.device.type, m.weight.dtype, m.bias) == ("meta", torch.float16, None)


def test_set_module_replaces_the_named_descendant_only():
    model = nn.Sequential(nn.Sequential(nn.Sequential(nn.ReLU(), nn.Linear(2, 2))))
    new = nn.Identity()
    base.set_module(model, "0.0.1", new)
    assert model[0][0][1] is new and isinstance(model[0][0][0], nn.ReLU)
    assert not hasattr(model[0], "0.1")


# --------------------------------------------------------------------------------------
# the base class
# --------------------------------------------------------------------------------------
class _Emb(base.EmbeddingBase, register=False):
    def __init__(self, table, padding_idx=None):
        super().__init__(approximation_error=np.float32(0.5))
        self.num_embeddings, self.embedding_dim = table.shape
        self.padding_idx = padding_idx
        self.table = table

    def to_dense(self):
        return self.table


def test_base_constructor_and_bias_helpers(monkeypatch):
    e = _Emb(torch.zeros(3, 2))
    assert e.implementation == "factorized" and type(e.approximation_error) is float
    assert e.approximation_error == 0.5
    e._init_bias(True, 4, {"device": "meta", "dtype": torch.float64})
    assert (e.bias.shape, e.bias.device.type, e.bias.dtype) == ((4,), "meta", torch.float64)
    f = _Emb(torch.zeros(3, 2))
    f._init_bias(False, 4, {})
    assert "bias" in f._parameters and f.bias is None
    f._reset_bias(9)  # no bias: nothing drawn
    calls = []
    monkeypatch.setattr(base.nn.init, "uniform_", lambda *a: calls.append(a))
    e._reset_bias(16)
    assert calls == [(e.bias, -0.25, 0.25)]


def test_to_embedding_copies_the_table_with_its_padding_device_and_dtype():
    table = torch.randn(5, 3, dtype=torch.float64)
    emb = _Emb(table, padding_idx=2).to_embedding()
    assert emb.padding_idx == 2 and emb.weight.dtype == torch.float64
    assert torch.equal(emb.weight, table) and emb.weight.data_ptr() != table.data_ptr()
    meta = _Emb(torch.empty(5, 3, device="meta", dtype=torch.float16)).to_embedding()
    assert (meta.weight.device.type, meta.weight.dtype, meta.padding_idx) == (
        "meta", torch.float16, None)  # fmt: skip


def test_the_abstract_interface_names_the_class_and_the_method():
    class _Bare(base.CompressedModule, register=False):
        pass

    lin = nn.Linear(2, 2)
    for call, what in ((lambda: _Bare.accepts(lin), "accepts"),
                       (lambda: _Bare.plan(lin, None), "plan"),
                       (lambda: _Bare.from_module(lin, None), "from_module"),
                       (lambda: _Bare()._spec_values(), "_spec_values"),
                       (lambda: _Bare().to_dense(), "to_dense")):  # fmt: skip
        with pytest.raises(NotImplementedError, match=f"^_Bare\\.{what}$"):
            call()


def test_registry_registers_subclasses_by_name(monkeypatch):
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))

    class _ProbeLayer(base.CompressedModule):
        pass

    assert base._REGISTRY["_ProbeLayer"] is _ProbeLayer
    assert base.CompressedModule.layer_type("_ProbeLayer") is _ProbeLayer

    class _Unlisted(base.CompressedModule, register=False):
        pass

    assert "_Unlisted" not in base._REGISTRY
    msg = (f"a compressed layer type named 'KroneckerLinear' is already registered (from "
           f"{KroneckerLinear.__module__}); layer class names must be unique")  # fmt: skip
    with pytest.raises(TypeError, match=f"^{re.escape(msg)}$"):
        type("KroneckerLinear", (base.CompressedModule,), {"__qualname__": "other.KroneckerLinear"})
    again = type("KroneckerLinear", (base.CompressedModule,), {})  # the same class redefined
    assert base._REGISTRY["KroneckerLinear"] is again
    known = sorted(base._REGISTRY)
    with pytest.raises(ValueError, match=re.escape(
            f"unknown compressed layer type 'Nope'; known: {known}")):  # fmt: skip
        base.CompressedModule.layer_type("Nope")


def test_family_lookup_by_module_and_method():
    from transformers.pytorch_utils import Conv1D

    lin, conv, emb = nn.Linear(8, 6), Conv1D(6, 8), nn.Embedding(4, 2)
    C = base.CompressedModule
    assert C.for_module(lin, "kron") is KroneckerLinear
    assert C.for_module(conv, "permuted_kron") is KroneckerLinear
    assert C.for_module(lin, "svd") is LowRankLinear
    assert C.for_module(lin, "nope") is None and C.for_module(nn.ReLU(), "kron") is None
    assert C.compressible(lin) and C.compressible(emb) and not C.compressible(nn.ReLU())
    assert base.LinearBase.accepts(lin) and base.LinearBase.accepts(conv)
    assert not base.LinearBase.accepts(emb)


def test_spec_round_trip_through_the_base_class():
    layer = KroneckerLinear(8, 6, ((3, 4), (2, 2)), 2, bias=False, permute="rows")
    spec = layer.spec()
    assert spec == {"type": "KroneckerLinear", **layer._spec_values()}
    back = base.CompressedModule.from_spec(spec, device="meta", dtype=torch.float64)
    assert type(back) is KroneckerLinear and back.spec() == spec
    assert (back.A.device.type, back.A.dtype) == ("meta", torch.float64)
    plain = dict(spec)
    del plain["type"]
    assert KroneckerLinear.from_spec(plain).spec() == spec  # the class's own name
    with pytest.raises(ValueError, match=r"^spec of a 'LowRankLinear' given to "
                                         r"KroneckerLinear\.from_spec$"):  # fmt: skip
        KroneckerLinear.from_spec({**spec, "type": "LowRankLinear"})
    bad = {k: v for k, v in spec.items() if k != "type"}
    bad["colour"] = 1
    with pytest.raises(ValueError, match=re.escape(f"invalid KroneckerLinear spec {bad!r}: ")):
        base.CompressedModule.from_spec({"type": "KroneckerLinear", **bad})


def test_to_linear_is_the_dense_layer():
    layer = KroneckerLinear(8, 6, ((3, 4), (2, 2)), 2).double()
    lin = layer.to_linear()
    with torch.no_grad():
        assert torch.equal(lin.weight, layer.to_dense()) and torch.equal(lin.bias, layer.bias)
    x = torch.randn(3, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(lin(x), layer(x))


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.bool]
)
def test_relative_error_converts_an_approximation_of_any_real_dtype_to_float64(dtype):
    """Each block of approx is converted to float64 before the difference: any real dtype
    (half precision, integers, a boolean mask) gives the float64 definition."""
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(5, 3, generator=g, dtype=torch.float64)
    approx = (3 * torch.randn(5, 3, generator=g)).to(dtype)
    want = float(
        np.linalg.norm(approx.to(torch.float64).numpy() - ref.numpy()) / np.linalg.norm(ref)
    )
    assert base.relative_error(approx, ref) == pytest.approx(want, rel=1e-14)
    assert base.relative_error(lambda i, j: approx[i:j], ref) == pytest.approx(want, rel=1e-14)
