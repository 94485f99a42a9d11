"""Kronecker layers: ``torch.nn.Linear`` whose weight is a (permuted) Kronecker sum.

:class:`KroneckerLinear` holds an (out, in) weight ``W[i, j] = K[row_perm[i], col_perm[j]]``
with ``K = Σ_k A_k ⊗ B_k``; :func:`forward_costs` gives the multiply-adds of its forward.

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

Over ~600 lines: most of it is the numpydoc of KroneckerLinear's four constructors; the fused
forward lives in _kron_forward.py.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tqla.kron import KroneckerShape, KroneckerSum
from tqla_torch.nn._kron_forward import factorized_forward
from tqla_torch.nn.base import (
    LayerPlan,
    LinearBase,
    as_perm,
    check_linear_repeat,
    check_permute,
    check_pos_int,
    check_source,
    decomposition_dtype,
    inverse_perm,
    relative_error,
    seed_for,
)
from tqla_torch.nn.weights import is_conv1d, settings_shape, weight_view

__all__ = ["KRON_METHODS", "KroneckerLinear", "forward_costs"]

logger = logging.getLogger(__name__)

KRON_METHODS = ("permuted_kron", "kron")


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
    a_first, b_first = s.matmat_costs(rank, 1)  # K·x for one token x (a column)
    return {
        "a_first": a_first,
        "b_first": b_first,
        "factorized": min(a_first, b_first),
        "dense": s.m1 * s.m2 * s.n1 * s.n2,
    }


def kron_decompose(
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
    moment: torch.Tensor | None = None,
    damp: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, Any, Any, float]:
    """Decompose a matrix; returns (A, B, row_perm, col_perm, relative error).

    Rows are the outputs and columns the inputs (a layer's (out, in) weight); for an
    embedding table (V, d) the columns are the features.  ``seed`` is
    anything ``numpy.random.default_rng`` accepts (compress passes ``[seed, hash(name)]``).
    With ``moment`` (the in×in second moment C of the layer's inputs) the fit is
    activation-aware (:func:`tqla.whitened_kron_svd` / :func:`tqla.whitened_permuted_kron`,
    damping ``damp``); the returned error stays the plain relative Frobenius error.
    """
    if method not in KRON_METHODS:
        raise ValueError(f"method must be one of {KRON_METHODS}, got {method!r}")
    permute = check_permute(permute)
    W = w_out_in.detach().to(decomposition_dtype(w_out_in))
    shape.check_matrix(W, "weight")
    rank = shape.check_rank(rank)
    if W.device.type == "cpu":
        # On the CPU tqla's NumPy kernels are faster than the same algorithms through
        # torch's array-API namespace (slot-cost GEMMs, gathers, copies; measured by
        # benchmarks/bench_compress.py): decompose a NumPy view of the weight (no copy)
        # and hand the factors back as tensors.  Same algorithm, same seed.
        Wn = W.numpy()
        Mn = None if moment is None else moment.detach().to("cpu", W.dtype).numpy()
        A, B, rp, cp, err = _decompose(
            Wn, shape, rank, method, permute, rule, n_iter, tol, n_restarts, seed, Mn, damp
        )
        A, B, rp, cp = (
            None if v is None else torch.from_numpy(np.ascontiguousarray(v)) for v in (A, B, rp, cp)
        )
        return A, B, rp, cp, err
    Mt = None if moment is None else moment.detach().to(W)
    return _decompose(
        W, shape, rank, method, permute, rule, n_iter, tol, n_restarts, seed, Mt, damp
    )


def _decompose(W, shape, rank, method, permute, rule, n_iter, tol, n_restarts, seed, moment, damp):
    """kron_decompose on a validated matrix of any array library (its library out)."""
    from tqla.kron import kron_svd
    from tqla.permuted import permuted_kron

    if method == "kron":
        if permute != "none":
            raise ValueError(
                f"permute={permute!r} needs method='permuted_kron'; method='kron' has no "
                f"permutations (use permute='none')"
            )
        if moment is not None:
            from tqla.whiten import whitened_kron_svd

            K = whitened_kron_svd(W, moment, shape, rank, damp=damp)
        else:
            K = kron_svd(W, shape, rank)
        A, B = K.A, K.B
        rp = cp = None
        approx = K.to_dense()
    else:
        opts: dict[str, Any] = {"permute": permute, "n_restarts": n_restarts, "rng": _rng(seed)}
        if rule is not None:
            opts["rule"] = rule
        if n_iter is not None:
            opts["n_iter"] = n_iter
        if tol is not None:
            opts["tol"] = tol
        if moment is not None:
            from tqla.whiten import whitened_permuted_kron

            P = whitened_permuted_kron(W, moment, shape, rank, damp=damp, **opts)
        else:
            P = permuted_kron(W, shape, rank, **opts)
        A, B = P.kron.A, P.kron.B
        rp = P.row_perm if P.permuted[0] else None
        cp = P.col_perm if P.permuted[1] else None
        if moment is not None:
            return A, B, rp, cp, _relative_error(P.to_dense(), W)
        return A, B, rp, cp, float(P.errors[-1])
    return A, B, rp, cp, _relative_error(approx, W)


def _relative_error(approx: Any, W: Any) -> float:
    if isinstance(W, np.ndarray):
        return relative_error(torch.from_numpy(np.asarray(approx)), torch.from_numpy(W))
    return relative_error(approx, W)


# --------------------------------------------------------------------------------------
# KroneckerLinear
# --------------------------------------------------------------------------------------
class KroneckerLinear(LinearBase):
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
    permute : {"none", "rows", "cols", "both"}
        Which permutation buffers to allocate (as identities; :meth:`from_factors` and
        loading a state dict fill them): rows = output features, cols = input features
        (``"output"``/``"input"`` are deprecated aliases).
    implementation : {"factorized", "reconstructed"}
    source : {"linear", "conv1d"}
        The kind of module it replaces (recorded for saving).
    approximation_error : float, optional
        Relative error of the weight it was fitted to (set by :meth:`from_dense`).
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

    methods = KRON_METHODS
    #: The factorized forward takes long inputs in chunks of tokens whose temporaries stay
    #: under this fraction of the output (peak memory ≈ (1 + fraction)× a dense layer's, at a
    #: few percent of time: ``benchmarks/results/layers_cpu.md``); None runs one pass.  A
    #: runtime setting (class-wide, or per layer by assignment), not saved with the layer.
    memory_fraction: float | None = 0.5

    def __init__(
        self,
        in_features: int,
        out_features: int,
        shape: Any,
        rank: int = 1,
        bias: bool = True,
        *,
        permute: str = "none",
        implementation: str = "factorized",
        source: str = "linear",
        approximation_error: float | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(implementation=implementation, approximation_error=approximation_error)
        factory = {"device": device, "dtype": dtype}
        self.in_features = check_pos_int(in_features, "in_features")
        self.out_features = check_pos_int(out_features, "out_features")
        s = KroneckerShape.of(shape)
        if s.matrix_shape != (self.out_features, self.in_features):
            raise ValueError(
                f"shape A {s.a} ⊗ B {s.b} gives a {s.matrix_shape} weight, but a layer "
                f"{self.in_features}→{self.out_features} needs (out, in) = "
                f"({self.out_features}, {self.in_features}): m1·m2 = out and n1·n2 = in"
            )
        rank = s.check_rank(rank)
        permute = check_permute(permute)
        self.source = check_source(source)
        self.A = nn.Parameter(torch.empty((rank, s.m1, s.n1), **factory))
        self.B = nn.Parameter(torch.empty((rank, s.m2, s.n2), **factory))
        self._init_bias(bias, self.out_features, factory)
        idx = {"device": device, "dtype": torch.int64}
        self.register_buffer(
            "input_perm",
            torch.arange(self.in_features, **idx) if permute in ("cols", "both") else None,
        )
        self.register_buffer(
            "output_perm",
            torch.arange(self.out_features, **idx) if permute in ("rows", "both") else None,
        )
        # The association order of the factorized forward, fixed by the shapes (tqla's rule).
        self._order = s.matmat_order(rank)
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
            self._reset_bias(self.in_features)

    @classmethod
    def from_factors(
        cls,
        A: torch.Tensor,
        B: torch.Tensor,
        row_perm: Any = None,
        col_perm: Any = None,
        bias: torch.Tensor | None = None,
        *,
        implementation: str = "factorized",
        source: str = "linear",
        approximation_error: float | None = None,
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
        rp = as_perm(row_perm, out_f, "row_perm", A.device)
        cp = as_perm(col_perm, in_f, "col_perm", A.device)
        if bias is not None and tuple(bias.shape) != (out_f,):
            raise ValueError(f"bias must have shape ({out_f},), got {tuple(bias.shape)}")
        permute = {(False, False): "none", (True, False): "rows", (False, True): "cols"}.get(
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
            source=source,
            approximation_error=approximation_error,
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
                layer.input_perm.copy_(inverse_perm(cp))
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
        implementation: str = "factorized",
        source: str = "linear",
        rule: str | None = None,
        n_iter: int | None = None,
        tol: float | None = None,
        n_restarts: int = 1,
        seed: Any = 0,
        moment: torch.Tensor | None = None,
        damp: float = 0.0,
    ) -> KroneckerLinear:
        """Decompose an (out, in) weight matrix into a layer (see :meth:`from_linear`).

        ``moment``: the in×in second moment of the layer's inputs for an activation-aware
        fit (``damp``: its relative damping; see :mod:`tqla.whiten`)."""
        s = KroneckerShape.of(shape)
        if permute is None:
            permute = "both" if method == "permuted_kron" else "none"
        A, B, rp, cp, err = kron_decompose(
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
            moment=moment,
            damp=damp,
        )
        dtype, device = weight.dtype, weight.device
        layer = cls.from_factors(
            A.to(device=device, dtype=dtype),
            B.to(device=device, dtype=dtype),
            rp,
            cp,
            None if bias is None else bias.detach(),
            implementation=implementation,
            source=source,
            approximation_error=err,
        )
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
        implementation: str = "factorized",
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
        permute : {"both", "rows", "cols", "none"}, optional
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
        return cls.from_dense(
            v.weight_out_in,
            v.bias,
            shape,
            rank,
            method=method,
            permute=permute,
            implementation=implementation,
            **opts,
        )

    @classmethod
    def from_conv1d(
        cls,
        conv1d: nn.Module,
        shape: Any,
        rank: int = 1,
        *,
        method: str = "permuted_kron",
        permute: str | None = None,
        implementation: str = "factorized",
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
        return cls.from_dense(
            v.weight_out_in,
            v.bias,
            shape,
            rank,
            method=method,
            permute=permute,
            implementation=implementation,
            source="conv1d",
            **opts,
        )

    # -- CompressedModule interface ----------------------------------------------------
    @classmethod
    def plan(cls, module: nn.Module, settings: Any, *, name: str = "module") -> LayerPlan:
        """Factor shapes and parameter count of ``module`` under ``settings`` (no fitting).

        ``settings.shape``/``settings.b_shape`` are stated on the out×in weight.
        """
        where = f"module {name!r}"
        check_linear_repeat(settings, where)
        v = weight_view(module)
        shape = settings_shape(v, settings, where)
        rank = settings.rank
        if rank > shape.max_rank:
            raise ValueError(
                f"{where}: rank {rank} exceeds the Kronecker rank bound min(p·q, s·t) = "
                f"{shape.max_rank} of A {shape.a} ⊗ B {shape.b}"
            )
        bias = 0 if v.bias is None else v.bias.numel()
        return LayerPlan(
            layer=cls.__name__,
            in_features=v.in_features,
            out_features=v.out_features,
            factors=f"{shape.m1}×{shape.n1} ⊗ {shape.m2}×{shape.n2}",
            shape=[list(shape.a), list(shape.b)],
            rank=rank,
            permute=settings.permute,
            repeat=1,
            params_after=shape.n_params(rank) + bias,
        )

    @classmethod
    def from_module(
        cls,
        module: nn.Module,
        settings: Any,
        *,
        name: str = "",
        moment: torch.Tensor | None = None,
        damp: float = 0.0,
    ) -> KroneckerLinear:
        """Fit a layer to ``module`` (Linear or Conv1D) by ``settings.method`` (to its
        inputs when ``moment``, their in×in second moment, is given)."""
        plan = cls.plan(module, settings, name=name or "module")
        v = weight_view(module)
        return cls.from_dense(
            v.weight_out_in,
            v.bias,
            plan.shape,
            plan.rank,
            method=settings.method,
            permute=settings.permute,
            implementation=settings.implementation,
            source=v.kind,
            rule=settings.rule,
            n_iter=settings.n_iter,
            tol=settings.tol,
            n_restarts=settings.n_restarts,
            seed=seed_for(settings.seed, name),
            moment=moment,
            damp=damp,
        )

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
        """Which sides carry a permutation: "none", "rows", "cols" or "both"."""
        i, o = self.input_perm is not None, self.output_perm is not None
        return {(False, False): "none", (True, False): "cols", (False, True): "rows"}.get(
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
        return inverse_perm(self.input_perm)

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

    def _spec_values(self) -> dict[str, Any]:
        s = self.kshape
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "shape": [list(s.a), list(s.b)],
            "rank": self.rank,
            "bias": self.bias is not None,
            "permute": self.permute,
            "implementation": self.implementation,
            "source": self.source,
        }

    # -- dense -------------------------------------------------------------------------
    def _kron_dense(self) -> torch.Tensor:
        """K = Σ A_k ⊗ B_k as an (out, in) matrix (:meth:`tqla.KroneckerSum.to_dense`)."""
        return KroneckerSum(self.A, self.B).to_dense()

    def to_dense(self) -> torch.Tensor:
        """The (out, in) weight ``K[row_perm][:, col_perm]`` (differentiable)."""
        W = self._kron_dense()
        if self.output_perm is not None:
            W = W.index_select(0, self.output_perm)
        if self.input_perm is not None:
            W = W.index_select(1, inverse_perm(self.input_perm))
        return W

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
        y = factorized_forward(
            x2,
            self.A,
            self.B,
            self.input_perm,
            self.output_perm,
            self._order,
            self.bias,
            self.memory_fraction,
        )
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
                W = W.index_select(1, inverse_perm(self.input_perm))
        return F.linear(x, W, self.bias)
