"""Parameter-efficient fine-tuning behind one interface: ``apply(model, method, **options)`` returns an
:class:`Adapter` (train ``adapter.trainable_parameters()``, then ``adapter.merge()``).

Methods (``METHODS``): ``lora`` (low-rank update), ``s2ft`` (co-permuted dense sub-matrices of a few
heads and FFN channels), ``pst`` (sparsity-aware fine-tuning with factored importance) and its
baseline ``movement``, ``sara`` (the smallest weights as a sparse, progressively re-chosen update).
:mod:`.memory` measures training memory, :mod:`.domains` gives the new-domain text (Python source).
"""
from __future__ import annotations

from . import lora, pst, s2ft, sara  # noqa: F401  (register the methods)
from .base import METHODS, Adapter, apply
from .domains import source_lm
from .memory import TrainingMemory, training_memory

__all__ = ["METHODS", "Adapter", "TrainingMemory", "apply", "source_lm", "training_memory"]
