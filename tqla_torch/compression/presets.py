"""Named compression configs: the published TQCompressedGPT-2 plan and its baselines.

:data:`presets` (also importable one by one) reproduces the published plan and two
baselines at (near-)equal parameter count:

* :func:`tq_gpt2` — TQCompressedGPT-2: the token embedding halved twice
  (``1×2`` column factors, column permutations), the MLPs of the odd blocks at rank 4 with
  row and column permutations.  On GPT-2 small: 81,336,388 parameters with the LM head
  tied to the compressed embedding, 119,933,764 with the untied head the published model
  kept (``tie_lm_head=False``).
* :func:`kron_gpt2` — the same factors without permutations (:func:`tqla.kron_svd`).
* :func:`svd_gpt2` — truncated SVD of the same modules, ranks chosen per module to match the
  Kronecker parameter counts as closely as possible.

Each has a ``*_steps`` variant returning the published recipe's three stages (embedding,
MLPs, embedding again) as separate configs for stage-wise distillation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tqla_torch.compression.auto import auto_svd, auto_tt
from tqla_torch.compression.config import CompressionConfig, _v_pos_int
from tqla_torch.nn.lowrank import low_rank_for_budget

__all__ = [
    "kron_gpt2",
    "kron_gpt2_steps",
    "presets",
    "svd_gpt2",
    "svd_gpt2_steps",
    "tq_gpt2",
    "tq_gpt2_steps",
]

# --------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------
_EMB = r"transformer\.wte"


def _blocks_regex(blocks: str | Sequence[int]) -> str:
    if blocks == "odd":
        return r"\d*[13579]"
    if blocks == "even":
        return r"\d*[02468]"
    if blocks == "all":
        return r"\d+"
    if isinstance(blocks, str) or not isinstance(blocks, Sequence) or not blocks:
        raise ValueError(
            f"blocks must be 'odd', 'even', 'all' or a list of indices, got {blocks!r}"
        )
    idx = [_v_pos_int("blocks[i]", b, allow_none=False, minimum=0) for b in blocks]
    return "(?:" + "|".join(str(i) for i in sorted(set(idx))) + ")"


def _mlp_regex(blocks: str | Sequence[int]) -> str:
    return rf"transformer\.h\.{_blocks_regex(blocks)}\.mlp\.(?:c_fc|c_proj)"


def _kron_config(
    target: str,
    *,
    method: str,
    embedding: bool,
    mlp: bool,
    emb_repeat: int,
    rank: int,
    tie_lm_head: bool,
    implementation: str,
    opts: dict[str, Any],
) -> CompressionConfig:
    overrides: dict[str, dict[str, Any]] = {}
    if embedding:
        overrides[_EMB] = {"b_shape": [2, 1], "rank": 1, "repeat": emb_repeat}
        if method == "permuted_kron":
            overrides[_EMB]["permute"] = "rows"
    if mlp:
        overrides[r"mlp\.c_fc"] = {"b_shape": [4, 2]}  # published: A 384×768 ⊗ B 2×4, in×out
        overrides[r"mlp\.c_proj"] = {"b_shape": [2, 4]}
    return CompressionConfig(
        target_modules=target,
        method=method,
        rank=rank,
        permute="both" if method == "permuted_kron" else "none",
        tie_lm_head=tie_lm_head,
        implementation=implementation,
        overrides=overrides,
        **opts,
    )


def _check_gpt2_opts(method: str, opts: dict[str, Any]) -> dict[str, Any]:
    known = {"rule", "n_iter", "tol", "n_restarts", "seed"}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise ValueError(f"unknown preset options {unknown}; known: {sorted(known)}")
    if method == "kron":
        extra = sorted(k for k in opts if k != "seed" and opts[k] is not None)
        if extra:
            raise ValueError(f"kron presets have no permutation options, got {extra}")
        return {k: v for k, v in opts.items() if k == "seed"}
    return opts


def tq_gpt2(
    *,
    blocks: str | Sequence[int] = "odd",
    rank: int = 4,
    tie_lm_head: bool = True,
    implementation: str = "factorized",
    **opts: Any,
) -> CompressionConfig:
    """The published TQCompressedGPT-2 plan, for any GPT-2 size (``docs/torch.md``, "Presets").

    ``transformer.wte``: the table V×d → V×(d/2) ⊗ 1×2 (``b_shape=[2, 1]`` on the out×in
    d×V matrix), twice (``repeat=2``), rank 1, feature permutations; ``mlp.c_fc`` of the
    chosen blocks: B 4×2 (A = out/4 × in/2; published as ``384×768 ⊗ 2×4`` on GPT-2's
    in×out storage), ``mlp.c_proj``: B 2×4, rank 4, row and column permutations.  Shapes are
    rules, so small GPT-2 configs work as long as d is divisible by 4.

    Parameters
    ----------
    blocks : "odd", "even", "all" or list of int, default "odd"
        Blocks whose MLPs are compressed (published: 1, 3, 5, 7, 9, 11).
    rank : int, default 4
        Kronecker rank of the MLP layers.
    tie_lm_head : bool, default True
        Keep the LM head tied (81,336,388 parameters on GPT-2 small) or give it an untied
        dense copy as the published model did (119,933,764).
    implementation : {"factorized", "reconstructed"}
    **opts
        ``rule``, ``n_iter``, ``tol``, ``n_restarts``, ``seed`` of :func:`tqla.permuted_kron`.

    Returns
    -------
    CompressionConfig

    Examples
    --------
    >>> cfg = tq_gpt2()
    >>> cfg.settings_for("transformer.h.3.mlp.c_proj").b_shape
    [2, 4]
    >>> cfg.matches("transformer.h.2.mlp.c_fc")
    False
    """
    opts = _check_gpt2_opts("permuted_kron", opts)
    target = rf"{_EMB}|{_mlp_regex(blocks)}"
    return _kron_config(
        target,
        method="permuted_kron",
        embedding=True,
        mlp=True,
        emb_repeat=2,
        rank=rank,
        tie_lm_head=tie_lm_head,
        implementation=implementation,
        opts=opts,
    )


def kron_gpt2(
    *,
    blocks: str | Sequence[int] = "odd",
    rank: int = 4,
    tie_lm_head: bool = True,
    implementation: str = "factorized",
    **opts: Any,
) -> CompressionConfig:
    """:func:`tq_gpt2`'s factors without permutations (:func:`tqla.kron_svd`, KnGPT-2-like).

    Same parameter count as :func:`tq_gpt2` (the permutations are buffers, not parameters).
    """
    opts = _check_gpt2_opts("kron", opts)
    return _kron_config(
        rf"{_EMB}|{_mlp_regex(blocks)}",
        method="kron",
        embedding=True,
        mlp=True,
        emb_repeat=2,
        rank=rank,
        tie_lm_head=tie_lm_head,
        implementation=implementation,
        opts=opts,
    )


def _steps(method: str, blocks, rank, tie_lm_head, implementation, opts) -> list[CompressionConfig]:
    common = {
        "method": method,
        "rank": rank,
        "tie_lm_head": tie_lm_head,
        "implementation": implementation,
        "opts": opts,
    }
    emb = _kron_config(_EMB, embedding=True, mlp=False, emb_repeat=1, **common)
    mlp = _kron_config(_mlp_regex(blocks), embedding=False, mlp=True, emb_repeat=1, **common)
    return [emb, mlp, CompressionConfig.from_dict(emb.to_dict())]


def tq_gpt2_steps(
    *,
    blocks: str | Sequence[int] = "odd",
    rank: int = 4,
    tie_lm_head: bool = True,
    implementation: str = "factorized",
    **opts: Any,
) -> list[CompressionConfig]:
    """:func:`tq_gpt2` as the published recipe's three stages.

    Returns
    -------
    list of CompressionConfig
        ``[embedding, mlp, embedding again]``: halve ``transformer.wte`` (1×2 column
        factor, column permutation), compress the MLPs, halve the embedding's table again.
        Applied in order they give the same structure and parameter count as
        :func:`tq_gpt2`.
    """
    opts = _check_gpt2_opts("permuted_kron", opts)
    return _steps("permuted_kron", blocks, rank, tie_lm_head, implementation, opts)


def kron_gpt2_steps(
    *,
    blocks: str | Sequence[int] = "odd",
    rank: int = 4,
    tie_lm_head: bool = True,
    implementation: str = "factorized",
    **opts: Any,
) -> list[CompressionConfig]:
    """:func:`kron_gpt2` as three stages (see :func:`tq_gpt2_steps`)."""
    opts = _check_gpt2_opts("kron", opts)
    return _steps("kron", blocks, rank, tie_lm_head, implementation, opts)


def _gpt2_dims(model_or_config: Any) -> tuple[int, int, int]:
    """(vocab, n_embd, n_inner) of a GPT-2 model or config (GPT-2 small when None)."""
    cfg = model_or_config
    if cfg is None:
        from transformers import GPT2Config

        cfg = GPT2Config()
    cfg = getattr(cfg, "config", cfg)
    try:
        vocab, d = int(cfg.vocab_size), int(cfg.n_embd)
    except AttributeError:
        raise ValueError(
            f"model_or_config must be a GPT-2 model or GPT2Config (vocab_size, n_embd), got "
            f"{type(model_or_config).__name__}"
        ) from None
    inner = getattr(cfg, "n_inner", None)
    return vocab, d, int(inner) if inner is not None else 4 * d


def _svd_ranks(model_or_config: Any, rank: int) -> dict[str, int]:
    """SVD ranks matching the tq_gpt2 parameter count of each module."""
    vocab, d, inner = _gpt2_dims(model_or_config)
    if d % 4 or inner % 4:
        raise ValueError(f"n_embd ({d}) and n_inner ({inner}) must be divisible by 4")
    emb2 = vocab * (d // 4) + 2 + 2
    emb1 = vocab * (d // 2) + 2
    fc = rank * ((d // 2) * (inner // 4) + 8) + inner
    proj = rank * ((inner // 4) * (d // 2) + 8) + d
    return {
        "wte": low_rank_for_budget(vocab, d, emb2, bias=False),
        "wte_step1": low_rank_for_budget(vocab, d, emb1, bias=False),
        "c_fc": low_rank_for_budget(d, inner, fc, bias=True),
        "c_proj": low_rank_for_budget(inner, d, proj, bias=True),
    }


def svd_gpt2(
    model_or_config: Any = None,
    *,
    blocks: str | Sequence[int] = "odd",
    rank: int = 4,
    tie_lm_head: bool = True,
    implementation: str = "factorized",
) -> CompressionConfig:
    """Low-rank (truncated SVD) baseline at :func:`tq_gpt2`'s parameter count.

    Compresses the same modules; each gets the SVD rank whose parameter count is nearest
    the Kronecker plan's for that module (c_fc and c_proj at Kronecker ``rank``, the
    embedding at its twice-halved size).  On GPT-2 small: embedding rank 189, c_fc and c_proj
    rank 307, 81,321,165 parameters with the head tied, 15,223 (0.019 %) fewer than
    :func:`tq_gpt2`.

    Parameters
    ----------
    model_or_config : GPT-2 model or GPT2Config, optional
        Sizes to match (GPT-2 small when None).
    blocks, rank, tie_lm_head, implementation
        As :func:`tq_gpt2`.
    """
    r = _svd_ranks(model_or_config, rank)
    return CompressionConfig(
        target_modules=rf"{_EMB}|{_mlp_regex(blocks)}",
        method="svd",
        tie_lm_head=tie_lm_head,
        implementation=implementation,
        overrides={
            _EMB: {"rank": r["wte"]},
            r"mlp\.c_fc": {"rank": r["c_fc"]},
            r"mlp\.c_proj": {"rank": r["c_proj"]},
        },
    )


def svd_gpt2_steps(
    model_or_config: Any = None,
    *,
    blocks: str | Sequence[int] = "odd",
    rank: int = 4,
    tie_lm_head: bool = True,
    implementation: str = "factorized",
) -> list[CompressionConfig]:
    """:func:`svd_gpt2` as three stages: the embedding at the rank matching one halving,
    the MLPs, then the embedding truncated again to :func:`svd_gpt2`'s rank."""
    r = _svd_ranks(model_or_config, rank)
    common = {"method": "svd", "tie_lm_head": tie_lm_head, "implementation": implementation}
    return [
        CompressionConfig(target_modules=_EMB, rank=r["wte_step1"], **common),
        CompressionConfig(
            target_modules=_mlp_regex(blocks),
            overrides={r"mlp\.c_fc": {"rank": r["c_fc"]}, r"mlp\.c_proj": {"rank": r["c_proj"]}},
            rank=r["c_fc"],
            **common,
        ),
        CompressionConfig(target_modules=_EMB, rank=r["wte"], **common),
    ]


class _Presets:
    """The named presets: ``presets.tq_gpt2()``, ``presets.get("svd_gpt2")(model)``, ...

    ``presets.names`` lists the single-config presets; each has a ``<name>_steps``
    variant (``presets.steps(name, ...)``) returning the three-stage recipe.
    """

    tq_gpt2 = staticmethod(tq_gpt2)
    tq_gpt2_steps = staticmethod(tq_gpt2_steps)
    kron_gpt2 = staticmethod(kron_gpt2)
    kron_gpt2_steps = staticmethod(kron_gpt2_steps)
    svd_gpt2 = staticmethod(svd_gpt2)
    svd_gpt2_steps = staticmethod(svd_gpt2_steps)
    names = ("tq_gpt2", "kron_gpt2", "svd_gpt2")
    # budget-driven presets: (model, *, budget, data) -> one config, no stages
    auto = ("auto_tt", "auto_svd")

    auto_svd = staticmethod(auto_svd)
    auto_tt = staticmethod(auto_tt)

    def get(self, name: str):
        """The preset function called ``name`` (a ``*_steps`` name gives the stages)."""
        known = list(self.names) + [f"{n}_steps" for n in self.names] + list(self.auto)
        if name not in known:
            raise ValueError(f"unknown preset {name!r}; known presets: {known}")
        return getattr(self, name)

    def steps(self, name: str, *args: Any, **kwargs: Any) -> list[CompressionConfig]:
        """The stage configs of preset ``name`` (``"tq_gpt2"`` → ``tq_gpt2_steps(...)``)."""
        return self.get(name.removesuffix("_steps") + "_steps")(*args, **kwargs)

    def __repr__(self) -> str:
        return f"presets({', '.join(self.names)})"


presets = _Presets()
