"""Replace pruned nn.Linear layers of a model by SparseLinear, choosing each layer's format."""
from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Optional

import torch
from torch import nn

from ..errors import SparsecraftError, check_sparsity
from ..formats import FORMATS, PackedWeight, pack, pack_int8
from ..formats.blocks import MAX_BLOCK_COLS, fills_row_blocks
from ..formats.int8 import DEFAULT_GROUP, check_group
from ..target import find_targets
from .conv import SparseConv, conv_unsupported
from .dispatch import Dispatcher
from .linear import MODES, SparseLinear
from .trainable import TrainableValues

FORMAT_CHOICES = ("auto", "csr16", "bitmask", "block", "nm")
FUSE_CHOICES = ("auto", "never")
WEIGHT_CHOICES = ("fp32", "int8")


@dataclass
class ConvertedLayer:
    """What ``convert`` did with one Linear or convolution layer (shape: the weight as (out, in * kernel))."""

    name: str
    shape: tuple[int, int]
    sparsity: float
    format: str  # 'dense' when the layer was left as it was
    params: dict[str, Any]
    nbytes: int
    dense_nbytes: int
    note: str = ""  # why a sparse-enough layer stayed dense, or which conv kernel runs it

    @property
    def bytes_per_weight(self) -> float:
        """Stored bytes (values, indices, pointers, scales) per weight of the dense shape (fp32 dense: 4)."""
        return self.nbytes / max(1, self.shape[0] * self.shape[1])

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bytes_per_weight": self.bytes_per_weight}


CONVS = (nn.Conv1d, nn.Conv2d)


def masked_weight(module: nn.Module) -> torch.Tensor:
    """The layer's weight with its ``weight_mask`` buffer applied when it has one."""
    w = module.weight.detach()
    mask = getattr(module, "weight_mask", None)
    if isinstance(mask, torch.Tensor):
        if mask.shape != w.shape:
            raise SparsecraftError(f"weight_mask shape {tuple(mask.shape)} does not match weight {tuple(w.shape)}")
        w = w * mask.to(w.dtype)
    return w.to(torch.float32)


def detect_format(w: torch.Tensor) -> tuple[str, dict[str, int]]:
    """The most specific format that stores ``w`` without padding values.

    N:M (M in 4, 8, N <= M/2) when every group along in_features fits; R x 1 blocks (R in 16, 8, 4)
    when the nonzeros fill whole blocks; otherwise csr16.
    """
    out, inp = w.shape
    nz = w != 0
    nnz = int(nz.sum())
    for m in (4, 8):
        if inp % m == 0 and nnz:
            n = int(nz.view(out, inp // m, m).sum(-1).max())
            if 2 * n <= m and n * out * inp // m == nnz:
                return "nm", {"N": n, "M": m}
    for r in (16, 8, 4):
        if fills_row_blocks(w, r):
            return "block", {"R": r, "C": 1}
    return "csr16", {}


def _pack_layer(w: torch.Tensor, fmt: str, params: dict[str, int]) -> PackedWeight:
    if fmt == "auto":
        fmt, params = detect_format(w)
    return pack(w, fmt, **params)


def convert(model: nn.Module, *, layers: Optional[Iterable[str]] = None, keep_dense: Iterable[str] = (),
            format: str = "auto", format_params: Optional[dict[str, int]] = None, min_sparsity: float = 0.3,
            mode: str = "auto", dispatcher: Optional[Dispatcher] = None,
            fuse: str = "auto", sample: Optional[torch.Tensor] = None, weights: str = "fp32",
            group_size: int = DEFAULT_GROUP) -> tuple[nn.Module, list[ConvertedLayer]]:
    """Swap each selected nn.Linear whose (masked) weight is at least ``min_sparsity`` zeros for a SparseLinear,
    and each such Conv1d / Conv2d for a :class:`~sparsecraft.inference.conv.SparseConv` (R x 1 kernel-group
    blocks when its zeros form block8x1 / block4x1, else csr16; 1x1 with any stride, k x k with stride 1;
    others stay dense with a note in the report).

    A BERT-family encoder (transformers' BertLayer layout: BERT, RoBERTa, MiniLM) is first rebuilt
    on the fused path (:class:`~sparsecraft.inference.bert.FusedBert`: unpadded tokens, one Q/K/V
    matmul, SDPA attention, bias/residual/GELU fused into the kernels) and that model is returned;
    any other model is converted layer by layer in place, after one line on stderr saying why it
    has no fused path.

    Parameters
    ----------
    model : nn.Module
        Pruned, or holding a Sparsifier's ``weight_mask`` buffers; changed in place unless fused.
    layers, keep_dense : module names, globs or parent modules
        Which Linears to consider, as in :func:`sparsecraft.find_targets` (default: all), named as
        in ``model``; a fused Q/K/V Linear is converted when all three parts are selected.
    format : str
        'auto' picks N:M, R x 1 blocks or csr16 per layer from the zeros it finds; or one of
        :data:`FORMAT_CHOICES`, with ``format_params``.
    min_sparsity : float
        Layers with fewer zeros stay dense (nn.Linear; dense_int8 with int8 weights).
    mode, dispatcher
        Kernel or dense execution per call: see :class:`SparseLinear` and :class:`SparseConv` (a conv in
        'auto' measures the kernel against torch's convolution per input shape on its first call).
    fuse : {'auto', 'never'}
        'never' skips the fused path (and its fallback line).
    sample : torch.Tensor, optional
        A model input. With ``mode='auto'`` the converted model runs it once (no grad) so every SparseConv
        measures its input's shape now, and each conv whose kernel measured slower than dense is put back as
        the plain (masked) convolution, its report row saying so.
    weights : {'fp32', 'int8'}
        'int8' stores every selected Linear's values as int8 with one fp32 scale per ``group_size``
        stored values (:mod:`sparsecraft.formats.int8`, weight-only), so no selected Linear stays fp32:
        layers with at least ``min_sparsity`` zeros in the smallest of block_int8 (zeros filling R x 1
        blocks, R = 8 or 4), csr16_int8 (above ~65% zeros) and dense_int8 (N:M zeros too: there is no
        int8 N:M kernel, which would be no smaller than dense_int8 at 2:4), the others as dense_int8.
        Convolutions stay fp32.
    group_size : int
        Stored values per scale for 'int8' (a power of two >= 16).

    Returns
    -------
    model : nn.Module
        The same object, or the FusedBert; outputs equal the dense masked model's (fp32, to rounding;
        FusedBert's are zero at padded tokens; with int8 weights, the model with dequantised weights').
    report : list of ConvertedLayer
        One row per considered Linear, in module order (fused names such as ``layers.0.qkv``).
    """
    if format not in FORMAT_CHOICES:
        raise SparsecraftError(f"unknown format {format!r}; choose one of: {', '.join(FORMAT_CHOICES)}")
    if mode not in MODES:
        raise SparsecraftError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    check_sparsity(min_sparsity, "min_sparsity")
    if fuse not in FUSE_CHOICES:
        raise SparsecraftError(f"fuse must be one of {', '.join(FUSE_CHOICES)}, got {fuse!r}")
    if weights not in WEIGHT_CHOICES:
        raise SparsecraftError(f"weights must be one of {', '.join(WEIGHT_CHOICES)}, got {weights!r}")
    if weights == "int8":
        check_group(group_size)
        if format not in ("auto", "csr16") or format_params:
            raise SparsecraftError(f"int8 weights are stored as block_int8, csr16_int8 or dense_int8, not format "
                                   f"{format!r}; leave format='auto'")
    opts = {"format": format, "format_params": format_params, "min_sparsity": min_sparsity, "mode": mode,
            "dispatcher": dispatcher, "group_size": group_size if weights == "int8" else None}
    if fuse == "auto":
        from .bert import fuse_bert, fused_names, why_not_bert

        reason = why_not_bert(model)
        if reason is None:
            selected = {t.module_name for t in find_targets(model, layers, keep_dense, types=(nn.Linear,))}
            fused = fuse_bert(model)
            names = set(fused_names(model, selected))
            targets = [t for t in find_targets(fused, types=(nn.Linear,)) if t.module_name in names]
            return fused, _convert_layers(fused, targets, **opts)
        print(f"sparsecraft: converting layer by layer (no fused path: {reason})", file=sys.stderr)
    # exact type: subclasses (MultiheadAttention's out_proj) are read directly by their owners
    targets = [t for t in find_targets(model, layers, keep_dense, types=(nn.Linear, *CONVS))
               if type(t.module) in (nn.Linear, *CONVS)]
    convs = {t.module_name: t.module for t in targets if type(t.module) in CONVS}
    report = _convert_layers(model, targets, **opts)
    if sample is not None and mode == "auto":
        _keep_slower_convs_dense(model, convs, report, sample)
    return model, report


def _keep_slower_convs_dense(model: nn.Module, convs: dict[str, nn.Module], report: list[ConvertedLayer],
                             sample: torch.Tensor) -> None:
    """Run ``sample`` through the converted model; put back the original conv wherever the kernel lost."""
    seen: dict[str, tuple[int, ...]] = {}

    def record(name: str) -> Any:
        def hook(module: nn.Module, args: tuple) -> None:
            seen.setdefault(name, tuple(args[0].shape))
        return hook

    hooks = [m.register_forward_pre_hook(record(name))
             for name, m in model.named_modules() if isinstance(m, SparseConv)]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for h in hooks:
            h.remove()
    for row in report:
        layer = model.get_submodule(row.name) if row.name in seen else None
        if not isinstance(layer, SparseConv) or "sparse" in layer.choices.values():
            continue
        conv = convs[row.name]
        with torch.no_grad():
            conv.weight.copy_(masked_weight(conv))
        _set_submodule(model, row.name, conv)
        row.format, row.params, row.nbytes = "dense", {}, row.dense_nbytes
        row.note = f"kept dense: the sparse kernel measured slower than torch's conv on input {seen[row.name]}"


def _convert_layers(model: nn.Module, targets: list[Any], format: str, format_params: Optional[dict[str, int]],
                    min_sparsity: float, mode: str, dispatcher: Optional[Dispatcher],
                    group_size: Optional[int] = None) -> list[ConvertedLayer]:
    """Swap the targets (``sparsecraft.Target`` of nn.Linear) for SparseLinear in place; the report rows.
    ``group_size`` set: int8 weights (every Linear target, sparse or not), None: fp32."""
    params = dict(format_params or {})
    report: list[ConvertedLayer] = []
    for t in targets:
        name, module = t.module_name, t.module
        w = masked_weight(module)
        if type(module) in CONVS:
            row = _convert_conv(model, name, module, w, format, min_sparsity, mode, dispatcher)
            if group_size is not None:
                row.note = "; ".join(filter(None, [row.note, "int8 covers Linear layers: convolutions stay fp32"]))
            report.append(row)
            continue
        out, inp = w.shape
        sparsity = 1.0 - float((w != 0).sum()) / max(1, w.numel())
        dense_bytes = 4 * w.numel()
        bias = None if module.bias is None else module.bias.detach()
        if group_size is not None:
            packed = pack_int8(w, sparsity >= min_sparsity, group_size)
            note = ""
            if packed.format == "csr16_int8":
                found, _ = detect_format(w)
                note = f"{found} zeros stored as csr16_int8 (no int8 {found} kernel)" if found == "nm" else ""
            elif packed.format == "dense_int8" and sparsity >= min_sparsity:
                note = (f"{inp} inputs exceed csr16's 16-bit index" if inp > MAX_BLOCK_COLS
                        else "dense_int8 is smaller than the sparse int8 layouts at this sparsity")
            _set_submodule(model, name, SparseLinear(packed, bias, mode=mode, dispatcher=dispatcher))
            report.append(ConvertedLayer(name, (out, inp), sparsity, packed.format, packed.params(), packed.nbytes,
                                         dense_bytes, note))
            continue
        stays_dense = sparsity < min_sparsity or (format in ("auto", "csr16") and inp > MAX_BLOCK_COLS and not params)
        if stays_dense:
            report.append(ConvertedLayer(name, (out, inp), sparsity, "dense", {}, dense_bytes, dense_bytes))
            continue
        try:
            packed = _pack_layer(w, format, params)
        except SparsecraftError as err:
            raise SparsecraftError(f"layer {name}: {err}") from None
        _set_submodule(model, name, SparseLinear(packed, bias, mode=mode, dispatcher=dispatcher))
        report.append(ConvertedLayer(name, (out, inp), sparsity, packed.format, packed.params(), packed.nbytes,
                                     dense_bytes))
    return report


def _convert_conv(model: nn.Module, name: str, conv: nn.Module, w: torch.Tensor, format: str,
                  min_sparsity: float, mode: str, dispatcher: Optional[Dispatcher]) -> ConvertedLayer:
    """Swap one Conv1d / Conv2d for a SparseConv when it is sparse enough and supported; its report row."""
    flat = w.reshape(w.shape[0], -1)
    shape = (int(flat.shape[0]), int(flat.shape[1]))
    sparsity = 1.0 - float((flat != 0).sum()) / max(1, flat.numel())
    dense_bytes = 4 * flat.numel()
    why = conv_unsupported(conv)
    if why is None and format not in ("auto", "csr16"):
        why = f"format {format!r} is for Linear layers (convolutions run 'auto': R x 1 blocks or csr16, or 'csr16')"
    if why is None and shape[1] > MAX_BLOCK_COLS:
        why = f"{shape[1]} weight columns exceed the 16-bit index"
    if sparsity < min_sparsity or why is not None:
        return ConvertedLayer(name, shape, sparsity, "dense", {}, dense_bytes, dense_bytes,
                              "" if sparsity < min_sparsity else why)
    layer = SparseConv.from_conv(conv, w, format=format, mode=mode, dispatcher=dispatcher)
    _set_submodule(model, name, layer)
    packed = layer.packed
    notes = [f"block{layer.R}x1 kernel groups: direct block kernel" if packed.format == "block" else "",
             "auto: kernel or dense conv, whichever measures faster per input shape" if mode == "auto" else ""]
    note = "; ".join(n for n in notes if n)
    return ConvertedLayer(name, shape, sparsity, packed.format, packed.params(), packed.nbytes, dense_bytes, note)


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def sparse_layers(model: nn.Module) -> dict[str, SparseLinear]:
    """The SparseLinear layers of ``model`` by name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, SparseLinear)}


def set_mode(model: nn.Module, mode: str) -> None:
    """Set every SparseLinear and SparseConv of ``model`` to ``mode`` ('auto', 'sparse' or 'dense')."""
    if mode not in MODES:
        raise SparsecraftError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    for layer in model.modules():
        if isinstance(layer, (SparseLinear, SparseConv)):
            layer.mode = mode


def weight_bytes(model: nn.Module) -> tuple[int, int]:
    """Weight memory of a converted (or sparse-kernel trained) model.

    Parameters
    ----------
    model : nn.Module

    Returns
    -------
    (int, int)
        Stored bytes and dense float32 bytes over its Linear, Conv1d and Conv2d weights, packed
        (SparseLinear, SparseConv: values and indices) or dense as they are.
    """
    stored = dense = 0
    for m in model.modules():
        if isinstance(m, TrainableValues):
            stored += m.weight_nbytes
            dense += 4 * math.prod(m.weight_shape)
        elif type(m) in (nn.Linear, *CONVS):
            stored += 4 * m.weight.numel()
            dense += 4 * m.weight.numel()
    return stored, dense


def rebuild_layer(fmt: str, shape: tuple[int, int], params: dict[str, Any], tensors: dict[str, torch.Tensor],
                  bias: Optional[torch.Tensor]) -> SparseLinear:
    """A SparseLinear from stored tensors (validated by the format)."""
    packed = FORMATS.get(fmt).from_tensors(shape, params, tensors)
    return SparseLinear(packed, bias)
