"""Load a sparse transformers checkpoint straight into the fast runtime, one layer at a time.

:func:`from_pretrained` reads a model directory - ``save_pretrained`` / ``sparsecraft export
--format hf`` output (dense weights with their zeros) or a compressed-tensors sparse directory
(:func:`sparsecraft.export.save_compressed`, llm-compressor) - and builds the
:class:`~sparsecraft.inference.FusedBert` with packed ``SparseLinear`` layers directly from the
safetensors tensors. The transformers model is built on the ``meta`` device (no storage) and the
tensors read are assigned to it, not copied; each encoder layer's tensors are read
(:func:`sparsecraft.io.read_safetensors`, one layer selected), decompressed if stored compressed,
stacked (Q/K/V), packed, and dropped before the next layer is read; the embeddings stay a view of
the file's memory map (as transformers loads them). Peak memory is therefore the packed model plus
about two dense copies of one layer, where ``AutoModel.from_pretrained`` +
:func:`~sparsecraft.inference.convert` holds the whole dense model (and its packed copy) at once.
Only BERT-family encoders (the fused path) are built this way.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..errors import SparsecraftError, check_sparsity
from ..target import find_targets
from .bert import FusedBert, FusedBertLayer, why_not_bert
from .convert import FORMAT_CHOICES, ConvertedLayer, _convert_layers
from .dispatch import Dispatcher
from .linear import MODES


class _Reader:
    """Reads the tensors under one name prefix from a model directory's safetensors files (shards ok)."""

    def __init__(self, path: Path) -> None:
        from ..export.compressed_tensors import ct_format, read_config, weight_files
        from ..io import read_safetensors, verify_manifest

        self.config = read_config(path)
        verify_manifest(path)
        self.format = ct_format(self.config, path)
        self.files: dict[str, Path] = {}
        for f in weight_files(path):
            names: list[str] = []
            read_safetensors(f, select=lambda k: names.append(k) and False)  # the header's names, no tensors read
            self.files.update({k: f for k in names})
        self.prefix = self._base_prefix()

    def _base_prefix(self) -> str:
        """``""``, or ``"bert."`` etc. when the file was saved from a model with a head around the encoder."""
        for name in self.files:
            head, sep, _ = name.partition("embeddings.word_embeddings.")
            if sep:
                return head
        raise SparsecraftError("the checkpoint has no embeddings.word_embeddings tensor; it is not a BERT-family "
                               "encoder")

    def read(self, module: str, own: bool = True) -> dict[str, torch.Tensor]:
        """The dense tensors of ``module`` (e.g. ``"encoder.layer.3"``), named relative to it.

        ``own``: copies that own their memory. A tensor read is otherwise a view of a memory map
        of the file (made for this read alone), which keeps every page of it touched so far
        resident for as long as the tensor lives: right for the embeddings (their own pages,
        faulted in as tokens are looked up, as transformers loads them), not for a layer whose
        Linear weights are read once and packed.
        """
        from ..export.compressed_tensors import decompress_state_dict
        from ..io import read_safetensors

        start = f"{self.prefix}{module}."
        tensors: dict[str, torch.Tensor] = {}
        for f in sorted({f for k, f in self.files.items() if k.startswith(start)}):
            tensors.update(read_safetensors(f, select=lambda k: k.startswith(start))[0])
        if not tensors:
            raise SparsecraftError(f"the checkpoint has no tensors for {module}; it does not fit its config.json")
        if self.format:
            tensors = decompress_state_dict(tensors, self.format)
        return {k[len(start):]: v.clone() if own else v for k, v in tensors.items()}


def _materialise(meta: nn.Module, tensors: dict[str, torch.Tensor], name: str,
                 config: object = None) -> nn.Module:
    """``meta`` (a meta-device module) holding ``tensors`` as its parameters and buffers, without a copy.

    Buffers that are not saved (BERT embeddings' ``position_ids``, ``token_type_ids``) are taken
    from a fresh instance built from ``config`` with a one-token vocabulary (a few KB).
    """
    try:
        meta.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as err:
        raise SparsecraftError(f"the checkpoint's {name} tensors do not fit its config.json "
                               f"({str(err).splitlines()[0][:120]})") from None
    unsaved = [n for n, b in meta.named_buffers() if b.is_meta]
    if unsaved:
        if config is None:
            raise SparsecraftError(f"{name} has buffers that are not saved; build it with transformers and convert it")
        small = copy.copy(config)
        small.vocab_size = int(getattr(config, "pad_token_id", None) or 0) + 1
        fresh = type(meta)(small)
        for n in unsaved:
            owner, _, leaf = n.rpartition(".")
            (meta.get_submodule(owner) if owner else meta).register_buffer(
                leaf, fresh.get_buffer(n), persistent=False)
    return meta


def from_pretrained(path: str | os.PathLike, *, format: str = "auto", min_sparsity: float = 0.3,
                    mode: str = "auto", dispatcher: Optional[Dispatcher] = None,
                    ) -> tuple[FusedBert, list[ConvertedLayer]]:
    """A BERT-family encoder's fast-path model, built layer by layer from a model directory.

    Parameters
    ----------
    path : path
        A transformers model directory (``config.json`` + ``*.safetensors``, dense weights with
        zeros) or a compressed-tensors sparse directory.
    format, min_sparsity, mode, dispatcher
        As in :func:`sparsecraft.inference.convert`: per-layer packing (``"auto"`` detects N:M,
        blocks or csr16), layers with fewer zeros than ``min_sparsity`` stay dense ``nn.Linear``.

    Returns
    -------
    model : FusedBert
        Eval mode; outputs equal ``convert(AutoModel.from_pretrained(path))``'s.
    report : list of ConvertedLayer
        One row per fused Linear (``layers.<i>.qkv`` ...) and the pooler, in module order.
    """
    from ..models.hf import from_hf_spec

    if format not in FORMAT_CHOICES:
        raise SparsecraftError(f"unknown format {format!r}; choose one of: {', '.join(FORMAT_CHOICES)}")
    if mode not in MODES:
        raise SparsecraftError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    check_sparsity(min_sparsity, "min_sparsity")
    path = Path(path)
    reader = _Reader(path)
    config = {k: v for k, v in reader.config.items() if k not in ("quantization_config", "compression_config")}
    with torch.device("meta"):
        meta = from_hf_spec({"config": config})
        reason = why_not_bert(meta)
        if reason is not None:
            raise SparsecraftError(f"{path} cannot take the fused path ({reason}); load it with transformers and "
                                   "call sparsecraft.inference.convert")
        fused = FusedBert(meta)
    fused.embeddings = _materialise(meta.embeddings, reader.read("embeddings", own=False), "embeddings",
                                    meta.config)
    report: list[ConvertedLayer] = []
    heads = int(meta.config.num_attention_heads)
    for i, layer in enumerate(meta.encoder.layer):
        fused.layers[i] = FusedBertLayer(_materialise(layer, reader.read(f"encoder.layer.{i}"), f"layer {i}"), heads)
        targets = find_targets(fused, types=(nn.Linear,), within=f"layers.{i}")
        report += _convert_layers(fused, targets, format, None, min_sparsity, mode, dispatcher)
    if fused.pooler is not None:
        fused.pooler = _materialise(fused.pooler, reader.read("pooler"), "pooler")
        targets = find_targets(fused, types=(nn.Linear,), within="pooler")
        report += _convert_layers(fused, targets, format, None, min_sparsity, mode, dispatcher)
    return fused.eval(), report
