import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparsecraft.efficient import apply, training_memory
from sparsecraft.efficient.s2ft import Coupled, _group_order, coupled_structures, permute_coupled
from sparsecraft.errors import SparsecraftError
from sparsecraft.models import MLP


def test_only_selected_heads_and_channels_of_the_output_projections_change(lm, train):
    model, x = lm
    adapted = copy.deepcopy(model)
    adapter = apply(adapted, "s2ft", head_fraction=0.5, channel_fraction=0.125, seed=3)
    # 2 blocks x (2 heads of 8 columns + 16 channels) x 32 rows
    assert adapter.num_trainable() == 2 * (2 * 8 + 16) * 32
    train(adapter, x)
    merged = adapter.merge()
    for b in range(2):
        heads = adapter.selected[f"blocks.{b}.attn.out_proj"]
        chans = adapter.selected[f"blocks.{b}.mlp.fc2"]
        assert len(heads) == 2 and len(chans) == 16
        cols = torch.tensor([h * 8 + i for h in heads for i in range(8)])
        for name, picked in ((f"blocks.{b}.attn.out_proj", cols), (f"blocks.{b}.mlp.fc2", torch.tensor(chans))):
            new, old = merged.get_submodule(name).weight, model.get_submodule(name).weight
            others = torch.ones(new.shape[1], dtype=torch.bool)
            others[picked] = False
            assert torch.equal(new[:, others], old[:, others])
            assert not torch.equal(new[:, picked], old[:, picked])
    new_sd, old_sd = merged.state_dict(), model.state_dict()
    changed = {k for k in old_sd if not torch.equal(new_sd[k], old_sd[k])}
    assert changed == {f"blocks.{b}.{n}.weight" for b in range(2) for n in ("attn.out_proj", "mlp.fc2")}


def test_norm_selection_picks_the_largest_output_columns(lm):
    model, _ = lm
    with torch.no_grad():
        model.blocks[0].attn.out_proj.weight[:, 16:24] *= 10  # head 2
    adapter = apply(model, "s2ft", head_fraction=0.25, channel_fraction=0.0, select="norm")
    assert adapter.selected["blocks.0.attn.out_proj"] == [2]
    assert "blocks.0.mlp.fc2" not in adapter.selected


@settings(max_examples=15, deadline=None)
@given(groups=st.integers(1, 6), size=st.integers(1, 4), k=st.integers(0, 6), seed=st.integers(0, 99))
def test_co_permutation_preserves_the_function(groups, size, k, seed):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(5, groups * size), nn.GELU(), nn.Linear(groups * size, 3))
    x = torch.randn(7, 5)
    before = net(x)
    chosen = torch.randperm(groups)[: min(k, groups)]
    perm = _group_order(chosen, groups, size)
    assert sorted(perm.tolist()) == list(range(groups * size))
    c = Coupled(["0"], "2", groups, size)
    permute_coupled(net, c, perm)
    torch.testing.assert_close(net(x), before, atol=1e-6, rtol=1e-6)
    picked = [g * size + i for g in chosen.tolist() for i in range(size)]
    assert perm[: len(picked)].tolist() == picked


def test_bert_blocks_are_recognised_and_permuted_without_changing_outputs():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=32, max_position_embeddings=16)
    torch.manual_seed(0)
    bert = transformers.BertModel(cfg).eval()
    ids = torch.randint(0, 50, (2, 8))
    before = bert(input_ids=ids).last_hidden_state
    found = coupled_structures(bert)
    assert [c.consumer for pair in found for c in pair] == [
        "encoder.layer.0.attention.output.dense", "encoder.layer.0.output.dense",
        "encoder.layer.1.attention.output.dense", "encoder.layer.1.output.dense"]
    adapter = apply(bert, "s2ft", head_fraction=0.5, channel_fraction=0.25)
    assert adapter.num_trainable() == 2 * (2 * 4 + 8) * 16
    torch.testing.assert_close(bert(input_ids=ids).last_hidden_state, before, atol=1e-5, rtol=0)
    torch.testing.assert_close(adapter.merge()(input_ids=ids).last_hidden_state, before, atol=1e-5, rtol=0)


def test_partial_backprop_memory_is_proportional_to_the_selection(lm, lm_loss):
    model, x = lm
    full = copy.deepcopy(model)
    full_mem = training_memory(full, lambda: lm_loss(full, x), torch.optim.Adam(full.parameters()))
    sparse = copy.deepcopy(model)
    adapter = apply(sparse, "s2ft", within="blocks")
    opt = torch.optim.Adam(adapter.trainable_parameters())
    mem = training_memory(sparse, lambda: lm_loss(sparse, x), opt)
    assert mem.gradients == 4 * adapter.num_trainable()
    assert mem.optimizer == 2 * 4 * adapter.num_trainable()
    assert mem.activations < full_mem.activations


def test_s2ft_bad_input():
    model = MLP(8, 4, hidden=(16,))
    with pytest.raises(SparsecraftError, match="found no transformer block"):
        apply(model, "s2ft")
    with pytest.raises(SparsecraftError, match="needs head_fraction or channel_fraction above 0"):
        apply(model, "s2ft", head_fraction=0.0, channel_fraction=0.0)
    with pytest.raises(SparsecraftError, match="selects whole blocks"):
        apply(model, "s2ft", layers=["net.0"])
    with pytest.raises(SparsecraftError, match=r"--select must be one of random, norm, got 'best'"):
        apply(model, "s2ft", select="best")
    with pytest.raises(SparsecraftError, match=r"--head-fraction must lie in \[0, 1\], got 1.5"):
        apply(model, "s2ft", head_fraction=1.5)
