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
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["assign_lpt", "blas_share", "fit_spread", "world"]

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


def estimated_cost(report: Any, settings: Any) -> float:
    """Relative cost of fitting one module, for balancing the ranks.

    A matrix M×N (Linear/Conv1D): ``M·N·(M+N)``, the multiply-adds of the permutation
    searches' cost matrices (M×M over N, N×N over M) and of the refits.  An embedding
    table V×d: ``V·d²``, the one pass that forms its column Gram matrix (every later step
    is d×d).  Times the repetitions and restarts.  Calibrated against GPT-2 small's
    measured fit times (token table 50257×768 ≈ 3× one 768×3072 MLP matrix).
    """
    rows, cols = float(report.out_features), float(report.in_features)
    if getattr(report, "kind", "") == "Embedding":  # in = vocabulary, out = width
        size = cols * rows * rows
    else:
        size = rows * cols * (rows + cols)
    repeat = max(1, int(getattr(settings, "repeat", 1) or 1))
    restarts = max(1, int(getattr(settings, "n_restarts", 1) or 1))
    return size * repeat * restarts


@contextlib.contextmanager
def blas_share(world_size: int) -> Iterator[int]:
    """Limit BLAS and torch intra-op threads to ``usable CPUs // world_size`` (at least 1)
    inside the block; yields that number."""
    from tqla.batch import _blas_threads, _usable_cpus

    n = max(1, _usable_cpus() // max(1, world_size))
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
    items: Sequence[Any], fit_some: Callable[[list[Any]], list[nn.Module]]
) -> list[nn.Module]:
    """Fit ``items`` spread over the ranks and return every fitted layer on every rank.

    Parameters
    ----------
    items : sequence of apply._Item
        The resolved modules (the same list, in the same order, on every rank).
    fit_some : callable
        ``fit_some(sub_items)`` → fitted layers, run by each rank on its share.

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
    mine = assign_lpt(costs, size)[rank]
    logger.info("rank %d/%d fits %d of %d modules", rank, size, len(mine), len(items))
    fitted: dict[int, nn.Module] = {}
    error: str | None = None
    with blas_share(size):
        try:
            fitted = dict(zip(mine, fit_some([items[i] for i in mine])))
        except Exception as err:  # reported to every rank below, then raised everywhere
            error = str(err)
    errors: list[Any] = [None] * size
    torch.distributed.all_gather_object(errors, error)
    failed = [e for e in errors if e is not None]
    if failed:
        raise CompressionError(failed[0])
    owner = {i: r for r, js in enumerate(assign_lpt(costs, size)) for i in js}
    return [_share(items[i], fitted.get(i), owner[i], rank) for i in range(len(items))]


_REPORT_FIELDS = ("seconds", "error", "spectral_error", "params_after", "rank")


def _share(item: Any, layer: nn.Module | None, src: int, rank: int) -> nn.Module:
    """Broadcast one fitted layer from rank ``src``: its spec, report fields and tensors."""
    from tqla_torch.nn.base import CompressedModule

    dist = torch.distributed
    if rank == src:
        state = layer.state_dict()
        header = {
            "spec": layer.spec(),
            "report": {f: getattr(item.report, f) for f in _REPORT_FIELDS},
            "attrs": {
                a: getattr(layer, a, None) for a in ("approximation_error", "spectral_error")
            },
            "tensors": [(k, tuple(v.shape), v.dtype) for k, v in state.items()],
        }
    else:
        header = None
    box = [header]
    dist.broadcast_object_list(box, src=src)
    header = box[0]
    ref = next(iter(item.module.parameters()))
    device = ref.device
    if rank == src:
        for _key, t in state.items():
            dist.broadcast(t.detach().contiguous(), src=src)
        return layer
    received = {}
    for key, shape, dtype in header["tensors"]:
        t = torch.empty(shape, dtype=dtype, device=device)
        dist.broadcast(t, src=src)
        received[key] = t
    new = CompressedModule.from_spec(header["spec"], device=device)
    new.load_state_dict(received, strict=True, assign=True)
    for attr, value in header["attrs"].items():
        if value is not None or hasattr(new, attr):
            setattr(new, attr, value)
    new.train(item.module.training)
    for field, value in header["report"].items():
        setattr(item.report, field, value)
    return new
