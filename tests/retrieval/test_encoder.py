import numpy as np
import pytest
import torch

from sparsecraft.errors import SparsecraftError
from sparsecraft.retrieval import (
    REGULARIZERS,
    IdfQueryEncoder,
    SparseDocEncoder,
    flops,
    prune_top_terms,
    query_matrix,
    to_index,
    train_sparse_encoder,
)


def tiny_bert(vocab: int = 40, seed: int = 0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32)
    return BertModel(cfg).eval()


def test_flops_matches_numpy_reference():
    rng = np.random.default_rng(0)
    w = rng.random((6, 9)).astype(np.float32) * (rng.random((6, 9)) < 0.4)
    idf = rng.random(9).astype(np.float32) * 3 + 0.5
    ref = float(((w.mean(0)) ** 2).sum())
    assert float(flops(torch.from_numpy(w))) == pytest.approx(ref, rel=1e-5)
    idf_aware = REGULARIZERS.get("idf_flops")(torch.from_numpy(w), torch.from_numpy(idf))
    assert float(idf_aware) == pytest.approx(ref, rel=1e-5)
    c = idf.astype(np.float64) ** 2 / np.mean(idf.astype(np.float64) ** 2)
    ref_plain = float((c * w.mean(0) ** 2).sum())
    got = float(REGULARIZERS.get("flops")(torch.from_numpy(w), torch.from_numpy(idf)))
    assert got == pytest.approx(ref_plain, rel=1e-5)
    with pytest.raises(SparsecraftError, match="unknown sparsity regulariser 'l1'; choose one of: flops, idf_flops"):
        REGULARIZERS.get("l1")
    with pytest.raises(SparsecraftError, match="non-empty batch"):
        flops(torch.zeros(0, 3))


def test_encoder_output_non_negative_sparse_and_indexable():
    body = tiny_bert()
    vocab = list(range(5, 35))
    enc = SparseDocEncoder(body, vocab)
    torch.manual_seed(1)
    ids = torch.randint(5, 40, (4, 10))
    mask = torch.ones(4, 10, dtype=torch.long)
    mask[0, 6:] = 0
    with torch.no_grad():
        w = enc(ids, mask)
    assert w.shape == (4, 30) and bool((w >= 0).all())
    assert 0 < int((w > 0).sum()) < w.numel()  # log(1 + relu) zeroes the negative logits
    # at initialisation the projection is the tied embedding: logits = h E^T
    h = enc.token_states(ids, mask)
    ref = torch.log1p(torch.relu(h @ body.get_input_embeddings().weight[vocab].T))
    ref = (ref * mask.unsqueeze(-1)).amax(1)
    torch.testing.assert_close(w, ref, rtol=1e-5, atol=1e-6)
    pruned = prune_top_terms(w, 3)
    assert bool(((pruned > 0).sum(1) <= 3).all())
    torch.testing.assert_close(pruned.sum(1), torch.topk(w, 3, dim=1).values.sum(1))
    index = to_index(pruned, enc.vocab, 40)
    assert index.n_terms == 40 and index.nnz == int((pruned > 0).sum())
    # an index column is the vocabulary id, not the position in the output vocabulary
    q_terms = np.array([vocab[int(pruned[1].argmax())]])
    np.testing.assert_allclose(index.scores(q_terms, [1.0])[1], float(pruned[1].max()), rtol=1e-6)


def test_training_lowers_rank_loss_and_flops_sparsifies():
    body = tiny_bert()
    vocab = list(range(5, 40))
    torch.manual_seed(0)
    n = 12
    ids = torch.randint(5, 40, (n, 8))
    mask = torch.ones(n, 8, dtype=torch.long)
    states = body(input_ids=ids, attention_mask=mask).last_hidden_state.detach()
    # each query is two tokens of its document, weighted by a made-up IDF
    idf = np.linspace(0.5, 3.0, 40).astype(np.float32)
    qe = IdfQueryEncoder(type("Tok", (), {"vocab_size": 40})(), idf)
    queries = query_matrix([qe.encode_ids(ids[i, :2].tolist()) for i in range(n)], torch.as_tensor(vocab))
    idf_v = torch.as_tensor(idf[vocab])
    nnz = {}
    for lam in (0.0, 0.5):
        torch.manual_seed(0)
        enc = SparseDocEncoder(body, vocab)
        hist = train_sparse_encoder(enc, states, mask, queries, list(range(n)), idf_v, lam=lam, steps=60,
                                    batch_size=6, lr=1e-2)
        nnz[lam] = np.mean([h["nnz"] for h in hist[-5:]])
        if lam == 0.0:
            assert np.mean([h["rank"] for h in hist[-5:]]) < np.mean([h["rank"] for h in hist[:5]])
    assert nnz[0.5] < nnz[0.0]


def test_encoder_and_query_errors():
    body = tiny_bert()
    with pytest.raises(SparsecraftError, match="non-empty list of distinct token ids"):
        SparseDocEncoder(body, [])
    with pytest.raises(SparsecraftError, match=r"ids must be in \[0, 40\)"):
        SparseDocEncoder(body, [3, 99])
    with pytest.raises(SparsecraftError, match="max_terms must be a positive integer"):
        prune_top_terms(torch.ones(2, 3), 0)
    qe = IdfQueryEncoder(type("Tok", (), {"vocab_size": 4})(), np.ones(4, np.float32))
    with pytest.raises(SparsecraftError, match=r"token id outside \[0, 4\)"):
        qe.encode_ids([1, 7])
    terms, weights = qe.encode_ids([3, 1, 3])
    assert terms.tolist() == [1, 3] and weights.tolist() == [1.0, 1.0]
    enc = SparseDocEncoder(body, [5, 6, 7])
    with pytest.raises(SparsecraftError, match="at least 2 training queries"):
        train_sparse_encoder(enc, torch.zeros(3, 4, 16), torch.ones(3, 4), torch.zeros(1, 3), [0],
                             torch.ones(3))
    with pytest.raises(SparsecraftError, match="unknown sparsity regulariser 'bogus'"):
        train_sparse_encoder(enc, torch.zeros(3, 4, 16), torch.ones(3, 4), torch.zeros(2, 3), [0, 1],
                             torch.ones(3), regularizer="bogus")
