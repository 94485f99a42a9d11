"""Spreading module fits over the processes of a ``torch.distributed`` group (``torchrun``).

When a process group is initialised (``torchrun --nproc-per-node N ...`` and
``torch.distributed.init_process_group``), :func:`tqla_torch.compress` assigns the modules to
fit to the ranks by estimated cost (:func:`assign_lpt`: greedy longest-processing-time
first), each rank fits its own, and the fitted layers are sent to every rank
(:func:`fit_spread`): each rank ends with the same compressed model as a single process
would make, because every module's fit is seeded by its name only
(:func:`tqla_torch.nn.base.seed_for`).

Each process limits BLAS (threadpoolctl) and torch's intra-op threads to
``usable CPUs // world size`` while it fits, so that N processes on one machine do not
oversubscribe its cores.

Examples
--------
>>> assign_lpt([5.0, 1.0, 4.0, 3.0], 2)
[[0, 1], [2, 3]]
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "assign_lpt",
    "blas_share",
    "cpus_per_rank",
    "estimated_cost",
    "fit_spread",
    "pack",
    "packed_size",
    "unpack",
    "world",
]

logger = logging.getLogger(__name__)


def world() -> tuple[int, int]:
    """``(rank, world size)`` of the default process group, ``(0, 1)`` when none is initialised."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def assign_lpt(costs: Sequence[float], n_ranks: int) -> list[list[int]]:
    """Greedy longest-processing-time assignment of jobs to ``n_ranks`` workers.

    Jobs are taken by decreasing cost (ties by index) and each goes to the worker with the
    least total cost so far (ties: the lowest rank).  The result is deterministic, so every
    rank computes the same assignment independently.

    Parameters
    ----------
    costs : sequence of float
        Estimated cost of each job (non-negative).
    n_ranks : int
        Number of workers (>= 1).

    Returns
    -------
    list of list of int
        ``out[r]``: the indices of the jobs of rank ``r``, in increasing order.

    Raises
    ------
    ValueError
        If ``n_ranks`` is not a positive integer or a cost is negative or not finite.

    Examples
    --------
    >>> assign_lpt([1.0, 1.0, 1.0], 3)
    [[0], [1], [2]]
    """
    if isinstance(n_ranks, bool) or not isinstance(n_ranks, int) or n_ranks < 1:
        raise ValueError(f"n_ranks must be an integer >= 1, got {n_ranks!r}")
    costs = [float(c) for c in costs]
    if any(not (c >= 0.0 and c < float("inf")) for c in costs):
        raise ValueError(f"costs must be finite and non-negative, got {costs}")
    load = [0.0] * n_ranks
    out: list[list[int]] = [[] for _ in range(n_ranks)]
    for j in sorted(range(len(costs)), key=lambda j: (-costs[j], j)):
        r = min(range(n_ranks), key=lambda r: (load[r], r))
        load[r] += costs[j]
        out[r].append(j)
    return [sorted(js) for js in out]


# Seconds of one thread per unit of work, by the method of the fit (what LPT balances; only
# ratios matter): ``(matrix, table rows, table Gram)``.  A matrix M×N costs
# ``matrix · M·N·(M+N)`` (the cost matrices of the permutation searches, the refits); an
# embedding table V×d, per repetition on the width w it has then, ``rows · V·w + gram ·
# V·w²`` (passes over the table and its Gram matrix).  Fitted to the measured one-thread fit
# times of GPT-2-shaped modules by ``python benchmarks/bench_scaling.py costs``
# (benchmarks/results/scaling_costs_cpu.md); methods it does not measure take
# permuted_kron's constants (the dearest).
_COSTS: dict[str, tuple[float, float, float]] = {
    "permuted_kron": (1.07e-10, 6.75e-09, 2.54e-11),
    "kron": (2.3e-12, 1.02e-08, 2.56e-12),
    "svd": (2.23e-11, 1.43e-08, 4.73e-11),
}


def estimated_cost(report: Any, settings: Any) -> float:
    """Estimated seconds (one thread) of fitting one module, for balancing the ranks.

    A matrix M×N (Linear/Conv1D): ``c · M·N·(M+N)`` with ``c`` measured per method.  An
    embedding table V×d: each repetition on the width w the table has then (d, d/k, ...)
    costs ``a · V·w + b · V·w²``.  Times the restarts.  The constants are fitted to
    measured fit times (``benchmarks/bench_scaling.py costs``); on GPT-2 medium the token
    table costs about as much as one MLP matrix (the earlier model ``V·d²`` against
    ``M·N·(M+N)`` made it 5× dearer and left the ranks 27 / 34 CPU s apart).

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> mlp = NS(kind="Conv1D", out_features=4096, in_features=1024, method="permuted_kron")
    >>> wte = NS(kind="Embedding", out_features=1024, in_features=50257, method="permuted_kron")
    >>> s = NS(repeat=2, n_restarts=1, b_shape=[2, 1])
    >>> 0.5 < estimated_cost(wte, s) / estimated_cost(mlp, NS(n_restarts=1)) < 2
    True
    """
    rows, cols = float(report.out_features), float(report.in_features)
    method = str(getattr(report, "method", "") or getattr(settings, "method", ""))
    matrix, per_row, gram = _COSTS.get(method, _COSTS["permuted_kron"])
    restarts = max(1, int(getattr(settings, "n_restarts", 1) or 1))
    if getattr(report, "kind", "") == "Embedding":  # in = vocabulary, out = width
        k = _embedding_step(settings)
        width, cost = rows, 0.0
        for _ in range(max(1, int(getattr(settings, "repeat", 1) or 1))):
            cost += per_row * cols * width + gram * cols * width * width
            width = max(1.0, width / k)
        return cost * restarts
    return matrix * rows * cols * (rows + cols) * restarts


def _embedding_step(settings: Any) -> float:
    """The factor k by which one repetition narrows an embedding table (b_shape [k, 1])."""
    b = getattr(settings, "b_shape", None)
    try:
        return max(2.0, float(b[0]))
    except (TypeError, IndexError, ValueError):
        return 2.0


def cpus_per_rank() -> int:
    """CPUs each process of the group may keep busy: its usable CPUs divided by the number
    of processes on the same host whose CPU sets overlap its own (at least 1).

    Collective (every rank must call it) when a group is initialised.  Unpinned
    processes on one machine share its cores (2 ranks on 2 cores: 1 each); processes
    pinned to their own cores (``taskset``, ``numactl``) use all of theirs.
    """
    import socket

    from tqla.batch import _usable_cpus

    try:
        mine = frozenset(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        mine = frozenset(range(_usable_cpus()))
    rank, size = world()
    if size == 1:
        return max(1, len(mine))
    everyone: list[Any] = [None] * size
    torch.distributed.all_gather_object(everyone, (socket.gethostname(), sorted(mine)))
    host = socket.gethostname()
    sharing = sum(1 for h, cpus in everyone if h == host and mine & set(cpus))
    return max(1, len(mine) // max(1, sharing))


@contextlib.contextmanager
def blas_share(n: int) -> Iterator[int]:
    """Limit BLAS and torch intra-op threads to ``n`` (at least 1) inside the block (see
    :func:`cpus_per_rank`); yields that number."""
    from tqla.batch import _blas_threads

    n = max(1, int(n))
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with _blas_threads(n):
            yield n
    finally:
        torch.set_num_threads(before)


def check_world(n_jobs: int, what: str = "target modules") -> tuple[int, int]:
    """``(rank, world size)``, refusing a group larger than the number of jobs."""
    rank, size = world()
    if size > n_jobs:
        raise ValueError(
            f"the process group has {size} processes but the plan has only {n_jobs} {what}: "
            f"every process needs at least one; run with --nproc-per-node {n_jobs} or fewer "
            f"(or target more modules)"
        )
    return rank, size


def fit_spread(
    items: Sequence[Any], fit_some: Callable[[list[Any], int], list[nn.Module]]
) -> list[nn.Module]:
    """Fit ``items`` spread over the ranks and return every fitted layer on every rank.

    The items are assigned by :func:`assign_lpt` over :func:`estimated_cost`; each rank
    fits its share with :func:`cpus_per_rank` threads, then one ``all_gather_object``
    exchanges the layers' specs, report fields and tensor layouts (and any error), and each
    rank broadcasts all its tensors packed into one byte buffer: ``world size`` tensor
    collectives in all, whatever the number of modules.

    Parameters
    ----------
    items : sequence of apply._Item
        The resolved modules (the same list, in the same order, on every rank).
    fit_some : callable
        ``fit_some(sub_items, cpus)`` → fitted layers, run by each rank on its share with
        ``cpus`` the threads it may use.

    Returns
    -------
    list of torch.nn.Module
        The fitted layer of each item, in order, on the device of the item's module; the
        items' reports are filled in as by a single-process fit.

    Raises
    ------
    ValueError
        If the group has more processes than items.
    tqla_torch.CompressionError
        On every rank, naming the module, if the fit of any module failed on any rank.
    """
    from tqla_torch.compression.apply import CompressionError

    rank, size = check_world(len(items))
    costs = [estimated_cost(it.report, it.settings) for it in items]
    shares = assign_lpt(costs, size)
    mine = shares[rank]
    cpus = cpus_per_rank()
    t0, c0 = time.perf_counter(), time.process_time()
    fitted: dict[int, nn.Module] = {}
    error: str | None = None
    with blas_share(cpus):
        try:
            fitted = dict(zip(mine, fit_some([items[i] for i in mine], cpus)))
        except Exception as err:  # reported to every rank below, then raised everywhere
            error = str(err)
    t1, c1 = time.perf_counter(), time.process_time()
    headers: list[Any] = [None] * size
    mine_header = (error, [_header(items[i], fitted[i]) for i in mine] if error is None else [])
    torch.distributed.all_gather_object(headers, mine_header)
    failed = [e for e, _ in headers if e is not None]
    if failed:
        raise CompressionError(failed[0])
    out: list[nn.Module | None] = [fitted.get(i) for i in range(len(items))]
    for src, (_, hs) in enumerate(headers):
        layers = [fitted[i] for i in shares[src]] if src == rank else []
        layouts = [h["tensors"] for h in hs]
        received = _broadcast_packed(layers, layouts, src, rank, _items_device(items))
        if src != rank:
            for i, h, state in zip(shares[src], hs, received):
                out[i] = _rebuild(items[i], h, state)
    t2 = time.perf_counter()
    timeline = {
        "rank": rank, "world": size, "cpus": cpus, "modules": len(mine),
        "estimated_s": sum(costs[i] for i in mine), "fit_s": t1 - t0, "fit_cpu_s": c1 - c0,
        "exchange_s": t2 - t1,
    }  # fmt: skip
    logger.info(
        "rank %d/%d fitted %d of %d modules (estimated %.1f s) in %.2f s (CPU %.2f s) with "
        "%d thread(s); exchange %.2f s", rank, size, len(mine), len(items),
        timeline["estimated_s"], t1 - t0, c1 - c0, cpus, t2 - t1,
        extra={"tqla_timeline": timeline},
    )  # fmt: skip
    return out  # type: ignore[return-value]


_REPORT_FIELDS = ("seconds", "error", "spectral_error", "params_after", "rank")
_ATTRS = ("approximation_error", "spectral_error")


def _items_device(items: Sequence[Any]) -> torch.device:
    ref = next(iter(items[0].module.parameters()), None)
    return ref.device if ref is not None else torch.device("cpu")


def _header(item: Any, layer: nn.Module) -> dict[str, Any]:
    """What a receiving rank needs besides the tensors: spec, report fields, attributes."""
    return {
        "spec": layer.spec(),
        "report": {f: getattr(item.report, f) for f in _REPORT_FIELDS},
        "attrs": {a: getattr(layer, a, None) for a in _ATTRS},
        "tensors": [(k, tuple(v.shape), v.dtype) for k, v in layer.state_dict().items()],
    }


_ALIGN = 16  # bytes: every tensor starts at a multiple, so its bytes view as its dtype


def _padded(shape: Any, dtype: torch.dtype) -> tuple[int, int]:
    """``(bytes, bytes padded to _ALIGN)`` of a tensor of ``shape`` and ``dtype``."""
    n = torch.Size(tuple(shape)).numel() * torch.empty((), dtype=dtype).element_size()
    return n, -(-n // _ALIGN) * _ALIGN


def pack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The bytes of ``tensors`` one after another (each padded to 16 bytes) in one uint8
    tensor on the first tensor's device (see :func:`unpack`).

    Examples
    --------
    >>> ts = [torch.arange(3), torch.ones(2, 2, dtype=torch.float16)]
    >>> back = unpack(pack(ts), [(t.shape, t.dtype) for t in ts])
    >>> all(torch.equal(a, b) for a, b in zip(ts, back))
    True
    """
    parts = []
    for t in tensors:
        raw = t.detach().contiguous().reshape(-1).view(torch.uint8)
        n, padded = _padded(t.shape, t.dtype)
        parts.append(raw)
        if padded > n:
            parts.append(torch.zeros(padded - n, dtype=torch.uint8, device=raw.device))
    if not parts:
        return torch.empty(0, dtype=torch.uint8)
    return torch.cat(parts)


def packed_size(layout: Sequence[tuple[Any, torch.dtype]]) -> int:
    """Bytes of the :func:`pack` buffer of tensors with these ``(shape, dtype)``s."""
    return sum(_padded(shape, dtype)[1] for shape, dtype in layout)


def unpack(buffer: torch.Tensor, layout: Sequence[tuple[Any, torch.dtype]]) -> list[torch.Tensor]:
    """Split a :func:`pack` buffer back into tensors of the given ``(shape, dtype)``s (views
    of the buffer).

    Raises
    ------
    ValueError
        If the buffer's size is not the layout's.
    """
    if packed_size(layout) != buffer.numel():
        raise ValueError(
            f"buffer has {buffer.numel()} bytes, the layout describes {packed_size(layout)}"
        )
    out, at = [], 0
    for shape, dtype in layout:
        n, padded = _padded(shape, dtype)
        out.append(buffer[at : at + n].view(dtype).reshape(tuple(shape)))
        at += padded
    return out


def _broadcast_packed(
    layers: list[nn.Module], layouts: list[list[tuple]], src: int, rank: int, device: Any
) -> list[dict[str, torch.Tensor]]:
    """Broadcast the state of rank ``src``'s ``layers`` as one buffer; on the other ranks,
    the received state dicts (``layouts``: each layer's ``(key, shape, dtype)``)."""
    flat_layout = [(shape, dtype) for lay in layouts for _k, shape, dtype in lay]
    nbytes = packed_size(flat_layout)
    if nbytes == 0:
        return [{} for _ in layouts]
    if rank == src:
        buf = pack([t for layer in layers for t in layer.state_dict().values()]).to(device)
        torch.distributed.broadcast(buf, src=src)
        return []
    buf = torch.empty(nbytes, dtype=torch.uint8, device=device)
    torch.distributed.broadcast(buf, src=src)
    tensors = iter(unpack(buf, flat_layout))
    return [{k: next(tensors) for k, _s, _d in lay} for lay in layouts]


def _rebuild(item: Any, header: dict[str, Any], state: dict[str, torch.Tensor]) -> nn.Module:
    """A fitted layer received from another rank; fills in the item's report."""
    from tqla_torch.nn.base import CompressedModule

    device = _items_device([item])
    new = CompressedModule.from_spec(header["spec"], device=device)
    new.load_state_dict({k: v.clone() for k, v in state.items()}, strict=True, assign=True)
    for attr, value in header["attrs"].items():
        if value is not None or hasattr(new, attr):
            setattr(new, attr, value)
    new.train(item.module.training)
    for field, value in header["report"].items():
        setattr(item.report, field, value)
    return new
