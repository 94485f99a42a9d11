"""Tensor-train layers: :class:`TTLinear` and :class:`TTConv2d` (methods.md §5).

* :class:`TTLinear` — a ``torch.nn.Linear`` (or GPT-2 ``Conv1D``) whose (out, in) weight is a
  TT-matrix with cores G_k of shape (r_{k−1}, m_k, n_k, r_k), out = Π m_k, in = Π n_k
  (:func:`tqla.tt_matrix`).  The forward pass contracts the tokens with one core at a time,
  in the order with fewer multiply-adds (:meth:`TTLinear.matmat_costs`), never forming W.
* :class:`TTConv2d` — a ``torch.nn.Conv2d`` whose kernel (out, in, kh, kw) is the TT-matrix
  of out × (in·kh·kw) with row modes (m_1, …, m_d, 1) and column modes (n_1, …, n_d, kh·kw):
  the channels are tensorised, the kernel window is kept as one mode (the last core).  The
  forward pass is a depthwise convolution with the window core (in·r_d channels) followed by
  the channel cores as a TT-matrix product.

Ranks are explicit per layer (an int for every bond, or the list of inner ranks), so a rank
allocation (LWIQ, budgets) can set them layer by layer; ``eps`` chooses them from the
weight instead, and :func:`tt_rank_for_budget` finds the uniform rank nearest a parameter
budget.  :func:`tt_modes` is the default rule that splits a dimension into d balanced modes,
which fits every model size; both, and the torch contraction, live in
:mod:`tqla_torch.nn._tt_forward`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import tqla
from tqla.tt import check_modes
from tqla_torch.nn._tt_forward import (
    _check_layer_ranks,
    _costs,
    _dense,
    _fit_cores,
    _params,
    tt_forward,
    tt_modes,
    tt_rank_for_budget,
)
from tqla_torch.nn.base import (
    CompressedModule,
    LayerPlan,
    LinearBase,
    check_linear_repeat,
    check_pos_int,
    check_source,
)
from tqla_torch.nn.weights import weight_view

__all__ = ["TTConv2d", "TTLinear", "tt_forward", "tt_modes", "tt_rank_for_budget"]


def _load_fitted(layer: Any, cores: list, bias: torch.Tensor | None) -> Any:
    """``layer`` with its cores (and bias, if any) set to the fitted values."""
    with torch.no_grad():
        for P, G in zip(layer.cores, cores):
            P.copy_(G)
        if bias is not None:
            layer.bias.copy_(bias.detach())
    return layer


# --------------------------------------------------------------------------------------
# TTLinear
# --------------------------------------------------------------------------------------
class TTLinear(LinearBase):
    """A linear layer whose (out, in) weight is a TT-matrix.

    Parameters
    ----------
    in_features, out_features : int
    row_modes, col_modes : sequences of d ints
        out = Π row_modes, in = Π col_modes.
    ranks : int or sequence of int
        The d−1 inner ranks (or d+1 with the boundary 1s); an int is capped at each bond's
        bound.
    bias : bool
    implementation : {"factorized", "reconstructed"}
        Core-by-core contraction (never forms W) or ``F.linear`` with the rebuilt W.
    source : {"linear", "conv1d"}
    approximation_error : float, optional
    device, dtype : optional

    Examples
    --------
    >>> import torch
    >>> lin = torch.nn.Linear(12, 8)
    >>> tt = TTLinear.from_linear(lin, row_modes=(2, 4), col_modes=(3, 4), ranks=4)
    >>> tt.ranks, tt.n_params, tt(torch.ones(5, 12)).shape
    ((1, 4, 1), 96, torch.Size([5, 8]))
    """

    methods = ("tt",)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        row_modes: Any,
        col_modes: Any,
        ranks: Any,
        bias: bool = True,
        *,
        implementation: str = "factorized",
        source: str = "linear",
        approximation_error: float | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(implementation=implementation, approximation_error=approximation_error)
        self.in_features = check_pos_int(in_features, "in_features")
        self.out_features = check_pos_int(out_features, "out_features")
        self.row_modes = check_modes(row_modes, "row_modes", self.out_features)
        self.col_modes = check_modes(col_modes, "col_modes", self.in_features)
        if len(self.row_modes) != len(self.col_modes):
            raise ValueError(
                f"row_modes {self.row_modes} and col_modes {self.col_modes} must have the same "
                f"length (one pair per core)"
            )
        full = _check_layer_ranks(ranks, self.row_modes, self.col_modes)
        self.source = check_source(source)
        factory = {"device": device, "dtype": dtype}
        self.cores = nn.ParameterList(
            nn.Parameter(torch.empty((full[k], m, n, full[k + 1]), **factory))
            for k, (m, n) in enumerate(zip(self.row_modes, self.col_modes))
        )
        self._init_bias(bias, self.out_features, factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random cores whose product has ``nn.Linear``'s weight variance 1/(3·in)."""
        d = len(self.cores)
        # Var(W) = Π_k (r_k · σ_k²) over the contracted ranks: equal per-core variances
        var_w = 1.0 / (3.0 * self.in_features)
        inner = math.prod(self.ranks[1:-1])
        std = (var_w / inner) ** (0.5 / d)
        with torch.no_grad():
            for G in self.cores:
                nn.init.normal_(G, std=std)
            self._reset_bias(self.in_features)

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_dense(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        row_modes: Any = None,
        col_modes: Any = None,
        *,
        ranks: Any = None,
        eps: float | None = None,
        d: int = 3,
        implementation: str = "factorized",
        source: str = "linear",
        moment: torch.Tensor | None = None,
        damp: float = 0.0,
    ) -> TTLinear:
        """TT-SVD of an (out, in) weight (:func:`tqla.tt_matrix`, in float64).

        Modes default to :func:`tt_modes` of out and in with ``d`` cores; give ``ranks`` or
        ``eps`` (not both; neither is exact).  With ``moment`` (the in×in second moment of
        the inputs) the fit is activation-aware (:func:`tqla.whitened_tt_matrix`, damped by
        ``damp``; ``eps`` is then relative to the whitened norm).
        """
        out_f, in_f = (int(v) for v in weight.shape)
        rm = tt_modes(out_f, d) if row_modes is None else row_modes
        cm = tt_modes(in_f, d) if col_modes is None else col_modes
        cores, err = _fit_cores(weight, rm, cm, ranks, eps, moment, damp)
        layer = cls(
            in_f,
            out_f,
            rm,
            cm,
            [int(G.shape[3]) for G in cores[:-1]],
            bias=bias is not None,
            implementation=implementation,
            source=source,
            approximation_error=err,
            device=weight.device,
            dtype=weight.dtype,
        )
        return _load_fitted(layer, cores, bias)

    @classmethod
    def from_linear(
        cls,
        linear: nn.Module,
        row_modes: Any = None,
        col_modes: Any = None,
        *,
        ranks: Any = None,
        eps: float | None = None,
        d: int = 3,
        implementation: str = "factorized",
        moment: torch.Tensor | None = None,
        damp: float = 0.0,
    ) -> TTLinear:
        """Compress a ``torch.nn.Linear`` or transformers ``Conv1D`` (modes: out×in weight;
        ``moment``/``damp``: see :meth:`from_dense`)."""
        v = weight_view(linear)
        if v.kind == "embedding":
            raise TypeError("TTLinear compresses Linear and Conv1D layers, not embeddings")
        return cls.from_dense(
            v.weight_out_in,
            v.bias,
            row_modes,
            col_modes,
            ranks=ranks,
            eps=eps,
            d=d,
            implementation=implementation,
            source=v.kind,
            moment=moment,
            damp=damp,
        )

    from_conv1d = from_linear

    # -- CompressedModule interface ----------------------------------------------------
    @classmethod
    def _resolve(cls, out_f: int, in_f: int, bias: int, settings: Any, where: str):
        """(row_modes, col_modes, ranks or None, eps or None) from ``settings``."""
        d = getattr(settings, "tt_cores", None) or 3
        modes = getattr(settings, "tt_modes", None)
        if modes is not None:
            rm, cm = modes
        else:
            rm, cm = tt_modes(out_f, d), tt_modes(in_f, d)
        try:
            rm = check_modes(rm, f"{where}: tt_modes rows", out_f)
            cm = check_modes(cm, f"{where}: tt_modes cols", in_f)
        except ValueError as err:
            raise ValueError(str(err)) from None
        if len(rm) != len(cm):
            raise ValueError(f"{where}: tt_modes rows {rm} and cols {cm} differ in length")
        eps = getattr(settings, "eps", None)
        ranks = getattr(settings, "tt_ranks", None)
        if ranks is None and settings.rank is not None:
            ranks = settings.rank
        if ranks is None and eps is None:
            if settings.n_params is None:
                raise ValueError(f"{where}: method 'tt' needs rank, tt_ranks, n_params or eps")
            ranks = tt_rank_for_budget(rm, cm, settings.n_params - bias)
        if ranks is not None:
            try:
                ranks = _check_layer_ranks(ranks, rm, cm)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
        return rm, cm, ranks, eps

    @classmethod
    def plan(cls, module: nn.Module, settings: Any, *, name: str = "module") -> LayerPlan:
        where = f"module {name!r}"
        check_linear_repeat(settings, where)
        v = weight_view(module)
        bias = 0 if v.bias is None else v.bias.numel()
        rm, cm, ranks, eps = cls._resolve(v.out_features, v.in_features, bias, settings, where)
        if ranks is None:  # eps: the ranks come from the weight (this plan fits it)
            T = tqla.tt_matrix(v.weight_out_in.detach().double(), rm, cm, eps=eps)
            ranks = T.ranks
        return LayerPlan(
            layer=cls.__name__,
            in_features=v.in_features,
            out_features=v.out_features,
            factors=f"TT {'·'.join(map(str, rm))} × {'·'.join(map(str, cm))}, "
            f"ranks {'-'.join(map(str, ranks))}",
            shape=None,
            rank=max(ranks),
            permute="none",
            repeat=1,
            params_after=_params(rm, cm, ranks) + bias,
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
    ) -> TTLinear:
        where = f"module {name or 'module'!r}"
        v = weight_view(module)
        bias = 0 if v.bias is None else v.bias.numel()
        rm, cm, ranks, eps = cls._resolve(v.out_features, v.in_features, bias, settings, where)
        return cls.from_linear(
            module, rm, cm, ranks=ranks, eps=eps, implementation=settings.implementation,
            moment=moment, damp=damp,
        )

    # -- structure ---------------------------------------------------------------------
    @property
    def ranks(self) -> tuple[int, ...]:
        return (1, *(int(G.shape[3]) for G in self.cores))

    def matmat_costs(self, k: int = 1) -> tuple[int, int]:
        """Multiply-adds of the forward on k tokens: (left_first, right_first)."""
        return _costs(self.row_modes, self.col_modes, self.ranks, int(k))

    def order(self, k: int = 1) -> str:
        """The contraction order the forward uses for k tokens."""
        a, b = self.matmat_costs(k)
        return "left_first" if a <= b else "right_first"

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"row_modes={self.row_modes}, col_modes={self.col_modes}, ranks={self.ranks}, "
            f"params={self.n_params}, implementation={self.implementation}"
        )

    def _spec_values(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "row_modes": list(self.row_modes),
            "col_modes": list(self.col_modes),
            "ranks": list(self.ranks),
            "bias": self.bias is not None,
            "implementation": self.implementation,
            "source": self.source,
        }

    def to_dense(self) -> torch.Tensor:
        """The (out, in) weight (differentiable)."""
        return _dense(list(self.cores))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.implementation == "reconstructed":
            return F.linear(x, self.to_dense(), self.bias)
        lead = x.shape[:-1]
        y = tt_forward(list(self.cores), x.reshape(-1, self.in_features), bias=self.bias)
        return y.reshape(*lead, self.out_features)


# --------------------------------------------------------------------------------------
# TTConv2d
# --------------------------------------------------------------------------------------
def _pair(v: Any, name: str) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    try:
        a, b = v
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}") from None
    return (int(a), int(b))


class TTConv2d(CompressedModule):
    """A ``Conv2d`` whose kernel is a TT-matrix over the channels, the window one mode.

    The kernel (out, in, kh, kw) flattened to out × (in·kh·kw) is a TT-matrix with row
    modes (m_1, …, m_d, 1) and column modes (n_1, …, n_d, kh·kw): d channel cores and a
    last core of shape (r_d, 1, kh·kw, 1) for the window.  ``ranks`` are the d inner ranks
    (the last one, r_d ≤ kh·kw, links the channels to the window).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding, dilation : int or pair
    row_modes, col_modes : sequences of d ints
        out_channels = Π row_modes, in_channels = Π col_modes.
    ranks : int or sequence of d ints
    bias : bool
    implementation : {"factorized", "reconstructed"}
        Depthwise window convolution then the channel cores (never forms the kernel), or
        ``F.conv2d`` with the rebuilt kernel.

    Examples
    --------
    >>> import torch
    >>> conv = torch.nn.Conv2d(8, 16, 3, padding=1)
    >>> tt = TTConv2d.from_conv2d(conv, row_modes=(4, 4), col_modes=(2, 4), ranks=[4, 3])
    >>> tt(torch.ones(2, 8, 5, 5)).shape, tt.ranks
    (torch.Size([2, 16, 5, 5]), (1, 4, 3, 1))
    """

    methods = ("tt",)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        row_modes: Any,
        col_modes: Any,
        ranks: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        bias: bool = True,
        *,
        implementation: str = "factorized",
        approximation_error: float | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(implementation=implementation, approximation_error=approximation_error)
        self.in_channels = check_pos_int(in_channels, "in_channels")
        self.out_channels = check_pos_int(out_channels, "out_channels")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        rm = check_modes(row_modes, "row_modes", self.out_channels)
        cm = check_modes(col_modes, "col_modes", self.in_channels)
        if len(rm) != len(cm):
            raise ValueError(f"row_modes {rm} and col_modes {cm} must have the same length")
        self.row_modes, self.col_modes = rm, cm
        win = self.kernel_size[0] * self.kernel_size[1]
        full = _check_layer_ranks(ranks, (*rm, 1), (*cm, win))
        factory = {"device": device, "dtype": dtype}
        shapes = [
            (full[k], m, n, full[k + 1]) for k, (m, n) in enumerate(zip((*rm, 1), (*cm, win)))
        ]
        self.cores = nn.ParameterList(nn.Parameter(torch.empty(s, **factory)) for s in shapes)
        self._init_bias(bias, self.out_channels, factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        d = len(self.cores)
        std = (1.0 / (3.0 * fan_in) / math.prod(self.ranks[1:-1])) ** (0.5 / d)
        with torch.no_grad():
            for G in self.cores:
                nn.init.normal_(G, std=std)
            self._reset_bias(fan_in)

    @classmethod
    def from_conv2d(
        cls,
        conv: nn.Conv2d,
        row_modes: Any = None,
        col_modes: Any = None,
        *,
        ranks: Any = None,
        eps: float | None = None,
        d: int = 2,
        implementation: str = "factorized",
    ) -> TTConv2d:
        """TT-SVD of a ``Conv2d`` kernel (groups = 1, zero padding)."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv must be a torch.nn.Conv2d, got {type(conv).__name__}")
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(
                "TTConv2d supports groups=1, padding_mode='zeros' and numeric padding, got "
                f"groups={conv.groups}, padding_mode={conv.padding_mode!r}, "
                f"padding={conv.padding!r}"
            )
        out_c, in_c, kh, kw = (int(v) for v in conv.weight.shape)
        rm = tt_modes(out_c, d) if row_modes is None else tuple(row_modes)
        cm = tt_modes(in_c, d) if col_modes is None else tuple(col_modes)
        W = conv.weight.detach().reshape(out_c, in_c * kh * kw)
        cores, err = _fit_cores(W, (*rm, 1), (*cm, kh * kw), ranks, eps)
        layer = cls(
            in_c,
            out_c,
            (kh, kw),
            rm,
            cm,
            [int(G.shape[3]) for G in cores[:-1]],
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            bias=conv.bias is not None,
            implementation=implementation,
            approximation_error=err,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        return _load_fitted(layer, cores, conv.bias)

    @classmethod
    def accepts(cls, module: nn.Module) -> bool:
        return (
            isinstance(module, nn.Conv2d)
            and module.groups == 1
            and module.padding_mode == "zeros"
            and not isinstance(module.padding, str)
        )

    @classmethod
    def _resolve(cls, conv: nn.Conv2d, settings: Any, where: str):
        out_c, in_c, kh, kw = (int(v) for v in conv.weight.shape)
        d = getattr(settings, "tt_cores", None) or 2
        modes = getattr(settings, "tt_modes", None)
        rm, cm = modes if modes is not None else (tt_modes(out_c, d), tt_modes(in_c, d))
        rm = check_modes(rm, f"{where}: tt_modes rows", out_c)
        cm = check_modes(cm, f"{where}: tt_modes cols", in_c)
        eps = getattr(settings, "eps", None)
        ranks = getattr(settings, "tt_ranks", None)
        if ranks is None and settings.rank is not None:
            ranks = settings.rank
        frm, fcm = (*rm, 1), (*cm, kh * kw)
        if ranks is None and eps is None:
            if settings.n_params is None:
                raise ValueError(f"{where}: method 'tt' needs rank, tt_ranks, n_params or eps")
            ranks = tt_rank_for_budget(
                frm, fcm, settings.n_params - (0 if conv.bias is None else out_c)
            )
        if ranks is not None:
            try:
                ranks = _check_layer_ranks(ranks, frm, fcm)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
        return rm, cm, ranks, eps

    @classmethod
    def plan(cls, module: nn.Module, settings: Any, *, name: str = "module") -> LayerPlan:
        where = f"module {name!r}"
        out_c, in_c, kh, kw = (int(v) for v in module.weight.shape)
        rm, cm, ranks, eps = cls._resolve(module, settings, where)
        if ranks is None:
            W = module.weight.detach().double().reshape(out_c, -1)
            ranks = tqla.tt_matrix(W, (*rm, 1), (*cm, kh * kw), eps=eps).ranks
        bias = 0 if module.bias is None else module.bias.numel()
        return LayerPlan(
            layer=cls.__name__,
            in_features=in_c * kh * kw,
            out_features=out_c,
            factors=f"TT {'·'.join(map(str, rm))} × {'·'.join(map(str, cm))} × window {kh}×{kw}, "
            f"ranks {'-'.join(map(str, ranks))}",
            shape=None,
            rank=max(ranks),
            permute="none",
            repeat=1,
            params_after=_params((*rm, 1), (*cm, kh * kw), ranks) + bias,
        )

    @classmethod
    def from_module(cls, module: nn.Module, settings: Any, *, name: str = "") -> TTConv2d:
        rm, cm, ranks, eps = cls._resolve(module, settings, f"module {name or 'module'!r}")
        return cls.from_conv2d(
            module, rm, cm, ranks=ranks, eps=eps, implementation=settings.implementation
        )

    @property
    def ranks(self) -> tuple[int, ...]:
        return (1, *(int(G.shape[3]) for G in self.cores))

    def _spec_values(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "row_modes": list(self.row_modes),
            "col_modes": list(self.col_modes),
            "ranks": list(self.ranks),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "dilation": list(self.dilation),
            "bias": self.bias is not None,
            "implementation": self.implementation,
        }

    def to_dense(self) -> torch.Tensor:
        """The (out, in, kh, kw) kernel (differentiable)."""
        return _dense(list(self.cores)).reshape(
            self.out_channels, self.in_channels, *self.kernel_size
        )

    def to_conv2d(self) -> nn.Conv2d:
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            bias=self.bias is not None,
            device=self.cores[0].device,
            dtype=self.cores[0].dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(self.to_dense())
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.implementation == "reconstructed":
            return F.conv2d(x, self.to_dense(), self.bias, self.stride, self.padding, self.dilation)
        kh, kw = self.kernel_size
        win = self.cores[-1]  # (r_d, 1, kh·kw, 1)
        rd = int(win.shape[0])
        g = win.reshape(rd, 1, kh, kw).repeat(self.in_channels, 1, 1, 1)  # (in·r_d, 1, kh, kw)
        z = F.conv2d(x, g, None, self.stride, self.padding, self.dilation, groups=self.in_channels)
        B, _, H, W = z.shape
        z = z.permute(0, 2, 3, 1).reshape(-1, self.in_channels * rd)  # channel (c, r)
        chan = list(self.cores[:-1])
        last = chan[-1]
        r, m, n, _ = last.shape
        chan[-1] = last.reshape(r, m, n * rd, 1)  # the window's rank joins the last column mode
        y = tt_forward(chan, z)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(B, H, W, self.out_channels).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, row_modes={self.row_modes}, "
            f"col_modes={self.col_modes}, ranks={self.ranks}, params={self.n_params}"
        )
