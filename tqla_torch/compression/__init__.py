"""Compression configs and applying them: which modules become which compressed layers.

* :mod:`~tqla_torch.compression.config` — :class:`CompressionConfig` (targets, method,
  shapes, per-module overrides) and the resolved :class:`ModuleSettings` of one module,
* :mod:`~tqla_torch.compression.presets` — the published GPT-2 plan and its baselines,
* :mod:`~tqla_torch.compression.apply` — :func:`inspect` (dry run) and :func:`compress`
  (transactional, in place), with their :class:`CompressionReport`,
* :mod:`~tqla_torch.compression.shapes` — factor shapes resolved against a module,
* :mod:`~tqla_torch.compression.importance` — LWIQ layer importance (:func:`lwiq`),
* :mod:`~tqla_torch.compression.ranks` — per-layer ranks for a whole-model parameter budget
  (κ rule, uniform, Frobenius-error curves),
* :mod:`~tqla_torch.compression.calibrate` — input moments and sensitivities on
  calibration data, :mod:`~tqla_torch.compression.curves` — per-module error curves of
  every candidate, :mod:`~tqla_torch.compression.budget_plan` — :func:`plan_for_budget`,
  the automatic per-layer plan for a parameter budget,
* :mod:`~tqla_torch.compression.streaming` — :func:`compress_folder`: a checkpoint folder
  compressed module by module in bounded memory, resumably, and
  :mod:`~tqla_torch.compression.distributed` — the fits spread over ``torchrun`` ranks.

Builds on :mod:`tqla_torch.nn` (the layers); training and the CLI build on this package.
"""

from tqla_torch.compression.apply import (
    CompressionError,
    compress,
    fold_mlp_permutations,
    count_parameters,
    inspect,
)
from tqla_torch.compression.budget_plan import AutoPlan, auto_gpt2_steps, plan_for_budget
from tqla_torch.compression.calibrate import CalibrationStats, collect_statistics
from tqla_torch.compression.config import METHODS, CompressionConfig, ModuleSettings
from tqla_torch.compression.importance import LWIQResult, lwiq
from tqla_torch.compression.presets import (
    kron_gpt2,
    kron_gpt2_steps,
    presets,
    svd_gpt2,
    svd_gpt2_steps,
    tq_gpt2,
    tq_gpt2_steps,
)
from tqla_torch.compression.ranks import (
    RankAllocation,
    RankAllocator,
    allocate_by_error,
    allocate_ranks,
    plan_ranks,
    uniform_ranks,
)
from tqla_torch.compression.report import CompressionReport, ModuleReport
from tqla_torch.compression.streaming import compress_folder

__all__ = [
    "AutoPlan",
    "auto_gpt2_steps",
    "CalibrationStats",
    "collect_statistics",
    "compress_folder",
    "plan_for_budget",
    "METHODS",
    "CompressionConfig",
    "CompressionError",
    "CompressionReport",
    "LWIQResult",
    "ModuleReport",
    "ModuleSettings",
    "RankAllocation",
    "RankAllocator",
    "allocate_by_error",
    "allocate_ranks",
    "compress",
    "fold_mlp_permutations",
    "count_parameters",
    "inspect",
    "lwiq",
    "plan_ranks",
    "kron_gpt2",
    "kron_gpt2_steps",
    "presets",
    "svd_gpt2",
    "svd_gpt2_steps",
    "tq_gpt2",
    "tq_gpt2_steps",
    "uniform_ranks",
]
