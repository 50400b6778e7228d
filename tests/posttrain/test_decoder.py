"""The in-project decoder LM: trained once, cached, perplexity before/after pruning."""
from __future__ import annotations

import math

import torch

from sparsecraft.posttrain import prune_model
from sparsecraft.posttrain.decoder import DecoderConfig, describe, load_decoder

TINY = DecoderConfig(d_model=16, num_heads=2, num_layers=2, seq_len=32, epochs=2, batch_size=32, lr=1e-2,
                     max_train_windows=256)


def test_decoder_is_cached_and_pruning_raises_perplexity(tmp_path) -> None:
    first = load_decoder(TINY, cache_dir=tmp_path, progress=False)
    assert first.path is not None and first.path.is_file() and first.path.parent == tmp_path / "posttrain"
    assert 1.0 < first.perplexity < 100.0  # trained: far better than uniform over 256 bytes
    second = load_decoder(TINY, cache_dir=tmp_path, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()))
    assert second.perplexity == first.perplexity
    batches = first.calibration_batches(20, batch_size=8)
    assert [len(b["x"]) for b in batches] == [8, 8, 4] and batches[0]["x"].shape[1] == 32
    _, report = prune_model(second.model, batches, "sparsegpt", 0.0, "2:4")
    assert report.overall_sparsity == 0.5
    assert second.eval_perplexity() > first.perplexity
    assert math.isclose(first.eval_perplexity(), first.perplexity)
    info = describe(first)
    assert info["parameters"] == sum(p.numel() for p in first.model.parameters()) and info["d_model"] == 16
