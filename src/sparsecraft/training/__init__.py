"""Sparse training: one updater interface, many algorithms.

``make_updater(method, SparsityConfig(...), total_steps)`` builds an :class:`Updater` (methods in
``UPDATERS``: dense, static, snip, gmp, imp, set, rigl, srste, gradflow, bidirectional,
masksparsity). Use it in your own loop with ``before_step()`` / ``after_step()`` or train with
:func:`fit`. :func:`sparse_model_soup` runs Sparse Model Soups on top of the same pieces, and
:mod:`.channels` removes pruned channels physically.
"""
from . import dst, gmp, imp, nm, regularize, static  # noqa: F401  (register the updaters)
from .base import UPDATERS, SparsityConfig, Updater, make_updater, seeded_generator, unwrap
from .channels import Chain, find_chains, remove_channels
from .fit import (FitResult, default_optimizer, evaluate, evaluate_loss, fit, make_scheduler, torch_threads,
                  training_pairs)
from .schedules import cosine_fraction, cubic_sparsity
from .soups import SoupPhase, average_state_dicts, greedy_soup, sparse_model_soup

__all__ = [
    "UPDATERS", "Chain", "FitResult", "SoupPhase", "SparsityConfig", "Updater", "average_state_dicts",
    "cosine_fraction", "cubic_sparsity", "default_optimizer", "evaluate", "evaluate_loss", "find_chains", "fit",
    "greedy_soup", "make_scheduler", "make_updater", "remove_channels", "seeded_generator", "sparse_model_soup",
    "torch_threads", "training_pairs", "unwrap",
]
