"""ONNX export of pruned and converted models, run in ONNX Runtime against torch (max |diff| <= 1e-4)."""
from __future__ import annotations

import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

import sparsecraft
from sparsecraft.export.onnx import TOLERANCE, dense_equivalent, export_onnx, max_difference, run_onnx
from sparsecraft.inference import FusedBert, SparseLinear, convert

from .conftest import encoder_linears, pruned_bert, same_bits


def bert_inputs(batch: int, seq: int, pad_from: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, seq, dtype=torch.long)
    if pad_from is not None:
        mask[0, pad_from:] = 0
    return {"input_ids": torch.randint(0, 1000, (batch, seq), generator=g), "attention_mask": mask,
            "token_type_ids": torch.zeros(batch, seq, dtype=torch.long)}


def initializers(path) -> list[torch.Tensor]:
    return [torch.from_numpy(numpy_helper.to_array(t).copy()) for t in onnx.load(str(path)).graph.initializer]


def holds_exactly(weights: list[torch.Tensor], w: torch.Tensor) -> bool:
    """Some initializer is ``w`` or ``w.T``, bit for bit (pruned zeros included)."""
    return any(same_bits(t, w) or same_bits(t, w.T.contiguous()) for t in weights)


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_pruned_bert_runs_in_onnxruntime_like_torch(tmp_path, pattern):
    model = pruned_bert(pattern)
    out = export_onnx(model, tmp_path / "m.onnx", bert_inputs(2, 7, pad_from=5))
    inits = initializers(out)
    for name in encoder_linears(model):
        w = model.get_submodule(name).weight.detach()
        assert int((w == 0).sum()) >= w.numel() // 2 and holds_exactly(inits, w), name
    names = [o.name for o in onnx.load(str(out)).graph.output]
    assert names == ["last_hidden_state", "pooler_output"]
    for batch, seq, pad in ((2, 7, 5), (3, 13, 4), (1, 5, None)):  # dynamic batch and sequence axes
        assert max_difference(out, model, bert_inputs(batch, seq, pad, seed=seq)) <= TOLERANCE


def test_converted_bert_exports_its_dense_equivalent(tmp_path):
    model = pruned_bert("unstructured", 0.8)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fast, _ = convert(model, min_sparsity=0.0, mode="dense")
    assert isinstance(fast, FusedBert) and any(isinstance(m, SparseLinear) for m in fast.modules())
    dense = dense_equivalent(fast)
    assert type(dense) is type(model) and all(same_bits(dense.state_dict()[k], state[k]) for k in state)
    out = export_onnx(fast, tmp_path / "fast.onnx", bert_inputs(2, 6))
    for batch, seq, pad in ((2, 6, None), (3, 9, 2)):  # padded tokens: the fused path's zeros are compared
        feed = bert_inputs(batch, seq, pad, seed=seq)
        assert max_difference(out, fast, feed) <= TOLERANCE
        assert max_difference(out, dense, feed) <= TOLERANCE


def test_converted_mlp_and_masked_model(tmp_path):
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))
    sp = sparsecraft.prune(mlp, 0.7)  # masks still attached: weight_mask buffers
    x = torch.randn(5, 12)
    out = export_onnx(mlp, tmp_path / "masked.onnx", x)
    assert max_difference(out, mlp, torch.randn(9, 12)) <= TOLERANCE
    sp.finalize()
    converted, _ = convert(mlp, min_sparsity=0.0, fuse="never")
    assert isinstance(converted[0], SparseLinear)
    out = export_onnx(converted, tmp_path / "mlp.onnx", x)
    assert holds_exactly(initializers(out), converted[0].packed.to_dense())
    assert max_difference(out, converted, torch.randn(3, 12)) <= TOLERANCE
    single = export_onnx(converted[2], tmp_path / "one.onnx", torch.randn(2, 16))
    assert run_onnx(single, torch.randn(4, 16))[0].shape == (4, 4)


def test_onnx_user_errors(tmp_path):
    class Dicts(nn.Module):
        def forward(self, x):
            return {"y": [x]}

    with pytest.raises(sparsecraft.SparsecraftError, match="ONNX export needs tensors"):
        export_onnx(Dicts(), tmp_path / "d.onnx", torch.randn(2, 3))
    lin = nn.Linear(3, 2)
    out = export_onnx(lin, tmp_path / "l.onnx", torch.randn(2, 3))
    with pytest.raises(sparsecraft.SparsecraftError, match="already exists"):
        export_onnx(lin, out, torch.randn(2, 3))
    with pytest.raises(sparsecraft.SparsecraftError, match=r"takes inputs \['input_0'\], got \['x'\]"):
        run_onnx(out, {"x": torch.randn(2, 3)})
    with pytest.raises(sparsecraft.SparsecraftError, match="does not exist"):
        run_onnx(tmp_path / "missing.onnx", torch.randn(2, 3))
