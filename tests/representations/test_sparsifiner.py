import copy

import pytest
import torch

from sparsecraft.errors import SparsecraftError
from sparsecraft.models import TinyViT
from sparsecraft.representations import (
    ConnectivityPredictor,
    attention_macs,
    kept_teacher_mass,
    train_sparse_attention,
    use_dense_attention,
    use_local_windows,
    use_sparsifiner,
)


def _vit(seed=0):
    torch.manual_seed(seed)
    return TinyViT(3, in_channels=1, image_size=4, patch_size=1, upsample=1, d_model=16, num_heads=2, num_layers=2)


def test_predictor_keeps_budget_keys_per_query_and_per_image():
    model = _vit()
    preds = use_sparsifiner(model, budget=5, rank=2)
    assert len(preds) == 2 and all(isinstance(p, ConnectivityPredictor) for p in preds)
    x = torch.randn(4, 1, 4, 4)
    for attn in model.attentions():
        attn.record = True
    model(x)
    keys = model.attentions()[0].last_keys
    assert keys.shape == (4, 2, 16, 5)
    assert (keys.sort(-1).values.diff(dim=-1) > 0).all()  # distinct keys
    conn = preds[0].last_connectivity
    assert torch.allclose(conn.sum(-1), torch.ones(4, 2, 16))
    # the kept keys are the best-scored ones
    kept = conn.gather(-1, keys).min(-1).values
    dropped = conn.masked_fill(torch.zeros_like(conn, dtype=torch.bool).scatter_(-1, keys, True), -1).max(-1).values
    assert (kept >= dropped).all()
    assert not torch.equal(keys[0], keys[1])  # instance-dependent
    # predictor weights are part of the model
    names = [n for n, _ in model.named_parameters()]
    assert "blocks.0.attn.selector.q_low.weight" in names


def test_full_budget_is_dense_and_removal_restores_dense():
    model = _vit()
    x = torch.randn(3, 1, 4, 4)
    dense = model(x)
    use_sparsifiner(model, budget=16, rank=2)
    assert torch.allclose(model(x), dense, atol=1e-5)
    use_local_windows(model, 16)
    assert torch.allclose(model(x), dense, atol=1e-5)
    use_dense_attention(model)
    assert torch.allclose(model(x), dense, atol=1e-6)
    assert not any("selector" in n for n, _ in model.named_parameters())


def test_attention_macs_formula():
    model = TinyViT(10, 1, 8, patch_size=2, upsample=2, d_model=32, num_heads=4, num_layers=2)
    dense = attention_macs(model)
    assert dense["attention"] == 2 * 2 * 64 * 64 * 32 and dense["projections"] == 2 * 4 * 64 * 32 * 32
    sparse = attention_macs(model, budget=8, rank=2)
    assert sparse["attention"] == dense["attention"] // 8
    assert sparse["predictor"] == 2 * (2 * 64 * 32 * 4 * 2 + 4 * 64 * 64 * 2)
    assert sparse["mhsa"] == sparse["attention"] + sparse["predictor"] + sparse["projections"]


@pytest.mark.slow
def test_distillation_teaches_the_predictor_the_teacher_attention():
    torch.manual_seed(0)
    x = torch.randn(96, 1, 4, 4)
    y = (x.flatten(1)[:, :8].sum(1) > 0).long() + (x.flatten(1)[:, 8:].sum(1) > 1).long()
    teacher = _vit()
    with torch.no_grad():
        for attn in teacher.attentions():
            attn.q_proj.weight.mul_(6.0)  # peaked teacher attention: something to learn
    student = copy.deepcopy(teacher)
    use_sparsifiner(student, budget=4, rank=4)
    before = kept_teacher_mass(student, teacher, x)
    hist = train_sparse_attention(student, teacher, x, y, epochs=8, lr=1e-2, batch_size=32, sparse_weight=0.0)
    after = kept_teacher_mass(student, teacher, x)
    assert hist.conn[-1] < 0.8 * hist.conn[0]
    assert after > before + 0.1
    window = copy.deepcopy(teacher)
    use_local_windows(window, 4)
    hist = train_sparse_attention(window, teacher, x, y, epochs=1, batch_size=32)
    assert hist.conn == [0.0] and hist.sparse == [0.0]


def test_bad_sparse_attention_arguments():
    model = _vit()
    with pytest.raises(SparsecraftError, match=r"budget must be an int in \[1, 16\]"):
        use_sparsifiner(model, budget=17)
    with pytest.raises(SparsecraftError, match="needs a TinyViT"):
        use_local_windows(torch.nn.Linear(2, 2), 3)
    teacher = _vit()
    use_local_windows(model, 4)
    x, y = torch.randn(8, 1, 4, 4), torch.zeros(8, dtype=torch.long)
    with pytest.raises(SparsecraftError, match="sparse_weight must be finite"):
        train_sparse_attention(model, teacher, x, y, sparse_weight=-1.0)
    with pytest.raises(SparsecraftError, match="teacher must be a dense TinyViT"):
        train_sparse_attention(teacher, model, x, y)
    with pytest.raises(SparsecraftError, match="x has 8 rows but y has 7"):
        train_sparse_attention(model, teacher, x, y[:7])
    with pytest.raises(SparsecraftError, match="sparse attention in every layer"):
        kept_teacher_mass(teacher, teacher, x)
