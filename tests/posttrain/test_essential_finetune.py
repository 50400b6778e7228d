"""Essential-sparsity knee detection and sweep; SquareHead/output distillation with fixed masks."""
from __future__ import annotations

import copy

import pytest
import torch

from sparsecraft.errors import SparsecraftError
from sparsecraft.posttrain import find_blocks, prune_model
from sparsecraft.posttrain.essential import DEFAULT_SPARSITIES, knee_index, magnitude_sweep
from sparsecraft.posttrain.finetune import DISTILL_LOSSES, distill, normalized_mse


def test_knee_of_flat_then_falling_curve() -> None:
    x = list(DEFAULT_SPARSITIES)
    assert len(x) == 20 and x[-1] == 0.95
    y = [1.0 if s <= 0.5 else 1.0 - (s - 0.5) * 2 for s in x]
    assert x[knee_index(x, y)] == 0.5
    y2 = [1.0 - 0.01 * s if s <= 0.7 else 0.993 - 3 * (s - 0.7) for s in x]
    assert x[knee_index(x, y2)] == 0.7
    assert knee_index(x, [1.0] * 20) == 0
    with pytest.raises(SparsecraftError):
        knee_index([0.0, 1.0], [1.0, 0.0])


def _block_density(model: torch.nn.Module) -> float:
    ws = [m.weight for m in find_blocks(model).modules() if isinstance(m, torch.nn.Linear)]
    return sum(int((w != 0).sum()) for w in ws) / sum(w.numel() for w in ws)


def test_magnitude_sweep_prunes_copies(tiny_decoder) -> None:
    before = copy.deepcopy(tiny_decoder.state_dict())
    result = magnitude_sweep(tiny_decoder, _block_density, [0.0, 0.25, 0.5, 0.75], name="density")
    assert result.values == pytest.approx([1.0, 0.75, 0.5, 0.25])
    assert all(torch.equal(v, before[k]) for k, v in tiny_decoder.state_dict().items())
    assert result.to_dict()["metric"] == "density"


def test_normalized_mse_ignores_padding() -> None:
    t = torch.ones(1, 3, 2)
    s = torch.zeros(1, 3, 2)
    s[0, 2] = 100.0
    mask = torch.tensor([[True, True, False]])
    assert float(normalized_mse(t, s, mask)) == pytest.approx(1.0)


@pytest.mark.parametrize("loss", ["squarehead", "output"])
def test_distillation_keeps_masks_and_lowers_loss(tiny_decoder, loss: str) -> None:
    teacher = copy.deepcopy(tiny_decoder)
    ids = torch.randint(0, 256, (16, 16), generator=torch.Generator().manual_seed(0))
    batches = [{"x": ids[i : i + 4]} for i in range(0, 16, 4)]
    sp, _ = prune_model(tiny_decoder, batches, "magnitude", 0.7)
    masks = {n: m.clone() for n, m in sp.masks.items()}
    assert len(masks) == 12 and set(masks) == {f"blocks.{n}.weight" for n, m in tiny_decoder.blocks.named_modules()
                                               if isinstance(m, torch.nn.Linear)}
    history = distill(sp, teacher, batches, loss=loss, steps=25, lr=3e-3)
    assert len(history) == 25
    assert sum(history[-4:]) < 0.7 * sum(history[:4])
    assert sp.masks.keys() == masks.keys()
    for name, keep in masks.items():
        assert torch.equal(sp.masks[name], keep)
        weight = tiny_decoder.get_parameter(name)
        assert not weight[~keep].any() and weight[keep].ne(0).float().mean() > 0.99  # zeros stay, kept weights train
    assert not torch.equal(teacher.blocks[0].attn.q_proj.weight * masks["blocks.0.attn.q_proj.weight"],
                           tiny_decoder.blocks[0].attn.q_proj.weight)


def test_distillation_errors(tiny_decoder) -> None:
    sp, _ = prune_model(copy.deepcopy(tiny_decoder), [], "magnitude", 0.5)
    with pytest.raises(SparsecraftError, match="unknown distillation loss"):
        distill(sp, tiny_decoder, [{"x": torch.zeros(1, 4, dtype=torch.long)}], loss="kl")
    with pytest.raises(SparsecraftError, match="steps >= 1"):
        distill(sp, tiny_decoder, [], steps=5)
    assert DISTILL_LOSSES.names() == ["output", "squarehead"]
