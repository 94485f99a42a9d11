"""Compressed layers: orientation helper, exactness against dense layers, gradients, dtypes."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tqla.kron import KroneckerShape
from tqla_torch._shapes import layer_shape, resolve_shape, weight_view
from tqla_torch.layers import (
    KroneckerEmbedding,
    KroneckerLinear,
    LowRankEmbedding,
    LowRankLinear,
    TiedEmbeddingHead,
    forward_costs,
    low_rank_for_budget,
)

Conv1D = pytest.importorskip("transformers.pytorch_utils").Conv1D

RTOL = 1e-10


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def kron_dense(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    return sum(torch.kron(A[k], B[k]) for k in range(A.shape[0]))


def random_layer(shape, rank, permute, implementation, *, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    (m1, n1), (m2, n2) = shape
    A = torch.randn(rank, m1, n1, dtype=torch.float64, generator=g)
    B = torch.randn(rank, m2, n2, dtype=torch.float64, generator=g)
    rp = torch.randperm(m1 * m2, generator=g) if permute in ("both", "rows") else None
    cp = torch.randperm(n1 * n2, generator=g) if permute in ("both", "cols") else None
    b = torch.randn(m1 * m2, dtype=torch.float64, generator=g) if bias else None
    layer = KroneckerLinear.from_factors(A, B, rp, cp, b, implementation=implementation)
    W = kron_dense(A, B)
    if rp is not None:
        W = W[rp]
    if cp is not None:
        W = W[:, cp]
    return layer, W, b


# --------------------------------------------------------------------------------------
# One orientation helper for Linear / Conv1D / Embedding
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["linear", "conv1d", "embedding"])
def test_weight_view_is_the_in_out_matrix(kind):
    torch.manual_seed(0)
    if kind == "linear":
        m = nn.Linear(6, 4).double()
    elif kind == "conv1d":
        m = Conv1D(4, 6).double()  # nf=out, nx=in
        nn.init.normal_(m.bias)
    else:
        m = nn.Embedding(6, 4).double()
    v = weight_view(m)
    assert v.kind == kind and (v.in_features, v.out_features) == (6, 4)
    assert tuple(v.weight.shape) == (6, 4) and tuple(v.weight_out_in.shape) == (4, 6)
    assert v.weight.data_ptr() == next(iter(m.parameters())).data_ptr()  # a view, no copy
    if kind == "embedding":
        ids = torch.tensor([0, 3, 5])
        onehot = F.one_hot(ids, 6).double()
        assert torch.allclose(m(ids), onehot @ v.weight)  # y = x · W with x one-hot
        assert v.bias is None
    else:
        x = torch.randn(3, 6, dtype=torch.float64)
        assert torch.allclose(m(x), x @ v.weight + v.bias)
        assert v.n_params == 6 * 4 + 4


def test_weight_view_rejects_other_modules():
    with pytest.raises(TypeError, match="Linear, a transformers Conv1D or a torch.nn.Embedding"):
        weight_view(nn.ReLU())


def test_layer_shape_and_resolve_shape():
    s = resolve_shape(768, 3072, b_shape=(2, 4))
    assert s == KroneckerShape((384, 768), (2, 4))
    assert layer_shape(s) == KroneckerShape((768, 384), (4, 2))
    assert resolve_shape(768, 3072, shape=[[384, 768], [2, 4]]) == s
    with pytest.raises(ValueError, match="exactly one of shape"):
        resolve_shape(8, 8)
    with pytest.raises(ValueError, match="exactly one of shape"):
        resolve_shape(8, 8, shape=((4, 4), (2, 2)), b_shape=(2, 2))
    with pytest.raises(ValueError, match="does not divide"):
        resolve_shape(10, 8, b_shape=(3, 2), where="h.0.mlp")
    with pytest.raises(ValueError, match=r"p·s = in"):
        resolve_shape(8, 8, shape=((4, 4), (4, 2)))
    with pytest.raises(ValueError, match="pair of positive integers"):
        resolve_shape(8, 8, b_shape=(0, 2))


# --------------------------------------------------------------------------------------
# KroneckerLinear: exactness against a dense layer holding to_dense()
# --------------------------------------------------------------------------------------
# Shapes in the layer's (out, in) orientation: both association orders are hit.
SHAPES = [
    (((6, 4), (2, 3)), 3),  # a_first < b_first
    (((4, 6), (3, 2)), 3),  # b_first < a_first
    (((768 // 64, 384 // 64), (4, 2)), 4),  # GPT-2 c_fc pattern, scaled down
    (((384 // 64, 768 // 64), (2, 4)), 4),  # GPT-2 c_proj pattern, scaled down
    (((5, 7), (1, 2)), 2),  # m2 = 1
    (((3, 1), (2, 5)), 1),  # n1 = 1
]


@pytest.mark.parametrize(
    "shape,rank,permute,implementation",
    [
        (s, r, p, i)
        for (s, r), p, i in itertools.product(
            SHAPES, ["none", "cols", "rows", "both"], ["factorized", "reconstructed"]
        )
    ],
)
def test_kronecker_linear_matches_dense(shape, rank, permute, implementation):
    layer, W, b = random_layer(shape, rank, permute, implementation)
    assert rel(layer.to_dense(), W) < RTOL
    dense = layer.to_linear()
    for lead in [(7,), (2, 5), (1,), (300,)]:  # 300 tokens: the one-GEMM "B first" path
        x = torch.randn(*lead, W.shape[1], dtype=torch.float64)
        y = layer(x)
        assert y.shape == (*lead, W.shape[0])
        assert rel(y, F.linear(x, W, b)) < RTOL
        assert rel(y, dense(x)) < RTOL


def test_both_association_orders_are_exercised_and_costed():
    c = forward_costs(((768, 384), (4, 2)), 4)  # c_fc in the layer orientation
    assert c == {"a_first": 2383872, "b_first": 4730880, "factorized": 2383872, "dense": 2359296}
    c = forward_costs(((384, 768), (2, 4)), 4)  # c_proj
    assert c["factorized"] == c["b_first"] == 2383872 and c["a_first"] == 4730880
    for shape, _ in SHAPES[:2]:
        c = forward_costs(shape, 3)
        assert c["a_first"] != c["b_first"]


def test_permutation_conventions():
    layer, W, _ = random_layer(((3, 2), (2, 2)), 2, "both", "factorized")
    K = kron_dense(layer.A.detach(), layer.B.detach())
    rp, cp = layer.row_perm, layer.col_perm
    assert torch.equal(W, K[rp][:, cp])  # tqla's convention W[i, j] = K[rp[i], cp[j]]
    assert torch.equal(W[:, layer.input_perm], K[layer.output_perm])  # the buffers
    sd = layer.state_dict()
    assert {"A", "B", "bias", "input_perm", "output_perm"} <= set(sd)  # buffers are saved
    assert sd["input_perm"].dtype == torch.int64


def test_identity_permutations_are_kept_as_buffers():
    """Structure depends on configuration only: an identity found by a search is still a
    buffer, so a checkpoint of one run loads into a module rebuilt by another run."""
    A, B = torch.randn(1, 2, 3), torch.randn(1, 2, 2)
    layer = KroneckerLinear.from_factors(A, B, torch.arange(4), torch.arange(6))
    assert layer.permute == "both"
    assert {"input_perm", "output_perm"} <= set(layer.state_dict())
    x = torch.randn(5, 6)
    plain = KroneckerLinear.from_factors(A, B)
    assert plain.permute == "none" and "input_perm" not in plain.state_dict()
    torch.testing.assert_close(layer(x), plain(x))
    # a layer built with other (non-identity) permutations has the same state-dict keys
    other = KroneckerLinear.from_factors(A, B, torch.randperm(4), torch.randperm(6))
    other.load_state_dict(layer.state_dict())
    torch.testing.assert_close(other(x), plain(x))


def test_from_factors_validates():
    A, B = torch.randn(2, 2, 3), torch.randn(2, 2, 2)
    with pytest.raises(ValueError, match="permutation"):
        KroneckerLinear.from_factors(A, B, row_perm=torch.tensor([0, 0, 1, 2]))
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        KroneckerLinear.from_factors(A, B, col_perm=torch.arange(5))
    with pytest.raises(ValueError, match="same rank"):
        KroneckerLinear.from_factors(A, torch.randn(1, 2, 2))
    with pytest.raises(ValueError, match=r"\(out, in\)"):
        KroneckerLinear(6, 4, ((3, 2), (2, 2)))
    with pytest.raises(ValueError, match="implementation"):
        KroneckerLinear(6, 4, ((2, 3), (2, 2)), implementation="fast")
    with pytest.raises(ValueError, match="in the last"):
        KroneckerLinear(6, 4, ((2, 3), (2, 2)))(torch.randn(3, 5))


@pytest.mark.parametrize("method", ["kron", "permuted_kron"])
@pytest.mark.parametrize("source", ["linear", "conv1d"])
def test_from_linear_and_conv1d(method, source):
    """An exactly Kronecker weight is recovered; the layer equals a dense layer holding
    to_dense() in both orientations."""
    torch.manual_seed(1)
    out_f, in_f = 12, 8
    lshape = KroneckerShape((6, 4), (2, 2))  # layer (out, in) orientation
    A, B = torch.randn(2, 6, 4, dtype=torch.float64), torch.randn(2, 2, 2, dtype=torch.float64)
    W = kron_dense(A, B)  # (out, in)
    if source == "linear":
        mod = nn.Linear(in_f, out_f).double()
        with torch.no_grad():
            mod.weight.copy_(W)
        layer = KroneckerLinear.from_linear(mod, lshape, 2, method=method, n_iter=2)
    else:
        mod = Conv1D(out_f, in_f).double()
        with torch.no_grad():
            mod.weight.copy_(W.T)  # Conv1D stores (in, out)
            mod.bias.normal_()
        layer = KroneckerLinear.from_conv1d(mod, lshape, 2, method=method, n_iter=2)
        assert layer.source == "conv1d"
    assert layer.kshape == lshape and layer.rank == 2
    assert layer.approximation_error < 1e-10
    x = torch.randn(5, in_f, dtype=torch.float64)
    assert rel(layer(x), mod(x)) < 1e-10
    assert rel(layer(x), F.linear(x, layer.to_dense(), layer.bias)) < RTOL


def test_from_linear_permuted_is_no_worse_than_kron():
    torch.manual_seed(2)
    lin = nn.Linear(16, 24).double()
    s = KroneckerShape((6, 4), (4, 4))
    kron = KroneckerLinear.from_linear(lin, s, 2, method="kron")
    perm = KroneckerLinear.from_linear(lin, s, 2, method="permuted_kron", n_iter=3, seed=0)
    assert perm.approximation_error <= kron.approximation_error + 1e-12
    x = torch.randn(3, 16, dtype=torch.float64)
    assert rel(perm(x), F.linear(x, perm.to_dense(), perm.bias)) < RTOL
    # the same through GPT-2's transposed Conv1D: the layer approximates weight.T
    conv = Conv1D(24, 16).double()
    with torch.no_grad():
        conv.weight.copy_(lin.weight.T)
        conv.bias.copy_(lin.bias)
    pc = KroneckerLinear.from_conv1d(conv, s, 2, method="permuted_kron", n_iter=3, seed=0)
    assert pc.permute != "none"
    assert abs(rel(pc.to_dense(), conv.weight.T) - pc.approximation_error) < 1e-12
    assert rel(pc(x), F.linear(x, pc.to_dense(), pc.bias)) < RTOL
    # same weight, same seed: the same result up to rounding — the Conv1D weight reaches
    # tqla as a transposed (strided) view, whose GEMMs may sum in another order (item 12)
    assert rel(pc.to_dense(), perm.to_dense()) < RTOL
    with pytest.raises(ValueError, match="needs method='permuted_kron'"):
        KroneckerLinear.from_linear(lin, s, 2, method="kron", permute="both")
    with pytest.raises(TypeError, match="torch.nn.Linear"):
        KroneckerLinear.from_linear(Conv1D(4, 4), s, 1)
    with pytest.raises(TypeError, match="Conv1D"):
        KroneckerLinear.from_conv1d(lin, s, 1)


@pytest.mark.parametrize("implementation", ["factorized", "reconstructed"])
@pytest.mark.parametrize("shape", [((6, 4), (2, 3)), ((4, 6), (3, 2))])
def test_gradients_reach_every_factor(implementation, shape):
    layer, _, _ = random_layer(shape, 2, "both", implementation)
    x = torch.randn(4, layer.in_features, dtype=torch.float64, requires_grad=True)
    layer(x).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None
    # gradients agree with the dense layer's, mapped through the factors
    dense_W = layer.to_dense().detach().requires_grad_(True)
    x2 = x.detach()
    F.linear(x2, dense_W, layer.bias.detach()).square().sum().backward()
    W = layer.to_dense()
    layer.zero_grad()
    (W * dense_W.grad).sum().backward()
    g_chain = layer.A.grad.clone()
    layer.zero_grad()
    layer(x2).square().sum().backward()
    assert rel(layer.A.grad, g_chain) < 1e-9


def test_device_dtype_and_init():
    layer = KroneckerLinear(8, 6, ((3, 4), (2, 2)), 2, dtype=torch.float64)
    assert layer.A.dtype == torch.float64 and layer.bias.dtype == torch.float64
    torch.manual_seed(0)
    big = KroneckerLinear(256, 256, ((16, 16), (16, 16)), 4)
    lin = nn.Linear(256, 256)
    ratio = float(big.to_dense().detach().var() / lin.weight.detach().var())
    assert 0.7 < ratio < 1.4  # same initial weight variance as nn.Linear
    bf = KroneckerLinear(8, 6, ((3, 4), (2, 2)), 2, dtype=torch.bfloat16)
    assert bf(torch.randn(2, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_extra_repr_and_counts():
    layer = KroneckerLinear(3072, 768, ((384, 768), (2, 4)), 4, permute="both")
    r = repr(layer)
    for part in [
        "in_features=3072",
        "out_features=768",
        "A=(384, 768)",
        "B=(2, 4)",
        "rank=4",
        "permuted=both",
        "params=1180448",
        "dense_params=2360064",
    ]:
        assert part in r
    assert layer.n_params == 1180448 == sum(p.numel() for p in layer.parameters())


def test_spec_roundtrip():
    layer, _, _ = random_layer(((6, 4), (2, 3)), 2, "cols", "reconstructed")
    again = KroneckerLinear.from_spec(layer.spec(), dtype=torch.float64)
    again.load_state_dict(layer.state_dict())
    x = torch.randn(3, 12, dtype=torch.float64)
    assert torch.equal(again(x), layer(x))


# --------------------------------------------------------------------------------------
# Low rank
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("implementation", ["factorized", "reconstructed"])
def test_low_rank_linear(implementation):
    torch.manual_seed(3)
    lin = nn.Linear(20, 12).double()
    lr = LowRankLinear.from_linear(lin, 5, implementation=implementation)
    S = torch.linalg.svdvals(lin.weight.detach())
    assert abs(lr.approximation_error - float(S[5:].norm() / S.norm())) < 1e-12
    assert rel(lr.to_dense(), lr.U @ lr.V) == 0
    x = torch.randn(4, 20, dtype=torch.float64)
    assert rel(lr(x), lr.to_linear()(x)) < RTOL
    conv = Conv1D(12, 20).double()
    lc = LowRankLinear.from_conv1d(conv, n_params=5 * 32 + 12)
    assert lc.rank == 5 and lc.source == "conv1d"
    assert rel(lc(x), F.linear(x, lc.to_dense(), lc.bias)) < RTOL
    lr(x).sum().backward()
    assert lr.U.grad is not None and lr.V.grad is not None
    assert low_rank_for_budget(768, 3072, 1182752, bias=True) == 307
    with pytest.raises(ValueError, match="exactly one of rank and n_params"):
        LowRankLinear.from_linear(lin)


# --------------------------------------------------------------------------------------
# Embeddings and the tied head
# --------------------------------------------------------------------------------------
def test_kronecker_embedding_published_count():
    assert KroneckerEmbedding(50257, 768, [2, 2]).n_params == 9_649_348  # 50257·192 + 2 + 2
    assert KroneckerEmbedding(50257, 768, [2], device="meta").n_params == 50257 * 384 + 2


@pytest.mark.parametrize("implementation", ["factorized", "reconstructed"])
def test_kronecker_embedding_twice(implementation):
    torch.manual_seed(4)
    V, d = 37, 16
    T, b1, b2 = torch.randn(V, 4, dtype=torch.float64), torch.randn(1, 2), torch.randn(1, 2)
    p1 = torch.randperm(8)
    E = torch.kron(torch.kron(T, b1.double())[:, p1], b2.double())
    emb = nn.Embedding(V, d).double()
    with torch.no_grad():
        emb.weight.copy_(E)
    ke = KroneckerEmbedding.from_embedding(emb, 2, method="kron", implementation=implementation)
    assert ke.n_levels == 1 and ke.table.shape == (V, 8)
    ke2 = KroneckerEmbedding.from_embedding(ke, 2, method="permuted_kron", n_iter=3)
    assert ke2.level_factors == [2, 2] and ke2.table.shape == (V, 4)
    assert ke2.n_params == V * 4 + 2 + 2
    assert ke2.implementation == implementation
    ids = torch.randint(0, V, (3, 5))
    for m in (ke, ke2):
        D = m.to_dense()
        assert D.shape == (V, d)
        assert rel(m(ids), D[ids]) < RTOL
        h = torch.randn(3, 5, d, dtype=torch.float64)
        assert rel(m.attend(h), h @ D.T) < RTOL
        assert rel(m.to_embedding()(ids), D[ids]) < RTOL
    # the first level is exact: E = (T ⊗ b1)[:, p1] ⊗ b2 is a Kronecker product
    assert rel(ke.to_dense(), E) < 1e-10
    # gradients reach the table and every factor through lookups and logits
    (ke2(ids).sum() + ke2.attend(torch.randn(2, d, dtype=torch.float64)).sum()).backward()
    assert ke2.table.grad is not None and all(b.grad is not None for b in ke2.factors)
    again = KroneckerEmbedding.from_spec(ke2.spec(), dtype=torch.float64)
    again.load_state_dict(ke2.state_dict())
    assert torch.equal(again(ids), ke2(ids))


def test_kronecker_embedding_errors_and_padding():
    emb = nn.Embedding(10, 6, padding_idx=0)
    with pytest.raises(ValueError, match="must divide"):
        KroneckerEmbedding.from_embedding(emb, 4)
    with pytest.raises(ValueError, match="nothing left"):
        KroneckerEmbedding.from_embedding(emb, 6)
    with pytest.raises(ValueError, match="max_norm"):
        KroneckerEmbedding.from_embedding(nn.Embedding(10, 6, max_norm=1.0), 2)
    with pytest.raises(ValueError, match="must divide embedding_dim"):
        KroneckerEmbedding(10, 6, [4])
    ke = KroneckerEmbedding.from_embedding(emb, 2, method="kron")
    assert ke.padding_idx == 0
    ke(torch.tensor([0, 1])).sum().backward()
    assert ke.table.grad[0].abs().sum() == 0 and ke.table.grad[1].abs().sum() > 0


def test_low_rank_embedding_and_tied_head():
    torch.manual_seed(5)
    emb = nn.Embedding(40, 12).double()
    lr = LowRankEmbedding.from_embedding(emb, 3)
    S = torch.linalg.svdvals(emb.weight.detach())
    assert abs(lr.approximation_error - float(S[3:].norm() / S.norm())) < 1e-10
    ids = torch.randint(0, 40, (2, 3))
    assert rel(lr(ids), lr.to_dense()[ids]) < RTOL
    head = TiedEmbeddingHead(lr)
    h = torch.randn(2, 3, 12, dtype=torch.float64)
    assert rel(head(h), h @ lr.to_dense().T) < RTOL
    assert list(head.parameters()) == [] and head.state_dict() == {}
    assert head.embedding is lr and (head.in_features, head.out_features) == (12, 40)
    ke = KroneckerEmbedding.from_embedding(emb, 2, method="kron")
    head.tie_to(ke)
    assert rel(head(h), h @ ke.to_dense().T) < RTOL
    with pytest.raises(TypeError, match="attend"):
        TiedEmbeddingHead(emb)


# --------------------------------------------------------------------------------------
# GPU (skipped without one)
# --------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_forward_matches_cpu(dtype):
    layer, W, b = random_layer(((48, 32), (4, 2)), 4, "both", "factorized")
    x = torch.randn(8, 64, layer.in_features, dtype=torch.float64)
    ref = F.linear(x, W, b)
    cuda = layer.to("cuda", dtype)
    for impl in ("factorized", "reconstructed"):
        cuda.implementation = impl
        y = cuda(x.to("cuda", dtype))
        assert y.dtype == dtype and y.device.type == "cuda"
        tol = 2e-2 if dtype != torch.float32 else 1e-4
        assert rel(y.double().cpu(), ref) < tol
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = layer.to("cuda", torch.float32)(x.to("cuda", torch.float32))
    assert y.dtype == torch.bfloat16


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_from_linear_and_embedding():
    lin = nn.Linear(64, 96).cuda()
    layer = KroneckerLinear.from_linear(lin, ((24, 16), (4, 4)), 2, n_iter=2)
    assert layer.A.device.type == "cuda" and layer.output_perm.device.type == "cuda"
    x = torch.randn(5, 64, device="cuda")
    assert rel(layer(x), F.linear(x, layer.to_dense(), layer.bias)) < 1e-5
    emb = nn.Embedding(50, 16).cuda()
    ke = KroneckerEmbedding.from_embedding(emb, 2, n_iter=2)
    ids = torch.randint(0, 50, (2, 3), device="cuda")
    assert rel(ke(ids), ke.to_dense()[ids]) < 1e-6
