"""A tiny causal decoder LM trained in-project on the pydoc text, cached after the first run.

This gives the post-training pipeline a decoder-style model with a real language-modelling
objective: :func:`load_decoder` trains a byte-level :class:`~sparsecraft.models.TinyTransformer`
(``causal=True``) on the train paragraphs, measures held-out perplexity on the eval paragraphs,
and stores the weights under ``$SPARSECRAFT_CACHE`` (default ``~/.cache/sparsecraft``)
``/posttrain/tinylm-<hash>.safetensors``, the hash covering the config and the Python version (the
text ships with Python). Calibration windows come from the calibration paragraphs.
"""
from __future__ import annotations

import hashlib
import json
import math
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import DataSplits, load_text_lm
from ..data.mnist1d import default_cache_dir
from ..io import atomic_path, read_safetensors
from ..models import TinyTransformer, train_classifier
from .metrics import perplexity


@dataclass(frozen=True)
class DecoderConfig:
    """Size and training budget of the tiny LM (defaults: ~0.8 M parameters, a few CPU minutes)."""

    d_model: int = 128
    num_heads: int = 4
    num_layers: int = 4
    seq_len: int = 64
    epochs: int = 4
    batch_size: int = 64
    lr: float = 3e-3
    max_train_windows: int = 0  # 0 = all
    seed: int = 0

    def key(self) -> str:
        blob = json.dumps({**asdict(self), "python": platform.python_version()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class Decoder:
    """The trained model, its data splits and the dense held-out perplexity."""

    model: nn.Module
    data: DataSplits
    config: DecoderConfig
    perplexity: float
    path: Path | None

    def calibration_batches(self, n: int, batch_size: int = 16) -> list[dict[str, torch.Tensor]]:
        """``n`` calibration windows ``(B, seq_len)`` as keyword batches of ``model.forward``."""
        x = self.data.calib_x[:n]
        return [{"x": x[i : i + batch_size]} for i in range(0, len(x), batch_size)]

    def eval_perplexity(self, model: nn.Module | None = None) -> float:
        """Held-out perplexity of ``model`` (default: this decoder) on the eval windows."""
        return perplexity(model or self.model, self.data.test_x, self.data.test_y)


def build(config: DecoderConfig) -> TinyTransformer:
    torch.manual_seed(config.seed)
    return TinyTransformer(256, vocab_size=256, d_model=config.d_model, num_heads=config.num_heads,
                           num_layers=config.num_layers, max_len=config.seq_len, causal=True)


def load_decoder(
    config: DecoderConfig = DecoderConfig(), cache: bool = True, cache_dir: str | Path | None = None,
    progress: bool = True, num_threads: int | None = None,
) -> Decoder:
    """Train (or load from the cache) the tiny decoder LM described by ``config``."""
    from safetensors.torch import save_file

    data = load_text_lm(seed=config.seed, seq_len=config.seq_len)
    if config.max_train_windows:
        data.train_x, data.train_y = data.train_x[: config.max_train_windows], data.train_y[: config.max_train_windows]
    model = build(config)
    path = Path(cache_dir or default_cache_dir()) / "posttrain" / f"tinylm-{config.key()}.safetensors"
    if cache and path.is_file():
        model.load_state_dict(read_safetensors(path)[0])
    else:
        train_classifier(model, data, epochs=config.epochs, lr=config.lr, batch_size=config.batch_size,
                         seed=config.seed, progress=progress, num_threads=num_threads)
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path, force=True) as tmp:
                save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    model.eval()
    decoder = Decoder(model, data, config, math.nan, path if cache else None)
    decoder.perplexity = decoder.eval_perplexity()
    return decoder


def describe(decoder: Decoder) -> dict[str, Any]:
    """JSON-friendly summary: config, parameter count, dense perplexity, cache file."""
    return {**asdict(decoder.config), "parameters": sum(p.numel() for p in decoder.model.parameters()),
            "dense_perplexity": decoder.perplexity, "cache": str(decoder.path) if decoder.path else None}
