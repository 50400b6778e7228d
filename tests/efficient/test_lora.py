import copy

import torch

from sparsecraft.efficient import apply


def test_lora_counts_and_merge_adds_scaled_product(lm, train):
    model, x = lm
    adapted = copy.deepcopy(model)
    adapter = apply(adapted, "lora", layers=["blocks.0.mlp.fc1"], rank=3, alpha=6.0)
    assert adapter.num_trainable() == 3 * (32 + 128)
    train(adapter, x)
    layer = adapted.blocks[0].mlp.fc1
    expected = model.blocks[0].mlp.fc1.weight + 2.0 * layer.lora_b.detach() @ layer.lora_a.detach()
    merged = adapter.merge()
    torch.testing.assert_close(merged.blocks[0].mlp.fc1.weight, expected)
    torch.testing.assert_close(merged.blocks[1].mlp.fc1.weight, model.blocks[1].mlp.fc1.weight, rtol=0, atol=0)
