"""Compressed drop-in layers: Kronecker sums, permuted Kronecker sums, low-rank factors.

* :class:`KroneckerLinear` — ``torch.nn.Linear`` whose (out, in) weight is a (permuted)
  Kronecker sum ``W[i, j] = K[row_perm[i], col_perm[j]]``, ``K = Σ_k A_k ⊗ B_k``.
* :class:`KroneckerEmbedding` — a V×d embedding stored as ``(V×d/k) ⊗ (1×k)`` with a
  column permutation, compressible again (levels nest).
* :class:`LowRankLinear`, :class:`LowRankEmbedding` — truncated-SVD baselines.
* :class:`TiedEmbeddingHead` — an LM head tied to a compressed embedding: logits ``h·Eᵀ``
  through the embedding's factors, never materialising E.

Orientation
-----------
The layers use ``torch.nn.Linear``'s (out, in) orientation: ``A`` has shape (r, m1, n1) and
``B`` (r, m2, n2) with ``m1·m2 = out_features`` and ``n1·n2 = in_features``; the ``shape``
argument of the constructors and ``from_*`` methods is in this orientation, so
``layer.kshape == shape``.  Compression configs state shapes in the in×out orientation of
GPT-2's stored matrices instead (see :mod:`tqla_torch._shapes`); ``KroneckerShape.T``
converts.

Forward cost
------------
For one token, ``K·x`` with x reshaped to X (n1×n2) is ``Σ_k A_k X B_kᵀ``.  The two
association orders cost

* ``(A_k X) B_kᵀ`` ("A first"): ``r·m1·n2·(n1 + m2)`` multiply-adds,
* ``A_k (X B_kᵀ)`` ("B first"): ``r·n1·m2·(m1 + n2)`` multiply-adds,

against ``m1·m2·n1·n2`` for the dense layer.  :class:`KroneckerLinear` takes the cheaper
one.  For GPT-2's c_fc (768→3072, A 768×384, B 4×2, r = 4) that is 2,383,872 (1.01× dense)
against 4,730,880 (2.01×) for the other order, which is the one the published
implementation uses; for c_proj (3072→768) the orders swap.  :func:`forward_costs`
computes these numbers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tqla.kron import KroneckerShape
from tqla_torch._shapes import is_conv1d, weight_view

__all__ = [
    "IMPLEMENTATIONS",
    "KroneckerEmbedding",
    "KroneckerLinear",
    "LowRankEmbedding",
    "LowRankLinear",
    "TiedEmbeddingHead",
    "forward_costs",
    "low_rank_for_budget",
]

logger = logging.getLogger(__name__)

Implementation = Literal["factorized", "reconstructed"]
IMPLEMENTATIONS = ("factorized", "reconstructed")
KRON_METHODS = ("permuted_kron", "kron")
# The "B first" forward switches from r accumulated GEMMs to one GEMM against a copy of A
# from this many output rows (tokens × m2) on.
_ONE_GEMM_MIN_ROWS = 256
PERMUTES = ("both", "input", "output", "none")


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------
def _check_implementation(value: Any) -> str:
    if value not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {value!r}")
    return value


def _check_pos_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_permute(value: Any) -> str:
    if value not in PERMUTES:
        raise ValueError(f"permute must be one of {PERMUTES}, got {value!r}")
    return value


def _as_perm(p: Any, n: int, name: str, device: Any) -> torch.Tensor | None:
    """An int64 permutation tensor of length n on ``device`` (None stays None)."""
    if p is None:
        return None
    t = torch.as_tensor(np.asarray(p) if not isinstance(p, torch.Tensor) else p)
    t = t.detach().to(device=device, dtype=torch.int64).reshape(-1)
    if t.numel() != n:
        raise ValueError(f"{name} must have length {n}, got {t.numel()}")
    check = torch.zeros(n, dtype=torch.bool, device=t.device)
    if bool(((t < 0) | (t >= n)).any()):
        raise ValueError(f"{name} must hold indices in [0, {n}), got values outside")
    check[t] = True
    if not bool(check.all()):
        raise ValueError(f"{name} must be a permutation of 0..{n - 1} (it repeats an index)")
    # An identity is kept: a module's structure (which buffers exist) must depend on its
    # configuration only, never on the values a search found, or checkpoints made from one
    # run would not load into a module rebuilt by another.
    return t.contiguous()


def _inverse_perm(p: torch.Tensor) -> torch.Tensor:
    inv = torch.empty_like(p)
    inv[p] = torch.arange(p.numel(), device=p.device, dtype=p.dtype)
    return inv


def _decomposition_dtype(w: torch.Tensor) -> torch.dtype:
    """Half-precision weights are decomposed in float32; float32/float64 as they are."""
    return w.dtype if w.dtype in (torch.float32, torch.float64) else torch.float32


def _rng(seed: Any) -> Any:
    return None if seed is None else np.random.default_rng(seed)


def forward_costs(shape: Any, rank: int = 1) -> dict[str, int]:
    """Multiply-adds per token of a (out, in) Kronecker layer's two association orders.

    Parameters
    ----------
    shape : KroneckerShape or ((m1, n1), (m2, n2))
        Factor shapes in the layer's (out, in) orientation.
    rank : int
        Kronecker rank r.

    Returns
    -------
    dict
        ``a_first`` = r·m1·n2·(n1 + m2), ``b_first`` = r·n1·m2·(m1 + n2),
        ``factorized`` = the smaller of the two (what :class:`KroneckerLinear` runs) and
        ``dense`` = m1·m2·n1·n2.

    Examples
    --------
    >>> c = forward_costs(((768, 384), (4, 2)), 4)      # GPT-2 c_fc, (out, in) orientation
    >>> c["factorized"], c["dense"], c["b_first"]
    (2383872, 2359296, 4730880)
    """
    s = KroneckerShape.of(shape)
    r = int(rank)
    a_first = r * s.m1 * s.n2 * (s.n1 + s.m2)
    b_first = r * s.n1 * s.m2 * (s.m1 + s.n2)
    return {
        "a_first": a_first,
        "b_first": b_first,
        "factorized": min(a_first, b_first),
        "dense": s.m1 * s.m2 * s.n1 * s.n2,
    }


def _kron_decompose(
    w_out_in: torch.Tensor,
    shape: KroneckerShape,
    rank: int,
    *,
    method: str,
    permute: str,
    rule: str | None = None,
    n_iter: int | None = None,
    tol: float | None = None,
    n_restarts: int = 1,
    seed: Any = None,
) -> tuple[torch.Tensor, torch.Tensor, Any, Any, float]:
    """Decompose a matrix; returns (A, B, row_perm, col_perm, relative error).

    Rows are the outputs and columns the inputs (a layer's (out, in) weight); for an
    embedding table (V, d), "input" therefore names the feature columns.  ``seed`` is
    anything ``numpy.random.default_rng`` accepts (compress passes ``[seed, hash(name)]``).
    """
    from tqla.kron import kron_svd
    from tqla.permuted import permuted_kron

    if method not in KRON_METHODS:
        raise ValueError(f"method must be one of {KRON_METHODS}, got {method!r}")
    _check_permute(permute)
    W = w_out_in.detach().to(_decomposition_dtype(w_out_in))
    shape.check_matrix(W, "weight")
    rank = shape.check_rank(rank)
    if method == "kron":
        if permute != "none":
            raise ValueError(
                f"permute={permute!r} needs method='permuted_kron'; method='kron' has no "
                f"permutations (use permute='none')"
            )
        K = kron_svd(W, shape, rank)
        A, B = K.A, K.B
        rp = cp = None
        approx = K.to_dense()
    else:
        sides = {"both": "both", "input": "cols", "output": "rows", "none": "none"}[permute]
        opts: dict[str, Any] = {"permute": sides, "n_restarts": n_restarts, "rng": _rng(seed)}
        if rule is not None:
            opts["rule"] = rule
        if n_iter is not None:
            opts["n_iter"] = n_iter
        if tol is not None:
            opts["tol"] = tol
        P = permuted_kron(W, shape, rank, **opts)
        A, B = P.kron.A, P.kron.B
        rp = P.row_perm if P.permuted[0] else None
        cp = P.col_perm if P.permuted[1] else None
        return torch.as_tensor(A), torch.as_tensor(B), rp, cp, float(P.errors[-1])
    norm = torch.linalg.norm(W)
    err = float(torch.linalg.norm(W - approx) / norm) if float(norm) > 0 else 0.0
    return torch.as_tensor(A), torch.as_tensor(B), rp, cp, err


# --------------------------------------------------------------------------------------
# KroneckerLinear
# --------------------------------------------------------------------------------------


def _dense_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """A new ``nn.Linear`` holding copies of an (out, in) ``weight`` and ``bias``."""
    out_features, in_features = weight.shape
    lin = nn.Linear(
        in_features, out_features, bias=bias is not None, device=weight.device, dtype=weight.dtype
    )
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    return lin


class KroneckerLinear(nn.Module):
    r"""A linear layer whose weight is a permuted Kronecker sum.

    ``y = x Wᵀ + b`` with the (out, in) weight ``W[i, j] = K[row_perm[i], col_perm[j]]``
    and ``K = Σ_k A_k ⊗ B_k``.  The forward never forms W (``implementation="factorized"``,
    the default) or forms it once per call and runs ``F.linear``
    (``implementation="reconstructed"``, sometimes faster for long inputs).

    Parameters
    ----------
    in_features, out_features : int
        As ``torch.nn.Linear``.
    shape : KroneckerShape or ((m1, n1), (m2, n2))
        Factor shapes in the (out, in) orientation: ``m1·m2 = out_features``,
        ``n1·n2 = in_features``.
    rank : int, default 1
        Number of Kronecker terms r.
    bias : bool, default True
    permute : {"none", "input", "output", "both"}
        Which permutation buffers to allocate (as identities; :meth:`from_factors` and
        loading a state dict fill them).
    implementation : {"factorized", "reconstructed"}
    device, dtype : optional
        As ``torch.nn.Linear``.

    Attributes
    ----------
    A : torch.nn.Parameter of shape (r, m1, n1)
    B : torch.nn.Parameter of shape (r, m2, n2)
    bias : torch.nn.Parameter of shape (out_features,) or None
    input_perm : int64 buffer of shape (in_features,) or None
        The forward multiplies K with ``x[..., input_perm]``; ``input_perm`` is the inverse
        of ``col_perm``.  Saved in the state dict.
    output_perm : int64 buffer of shape (out_features,) or None
        The forward returns ``(K · x[..., input_perm])[..., output_perm]``;
        ``output_perm == row_perm``.  Saved in the state dict.

    Notes
    -----
    Equivalently ``W[:, input_perm] == K[output_perm]``.  A side without a permutation has
    no buffer (None), and costs no gather.

    Examples
    --------
    >>> import torch
    >>> lin = torch.nn.Linear(8, 6)
    >>> kl = KroneckerLinear.from_linear(lin, ((3, 4), (2, 2)), rank=4, method="kron")
    >>> kl.kshape, kl.n_params, kl.permute
    (KroneckerShape(a=(3, 4), b=(2, 2)), 70, 'none')
    >>> x = torch.randn(5, 8)
    >>> torch.allclose(kl(x), torch.nn.functional.linear(x, kl.to_dense(), kl.bias), atol=1e-6)
    True
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        shape: Any,
        rank: int = 1,
        bias: bool = True,
        *,
        permute: str = "none",
        implementation: Implementation = "factorized",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in_features = _check_pos_int(in_features, "in_features")
        self.out_features = _check_pos_int(out_features, "out_features")
        s = KroneckerShape.of(shape)
        if s.matrix_shape != (self.out_features, self.in_features):
            raise ValueError(
                f"shape A {s.a} ⊗ B {s.b} gives a {s.matrix_shape} weight, but a layer "
                f"{self.in_features}→{self.out_features} needs (out, in) = "
                f"({self.out_features}, {self.in_features}): m1·m2 = out and n1·n2 = in"
            )
        rank = s.check_rank(rank)
        self.implementation = _check_implementation(implementation)
        _check_permute(permute)
        self.source = "linear"
        self.A = nn.Parameter(torch.empty((rank, s.m1, s.n1), **factory))
        self.B = nn.Parameter(torch.empty((rank, s.m2, s.n2), **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_features, **factory))
        else:
            self.register_parameter("bias", None)
        idx = {"device": device, "dtype": torch.int64}
        self.register_buffer(
            "input_perm",
            torch.arange(self.in_features, **idx) if permute in ("input", "both") else None,
        )
        self.register_buffer(
            "output_perm",
            torch.arange(self.out_features, **idx) if permute in ("output", "both") else None,
        )
        self.reset_parameters()

    # -- construction ------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """Random factors whose Kronecker sum has ``torch.nn.Linear``'s initial variance.

        Entries of K are sums of r products a·b; with a, b ~ N(0, s²) and
        s⁴ = 1 / (3·in·r) their variance is 1/(3·in), that of U(−1/√in, 1/√in).
        """
        std = (1.0 / (3.0 * self.in_features * self.rank)) ** 0.25
        with torch.no_grad():
            nn.init.normal_(self.A, std=std)
            nn.init.normal_(self.B, std=std)
            if self.bias is not None:
                bound = 1.0 / math.sqrt(self.in_features)
                nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_factors(
        cls,
        A: torch.Tensor,
        B: torch.Tensor,
        row_perm: Any = None,
        col_perm: Any = None,
        bias: torch.Tensor | None = None,
        *,
        implementation: Implementation = "factorized",
    ) -> KroneckerLinear:
        """A layer holding given factors, with ``W = K[row_perm][:, col_perm]``.

        Parameters
        ----------
        A : tensor of shape (r, m1, n1)
        B : tensor of shape (r, m2, n2)
        row_perm, col_perm : integer arrays of length out / in, optional
            tqla's convention (:func:`tqla.permuted_kron`): ``W[i, j] = K[row_perm[i],
            col_perm[j]]``.  None means "not permuted" (no buffer); a given permutation is
            kept as a buffer even when it is the identity.
        bias : tensor of shape (m1·m2,), optional
        implementation : {"factorized", "reconstructed"}

        Returns
        -------
        KroneckerLinear
            On A's device and dtype; the tensors are copied.
        """
        A = torch.as_tensor(A)
        B = torch.as_tensor(B)
        if A.ndim != 3 or B.ndim != 3 or A.shape[0] != B.shape[0]:
            raise ValueError(
                f"A and B must be 3-D (rank, rows, cols) with the same rank, got "
                f"{tuple(A.shape)} and {tuple(B.shape)}"
            )
        r, m1, n1 = (int(v) for v in A.shape)
        _, m2, n2 = (int(v) for v in B.shape)
        out_f, in_f = m1 * m2, n1 * n2
        rp = _as_perm(row_perm, out_f, "row_perm", A.device)
        cp = _as_perm(col_perm, in_f, "col_perm", A.device)
        if bias is not None and tuple(bias.shape) != (out_f,):
            raise ValueError(f"bias must have shape ({out_f},), got {tuple(bias.shape)}")
        permute = {(False, False): "none", (True, False): "output", (False, True): "input"}.get(
            (rp is not None, cp is not None), "both"
        )
        layer = cls(
            in_f,
            out_f,
            ((m1, n1), (m2, n2)),
            r,
            bias=bias is not None,
            permute=permute,
            implementation=implementation,
            device=A.device,
            dtype=A.dtype,
        )
        with torch.no_grad():
            layer.A.copy_(A)
            layer.B.copy_(B.to(A.dtype))
            if bias is not None:
                layer.bias.copy_(bias.detach().to(A.dtype))
            if rp is not None:
                layer.output_perm.copy_(rp)
            if cp is not None:
                layer.input_perm.copy_(_inverse_perm(cp))
        return layer

    @classmethod
    def from_dense(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        shape: Any,
        rank: int = 1,
        *,
        method: str = "permuted_kron",
        permute: str | None = None,
        implementation: Implementation = "factorized",
        rule: str | None = None,
        n_iter: int | None = None,
        tol: float | None = None,
        n_restarts: int = 1,
        seed: Any = 0,
    ) -> KroneckerLinear:
        """Decompose an (out, in) weight matrix into a layer (see :meth:`from_linear`)."""
        s = KroneckerShape.of(shape)
        if permute is None:
            permute = "both" if method == "permuted_kron" else "none"
        A, B, rp, cp, err = _kron_decompose(
            weight,
            s,
            rank,
            method=method,
            permute=permute,
            rule=rule,
            n_iter=n_iter,
            tol=tol,
            n_restarts=n_restarts,
            seed=seed,
        )
        dtype, device = weight.dtype, weight.device
        layer = cls.from_factors(
            A.to(device=device, dtype=dtype),
            B.to(device=device, dtype=dtype),
            rp,
            cp,
            None if bias is None else bias.detach(),
            implementation=implementation,
        )
        layer.approximation_error = err
        logger.debug("KroneckerLinear.from_dense: %s, relative error %.4g", s, err)
        return layer

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        shape: Any,
        rank: int = 1,
        *,
        method: str = "permuted_kron",
        permute: str | None = None,
        implementation: Implementation = "factorized",
        **opts: Any,
    ) -> KroneckerLinear:
        """Compress a ``torch.nn.Linear`` (its (out, in) weight) into a KroneckerLinear.

        Parameters
        ----------
        linear : torch.nn.Linear
        shape : KroneckerShape or ((m1, n1), (m2, n2))
            Factor shapes in the (out, in) orientation.
        rank : int
        method : {"permuted_kron", "kron"}
            :func:`tqla.permuted_kron` (alternating minimisation with permutations) or
            :func:`tqla.kron_svd` (the best Kronecker sum, no permutations).
        permute : {"both", "input", "output", "none"}, optional
            Sides to permute; default "both" for permuted_kron, "none" for kron.
        implementation : {"factorized", "reconstructed"}
        **opts
            ``rule``, ``n_iter``, ``tol``, ``n_restarts``, ``seed`` of
            :func:`tqla.permuted_kron`.

        Returns
        -------
        KroneckerLinear
            On the layer's device and dtype, with ``approximation_error`` (relative
            Frobenius error of the weight) set.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        v = weight_view(linear)
        layer = cls.from_dense(
            v.weight_out_in,
            v.bias,
            shape,
            rank,
            method=method,
            permute=permute,
            implementation=implementation,
            **opts,
        )
        return layer

    @classmethod
    def from_conv1d(
        cls,
        conv1d: nn.Module,
        shape: Any,
        rank: int = 1,
        *,
        method: str = "permuted_kron",
        permute: str | None = None,
        implementation: Implementation = "factorized",
        **opts: Any,
    ) -> KroneckerLinear:
        """Compress a transformers ``Conv1D`` (GPT-2's layer, weight stored (in, out)).

        ``shape`` is in the layer's (out, in) orientation like every KroneckerLinear
        shape: the published c_fc factors ``384×768 ⊗ 2×4`` (stated on the stored (in, out)
        matrix) are ``((768, 384), (4, 2))`` here — ``KroneckerShape(...).T`` converts.
        Other arguments as :meth:`from_linear`.
        """
        if not is_conv1d(conv1d):
            raise TypeError(
                f"conv1d must be a transformers.pytorch_utils.Conv1D, got {type(conv1d).__name__}"
            )
        v = weight_view(conv1d)
        layer = cls.from_dense(
            v.weight_out_in,
            v.bias,
            shape,
            rank,
            method=method,
            permute=permute,
            implementation=implementation,
            **opts,
        )
        layer.source = "conv1d"
        return layer

    # -- description -------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return int(self.A.shape[0])

    @property
    def kshape(self) -> KroneckerShape:
        """Factor shapes in the (out, in) orientation."""
        return KroneckerShape(tuple(self.A.shape[1:]), tuple(self.B.shape[1:]))

    @property
    def permute(self) -> str:
        """Which sides carry a permutation: "none", "input", "output" or "both"."""
        i, o = self.input_perm is not None, self.output_perm is not None
        return {(False, False): "none", (True, False): "input", (False, True): "output"}.get(
            (i, o), "both"
        )

    @property
    def row_perm(self) -> torch.Tensor:
        """tqla's row permutation (``W[i, j] = K[row_perm[i], col_perm[j]]``)."""
        if self.output_perm is None:
            return torch.arange(self.out_features, device=self.A.device)
        return self.output_perm

    @property
    def col_perm(self) -> torch.Tensor:
        """tqla's column permutation (the inverse of ``input_perm``)."""
        if self.input_perm is None:
            return torch.arange(self.in_features, device=self.A.device)
        return _inverse_perm(self.input_perm)

    @property
    def n_params(self) -> int:
        """Trainable entries: factors plus bias (the permutation buffers are not counted)."""
        return self.A.numel() + self.B.numel() + (0 if self.bias is None else self.bias.numel())

    def forward_costs(self) -> dict[str, int]:
        """Multiply-adds per token of the two association orders (:func:`forward_costs`)."""
        return forward_costs(self.kshape, self.rank)

    def extra_repr(self) -> str:
        s = self.kshape
        dense = self.in_features * self.out_features + (
            0 if self.bias is None else self.out_features
        )
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, A={s.a}, "
            f"B={s.b}, rank={self.rank}, permuted={self.permute}, params={self.n_params}, "
            f"dense_params={dense}, implementation={self.implementation}"
        )

    def spec(self) -> dict[str, Any]:
        """JSON description sufficient to rebuild an empty layer (:meth:`from_spec`)."""
        s = self.kshape
        return {
            "type": type(self).__name__,
            "in_features": self.in_features,
            "out_features": self.out_features,
            "shape": [list(s.a), list(s.b)],
            "rank": self.rank,
            "bias": self.bias is not None,
            "permute": self.permute,
            "implementation": self.implementation,
            "source": self.source,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any], *, device: Any = None, dtype: Any = None):
        """An (uninitialised) layer of the shapes that :meth:`spec` describes."""
        layer = cls(
            spec["in_features"],
            spec["out_features"],
            spec["shape"],
            spec["rank"],
            bias=spec["bias"],
            permute=spec["permute"],
            implementation=spec.get("implementation", "factorized"),
            device=device,
            dtype=dtype,
        )
        layer.source = spec.get("source", "linear")
        return layer

    # -- dense -------------------------------------------------------------------------
    def _kron_dense(self) -> torch.Tensor:
        """K = Σ A_k ⊗ B_k as an (out, in) matrix (one GEMM and one rearranging copy)."""
        r, m1, n1 = self.A.shape
        _, m2, n2 = self.B.shape
        R = torch.mm(self.A.reshape(r, m1 * n1).t(), self.B.reshape(r, m2 * n2))
        return R.view(m1, n1, m2, n2).permute(0, 2, 1, 3).reshape(m1 * m2, n1 * n2)

    def to_dense(self) -> torch.Tensor:
        """The (out, in) weight ``K[row_perm][:, col_perm]`` (differentiable)."""
        W = self._kron_dense()
        if self.output_perm is not None:
            W = W.index_select(0, self.output_perm)
        if self.input_perm is not None:
            W = W.index_select(1, _inverse_perm(self.input_perm))
        return W

    def to_linear(self) -> nn.Linear:
        """A dense ``torch.nn.Linear`` holding :meth:`to_dense` (a copy)."""
        return _dense_linear(self.to_dense(), self.bias)

    # -- forward -----------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"KroneckerLinear expects inputs with {self.in_features} features in the last "
                f"dimension, got shape {tuple(x.shape)}"
            )
        if self.implementation == "reconstructed":
            return self._forward_reconstructed(x)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        y = self._forward_factorized(x2)  # a fresh tensor: the bias can go in place
        if self.bias is not None:
            y = y.add_(self.bias)
        return y.view(*lead, self.out_features)

    def _forward_reconstructed(self, x: torch.Tensor) -> torch.Tensor:
        W = self._kron_dense()
        if self.output_perm is not None:
            W = W.index_select(0, self.output_perm)  # whole rows: a fast gather
        if self.input_perm is not None:
            n_tokens = x.numel() // self.in_features
            if n_tokens < self.out_features:  # gather the smaller of x and W's columns
                x = x.index_select(-1, self.input_perm)
            else:
                W = W.index_select(1, _inverse_perm(self.input_perm))
        return F.linear(x, W, self.bias)

    def _input_transposed(self, x: torch.Tensor, n1: int, n2: int) -> torch.Tensor:
        """x (T, n1·n2) → (T, n2, n1) with ``x[..., input_perm]`` applied.

        With a permutation this is one gather whose index also transposes (the layout costs
        nothing extra); without, a strided view.
        """
        T = x.shape[0]
        if self.input_perm is not None:
            idx = self.input_perm.view(n1, n2).t().reshape(-1)
            return x.index_select(-1, idx).view(T, n2, n1)
        return x.view(T, n1, n2).transpose(1, 2)

    def _output_index(self, m1: int, m2: int) -> torch.Tensor:
        """Gather index from a (T, m2, m1) layout to the permuted (T, out) output."""
        o = self.output_perm
        return (o % m2) * m1 + torch.div(o, m2, rounding_mode="floor")

    def _forward_factorized(self, x: torch.Tensor) -> torch.Tensor:
        """K · x[input_perm], gathered by output_perm, for x of shape (T, in).

        Both association orders run one large GEMM against a factor as stored (no copy of
        A), one small batched GEMM, and at most one gather on each side, fused with the
        layout changes the orders need.
        """
        A, B = self.A, self.B
        r, m1, n1 = A.shape
        _, m2, n2 = B.shape
        T = x.shape[0]
        # forward_costs' two orders, with the common factor r·T dropped
        if m1 * n2 * (n1 + m2) <= n1 * m2 * (m1 + n2):
            # Z[t, (j2, k), i1] = Σ_j1 X[t, j1, j2] A[k, i1, j1]: one GEMM against A.
            Xt = self._input_transposed(x, n1, n2).reshape(T * n2, n1).contiguous()
            Z = F.linear(Xt, A.reshape(r * m1, n1)).view(T, n2 * r, m1)
            del Xt  # intermediates are released as soon as possible (peak memory)
            if self.output_perm is not None:
                # Yt[t, i2, i1] = Σ_(j2,k) B[k, i2, j2] Z[t, (j2, k), i1]; the output gather
                # undoes the (i2, i1) layout and applies the permutation in one pass.
                BvT = B.permute(1, 2, 0).reshape(m2, n2 * r)
                Yt = torch.matmul(BvT, Z).view(T, m2 * m1)
                del Z
                return Yt.index_select(-1, self._output_index(m1, m2))
            # Y[t, i1, i2] = Σ_(j2,k) Z[t, (j2, k), i1] B[k, i2, j2]: the canonical layout.
            Bv = B.permute(2, 0, 1).reshape(n2 * r, m2)
            return torch.matmul(Z.transpose(1, 2), Bv).view(T, m1 * m2)
        # Z[t, (i2, k), j1] = Σ_j2 B[k, i2, j2] X[t, j1, j2]: a small batched GEMM.
        Xt = self._input_transposed(x, n1, n2)
        Bs = B.permute(1, 0, 2).reshape(m2 * r, n2)
        Z = torch.matmul(Bs, Xt).view(T, m2, r, n1)
        del Xt
        # Yt[(t, i2), i1] = Σ_(k, j1) Z[t, i2, k, j1] A[k, i1, j1].
        if T * m2 >= _ONE_GEMM_MIN_ROWS:
            # One GEMM with inner dimension r·n1 against A laid out as (m1, r·n1): the copy
            # of A costs less than writing the output r times.
            Acat = A.permute(1, 0, 2).reshape(m1, r * n1)
            Yt = F.linear(Z.view(T * m2, r * n1), Acat)
        else:
            # Few tokens: r GEMMs against A as stored, accumulated in place (Z[:, :, k] is a
            # strided matrix view), so A is read once and never copied.
            Yt = torch.mm(Z[:, :, 0].reshape(T * m2, n1), A[0].t())
            for k in range(1, r):
                Yt = Yt.addmm_(Z[:, :, k].reshape(T * m2, n1), A[k].t())
        del Z
        if self.output_perm is not None:
            return Yt.view(T, m2 * m1).index_select(-1, self._output_index(m1, m2))
        return Yt.view(T, m2, m1).transpose(1, 2).reshape(T, m1 * m2)


# --------------------------------------------------------------------------------------
# LowRankLinear
# --------------------------------------------------------------------------------------
def low_rank_for_budget(in_features: int, out_features: int, n_params: int, bias: bool) -> int:
    """The rank whose ``LowRankLinear`` parameter count is nearest ``n_params`` (≥ 1).

    A rank-r layer has ``r·(in + out)`` factor entries plus the bias.

    Examples
    --------
    >>> low_rank_for_budget(768, 3072, 1182752, bias=True)   # GPT-2 c_fc at the tq budget
    307
    """
    per = in_features + out_features
    budget = n_params - (out_features if bias else 0)
    r = max(1, int(round(budget / per)))
    return min(r, min(in_features, out_features))


# Below this small side, the truncated SVD goes through the small Gram matrix in float64.
_GRAM_SVD_MAX_SIDE = 4096


def _truncated_svd(W: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Best rank-``rank`` factors ``W ≈ U·V`` (U = U_r√Σ_r, V = √Σ_r V_rᵀ) and the relative
    error ‖W − U·V‖/‖W‖.

    When the small side s of W is at most 4096 the top singular pairs come from the s×s
    Gram matrix in float64 (one pass over W; a 50257×768 embedding costs one GEMM instead of
    a full SVD), otherwise from ``torch.linalg.svd``.  Signs are deterministic: the entry of
    largest magnitude of each column of U is positive.
    """
    out_f, in_f = (int(v) for v in W.shape)
    small = min(out_f, in_f)
    Wd = W.to(torch.float64)
    if small <= _GRAM_SVD_MAX_SIDE:
        left = out_f <= in_f
        G = Wd @ Wd.T if left else Wd.T @ Wd
        lam, Q = torch.linalg.eigh(G)  # ascending
        lam = lam.flip(0).clamp_min(0)
        Q = Q.flip(1)[:, :rank]
        sig = lam[:rank].sqrt()
        inv = torch.where(sig > 0, 1.0 / torch.where(sig > 0, sig, torch.ones_like(sig)), 0.0)
        if left:  # Q = U_r;  V_rᵀ = Σ⁻¹ U_rᵀ W
            Ur, Vt = Q, (Q.T @ Wd) * inv[:, None]
        else:  # Q = V_r;  U_r = W V_r Σ⁻¹
            Ur, Vt = (Wd @ Q) * inv[None, :], Q.T
        total = float(lam.sum())
        tail = max(total - float((sig**2).sum()), 0.0)
        err = (tail / total) ** 0.5 if total > 0 else 0.0
    else:
        U_, S, Vh = torch.linalg.svd(Wd, full_matrices=False)
        Ur, sig, Vt = U_[:, :rank], S[:rank], Vh[:rank]
        norm = float(torch.linalg.norm(S))
        err = float(torch.linalg.norm(S[rank:])) / norm if norm > 0 else 0.0
    sign = torch.sign(Ur[Ur.abs().argmax(0), torch.arange(rank, device=Ur.device)])
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    root = sig.sqrt() * sign
    return Ur * root[None, :], root[:, None] * Vt, err


class LowRankLinear(nn.Module):
    """A linear layer with a rank-r weight ``W = U·V`` (U: out×r, V: r×in), the SVD baseline.

    Parameters
    ----------
    in_features, out_features : int
    rank : int
    bias : bool, default True
    implementation : {"factorized", "reconstructed"}
        ``x → (x Vᵀ) Uᵀ`` (r·(in + out) multiply-adds per token) or ``F.linear(x, U V)``.
    device, dtype : optional

    Examples
    --------
    >>> import torch
    >>> lr = LowRankLinear.from_linear(torch.nn.Linear(16, 8), rank=2)
    >>> lr.n_params, lr.to_dense().shape
    (56, torch.Size([8, 16]))
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        bias: bool = True,
        *,
        implementation: Implementation = "factorized",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in_features = _check_pos_int(in_features, "in_features")
        self.out_features = _check_pos_int(out_features, "out_features")
        rank = _check_pos_int(rank, "rank")
        if rank > min(self.in_features, self.out_features):
            raise ValueError(
                f"rank must be <= min(in_features, out_features) = "
                f"{min(self.in_features, self.out_features)}, got {rank}"
            )
        self.implementation = _check_implementation(implementation)
        self.source = "linear"
        self.U = nn.Parameter(torch.empty((self.out_features, rank), **factory))
        self.V = nn.Parameter(torch.empty((rank, self.in_features), **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_features, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random factors with ``torch.nn.Linear``'s initial weight variance 1/(3·in)."""
        std = (1.0 / (3.0 * self.in_features * self.rank)) ** 0.25
        with torch.no_grad():
            nn.init.normal_(self.U, std=std)
            nn.init.normal_(self.V, std=std)
            if self.bias is not None:
                bound = 1.0 / math.sqrt(self.in_features)
                nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_dense(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        rank: int | None = None,
        *,
        n_params: int | None = None,
        implementation: Implementation = "factorized",
    ) -> LowRankLinear:
        """Truncated SVD of an (out, in) weight: ``U = U_r √Σ_r``, ``V = √Σ_r V_rᵀ``.

        Give ``rank`` or a parameter budget ``n_params`` (factors plus bias; the nearest
        rank is used, see :func:`low_rank_for_budget`).
        """
        out_f, in_f = (int(v) for v in weight.shape)
        if (rank is None) == (n_params is None):
            raise ValueError(
                f"give exactly one of rank and n_params, got rank={rank!r}, n_params={n_params!r}"
            )
        if rank is None:
            rank = low_rank_for_budget(
                in_f, out_f, _check_pos_int(n_params, "n_params"), bias is not None
            )
        layer = cls(
            in_f,
            out_f,
            rank,
            bias=bias is not None,
            implementation=implementation,
            device=weight.device,
            dtype=weight.dtype,
        )
        U, V, err = _truncated_svd(weight.detach(), rank)
        with torch.no_grad():
            layer.U.copy_(U.to(weight.dtype))
            layer.V.copy_(V.to(weight.dtype))
            if bias is not None:
                layer.bias.copy_(bias.detach())
        layer.approximation_error = err
        return layer

    @classmethod
    def from_linear(
        cls,
        linear: nn.Module,
        rank: int | None = None,
        *,
        n_params: int | None = None,
        implementation: Implementation = "factorized",
    ) -> LowRankLinear:
        """Compress a ``torch.nn.Linear`` or transformers ``Conv1D`` by truncated SVD.

        Parameters
        ----------
        linear : torch.nn.Linear or transformers Conv1D
        rank : int, optional
        n_params : int, optional
            Parameter budget instead of a rank (factors plus bias).
        implementation : {"factorized", "reconstructed"}
        """
        v = weight_view(linear)
        if v.kind == "embedding":
            raise TypeError("use LowRankEmbedding.from_embedding for embeddings")
        layer = cls.from_dense(
            v.weight_out_in, v.bias, rank, n_params=n_params, implementation=implementation
        )
        layer.source = v.kind
        return layer

    from_conv1d = from_linear

    @property
    def rank(self) -> int:
        return int(self.U.shape[1])

    @property
    def n_params(self) -> int:
        return self.U.numel() + self.V.numel() + (0 if self.bias is None else self.bias.numel())

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"rank={self.rank}, params={self.n_params}, implementation={self.implementation}"
        )

    def spec(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "in_features": self.in_features,
            "out_features": self.out_features,
            "rank": self.rank,
            "bias": self.bias is not None,
            "implementation": self.implementation,
            "source": self.source,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any], *, device: Any = None, dtype: Any = None):
        layer = cls(
            spec["in_features"],
            spec["out_features"],
            spec["rank"],
            bias=spec["bias"],
            implementation=spec.get("implementation", "factorized"),
            device=device,
            dtype=dtype,
        )
        layer.source = spec.get("source", "linear")
        return layer

    def to_dense(self) -> torch.Tensor:
        """The (out, in) weight U·V."""
        return self.U @ self.V

    def to_linear(self) -> nn.Linear:
        """A dense ``torch.nn.Linear`` holding :meth:`to_dense` (a copy)."""
        return _dense_linear(self.to_dense(), self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.implementation == "reconstructed":
            return F.linear(x, self.U @ self.V, self.bias)
        return F.linear(F.linear(x, self.V), self.U, self.bias)


# --------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------
class _EmbeddingBase(nn.Module):
    """Shared parts of the compressed embeddings: lookup, ``attend`` and dense forms."""

    num_embeddings: int
    embedding_dim: int
    padding_idx: int | None

    def attend(self, h: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_dense(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_embedding(self) -> nn.Embedding:
        """A dense ``torch.nn.Embedding`` holding :meth:`to_dense` (a copy)."""
        dense = self.to_dense()
        emb = nn.Embedding(
            self.num_embeddings,
            self.embedding_dim,
            padding_idx=self.padding_idx,
            device=dense.device,
            dtype=dense.dtype,
        )
        with torch.no_grad():
            emb.weight.copy_(dense)
        return emb


def _check_padding_idx(padding_idx: Any, num_embeddings: int) -> int | None:
    if padding_idx is None:
        return None
    p = int(padding_idx)
    if not -num_embeddings <= p < num_embeddings:
        raise ValueError(f"padding_idx must be within num_embeddings, got {padding_idx}")
    return p % num_embeddings


class KroneckerEmbedding(_EmbeddingBase):
    r"""A V×d embedding stored as nested Kronecker products with 1×k column factors.

    ``E_0 = table`` (V × d_0) and, level by level, ``E_l = (E_{l-1} ⊗ b_l)[:, perm_l]``
    with ``b_l`` of shape 1×k_l and ``perm_l`` a column permutation (tqla's ``col_perm``);
    the embedding is ``E = E_L``, d = d_0·Π k_l.  One level is the rank-1 Kronecker sum
    ``V×(d/k) ⊗ 1×k``; compressing a KroneckerEmbedding again
    (:meth:`from_embedding` on a KroneckerEmbedding) factors its table and adds a level in
    front, as the published plan does for GPT-2 (50257×768 → 50257×384 ⊗ 1×2 →
    (50257×192 ⊗ 1×2) ⊗ 1×2, 9,649,348 parameters).

    Parameters
    ----------
    num_embeddings, embedding_dim : int
        V and d.
    factors : sequence of int
        k_l of each level, innermost first; their product must divide d.
    permute : bool or sequence of bool, default False
        Which levels carry a column permutation buffer (allocated as identities).
    padding_idx : int, optional
        As ``torch.nn.Embedding`` (no gradient reaches that row of the table).
    implementation : {"factorized", "reconstructed"}
        ``reconstructed`` forms E once per call of :meth:`attend` (the tied LM head);
        lookups are always factorized (they touch only the looked-up rows).
    device, dtype : optional

    Attributes
    ----------
    table : torch.nn.Parameter of shape (V, d_0)
    factors : torch.nn.ParameterList of (1, k_l) parameters
    col_perm_{l} : int64 buffers of shape (d_l,) or None

    Examples
    --------
    >>> import torch
    >>> emb = torch.nn.Embedding(10, 8)
    >>> ke = KroneckerEmbedding.from_embedding(emb, 2, method="kron")
    >>> ke2 = KroneckerEmbedding.from_embedding(ke, 2, method="kron")
    >>> ke2.table.shape, ke2.n_params
    (torch.Size([10, 2]), 24)
    >>> ids = torch.tensor([[1, 2, 3]])
    >>> torch.allclose(ke2(ids), ke2.to_dense()[ids])
    True
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        factors: Sequence[int] = (2,),
        *,
        permute: bool | Sequence[bool] = False,
        padding_idx: int | None = None,
        implementation: Implementation = "factorized",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_embeddings = _check_pos_int(num_embeddings, "num_embeddings")
        self.embedding_dim = _check_pos_int(embedding_dim, "embedding_dim")
        ks = [_check_pos_int(k, "factors[i]") for k in factors]
        if not ks:
            raise ValueError("factors must name at least one level (e.g. (2,))")
        prod = math.prod(ks)
        if self.embedding_dim % prod:
            raise ValueError(
                f"the product of factors {ks} = {prod} must divide embedding_dim "
                f"{self.embedding_dim}"
            )
        if isinstance(permute, bool):
            permute = [permute] * len(ks)
        permute = [bool(p) for p in permute]
        if len(permute) != len(ks):
            raise ValueError(
                f"permute must be a bool or one bool per level ({len(ks)}), got {permute!r}"
            )
        self.padding_idx = _check_padding_idx(padding_idx, self.num_embeddings)
        self.implementation = _check_implementation(implementation)
        d0 = self.embedding_dim // prod
        self.table = nn.Parameter(torch.empty((self.num_embeddings, d0), **factory))
        self.factors = nn.ParameterList([nn.Parameter(torch.empty((1, k), **factory)) for k in ks])
        d = d0
        for level, (k, p) in enumerate(zip(ks, permute)):
            d *= k
            buf = torch.arange(d, device=device, dtype=torch.int64) if p else None
            self.register_buffer(f"col_perm_{level}", buf)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, 1) entries of E, like ``torch.nn.Embedding`` (factors of ones)."""
        with torch.no_grad():
            nn.init.normal_(self.table)
            for b in self.factors:
                nn.init.ones_(b)
            if self.padding_idx is not None:
                self.table[self.padding_idx].zero_()

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_embedding(
        cls,
        embedding: nn.Module,
        k: int = 2,
        *,
        method: str = "permuted_kron",
        permute: bool | None = None,
        implementation: Implementation | None = None,
        rule: str | None = None,
        n_iter: int | None = None,
        tol: float | None = None,
        n_restarts: int = 1,
        seed: Any = 0,
    ) -> KroneckerEmbedding:
        """Compress an embedding (dense, or a KroneckerEmbedding again) by ``V×(d/k) ⊗ 1×k``.

        Parameters
        ----------
        embedding : torch.nn.Embedding or KroneckerEmbedding
            A KroneckerEmbedding gets its table factored and a level added in front.
        k : int
            Width of the new column factor; must divide the (table's) width.
        method : {"permuted_kron", "kron"}
            With column permutation (only the columns: a 1-row B factor makes row
            permutations useless, and tqla never builds the V² cost matrix) or without.
        permute : bool, optional
            Column permutation; default True for permuted_kron, False for kron.
        implementation : {"factorized", "reconstructed"}, optional
            Default: the embedding's own (or "factorized").
        rule, n_iter, tol, n_restarts, seed
            Options of :func:`tqla.permuted_kron`.

        Returns
        -------
        KroneckerEmbedding
            With ``approximation_error`` (relative error of the factored matrix) set.
        """
        k = _check_pos_int(k, "k")
        if permute is None:
            permute = method == "permuted_kron"
        if isinstance(embedding, KroneckerEmbedding):
            base = embedding.table
            levels = [
                (b, getattr(embedding, f"col_perm_{i}")) for i, b in enumerate(embedding.factors)
            ]
            padding_idx = embedding.padding_idx
            impl = embedding.implementation
        elif isinstance(embedding, nn.Embedding):
            if embedding.max_norm is not None:
                raise ValueError(
                    "embedding.max_norm is not supported by KroneckerEmbedding (it renormalises "
                    "looked-up rows in place, which a factored table cannot do)"
                )
            base = embedding.weight
            levels = []
            padding_idx = embedding.padding_idx
            impl = "factorized"
        else:
            raise TypeError(
                f"embedding must be a torch.nn.Embedding or KroneckerEmbedding, got "
                f"{type(embedding).__name__}"
            )
        V, d = (int(v) for v in base.shape)
        if d % k or d == k:
            raise ValueError(
                f"k = {k} must divide the embedding table's width {d} and leave at least 2 "
                f"columns (d % k == 0 and d / k >= 2)"
                if d % k
                else f"k = {k} equals the table's width {d}: nothing left to factor"
            )
        shape = KroneckerShape((V, d // k), (1, k))
        A, B, _rp, cp, err = _kron_decompose(
            base,
            shape,
            1,
            method=method,
            permute="input" if permute else "none",
            rule=rule,
            n_iter=n_iter,
            tol=tol,
            n_restarts=n_restarts,
            seed=seed,
        )
        ks = [k] + [int(b.shape[1]) for b, _ in levels]
        cp = _as_perm(cp, d, "col_perm", base.device)
        perms = [cp] + [p for _, p in levels]
        layer = cls(
            V,
            d * math.prod(ks[1:]),
            ks,
            permute=[p is not None for p in perms],
            padding_idx=padding_idx,
            implementation=impl if implementation is None else implementation,
            device=base.device,
            dtype=base.dtype,
        )
        with torch.no_grad():
            layer.table.copy_(A[0].to(base.dtype))
            layer.factors[0].copy_(B[0].to(base.dtype))
            for i, (b, _) in enumerate(levels):
                layer.factors[i + 1].copy_(b)
            for i, p in enumerate(perms):
                if p is not None:
                    getattr(layer, f"col_perm_{i}").copy_(p)
        layer.approximation_error = err
        return layer

    # -- description -------------------------------------------------------------------
    @property
    def n_levels(self) -> int:
        return len(self.factors)

    @property
    def level_factors(self) -> list[int]:
        """k_l of each level, innermost first."""
        return [int(b.shape[1]) for b in self.factors]

    def _perm(self, level: int) -> torch.Tensor | None:
        return getattr(self, f"col_perm_{level}")

    @property
    def n_params(self) -> int:
        return self.table.numel() + sum(b.numel() for b in self.factors)

    def extra_repr(self) -> str:
        V, d0 = self.table.shape
        chain = f"{V}×{d0}" + "".join(f" ⊗ 1×{k}" for k in self.level_factors)
        perms = [self._perm(i) is not None for i in range(self.n_levels)]
        return (
            f"{self.num_embeddings}, {self.embedding_dim}, factors={chain}, "
            f"col_perms={perms}, params={self.n_params}, "
            f"dense_params={self.num_embeddings * self.embedding_dim}"
            + (f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")
        )

    def spec(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "factors": self.level_factors,
            "permute": [self._perm(i) is not None for i in range(self.n_levels)],
            "padding_idx": self.padding_idx,
            "implementation": self.implementation,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any], *, device: Any = None, dtype: Any = None):
        return cls(
            spec["num_embeddings"],
            spec["embedding_dim"],
            spec["factors"],
            permute=spec["permute"],
            padding_idx=spec.get("padding_idx"),
            implementation=spec.get("implementation", "factorized"),
            device=device,
            dtype=dtype,
        )

    # -- compute -----------------------------------------------------------------------
    def _expand(self, e: torch.Tensor) -> torch.Tensor:
        """Apply the levels to rows of the table: (..., d_0) → (..., d)."""
        for level, b in enumerate(self.factors):
            e = (e.unsqueeze(-1) * b[0]).flatten(-2)
            p = self._perm(level)
            if p is not None:
                e = e.index_select(-1, p)
        return e

    def to_dense(self) -> torch.Tensor:
        """The V×d matrix E (differentiable)."""
        return self._expand(self.table)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        e = F.embedding(input_ids, self.table, self.padding_idx)
        return self._expand(e)

    def attend(self, h: torch.Tensor) -> torch.Tensor:
        """Logits ``h · Eᵀ`` (…, V) through the factors, never forming E.

        Each level is undone from the outside in: un-permute h's columns, contract each
        group of k_l columns with b_l, and finally multiply by the table: V·d_0 + Σ d_l
        multiply-adds per row instead of V·d.
        """
        if h.shape[-1] != self.embedding_dim:
            raise ValueError(
                f"attend expects {self.embedding_dim} features in the last dimension, got "
                f"shape {tuple(h.shape)}"
            )
        if self.implementation == "reconstructed":
            return F.linear(h, self.to_dense())
        for level in reversed(range(self.n_levels)):
            p = self._perm(level)
            if p is not None:
                h = h.index_select(-1, _inverse_perm(p))
            b = self.factors[level][0]
            h = torch.matmul(h.unflatten(-1, (-1, b.shape[0])), b)
        return F.linear(h, self.table)


class LowRankEmbedding(_EmbeddingBase):
    """A V×d embedding with a rank-r table ``E = U·V`` (U: V×r, V: r×d), the SVD baseline.

    Parameters
    ----------
    num_embeddings, embedding_dim : int
    rank : int
    padding_idx : int, optional
    implementation : {"factorized", "reconstructed"}
        How :meth:`attend` computes logits: ``(h Vᵀ) Uᵀ`` or through the dense E.
    device, dtype : optional
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        rank: int,
        *,
        padding_idx: int | None = None,
        implementation: Implementation = "factorized",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_embeddings = _check_pos_int(num_embeddings, "num_embeddings")
        self.embedding_dim = _check_pos_int(embedding_dim, "embedding_dim")
        rank = _check_pos_int(rank, "rank")
        if rank > min(self.num_embeddings, self.embedding_dim):
            raise ValueError(
                f"rank must be <= min(num_embeddings, embedding_dim) = "
                f"{min(self.num_embeddings, self.embedding_dim)}, got {rank}"
            )
        self.padding_idx = _check_padding_idx(padding_idx, self.num_embeddings)
        self.implementation = _check_implementation(implementation)
        self.U = nn.Parameter(torch.empty((self.num_embeddings, rank), **factory))
        self.V = nn.Parameter(torch.empty((rank, self.embedding_dim), **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Entries of E with unit variance, like ``torch.nn.Embedding``."""
        with torch.no_grad():
            nn.init.normal_(self.U, std=self.rank**-0.25)
            nn.init.normal_(self.V, std=self.rank**-0.25)
            if self.padding_idx is not None:
                self.U[self.padding_idx].zero_()

    @classmethod
    def from_embedding(
        cls,
        embedding: nn.Embedding,
        rank: int | None = None,
        *,
        n_params: int | None = None,
        implementation: Implementation = "factorized",
    ) -> LowRankEmbedding:
        """Truncated SVD of the V×d table, by rank or parameter budget (nearest rank)."""
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(
                f"embedding must be a torch.nn.Embedding, got {type(embedding).__name__}"
            )
        W = embedding.weight
        V_, d = (int(v) for v in W.shape)
        if (rank is None) == (n_params is None):
            raise ValueError(
                f"give exactly one of rank and n_params, got rank={rank!r}, n_params={n_params!r}"
            )
        if rank is None:
            rank = min(max(1, int(round(_check_pos_int(n_params, "n_params") / (V_ + d)))), d)
        layer = cls(
            V_,
            d,
            rank,
            padding_idx=embedding.padding_idx,
            implementation=implementation,
            device=W.device,
            dtype=W.dtype,
        )
        lin = LowRankLinear.from_dense(W.T, None, rank)  # (d, V) orientation: U_lin = Vᵀ
        with torch.no_grad():
            layer.U.copy_(lin.V.T)
            layer.V.copy_(lin.U.T)
        layer.approximation_error = lin.approximation_error
        return layer

    @property
    def rank(self) -> int:
        return int(self.U.shape[1])

    @property
    def n_params(self) -> int:
        return self.U.numel() + self.V.numel()

    def extra_repr(self) -> str:
        return (
            f"{self.num_embeddings}, {self.embedding_dim}, rank={self.rank}, "
            f"params={self.n_params}, dense_params={self.num_embeddings * self.embedding_dim}"
        )

    def spec(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "rank": self.rank,
            "padding_idx": self.padding_idx,
            "implementation": self.implementation,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any], *, device: Any = None, dtype: Any = None):
        return cls(
            spec["num_embeddings"],
            spec["embedding_dim"],
            spec["rank"],
            padding_idx=spec.get("padding_idx"),
            implementation=spec.get("implementation", "factorized"),
            device=device,
            dtype=dtype,
        )

    def to_dense(self) -> torch.Tensor:
        return self.U @ self.V

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.linear(F.embedding(input_ids, self.U, self.padding_idx), self.V.T)

    def attend(self, h: torch.Tensor) -> torch.Tensor:
        """Logits ``h · Eᵀ = (h Vᵀ) Uᵀ`` without forming E."""
        if self.implementation == "reconstructed":
            return F.linear(h, self.to_dense())
        return F.linear(F.linear(h, self.V), self.U)


# --------------------------------------------------------------------------------------
# Tied LM head
# --------------------------------------------------------------------------------------
class TiedEmbeddingHead(nn.Module):
    """An LM head tied to a (compressed) embedding: ``logits = h · Eᵀ (+ bias)``.

    The embedding is referenced, not registered as a submodule, so its parameters appear
    once in ``model.parameters()`` and the state dict (under the embedding's own name);
    training updates one set of factors through both paths.

    Parameters
    ----------
    embedding : KroneckerEmbedding or LowRankEmbedding
        Anything with ``attend(h)``, ``num_embeddings`` and ``embedding_dim``.
    bias : torch.Tensor, optional
        The head's own bias (GPT-2 has none).
    """

    def __init__(self, embedding: nn.Module, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.tie_to(embedding)
        if bias is not None:
            self.bias = nn.Parameter(bias.detach().clone())
        else:
            self.register_parameter("bias", None)

    def tie_to(self, embedding: nn.Module) -> None:
        """Point the head at ``embedding`` (after it was replaced or compressed again)."""
        if not callable(getattr(embedding, "attend", None)):
            raise TypeError(
                f"embedding must provide attend(h) (a tqla_torch compressed embedding), got "
                f"{type(embedding).__name__}"
            )
        object.__setattr__(self, "_embedding", embedding)

    @property
    def embedding(self) -> nn.Module:
        return self._embedding

    @property
    def in_features(self) -> int:
        return int(self._embedding.embedding_dim)

    @property
    def out_features(self) -> int:
        return int(self._embedding.num_embeddings)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, tied to "
            f"{type(self._embedding).__name__}, bias={self.bias is not None}"
        )

    def spec(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "bias": self.bias is not None}

    def to_dense(self) -> torch.Tensor:
        """The (V, d) weight of the equivalent ``torch.nn.Linear`` (the embedding's E)."""
        return self._embedding.to_dense()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        logits = self._embedding.attend(h)
        return logits if self.bias is None else logits + self.bias


COMPRESSED_TYPES: dict[str, type[nn.Module]] = {
    "KroneckerLinear": KroneckerLinear,
    "LowRankLinear": LowRankLinear,
    "KroneckerEmbedding": KroneckerEmbedding,
    "LowRankEmbedding": LowRankEmbedding,
}
