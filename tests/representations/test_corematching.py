import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsecraft.errors import SparsecraftError
from sparsecraft.representations.corematching import (
    core_neurons,
    corematching_forward,
    matching_scores,
    token_core_neurons,
)

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                     intermediate_size=24, max_position_embeddings=40)
    return transformers.BertModel(config, add_pooling_layer=False).eval()


@settings(max_examples=30, deadline=None)
@given(t=st.integers(1, 9), h=st.integers(1, 20), alpha=st.floats(0.05, 1.0), seed=st.integers(0, 999))
def test_token_core_counts_and_ranks(t, h, alpha, seed):
    acts = torch.randn(t, h, generator=torch.Generator().manual_seed(seed))
    cores = token_core_neurons(acts, alpha)
    for row, core in zip(acts, cores):
        positives = int((row > 0).sum())
        assert int(core.sum()) == math.ceil(positives * alpha)
        assert bool((row[core] > 0).all())
        if core.any() and (~core & (row > 0)).any():
            assert row[core].min() >= row[~core & (row > 0)].max()


def test_core_neurons_and_matching_scores_by_hand():
    cores = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 1]], dtype=torch.bool)
    assert core_neurons(cores, 0.5).tolist() == [True, True, False, False]
    assert core_neurons(cores, 1.0).tolist() == [True, False, False, False]
    assert matching_scores(cores, core_neurons(cores, 0.5)).tolist() == [2, 1, 2]


@settings(max_examples=8, deadline=None)
@given(t=st.integers(2, 30), seed=st.integers(0, 99))
def test_no_pruning_equals_the_dense_model(bert, t, seed):
    ids = torch.randint(0, 50, (1, t), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = bert(input_ids=ids).last_hidden_state
    out, stats = corematching_forward(bert, ids, prune_layer=1)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert stats.macs == stats.dense_macs
    assert stats.tokens == [t] * 3 and stats.neurons == [24] * 3


def test_token_pruning_keeps_cls_and_the_budget(bert):
    ids = torch.randint(0, 50, (1, 21), generator=torch.Generator().manual_seed(1))
    out, stats = corematching_forward(bert, ids, prune_layer=0, token_keep=0.3)
    assert stats.tokens == [21, 7, 7]
    assert out.shape == (1, 7, 16)
    assert stats.macs < stats.dense_macs
    # [CLS] (position 0) is always kept, so a keep of one token is [CLS] alone after layer 0
    one, _ = corematching_forward(bert, ids, prune_layer=2, token_keep=1e-3)
    with torch.no_grad():
        ref = bert(input_ids=ids).last_hidden_state
    torch.testing.assert_close(one[0, 0], ref[0, 0], atol=1e-5, rtol=1e-5)


def test_freeze_pruned_returns_every_token_with_pruned_ones_from_the_prune_layer(bert):
    ids = torch.randint(0, 50, (1, 10), generator=torch.Generator().manual_seed(5))
    kept, _ = corematching_forward(bert, ids, prune_layer=1, token_keep=0.5)
    full, stats = corematching_forward(bert, ids, prune_layer=1, token_keep=0.5, freeze_pruned=True)
    assert full.shape == (1, 10, 16) and stats.tokens == [10, 10, 5]
    with torch.no_grad():
        states = bert(input_ids=ids, output_hidden_states=True).hidden_states[2][0]  # after layer 1
    changed = ~torch.isclose(full[0], states, atol=1e-6).all(1)
    assert int(changed.sum()) == 5 and bool(changed[0])  # the 5 carried tokens, [CLS] among them
    torch.testing.assert_close(full[0, changed], kept[0])


def test_neuron_pruning_computes_only_core_neurons(bert):
    ids = torch.randint(0, 50, (1, 15), generator=torch.Generator().manual_seed(2))
    _, stats = corematching_forward(bert, ids, prune_layer=0, neurons=True, beta=0.3, probe=4)
    assert stats.neurons[0] == 24
    assert all(n < 24 for n in stats.neurons[1:])
    assert stats.tokens == [15] * 3


def test_random_rule_is_a_seeded_control(bert):
    ids = torch.randint(0, 50, (1, 12), generator=torch.Generator().manual_seed(3))
    a, _ = corematching_forward(bert, ids, prune_layer=0, token_keep=0.5, token_rule="random", seed=4)
    b, _ = corematching_forward(bert, ids, prune_layer=0, token_keep=0.5, token_rule="random", seed=4)
    assert torch.equal(a, b)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"prune_layer": 3}, "prune_layer must be in [0, 2], got 3"),
    ({"token_keep": 0.0}, "token_keep must be in (0, 1], got 0.0"),
    ({"alpha": 1.5}, "alpha must be in (0, 1], got 1.5"),
    ({"probe": 0}, "probe"),
    ({"token_rule": "attention"}, "unknown token_rule 'attention'; choose one of matching, random"),
])
def test_bad_input_one_line_errors(bert, kwargs, message):
    with pytest.raises(SparsecraftError) as err:
        corematching_forward(bert, torch.zeros(1, 5, dtype=torch.long), **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_shapes(bert):
    with pytest.raises(SparsecraftError, match="input_ids must be one sequence"):
        corematching_forward(bert, torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(SparsecraftError, match="acts must be"):
        token_core_neurons(torch.zeros(3), 0.5)
