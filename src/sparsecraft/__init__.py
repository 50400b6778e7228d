"""sparsecraft: where the zeros go, getting them in, and making them pay on CPUs.

Core API::

    import sparsecraft
    sp = sparsecraft.prune(model, sparsity=0.9, pattern="unstructured", criterion="magnitude",
                           allocation="global")
    sp.attach(optimizer)           # pruned weights stay exactly zero through training
    print(sp.report())             # per-layer sparsity
    sp.save("model.safetensors")   # weights + masks + metadata, verified on load
"""
from .allocation import ALLOCATORS
from .checkpoint import read_checkpoint, save_checkpoint
from .criteria import CRITERIA
from .errors import SparsecraftError
from .oneshot import plan_masks, prune
from .patterns import PATTERNS, get_pattern
from .sparsifier import Sparsifier
from .target import find_targets

__version__ = "0.1.0"
__all__ = [
    "ALLOCATORS", "CRITERIA", "PATTERNS", "Sparsifier", "SparsecraftError", "find_targets",
    "get_pattern", "plan_masks", "prune", "read_checkpoint", "save_checkpoint",
]
