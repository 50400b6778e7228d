"""Sparse training: one updater interface, many algorithms, one training loop.

``make_updater(method, SparsityConfig(...), total_steps)`` builds an :class:`Updater` (methods in
``UPDATERS``: dense, static, snip, gmp, imp, set, rigl, srste, gradflow, bidirectional,
masksparsity, soup); each declares its ``options`` and defaults. Use it in your own loop with
``before_step()`` / ``after_step()``, train with :func:`fit`, or run the whole method with
``updater.run(model, data, ...)`` (the only way for ``soup``, which trains several models).
:func:`sparse_model_soup` is Sparse Model Soups with your own retraining, and :mod:`.channels`
removes pruned channels physically.

Every module of this package is imported here, so a training method from a new paper is one new
file registering its :class:`Updater` subclass in ``UPDATERS`` (plus its tests): nothing else lists it.
"""
import importlib as _importlib
import pkgutil as _pkgutil

from .base import UPDATERS, SparsityConfig, Updater, float_list, make_updater, seeded_generator, unwrap
from .channels import Chain, find_chains, remove_channels
from .fit import (
    FitResult,
    default_optimizer,
    evaluate,
    evaluate_loss,
    fit,
    make_scheduler,
    torch_threads,
    training_pairs,
)
from .schedules import cosine_fraction, cubic_sparsity, geometric_sparsities
from .soups import SoupPhase, SoupUpdater, average_state_dicts, greedy_soup, sparse_model_soup

for _module in sorted(m.name for m in _pkgutil.iter_modules(__path__)):
    _importlib.import_module(f"{__name__}.{_module}")   # registers the updaters each module defines

__all__ = [
    "UPDATERS", "Chain", "FitResult", "SoupPhase", "SoupUpdater", "SparsityConfig", "Updater",
    "average_state_dicts", "cosine_fraction", "cubic_sparsity", "default_optimizer", "evaluate", "evaluate_loss",
    "find_chains", "fit", "float_list", "geometric_sparsities", "greedy_soup", "make_scheduler", "make_updater",
    "remove_channels", "seeded_generator", "sparse_model_soup", "torch_threads", "training_pairs", "unwrap",
]
