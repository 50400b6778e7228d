"""Fast sparse inference: convert pruned Linear layers to packed formats run by native kernels.

    >>> from sparsecraft.inference import convert, save_converted, load_converted
    >>> model, report = convert(model)            # masked/pruned nn.Linear -> SparseLinear, convs -> SparseConv
    >>> save_converted(model, "model.sparse.safetensors")
    >>> model2 = load_converted("model.sparse.safetensors", build_dense_architecture())

Layers: :mod:`.linear` (SparseLinear, trainable too), :mod:`.conv` (SparseConv: direct sparse
convolution), :mod:`.dispatch` (measured dense/sparse choice),
:mod:`.convert`, :mod:`.bert` (the fused path of BERT-family encoders, which ``convert`` returns for
them), :mod:`.serialize`, and :mod:`.bench` (the layer benchmarks behind ``sparsecraft bench-kernels``
and ``bench/kernels``). Built on :mod:`sparsecraft.formats` and
:mod:`sparsecraft.kernels`.
"""
from .bert import FusedBert, fuse_bert, why_not_bert
from .conv import SparseConv
from .convert import ConvertedLayer, convert, detect_format, set_mode, sparse_layers, weight_bytes
from .dispatch import Dispatcher, batch_bucket, default_dispatcher
from .linear import SparseLinear
from .pretrained import from_pretrained
from .serialize import load_converted, save_converted

__all__ = ["ConvertedLayer", "Dispatcher", "FusedBert", "SparseConv", "SparseLinear", "batch_bucket", "convert",
           "default_dispatcher", "detect_format", "from_pretrained", "fuse_bert", "load_converted", "save_converted",
           "set_mode", "sparse_layers", "weight_bytes", "why_not_bert"]
