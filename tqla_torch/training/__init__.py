"""Recovering accuracy after compression: distillation, data, optimiser helpers, the demo.

* :mod:`~tqla_torch.training.distill` — the public API (:func:`distill`,
  :func:`distill_stages`, :class:`DistillConfig`, :class:`Stage`, the losses),
* :mod:`~tqla_torch.training.loop` — one stage's training loop (resume, checkpointer,
  stage steps),
* :mod:`~tqla_torch.training.optim` — seeding, parameter groups and the learning-rate
  schedule shared by distillation and the demo's teacher,
* :mod:`~tqla_torch.training.data` — corpora, tokenisation and packed token blocks,
* :mod:`~tqla_torch.training.demo` — the built-in end-to-end demo.

Builds on :mod:`tqla_torch.compression`; the CLI builds on this package.
"""
