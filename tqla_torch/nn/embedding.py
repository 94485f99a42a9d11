"""Compressed embeddings and the LM head tied to them.

* :class:`KroneckerEmbedding` — a V×d embedding stored as ``(V×d/k) ⊗ (1×k)`` with a
  column permutation, compressible again (levels nest).
* (:class:`~tqla_torch.nn.lowrank.LowRankEmbedding`, the truncated-SVD baseline, lives with
  the other low-rank layers.)
* :class:`TiedEmbeddingHead` — an LM head tied to a compressed embedding: logits ``h·Eᵀ``
  through the embedding's factors, never materialising E.

Shapes of a config are stated on the table (V×d; the in×out orientation of a lookup).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tqla.kron import KroneckerShape
from tqla_torch.nn.base import (
    EmbeddingBase,
    LayerPlan,
    as_perm,
    check_padding_idx,
    check_pos_int,
    inverse_perm,
    relative_error,
    seed_for,
)
from tqla_torch.nn._embedding_fit import permuted_table_fit
from tqla_torch.nn.kronecker import KRON_METHODS, kron_decompose
from tqla_torch.nn.weights import resolve_out_in, weight_view

__all__ = ["KroneckerEmbedding", "TiedEmbeddingHead"]

# Config sides that permute an embedding's feature columns (its output side).
_FEATURE_SIDES = {"rows": True, "both": True, "none": False}


# --------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------
class KroneckerEmbedding(EmbeddingBase):
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
        implementation: str = "factorized",
        approximation_error: float | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(implementation=implementation, approximation_error=approximation_error)
        factory = {"device": device, "dtype": dtype}
        self.num_embeddings = check_pos_int(num_embeddings, "num_embeddings")
        self.embedding_dim = check_pos_int(embedding_dim, "embedding_dim")
        ks = [check_pos_int(k, "factors[i]") for k in factors]
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
        self.padding_idx = check_padding_idx(padding_idx, self.num_embeddings)
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
    # Over ~80 lines: validation of the embedding and of the (possibly nested) plan, then one
    # fit per level; each branch names its rule in its error message.
    @classmethod
    def from_embedding(
        cls,
        embedding: nn.Module,
        k: int = 2,
        *,
        method: str = "permuted_kron",
        permute: bool | None = None,
        implementation: str | None = None,
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
        k = check_pos_int(k, "k")
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
        if method == "permuted_kron" and permute:
            # permuted_kron's iterations on the d×d Gram matrix of the table's columns
            # (one pass over the table instead of one per step; _embedding_fit.py)
            A, B, cp, err = permuted_table_fit(
                base, k, rule=rule, n_iter=n_iter, tol=tol, n_restarts=n_restarts, seed=seed
            )
        else:
            A, B, _rp, cp, err = kron_decompose(
                base,
                shape,
                1,
                method=method,
                permute="cols" if permute else "none",
                rule=rule,
                n_iter=n_iter,
                tol=tol,
                n_restarts=n_restarts,
                seed=seed,
            )
        ks = [k] + [int(b.shape[1]) for b, _ in levels]
        cp = as_perm(cp, d, "col_perm", base.device)
        perms = [cp] + [p for _, p in levels]
        layer = cls(
            V,
            d * math.prod(ks[1:]),
            ks,
            permute=[p is not None for p in perms],
            padding_idx=padding_idx,
            implementation=impl if implementation is None else implementation,
            approximation_error=err,
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
        return layer

    # -- CompressedModule interface ----------------------------------------------------
    methods = KRON_METHODS

    @classmethod
    def accepts(cls, module: nn.Module) -> bool:
        return isinstance(module, (nn.Embedding, KroneckerEmbedding))

    @classmethod
    def plan(cls, module: nn.Module, settings: Any, *, name: str = "module") -> LayerPlan:
        """Levels, shapes and parameter count of ``module`` under ``settings`` (no fitting).

        The table (a dense embedding's weight, or a KroneckerEmbedding's innermost table)
        is d×V in the out×in orientation of the config; it is factored ``settings.repeat``
        times by ``b_shape = [k, 1]`` (the V×d table by 1×k).
        """
        where = f"module {name!r}"
        prev = module.level_factors if isinstance(module, KroneckerEmbedding) else []
        table = module.table if prev else weight_view(module).weight
        vocab, width = (int(v) for v in table.shape)
        shape = resolve_out_in(
            width, vocab, shape=settings.shape, b_shape=settings.b_shape, where=where
        )
        if shape.n2 != 1:
            raise ValueError(
                f"{where}: embeddings take B factors of shape [k, 1] (the d×V matrix → "
                f"(d/k)×V ⊗ k×1), got B {shape.b}"
            )
        if settings.rank != 1:
            raise ValueError(
                f"{where}: embeddings are compressed at rank 1, got rank={settings.rank}"
            )
        if settings.permute not in _FEATURE_SIDES:
            raise ValueError(
                f"{where}: permute={settings.permute!r} would permute the vocabulary, which a "
                f"1×k factor makes useless; use 'rows' (the feature side) or 'none'"
            )
        k, chain = shape.m2, []
        for _ in range(settings.repeat):
            if width % k or width == k:
                raise ValueError(
                    f"{where}: factoring the table {vocab}×{width} by 1×{k} needs {k} to "
                    f"divide {width} and leave at least 2 columns (repeat={settings.repeat})"
                )
            width //= k
            chain.append(k)
        levels = chain + prev
        return LayerPlan(
            layer=cls.__name__,
            in_features=vocab,
            out_features=width * math.prod(levels),
            factors=f"{width}×{vocab}" + "".join(f" ⊗ {k_}×1" for k_ in levels),
            shape=[[width, vocab], [k, 1]],
            rank=1,
            permute="rows" if _FEATURE_SIDES[settings.permute] else "none",
            repeat=settings.repeat,
            params_after=vocab * width + sum(levels),
        )

    @classmethod
    def from_module(cls, module: nn.Module, settings: Any, *, name: str = "") -> KroneckerEmbedding:
        """Factor ``module``'s table ``settings.repeat`` times (see :meth:`plan`).

        With ``repeat > 1`` the approximation error is that of all steps together.
        """
        plan = cls.plan(module, settings, name=name or "module")
        new = module
        for step in range(settings.repeat):
            new = cls.from_embedding(
                new,
                plan.shape[1][0],
                method=settings.method,
                permute=plan.permute != "none",
                implementation=settings.implementation,
                rule=settings.rule,
                n_iter=settings.n_iter,
                tol=settings.tol,
                n_restarts=settings.n_restarts,
                seed=seed_for(settings.seed, f"{name}#{step}" if step else name),
            )
        if settings.repeat > 1:
            ref = module.to_dense() if isinstance(module, KroneckerEmbedding) else module.weight
            ids = torch.arange(new.num_embeddings, device=ref.device)
            # rows by lookup, block by block: the dense approximation is never formed
            new.approximation_error = relative_error(lambda i, j: new(ids[i:j]), ref)
        return new

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

    def _spec_values(self) -> dict[str, Any]:
        return {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "factors": self.level_factors,
            "permute": [self._perm(i) is not None for i in range(self.n_levels)],
            "padding_idx": self.padding_idx,
            "implementation": self.implementation,
        }

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
                h = h.index_select(-1, inverse_perm(p))
            b = self.factors[level][0]
            h = torch.matmul(h.unflatten(-1, (-1, b.shape[0])), b)
        return F.linear(h, self.table)


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
