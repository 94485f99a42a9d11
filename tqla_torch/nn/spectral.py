"""Layers fitted in the spectral norm, and heterogeneous Kronecker layers.

* :class:`SpectralKroneckerLinear` — a :class:`~tqla_torch.nn.KroneckerLinear` (same forward,
  same saved form) whose factors come from :func:`tqla.kron_spectral`, or with ``permute``
  from :func:`tqla.permuted_kron_spectral`: method ``"spectral_kron"``.
* :class:`HeteroKroneckerLinear` — ``W = Σ_g Σ_k A_gk ⊗ B_gk`` with terms of several factor
  shapes (:func:`tqla.kron_hetero`): method ``"hetero_kron"``.  The forward never forms W:
  each shape group multiplies the input reshaped to n1×n2 by B, then by A.

Both record ``approximation_error`` (relative Frobenius error, as every layer) and
``spectral_error`` (relative spectral error ‖W − Ŵ‖₂/‖W‖₂, certified by
:func:`tqla.spectral_norm`, exact where affordable).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tqla.kron import KroneckerShape
from tqla_torch.nn.base import (
    CompressedModule,
    LayerPlan,
    check_linear_repeat,
    check_pos_int,
    check_source,
    decomposition_dtype,
    relative_error,
    seed_for,
)
from tqla_torch.nn.kronecker import KroneckerLinear
from tqla_torch.nn.weights import is_conv1d, resolve_out_in, weight_view

__all__ = ["HeteroKroneckerLinear", "SpectralKroneckerLinear"]


def _relative_spectral(W: torch.Tensor, approx: Any) -> tuple[float, float]:
    """(‖W − approx‖₂/‖W‖₂, certified upper bound of the same ratio) in float64."""
    import tqla

    Wd = W.detach().to(torch.float64)
    if isinstance(approx, torch.Tensor):  # a half-precision layer's dense weight
        approx = approx.detach().to(torch.float64)
    est = tqla.spectral_norm(tqla.residual(Wd, approx), rng=0)
    norm = float(torch.linalg.matrix_norm(Wd, ord=2))
    if norm == 0:
        return (0.0, 0.0) if est.estimate == 0 else (math.inf, math.inf)
    return est.estimate / norm, est.upper / norm


def _spectral_options(settings: Any, seed: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {"rng": seed}
    if getattr(settings, "p", None) is not None:
        opts["p"] = settings.p
    if settings.n_iter is not None:
        opts["max_iter"] = settings.n_iter
    if settings.tol is not None:
        opts["tol"] = settings.tol
    return opts


def _whitened_refit(W, M, shape, rank, rp, cp, damp, opts):
    """Whitened spectral refit of K on the search's permutations: W ≈ K[rp][:, cp], so K's
    target is W[inv_rp][:, inv_cp] with the moment M[inv_cp][:, inv_cp]."""
    import tqla

    inv_r = torch.argsort(rp) if rp is not None else torch.arange(W.shape[0])
    inv_c = torch.argsort(cp) if cp is not None else torch.arange(W.shape[1])
    K = tqla.whitened_kron_spectral(
        W[inv_r][:, inv_c], M[inv_c][:, inv_c], shape, rank, damp=damp, **opts
    )
    return K.A, K.B, math.nan


class SpectralKroneckerLinear(KroneckerLinear):
    """A Kronecker (optionally permuted) linear layer fitted in the spectral norm.

    Structure, forward, :meth:`spec` and saving are those of :class:`KroneckerLinear`; only
    the fit differs (``method="spectral_kron"``).  ``spectral_error`` holds the relative
    spectral error ‖W − Ŵ‖₂/‖W‖₂ of the fit (None for a layer built from its spec).

    Examples
    --------
    >>> import torch
    >>> from tqla_torch import CompressionConfig
    >>> lin = torch.nn.Linear(12, 8, dtype=torch.float64)
    >>> st = CompressionConfig(target_modules=["m"], method="spectral_kron",
    ...                        b_shape=[2, 4], rank=2, p=[8, 32]).settings_for("m")
    >>> layer = SpectralKroneckerLinear.from_module(lin, st, name="m")
    >>> layer.spectral_error <= layer.kron_svd_spectral_error
    True
    """

    methods = ("spectral_kron",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spectral_error: float | None = None
        self.kron_svd_spectral_error: float | None = None

    @classmethod
    def from_module(
        cls,
        module: nn.Module,
        settings: Any,
        *,
        name: str = "",
        moment: torch.Tensor | None = None,
        damp: float = 0.0,
    ) -> SpectralKroneckerLinear:
        """Fit in the spectral norm; with ``moment`` (the in×in input second moment) the
        whitened spectral norm (:func:`tqla.whitened_kron_spectral`; with permutations, the
        plain search's permutations and the moment permuted like the columns)."""
        import tqla

        plan = cls.plan(module, settings, name=name or "module")
        v = weight_view(module)
        W = v.weight_out_in.detach()
        Wd = W.to(decomposition_dtype(W))
        seed = np.random.default_rng(seed_for(settings.seed, name))
        opts = _spectral_options(settings, seed)
        shape = KroneckerShape.of(plan.shape)
        rp = cp = None
        Md = None if moment is None else moment.detach().to(torch.float64).cpu()
        if settings.permute == "none":
            if Md is None:
                K = tqla.kron_spectral(Wd, shape, plan.rank, **opts)
            else:
                K = tqla.whitened_kron_spectral(Wd, Md, shape, plan.rank, damp=damp, **opts)
            A, B = K.A, K.B
            start = K.kron_svd_error.estimate if Md is None else math.nan
        else:
            P = tqla.permuted_kron_spectral(
                Wd, shape, plan.rank, permute=settings.permute, spectral_options=opts,
                frobenius_options={"n_restarts": settings.n_restarts, "rng": seed},
            )
            A, B = P.kron.A, P.kron.B
            rp = P.row_perm if settings.permute in ("rows", "both") else None
            cp = P.col_perm if settings.permute in ("cols", "both") else None
            start = P.errors[0] * float(torch.linalg.matrix_norm(Wd.double(), ord=2))
            if Md is not None:  # refit K to W[inv_r][:, inv_c], moment permuted alike
                A, B, start = _whitened_refit(Wd, Md, shape, plan.rank, rp, cp, damp, opts)
        layer = cls.from_factors(
            A.to(W.dtype), B.to(W.dtype), rp, cp, None if v.bias is None else v.bias.detach(),
            implementation=settings.implementation, source=v.kind,
        )
        with torch.no_grad():
            dense = layer.to_dense()
            layer.approximation_error = relative_error(dense, W)
            layer.spectral_error, _ = _relative_spectral(W, dense)
        norm = float(torch.linalg.matrix_norm(W.detach().double(), ord=2))
        # the plain start's error (None after a whitened fit, whose start is measured in
        # the whitened norm)
        layer.kron_svd_spectral_error = (
            None if math.isnan(start) else (start / norm if norm > 0 else 0.0)
        )
        return layer


class HeteroKroneckerLinear(CompressedModule):
    """A linear layer ``W = Σ_g Σ_k A_gk ⊗ B_gk`` whose terms have several factor shapes.

    Parameters
    ----------
    in_features, out_features : int
    shapes : list of [[m1, n1], [m2, n2]]
        Factor shapes of the groups (out×in orientation: m1·m2 = out, n1·n2 = in).
    ranks : list of int
        Terms per group.
    bias : bool, default True
    implementation : {"factorized", "reconstructed"}
        Per group, ``x → B then A`` on the input reshaped to (n1, n2) (never forming W), or
        ``F.linear(x, W)``.
    source : {"linear", "conv1d"}
    approximation_error : float, optional
    device, dtype : optional

    Examples
    --------
    >>> import torch
    >>> layer = HeteroKroneckerLinear(12, 8, [[[4, 3], [2, 4]], [[2, 6], [4, 2]]], [1, 2])
    >>> layer.n_params, tuple(layer.to_dense().shape)  # 1·(12 + 8) + 2·(12 + 8) + bias 8
    (68, (8, 12))
    """

    methods = ("hetero_kron",)
    #: :meth:`plan` gives an upper bound (the greedy picks the terms): reports take the
    #: fitted layer's own parameter count and number of terms.
    plan_is_bound = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        shapes: list,
        ranks: list,
        bias: bool = True,
        *,
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
        if not shapes or len(shapes) != len(ranks):
            raise ValueError(
                f"shapes and ranks must be non-empty lists of one length, got {len(shapes)} "
                f"shapes and {len(ranks)} ranks"
            )
        self.source = check_source(source)
        self.kshapes = []
        self.A = nn.ParameterList()
        self.B = nn.ParameterList()
        for i, (sh, r) in enumerate(zip(shapes, ranks)):
            s = KroneckerShape.of(sh)
            if s.matrix_shape != (self.out_features, self.in_features):
                raise ValueError(
                    f"shapes[{i}] A {s.a} ⊗ B {s.b} gives a {s.matrix_shape} weight, the layer "
                    f"needs (out, in) = ({self.out_features}, {self.in_features})"
                )
            r = s.check_rank(r, f"ranks[{i}]")
            self.kshapes.append(s)
            self.A.append(nn.Parameter(torch.empty((r, s.m1, s.n1), **factory)))
            self.B.append(nn.Parameter(torch.empty((r, s.m2, s.n2), **factory)))
        self._init_bias(bias, self.out_features, factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random factors with ``torch.nn.Linear``'s initial weight variance 1/(3·in)."""
        terms = sum(int(a.shape[0]) for a in self.A)
        std = (1.0 / (3.0 * self.in_features * terms)) ** 0.25
        with torch.no_grad():
            for a, b in zip(self.A, self.B):
                nn.init.normal_(a, std=std)
                nn.init.normal_(b, std=std)
            self._reset_bias(self.in_features)

    # -- CompressedModule interface ----------------------------------------------------
    @classmethod
    def accepts(cls, module: nn.Module) -> bool:
        return isinstance(module, nn.Linear) or is_conv1d(module)

    @classmethod
    def _shapes(cls, v: Any, settings: Any, where: str) -> list[KroneckerShape]:
        return [
            resolve_out_in(v.out_features, v.in_features, shape=sh, where=f"{where}: shapes[{i}]")
            for i, sh in enumerate(settings.shapes)
        ]

    @classmethod
    def plan(cls, module: nn.Module, settings: Any, *, name: str = "module") -> LayerPlan:
        """The candidate shapes and the parameter bound (budget, or rank × the largest term)."""
        where = f"module {name!r}"
        check_linear_repeat(settings, where)
        v = weight_view(module)
        shapes = cls._shapes(v, settings, where)
        bias = 0 if v.bias is None else v.bias.numel()
        cheapest = min(s.n_params(1) for s in shapes)
        if settings.n_params is not None:
            budget = settings.n_params - bias
            if budget < cheapest:
                raise ValueError(
                    f"{where}: n_params {settings.n_params} leaves {budget} for the factors, "
                    f"below one term of the cheapest shape ({cheapest})"
                )
            after = budget + bias
            if settings.rank is not None:
                after = min(after, settings.rank * max(s.n_params(1) for s in shapes) + bias)
        else:
            after = settings.rank * max(s.n_params(1) for s in shapes) + bias
        return LayerPlan(
            layer=cls.__name__,
            in_features=v.in_features,
            out_features=v.out_features,
            factors=" | ".join(f"{s.m1}×{s.n1} ⊗ {s.m2}×{s.n2}" for s in shapes),
            shape=None,
            rank=settings.rank or 0,
            permute="none",
            repeat=1,
            params_after=after,
        )

    @classmethod
    def from_module(
        cls, module: nn.Module, settings: Any, *, name: str = ""
    ) -> HeteroKroneckerLinear:
        import tqla

        where = f"module {name or 'module'!r}"
        cls.plan(module, settings, name=name or "module")
        v = weight_view(module)
        W = v.weight_out_in.detach()
        Wd = W.to(decomposition_dtype(W))
        bias = 0 if v.bias is None else v.bias.numel()
        shapes = cls._shapes(v, settings, where)
        budget = None if settings.n_params is None else settings.n_params - bias
        H = tqla.kron_hetero(Wd, shapes, n_params=budget, rank=settings.rank,
                             norm=settings.norm or "fro",
                             spectral_options={
                                 "rng": np.random.default_rng(seed_for(settings.seed, name))
                             })
        layer = cls(
            v.in_features, v.out_features, [[list(K.kshape.a), list(K.kshape.b)] for K in H.terms],
            [K.rank for K in H.terms], bias=v.bias is not None,
            implementation=settings.implementation, source=v.kind,
            device=W.device, dtype=W.dtype,
        )
        with torch.no_grad():
            for a, b, K in zip(layer.A, layer.B, H.terms):
                a.copy_(K.A.to(W.dtype))
                b.copy_(K.B.to(W.dtype))
            if v.bias is not None:
                layer.bias.copy_(v.bias.detach())
            dense = layer.to_dense()
            layer.approximation_error = relative_error(dense, W)
            layer.spectral_error, _ = _relative_spectral(W, dense)
        return layer

    def _spec_values(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "shapes": [[list(s.a), list(s.b)] for s in self.kshapes],
            "ranks": [int(a.shape[0]) for a in self.A],
            "bias": self.bias is not None,
            "implementation": self.implementation,
            "source": self.source,
        }

    # -- dense and forward -------------------------------------------------------------
    @property
    def ranks(self) -> list[int]:
        return [int(a.shape[0]) for a in self.A]

    @property
    def n_terms(self) -> int:
        return sum(self.ranks)

    def to_dense(self) -> torch.Tensor:
        """The (out, in) weight Σ_g Σ_k A_gk ⊗ B_gk (differentiable)."""
        W = None
        for a, b in zip(self.A, self.B):
            r, m1, n1 = a.shape
            _, m2, n2 = b.shape
            T = (a[:, :, None, :, None] * b[:, None, :, None, :]).sum(0)
            T = T.reshape(m1 * m2, n1 * n2)
            W = T if W is None else W + T
        return W

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.implementation == "reconstructed":
            return F.linear(x, self.to_dense(), self.bias)
        lead = x.shape[:-1]
        X = x.reshape(-1, self.in_features)
        y = None
        for a, b in zip(self.A, self.B):
            _, m1, n1 = a.shape
            _, m2, n2 = b.shape
            Xg = X.reshape(-1, n1, n2)
            T = torch.einsum("klm,bjm->bkjl", b, Xg)  # (b, r, n1, m2)
            Y = torch.einsum("kij,bkjl->bil", a, T).reshape(-1, self.out_features)
            y = Y if y is None else y + Y
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        groups = ", ".join(f"{s.m1}×{s.n1}⊗{s.m2}×{s.n2}×{r}" for s, r in
                           zip(self.kshapes, self.ranks))
        return f"in={self.in_features}, out={self.out_features}, terms=[{groups}]"
