"""Low-rank layers: ``W ≈ U·V`` from a truncated SVD (the baseline of the Kronecker layers).

* :class:`LowRankLinear` — a ``torch.nn.Linear`` (or GPT-2 ``Conv1D``) with a rank-r weight.
* :class:`LowRankEmbedding` — a V×d embedding with a rank-r table (logits through the
  factors for a tied head).
* :func:`low_rank_for_budget` — the rank whose parameter count is nearest a budget (the one
  rounding rule used for linear layers, embeddings and the presets).

"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tqla_torch.nn.base import (
    EmbeddingBase,
    LayerPlan,
    LinearBase,
    check_linear_repeat,
    check_padding_idx,
    check_pos_int,
    check_rank_or_budget,
    check_source,
)
from tqla_torch.nn.weights import weight_view

__all__ = ["LowRankEmbedding", "LowRankLinear", "low_rank_for_budget", "svd_rank"]


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


def svd_rank(settings: Any, in_features: int, out_features: int, bias: bool, where: str) -> int:
    """The SVD rank of ``settings`` (its ``rank``, or the one nearest its ``n_params``)."""
    if settings.rank is not None:
        rank = check_pos_int(settings.rank, f"{where}: rank")
    else:
        rank = low_rank_for_budget(in_features, out_features, settings.n_params, bias)
    if rank > min(in_features, out_features):
        raise ValueError(
            f"{where}: svd rank {rank} exceeds min(in, out) = {min(in_features, out_features)}"
        )
    return rank


def _truncated_svd(
    W: torch.Tensor, rank: int, moment: torch.Tensor | None = None, damp: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Best rank-``rank`` factors ``W ≈ U·V`` (U = U_r√Σ_r, V = √Σ_r V_rᵀ) from
    :func:`tqla.truncated_svd` (its routes and sign rule), and the relative error
    ‖W − U·V‖/‖W‖ = √(‖W‖² − Σ σ_k²)/‖W‖ (in float64).  With ``moment`` (the in×in second
    moment of the inputs) the fit is :func:`tqla.whitened_svd` (the error stays plain)."""
    from tqla import truncated_svd

    Wd = W.detach().to(torch.float64)
    if moment is not None:
        from tqla import whitened_svd

        U, sig, Vh = whitened_svd(Wd, moment.to(Wd), rank, damp=damp)
        root = sig.sqrt()
        Uf, Vf = U * root[None, :], root[:, None] * Vh
        norm = torch.linalg.norm(Wd)
        err = float(torch.linalg.norm(Wd - Uf @ Vf) / norm) if bool(norm > 0) else 0.0
        return Uf, Vf, err
    U, sig, Vh = truncated_svd(Wd, rank)
    total = float((Wd * Wd).sum())
    tail = max(total - float((sig * sig).sum()), 0.0)
    err = (tail / total) ** 0.5 if total > 0 else 0.0
    root = sig.sqrt()
    return U * root[None, :], root[:, None] * Vh, err


def _two_sided_fit(W: torch.Tensor, rank: int, moment: Any, damp: float) -> Any:
    """The (d, V)-oriented factors of a two-sided fit of the V×d table ``W`` (see
    :meth:`LowRankEmbedding.from_embedding`), as an object with ``U``, ``V`` and
    ``approximation_error`` (the plain relative error) like a :class:`LowRankLinear`."""
    from types import SimpleNamespace

    from tqla import two_sided_whitened_svd

    V_, d = (int(v) for v in W.shape)
    if len(moment) != 2:
        raise ValueError("moment pair must be (row weights (V,), column weight (d, d))")
    p, C = moment
    if not (torch.is_tensor(p) and tuple(p.shape) == (V_,)):
        raise ValueError(f"moment pair: the row weights must be a ({V_},) tensor")
    if not (torch.is_tensor(C) and tuple(C.shape) == (d, d)):
        raise ValueError(f"moment pair: the column weight must be a ({d}, {d}) tensor")
    Wd = W.detach().to(torch.float64)
    U, sig, Vh = two_sided_whitened_svd(Wd, p.to(Wd), C.to(Wd), rank, damp=damp)
    root = sig.clamp_min(0).sqrt()
    Uf, Vf = U * root[None, :], root[:, None] * Vh  # E ≈ Uf·Vf (V×r, r×d)
    norm = torch.linalg.norm(Wd)
    err = float(torch.linalg.norm(Wd - Uf @ Vf) / norm) if bool(norm > 0) else 0.0
    # LowRankLinear of Eᵀ: U_lin = Vfᵀ (d×r), V_lin = Ufᵀ (r×V)
    return SimpleNamespace(U=Vf.T.to(W.dtype), V=Uf.T.to(W.dtype), approximation_error=err)


class LowRankLinear(LinearBase):
    """A linear layer with a rank-r weight ``W = U·V`` (U: out×r, V: r×in), the SVD baseline.

    Parameters
    ----------
    in_features, out_features : int
    rank : int
    bias : bool, default True
    implementation : {"factorized", "reconstructed"}
        ``x → (x Vᵀ) Uᵀ`` (r·(in + out) multiply-adds per token) or ``F.linear(x, U V)``.
    source : {"linear", "conv1d"}
        The kind of module it replaces (recorded for saving).
    approximation_error : float, optional
        Relative error of the weight it was fitted to (set by :meth:`from_dense`).
    device, dtype : optional

    Examples
    --------
    >>> import torch
    >>> lr = LowRankLinear.from_linear(torch.nn.Linear(16, 8), rank=2)
    >>> lr.n_params, lr.to_dense().shape
    (56, torch.Size([8, 16]))
    """

    methods = ("svd",)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
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
        rank = check_pos_int(rank, "rank")
        if rank > min(self.in_features, self.out_features):
            raise ValueError(
                f"rank must be <= min(in_features, out_features) = "
                f"{min(self.in_features, self.out_features)}, got {rank}"
            )
        self.source = check_source(source)
        self.U = nn.Parameter(torch.empty((self.out_features, rank), **factory))
        self.V = nn.Parameter(torch.empty((rank, self.in_features), **factory))
        self._init_bias(bias, self.out_features, factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random factors with ``torch.nn.Linear``'s initial weight variance 1/(3·in)."""
        std = (1.0 / (3.0 * self.in_features * self.rank)) ** 0.25
        with torch.no_grad():
            nn.init.normal_(self.U, std=std)
            nn.init.normal_(self.V, std=std)
            self._reset_bias(self.in_features)

    @classmethod
    def from_dense(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        rank: int | None = None,
        *,
        n_params: int | None = None,
        implementation: str = "factorized",
        source: str = "linear",
        moment: torch.Tensor | None = None,
        damp: float = 0.0,
    ) -> LowRankLinear:
        """Truncated SVD of an (out, in) weight: ``U = U_r √Σ_r``, ``V = √Σ_r V_rᵀ``
        (activation-aware, :func:`tqla.whitened_svd`, when ``moment`` is given).

        Give ``rank`` or a parameter budget ``n_params`` (factors plus bias; the nearest
        rank is used, see :func:`low_rank_for_budget`).
        """
        out_f, in_f = (int(v) for v in weight.shape)
        check_rank_or_budget(rank, n_params)
        if rank is None:
            rank = low_rank_for_budget(
                in_f, out_f, check_pos_int(n_params, "n_params"), bias is not None
            )
        U, V, err = _truncated_svd(weight.detach(), rank, moment, damp)
        layer = cls(
            in_f,
            out_f,
            rank,
            bias=bias is not None,
            implementation=implementation,
            source=source,
            approximation_error=err,
            device=weight.device,
            dtype=weight.dtype,
        )
        with torch.no_grad():
            layer.U.copy_(U.to(weight.dtype))
            layer.V.copy_(V.to(weight.dtype))
            if bias is not None:
                layer.bias.copy_(bias.detach())
        return layer

    @classmethod
    def from_linear(
        cls,
        linear: nn.Module,
        rank: int | None = None,
        *,
        n_params: int | None = None,
        implementation: str = "factorized",
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
        return cls.from_dense(
            v.weight_out_in,
            v.bias,
            rank,
            n_params=n_params,
            implementation=implementation,
            source=v.kind,
        )

    from_conv1d = from_linear

    # -- CompressedModule interface ----------------------------------------------------
    @classmethod
    def plan(cls, module: nn.Module, settings: Any, *, name: str = "module") -> LayerPlan:
        where = f"module {name!r}"
        check_linear_repeat(settings, where)
        v = weight_view(module)
        bias = 0 if v.bias is None else v.bias.numel()
        rank = svd_rank(settings, v.in_features, v.out_features, bias > 0, where)
        after = rank * (v.in_features + v.out_features) + bias
        return LayerPlan(
            layer=cls.__name__,
            in_features=v.in_features,
            out_features=v.out_features,
            factors=f"rank {rank}",
            shape=None,
            rank=rank,
            permute="none",
            repeat=1,
            params_after=after,
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
    ) -> LowRankLinear:
        plan = cls.plan(module, settings, name=name or "module")
        if moment is None:
            return cls.from_linear(module, plan.rank, implementation=settings.implementation)
        v = weight_view(module)
        return cls.from_dense(
            v.weight_out_in,
            v.bias,
            plan.rank,
            implementation=settings.implementation,
            source=v.kind,
            moment=moment,
            damp=damp,
        )

    @property
    def rank(self) -> int:
        return int(self.U.shape[1])

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"rank={self.rank}, params={self.n_params}, implementation={self.implementation}"
        )

    def _spec_values(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "rank": self.rank,
            "bias": self.bias is not None,
            "implementation": self.implementation,
            "source": self.source,
        }

    def to_dense(self) -> torch.Tensor:
        """The (out, in) weight U·V."""
        return self.U @ self.V

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.implementation == "reconstructed":
            return F.linear(x, self.U @ self.V, self.bias)
        return F.linear(F.linear(x, self.V), self.U, self.bias)


class LowRankEmbedding(EmbeddingBase):
    """A V×d embedding with a rank-r table ``E = U·V`` (U: V×r, V: r×d), the SVD baseline.

    Parameters
    ----------
    num_embeddings, embedding_dim : int
    rank : int
    padding_idx : int, optional
    implementation : {"factorized", "reconstructed"}
        How :meth:`attend` computes logits: ``(h Vᵀ) Uᵀ`` or through the dense E.
    approximation_error : float, optional
    device, dtype : optional
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        rank: int,
        *,
        padding_idx: int | None = None,
        implementation: str = "factorized",
        approximation_error: float | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(implementation=implementation, approximation_error=approximation_error)
        factory = {"device": device, "dtype": dtype}
        self.num_embeddings = check_pos_int(num_embeddings, "num_embeddings")
        self.embedding_dim = check_pos_int(embedding_dim, "embedding_dim")
        rank = check_pos_int(rank, "rank")
        if rank > min(self.num_embeddings, self.embedding_dim):
            raise ValueError(
                f"rank must be <= min(num_embeddings, embedding_dim) = "
                f"{min(self.num_embeddings, self.embedding_dim)}, got {rank}"
            )
        self.padding_idx = check_padding_idx(padding_idx, self.num_embeddings)
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
        implementation: str = "factorized",
        moment: torch.Tensor | None = None,
        damp: float = 0.0,
    ) -> LowRankEmbedding:
        """Truncated SVD of the V×d table, by rank or parameter budget (nearest rank).

        With ``moment``, a length-V vector of token frequencies (the diagonal of the second
        moment of the one-hot inputs), the fit is activation-aware: it minimises
        Σ_v f_v·‖E_v − Ê_v‖² (:func:`tqla.whitened_svd` with a diagonal moment; ``damp``
        adds damp·mean(f) to every frequency, so unseen tokens are still fitted a little).
        All-equal frequencies give the plain fit.  A pair ``(p, C)`` — row weights p of
        length V and a d×d column weight C, e.g. from
        :func:`~tqla_torch.compression.curves.tied_table_curve` for a table tied to an LM
        head — makes the fit two-sided: it minimises Σ_v p_v·(E_v − Ê_v)·C·(E_v − Ê_v)ᵀ
        (:func:`tqla.two_sided_whitened_svd`).
        """
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(
                f"embedding must be a torch.nn.Embedding, got {type(embedding).__name__}"
            )
        W = embedding.weight
        V_, d = (int(v) for v in W.shape)
        check_rank_or_budget(rank, n_params)
        if rank is None:
            rank = low_rank_for_budget(V_, d, check_pos_int(n_params, "n_params"), bias=False)
        if isinstance(moment, (tuple, list)):  # two-sided: (row weights, hidden moment)
            lin = _two_sided_fit(W, rank, moment, damp)
        else:
            if moment is not None and (
                not torch.is_tensor(moment) or tuple(moment.shape) != (V_,)
            ):
                raise ValueError(
                    f"moment of an embedding must be the ({V_},) vector of token frequencies "
                    f"or a pair ((V,) row weights, (d, d) moment), got "
                    f"{getattr(moment, 'shape', type(moment).__name__)}"
                )
            # (d, V) orientation: U_lin = Vᵀ; the one-hot inputs' moment is diagonal
            lin = LowRankLinear.from_dense(W.T, None, rank, moment=moment, damp=damp)
        layer = cls(
            V_,
            d,
            rank,
            padding_idx=embedding.padding_idx,
            implementation=implementation,
            approximation_error=lin.approximation_error,
            device=W.device,
            dtype=W.dtype,
        )
        with torch.no_grad():
            layer.U.copy_(lin.V.T)
            layer.V.copy_(lin.U.T)
        return layer

    # -- CompressedModule interface ----------------------------------------------------
    methods = ("svd",)

    @classmethod
    def accepts(cls, module: nn.Module) -> bool:
        return isinstance(module, (nn.Embedding, LowRankEmbedding))

    @classmethod
    def plan(cls, module: nn.Module, settings: Any, *, name: str = "module") -> LayerPlan:
        where = f"module {name!r}"
        if settings.repeat > 1:
            raise ValueError(f"{where}: repeat={settings.repeat} applies to Kronecker methods")
        vocab, dim = int(module.num_embeddings), int(module.embedding_dim)
        rank = svd_rank(settings, vocab, dim, False, where)
        if isinstance(module, LowRankEmbedding) and rank >= module.rank:
            raise ValueError(
                f"{where}: svd rank {rank} must be below the current rank "
                f"{module.rank} to compress a LowRankEmbedding again"
            )
        return LayerPlan(
            layer=cls.__name__,
            in_features=vocab,
            out_features=dim,
            factors=f"rank {rank}",
            shape=None,
            rank=rank,
            permute="none",
            repeat=1,
            params_after=rank * (vocab + dim),
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
    ) -> LowRankEmbedding:
        plan = cls.plan(module, settings, name=name or "module")
        dense = module.to_embedding() if isinstance(module, LowRankEmbedding) else module
        return cls.from_embedding(
            dense, plan.rank, implementation=settings.implementation, moment=moment, damp=damp
        )

    @property
    def rank(self) -> int:
        return int(self.U.shape[1])

    def extra_repr(self) -> str:
        return (
            f"{self.num_embeddings}, {self.embedding_dim}, rank={self.rank}, "
            f"params={self.n_params}, dense_params={self.num_embeddings * self.embedding_dim}"
        )

    def _spec_values(self) -> dict[str, Any]:
        return {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "rank": self.rank,
            "padding_idx": self.padding_idx,
            "implementation": self.implementation,
        }

    def to_dense(self) -> torch.Tensor:
        return self.U @ self.V

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.linear(F.embedding(input_ids, self.U, self.padding_idx), self.V.T)

    def attend(self, h: torch.Tensor) -> torch.Tensor:
        """Logits ``h · Eᵀ = (h Vᵀ) Uᵀ`` without forming E."""
        if self.implementation == "reconstructed":
            return F.linear(h, self.to_dense())
        return F.linear(F.linear(h, self.V), self.U)
