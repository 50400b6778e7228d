import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparsecraft.errors import SparsecraftError
from sparsecraft.models import TinyTransformer
from sparsecraft.representations import TopKActivation, sparsify_activations
from sparsecraft.representations.sparse_ffn import (
    ActivePredictor,
    SparseActivationFFN,
    predictor_recall,
    relufy,
    train_predictor,
    use_sparse_ffn,
)


def _ffn(d: int, hidden: int, d_out: int, shift: float, seed: int) -> tuple[nn.Linear, nn.Linear]:
    torch.manual_seed(seed)
    fc1, fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d_out)
    with torch.no_grad():
        fc1.bias -= shift  # push most units below zero
    return fc1, fc2


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 13), hidden=st.integers(1, 37), d_out=st.integers(1, 11), n=st.integers(1, 9),
       block=st.integers(1, 5), shift=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_equals_dense_ffn_on_odd_shapes(d, hidden, d_out, n, block, shift, seed):
    fc1, fc2 = _ffn(d, hidden, d_out, shift, seed)
    x = torch.randn(n, 2, d)
    sparse = SparseActivationFFN(fc1, fc2, block_size=block)
    with torch.no_grad():
        dense = fc2(torch.relu(fc1(x)))
    torch.testing.assert_close(sparse(x), dense, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        expected = (torch.relu(fc1(x)) != 0).sum(-1).flatten()
    assert torch.equal(sparse.last_active, expected)


@settings(max_examples=20, deadline=None)
@given(hidden=st.integers(2, 40), k=st.integers(1, 45), n=st.integers(1, 6), seed=st.integers(0, 1000))
def test_topk_budget_is_exact_and_matches_dense(hidden, k, n, seed):
    fc1, fc2 = _ffn(7, hidden, 5, 0.0, seed)
    with torch.no_grad():
        fc1.bias += 5.0  # every unit positive, so exactly min(k, hidden) survive
    x = torch.randn(n, 7)
    sparse = SparseActivationFFN(fc1, fc2, k=k, block_size=3)
    out = sparse(x)
    assert sparse.last_active.tolist() == [min(k, hidden)] * n
    with torch.no_grad():
        dense = fc2(TopKActivation(k=k)(torch.relu(fc1(x))))
    torch.testing.assert_close(out, dense, atol=1e-5, rtol=1e-5)


def test_gathered_rows_count_each_tokens_own_active_units():
    fc1, fc2 = _ffn(6, 20, 4, 0.5, 3)
    x = torch.randn(5, 6)
    sparse = SparseActivationFFN(fc1, fc2, block_size=2)
    sparse(x)
    with torch.no_grad():
        assert sparse.last_gathered == int((torch.relu(fc1(x)) != 0).sum())
    pred = ActivePredictor(6, 20, rank=2)
    gated = SparseActivationFFN(fc1, fc2, block_size=2, predictor=pred, candidates=3)
    gated(x)
    with torch.no_grad():
        picked = pred(x).topk(3, -1).indices
    w1_rows = sum(len(picked[i : i + 2].unique()) for i in range(0, 5, 2))
    assert int(gated.last_active.sum()) <= 3 * 5
    assert gated.last_gathered == w1_rows + int(gated.last_active.sum())


def test_model_swap_keeps_outputs_of_relu_transformer():
    torch.manual_seed(0)
    model = TinyTransformer(256, vocab_size=256, d_model=16, num_heads=2, num_layers=2, max_len=8,
                            causal=True).eval()
    assert relufy(model) == ["blocks.0.mlp.act", "blocks.1.mlp.act"]
    x = torch.randint(0, 256, (2, 8))
    with torch.no_grad():
        dense = model(x)
    assert use_sparse_ffn(model, block_size=4) == ["blocks.0.mlp", "blocks.1.mlp"]
    assert isinstance(model.blocks[1].mlp, SparseActivationFFN)
    torch.testing.assert_close(model(x), dense, atol=1e-5, rtol=1e-5)


def test_topk_activation_in_model_becomes_k():
    model = TinyTransformer(4, vocab_size=8, d_model=8, num_heads=2, num_layers=1, max_len=4)
    relufy(model)
    sparsify_activations(model, k=3)
    use_sparse_ffn(model)
    assert model.blocks[0].mlp.k == 3


def test_full_candidate_predictor_is_exact_and_recall_is_one():
    fc1, fc2 = _ffn(5, 12, 3, 0.3, 1)
    pred = ActivePredictor(5, 12, rank=2)
    x = torch.randn(4, 5)
    sparse = SparseActivationFFN(fc1, fc2, predictor=pred, candidates=12)
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), fc2(torch.relu(fc1(x))), atol=1e-5, rtol=1e-5)
    assert predictor_recall(pred, fc1, x, 12) == 1.0


def test_trained_predictor_beats_chance_on_low_rank_inputs():
    torch.manual_seed(0)
    fc1 = nn.Linear(16, 64)
    x = torch.randn(512, 4) @ torch.randn(4, 16)  # inputs on a 4-dim subspace: predictable
    pred = train_predictor(fc1, x, rank=8, steps=150, lr=2e-2)
    # chance recall of 16 random units out of 64 is 0.25
    assert predictor_recall(pred, fc1, x, 16) > 0.5


@pytest.mark.parametrize(("call", "message"), [
    (lambda: SparseActivationFFN(nn.Linear(3, 4), nn.Linear(5, 2)),
     "fc1 gives 4 hidden units but fc2 takes 5; pass the two Linears of one FFN"),
    (lambda: SparseActivationFFN(nn.Linear(3, 4), nn.Linear(4, 2), k=0), "k"),
    (lambda: SparseActivationFFN(nn.Linear(3, 4), nn.Linear(4, 2), candidates=2),
     "give predictor and candidates together"),
    (lambda: SparseActivationFFN(nn.Linear(3, 4), nn.Linear(4, 2), predictor=ActivePredictor(3, 5, 1),
                                 candidates=2), "predictor maps 3 -> 5 but the FFN is 3 -> 4"),
    (lambda: SparseActivationFFN(nn.Linear(3, 4), nn.Linear(4, 2))(torch.zeros(2, 5)),
     "input has 5 features, the FFN expects 3"),
    (lambda: SparseActivationFFN.from_feedforward(TinyTransformer(2, vocab_size=4, d_model=4, num_heads=1,
                                                                  num_layers=1).blocks[0].mlp),
     "needs an nn.ReLU activation"),
    (lambda: use_sparse_ffn(nn.Linear(2, 2)), "no FeedForward block"),
    (lambda: relufy(nn.Sequential(nn.Linear(2, 2))), "no FeedForward block"),
    (lambda: train_predictor(nn.Linear(3, 4), torch.zeros(5, 2), rank=1), "inputs must be (N, 3)"),
])
def test_bad_input_one_line_errors(call, message):
    with pytest.raises(SparsecraftError, match=None) as err:
        call()
    assert message in str(err.value)
    assert "\n" not in str(err.value)
