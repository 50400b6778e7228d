"""The fused BERT path: equal to the dense masked model (padded and unpadded), save/load, compile, fallback."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import sparsecraft
from sparsecraft.inference import FusedBert, SparseLinear, convert, load_converted, save_converted, why_not_bert

from .conftest import require_native


def _bert(seed: int = 0, **overrides) -> nn.Module:
    import transformers

    cfg = dict(vocab_size=97, hidden_size=48, num_attention_heads=3, num_hidden_layers=2, intermediate_size=72,
               max_position_embeddings=40, hidden_act="gelu")
    cfg.update(overrides)
    torch.manual_seed(seed)
    return transformers.BertModel(transformers.BertConfig(**cfg)).eval()


def _pruned(pattern: str = "unstructured", sparsity: float = 0.9, seed: int = 0) -> nn.Module:
    model = _bert(seed)
    linears = [t.module_name for t in sparsecraft.find_targets(model, types=(nn.Linear,), within="encoder")]
    sparsecraft.prune(model, sparsity=sparsity, pattern=pattern, allocation="uniform", layers=linears).finalize()
    return model


def _batch(lengths: list[int], seq: int, left: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 97, (len(lengths), seq), generator=g)
    mask = torch.zeros(len(lengths), seq, dtype=torch.long)
    for i, n in enumerate(lengths):
        if left:
            mask[i, seq - n:] = 1
        else:
            mask[i, :n] = 1
    return {"input_ids": ids * mask, "attention_mask": mask}


def _assert_same(dense: nn.Module, fast: nn.Module, feed: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        ref = dense(**feed)
        got = fast(**feed)
    keep = feed.get("attention_mask", torch.ones_like(feed["input_ids"])).bool()
    torch.testing.assert_close(got.last_hidden_state[keep], ref.last_hidden_state[keep], rtol=1e-4, atol=1e-4)
    assert float(got.last_hidden_state[~keep].abs().sum()) == 0.0
    if keep[:, 0].all():  # the pooler reads the first token
        torch.testing.assert_close(got.pooler_output, ref.pooler_output, rtol=1e-4, atol=1e-4)


FEEDS = [([7, 7], 7, False), ([5, 1, 9, 3], 12, False), ([4, 9, 2], 11, True), ([13], 13, False)]


@pytest.mark.parametrize("pattern,sparsity", [("unstructured", 0.9), ("2:4", 0.5), ("block4x1", 0.7),
                                              ("unstructured", 0.0)])
def test_fused_bert_equals_dense_masked_model(isa, pattern, sparsity):
    """Every ISA, padded (right and left) and unpadded inputs, odd hidden size and head count."""
    model = _bert() if sparsity == 0.0 else _pruned(pattern, sparsity)
    dense = copy.deepcopy(model)
    fast, report = convert(model, mode="sparse")
    assert isinstance(fast, FusedBert)
    assert {r.name.split(".")[-1] for r in report} == {"qkv", "attn_out", "ffn_in", "ffn_out", "dense"}
    if sparsity:
        assert isinstance(fast.layers[0].qkv, SparseLinear) and fast.layers[0].qkv.out_features == 3 * 48
    for lengths, seq, left in FEEDS:
        _assert_same(dense, fast, _batch(lengths, seq, left))
    _assert_same(dense, fast, {"input_ids": _batch([6, 6], 6)["input_ids"]})  # no attention mask


def test_convert_leaves_the_model_and_selects_by_its_names():
    require_native()
    model = _pruned()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast, report = convert(model, keep_dense=["encoder.layer.0.attention.self.key", "pooler.dense"])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert type(model.pooler.dense) is nn.Linear
    names = {r.name for r in report}
    assert "layers.0.qkv" not in names and "layers.1.qkv" in names and "layers.0.ffn_in" in names
    assert type(fast.layers[0].qkv) is nn.Linear


def test_fused_save_load_round_trip(tmp_path):
    require_native()
    model = _pruned("2:4", 0.5)
    dense = copy.deepcopy(model)
    fast, _ = convert(model)
    path = save_converted(fast, tmp_path / "bert.sparse.safetensors")
    loaded = load_converted(path)
    assert isinstance(loaded, FusedBert)
    assert {n: m.format for n, m in loaded.named_modules() if isinstance(m, SparseLinear)} == \
           {n: m.format for n, m in fast.named_modules() if isinstance(m, SparseLinear)}
    _assert_same(dense, loaded, _batch([5, 1, 9], 10))
    into = load_converted(path, _bert(seed=3))  # a dense architecture given: fused and filled from the file
    _assert_same(dense, into, _batch([4, 8], 8))


def test_fused_bert_under_torch_compile():
    require_native()
    model = _pruned()
    dense = copy.deepcopy(model)
    fast, _ = convert(model, mode="sparse")
    compiled = torch.compile(fast, backend="aot_eager")
    for lengths, seq, left in FEEDS[:2]:
        _assert_same(dense, compiled, _batch(lengths, seq, left))


def test_fallback_says_why_in_one_line(capsys):
    require_native()
    mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():
        mlp[0].weight.mul_(torch.rand(16, 8) > 0.8)
    converted, report = convert(mlp)
    assert converted is mlp and isinstance(mlp[0], SparseLinear)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "layer by layer" in err[0] and "Sequential" in err[0]
    relu = _bert(hidden_act="relu")
    assert "gelu" in why_not_bert(relu)
    converted, _ = convert(relu, min_sparsity=0.0)
    assert converted is relu and len(capsys.readouterr().err.strip().splitlines()) == 1
    convert(nn.Sequential(nn.Linear(4, 4)), fuse="never")
    assert capsys.readouterr().err == ""
    with pytest.raises(sparsecraft.SparsecraftError, match="fuse"):
        convert(mlp, fuse="always")


@pytest.mark.slow
def test_minilm_fused_equals_dense_on_real_paragraphs():
    require_native()
    from sparsecraft.data.text import paragraphs
    from sparsecraft.models.hf import load_pretrained

    model, tokenizer = load_pretrained("minilm")
    linears = [t.module_name for t in sparsecraft.find_targets(model, types=(nn.Linear,), within="encoder")]
    sparsecraft.prune(model, sparsity=0.9, allocation="uniform", layers=linears).finalize()
    dense = copy.deepcopy(model)
    fast, _ = convert(model)
    feed = dict(tokenizer(paragraphs()[:6], padding=True, truncation=True, max_length=128, return_tensors="pt"))
    feed.pop("token_type_ids", None)
    _assert_same(dense, fast, feed)
