"""Sparse architectures: layers and searches whose structure, not a mask on a dense model, is sparse.

* :mod:`.ift`: Sparse Iso-FLOP Transformations (wide, parallel, factorized, doped) in ``TRANSFORMS``.
* :mod:`.monarch`: Monarch matrices (``MonarchLinear``, the optimal projection ``monarch_project``).
* :mod:`.nas`: DASS (differentiable search with sparse operations) and random search over sparse
  configurations.
* :mod:`.flops`: multiply-accumulate counts with sparse weights at their density.

Sparse parts are trained by the updaters of :mod:`sparsecraft.training` (no mask code of its own).
"""
from .flops import forward_macs, layer_macs, macs_by_layer, weight_density
from .ift import (
    TRANSFORMS,
    IftBlock,
    IftModel,
    IsoFlopTransform,
    SparseDoped,
    SparseFactorized,
    SparseParallel,
    apply_sparse_ift,
    iso_flop_layer,
    iso_flop_model,
    train_ift,
)
from .monarch import MonarchLinear, MonarchReport, monarch_multiply, monarch_params, monarch_project, monarchize
from .nas import (
    DENSE_SPACE,
    OPERATIONS,
    SPARSE_SPACE,
    Architecture,
    CellNet,
    SearchResult,
    SearchSpace,
    SparseConv2d,
    SparseLinear,
    SuperNet,
    differentiable_search,
    random_search,
    sample_architecture,
    train_pruned,
)

__all__ = [
    "TRANSFORMS", "IftBlock", "IftModel", "IsoFlopTransform", "SparseDoped", "SparseFactorized", "SparseParallel",
    "apply_sparse_ift", "forward_macs", "iso_flop_layer", "iso_flop_model", "layer_macs", "macs_by_layer", "train_ift",
    "weight_density", "MonarchLinear", "MonarchReport", "monarch_multiply", "monarch_params", "monarch_project",
    "monarchize", "DENSE_SPACE", "OPERATIONS", "SPARSE_SPACE", "Architecture", "CellNet", "SearchResult",
    "SearchSpace", "SparseConv2d", "SparseLinear", "SuperNet", "differentiable_search", "random_search",
    "sample_architecture", "train_pruned",
]
