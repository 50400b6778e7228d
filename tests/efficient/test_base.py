import copy

import pytest
import torch
from torch import nn

from sparsecraft.efficient import METHODS, apply
from sparsecraft.errors import SparsecraftError

CASES = [("lora", {"rank": 2}), ("s2ft", {}), ("s2ft", {"select": "norm", "channel_fraction": 0.0}),
         ("pst", {"sparsity": 0.5, "rank": 2, "score_rank": 2}), ("movement", {"sparsity": 0.75}),
         ("sara", {"fraction": 0.2})]


def test_registry_names():
    assert METHODS.names() == ["lora", "movement", "pst", "s2ft", "sara"]


@pytest.mark.parametrize("method,opts", CASES)
def test_starts_from_the_pretrained_function_and_only_adapter_params_train(lm, method, opts):
    model, x = lm
    before = model(x)
    adapted = copy.deepcopy(model)
    adapter = apply(adapted, method, within="blocks", **opts)
    torch.testing.assert_close(adapted(x), before, atol=1e-5, rtol=0)
    trainable = {id(p) for p in adapter.trainable_parameters()}
    assert trainable and all((id(p) in trainable) == p.requires_grad for p in adapted.parameters())
    assert adapter.num_trainable() == sum(p.numel() for p in adapter.trainable_parameters())


@pytest.mark.parametrize("method,opts", CASES)
def test_merge_gives_the_same_function_as_plain_linears_of_the_original_shapes(lm, method, opts, train):
    model, x = lm
    adapted = copy.deepcopy(model)
    adapter = apply(adapted, method, within="blocks", **opts)
    train(adapter, x)
    with torch.no_grad():
        trained = adapted(x)
    merged = adapter.merge()
    torch.testing.assert_close(merged(x), trained, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(trained, model(x), atol=1e-4)  # training changed something
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in merged.state_dict().items()} == shapes  # no extra inference weights
    assert all(type(m) in (nn.Linear,) for n, m in merged.named_modules() if n.endswith(("proj", "fc1", "fc2")))
    with pytest.raises(SparsecraftError, match="already merged"):
        adapter.merge()


def test_bad_input_one_line_errors(lm):
    model, _ = lm
    with pytest.raises(SparsecraftError, match="unknown parameter-efficient method 'dora'; choose one of: lora"):
        apply(model, "dora")
    with pytest.raises(SparsecraftError, match="method 'lora' has no option 'sparsity'; its options are: rank, alpha"):
        apply(model, "lora", sparsity=0.5)
    with pytest.raises(SparsecraftError, match=r"--rank must be an integer >= 1, got 0"):
        apply(model, "lora", rank=0)
    with pytest.raises(SparsecraftError, match="matches no prunable layer"):
        apply(model, "lora", layers=["nope"])
