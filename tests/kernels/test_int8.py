"""int8 weights with per-group scales (csr16_int8, block_int8, dense_int8): the kernels against the dequantised
weight on every ISA path, the quantisation bound, byte counts, save/load, convert(weights="int8"), the CLI and
the one-line errors."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import sparsecraft
from sparsecraft.cli import main
from sparsecraft.errors import SparsecraftError
from sparsecraft.formats import Int8Block, Int8CSR, Int8Dense, load_packed, pack, save_packed
from sparsecraft.formats.int8 import dequantize, int8_nbytes, pack_int8, quantize
from sparsecraft.inference import FusedBert, SparseLinear, convert, load_converted, save_converted, sparse_layers

from .conftest import block_prune, magnitude_prune, nm_prune, require_native
from .test_bert import _batch, _bert, _pruned

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


FORMATS = st.sampled_from([("csr16_int8", {}), ("dense_int8", {}), ("block_int8", {"R": 4}), ("block_int8", {"R": 8}),
                           ("block_int8", {"R": 2}), ("block_int8", {"R": 16})])


@SETTINGS
@given(fmt=FORMATS, out=st.sampled_from([1, 7, 16, 33, 100]),
       inp=st.sampled_from([1, 5, 17, 48, 130, 300]), rows=st.sampled_from([1, 2, 3, 4, 5, 16, 23, 70]),
       sparsity=st.sampled_from([0.0, 0.5, 0.9, 1.0]), G=st.sampled_from([16, 32, 64, 128]), bias=st.booleans(),
       residual=st.booleans(), gelu=st.booleans(), seed=st.integers(0, 2**16))
def test_kernel_equals_the_dequantised_weight(isa, fmt, out, inp, rows, sparsity, G, bias, residual, gelu, seed):
    """Odd shapes, both regimes (<= 4 rows: gathers / contiguous loads; more: token panels), every epilogue;
    R x 1 blocks vectorized (R = 4, 8) and scalar (R = 2, 16), with a partial last block row."""
    fmt, params = fmt
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=g)
    w = block_prune(w, sparsity, params["R"], 1) if params else magnitude_prune(w, sparsity)
    x = torch.randn(rows, inp, generator=g) * 2
    b = torch.randn(out, generator=g) if bias else None
    res = torch.randn(rows, out, generator=g) if residual else None
    packed = pack(w, fmt, G=G, **params)
    assert bool((packed.to_dense()[w == 0] == 0).all())
    ref = torch.nn.functional.linear(x.double(), packed.to_dense().double(), None if b is None else b.double())
    ref = ref if res is None else ref + res.double()
    ref = torch.nn.functional.gelu(ref) if gelu else ref
    y = packed.linear(x, b, residual=res, gelu=gelu)
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5 * (1 + float(ref.abs().max())))


@pytest.mark.parametrize("rows", [1, 128])
@pytest.mark.parametrize("shape", [(1536, 384), (384, 1536)])
def test_minilm_shapes(isa, shape, rows):
    """Rows longer than one dequantisation segment (256 values) and the panel widths MiniLM uses."""
    out, inp = shape
    g = torch.Generator().manual_seed(rows)
    x, b = torch.randn(rows, inp, generator=g), torch.randn(out, generator=g)
    for fmt, sparsity in (("csr16_int8", 0.5), ("dense_int8", 0.0), ("block_int8", 0.9)):
        w = torch.randn(out, inp, generator=g)
        packed = pack(block_prune(w, sparsity, 4, 1) if fmt == "block_int8" else magnitude_prune(w, sparsity), fmt)
        ref = torch.nn.functional.linear(x.double(), packed.to_dense().double(), b.double())
        torch.testing.assert_close(packed.linear(x, b).double(), ref, rtol=1e-5,
                                   atol=1e-5 * (1 + float(ref.abs().max())))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 300), G=st.sampled_from([16, 32, 64]), scale=st.floats(1e-6, 1e3), seed=st.integers(0, 999))
def test_quantisation_error_is_at_most_half_a_step(n, G, scale, seed):
    values = torch.randn(n, generator=torch.Generator().manual_seed(seed)) * scale
    q, scales = quantize(values, G)
    groups = -(-n // G)
    assert q.dtype == torch.int8 and q.shape == (groups * G,) and scales.shape == (groups,)
    assert int(q.abs().max()) <= 127 if n else True
    assert bool((q[n:] == 0).all())
    err = (dequantize(q, scales, n, G) - values).abs()
    step = scales.repeat_interleave(G)[:n]
    assert bool((err <= step / 2 * (1 + 1e-5) + 1e-30).all())
    if n:  # the largest value of each group lands on +-127
        assert bool((q.view(groups, G).abs().amax(1)[scales > 0] == 127).all())


def test_sparse_layout_keeps_zeros_and_counts_bytes():
    g = torch.Generator().manual_seed(0)
    w = magnitude_prune(torch.randn(33, 70, generator=g), 0.7)
    w[5] = 0.0  # an empty row
    nnz = int((w != 0).sum())
    packed = pack(w, "csr16_int8", G=32)
    dense = packed.to_dense()
    assert bool((dense[w == 0] == 0).all()) and packed.stored_values == nnz
    groups = -(-nnz // 32)
    assert packed.nbytes == 4 * 34 + 2 * nnz + 32 * groups + 4 * groups
    rows, cols = packed.positions()
    assert torch.equal(dense[rows, cols], packed.values())
    full = pack(w, "dense_int8", G=32)
    assert full.nbytes == -(-33 * 70 // 32) * (32 + 4) and full.stored_values == 33 * 70
    assert full.describe() == 'dense_int8{"G": 32} 33x70'


@pytest.mark.parametrize("fmt", ["csr16_int8", "dense_int8", "block_int8"])
def test_save_load_roundtrip_and_corrupt_files(tmp_path, fmt):
    from safetensors.torch import load_file, save_file

    w = block_prune(torch.randn(20, 50, generator=torch.Generator().manual_seed(1)), 0.6, 4, 1)
    params = {"R": 4} if fmt == "block_int8" else {}
    packed = pack(w, fmt, G=16, **params)
    path = save_packed(packed, tmp_path / "w.safetensors")
    back = load_packed(path)
    assert type(back) is type(packed) and back.G == 16 and torch.equal(back.to_dense(), packed.to_dense())
    x = torch.randn(3, 50)
    assert torch.equal(back.linear(x), packed.linear(x))
    meta = {"sparsecraft_packed": json.dumps({"format": fmt, "shape": [20, 50], "params": {"G": 24, **params},
                                              "version": "1"})}
    tensors = load_file(str(path))
    save_file(tensors, str(tmp_path / "g.safetensors"), metadata=meta)
    with pytest.raises(SparsecraftError, match="power of two"):
        load_packed(tmp_path / "g.safetensors")
    meta = {"sparsecraft_packed": json.dumps({"format": fmt, "shape": [20, 50], "params": {"G": 16, **params},
                                              "version": "1"})}
    save_file({**tensors, "scales": -tensors["scales"] - 1}, str(tmp_path / "s.safetensors"), metadata=meta)
    with pytest.raises(SparsecraftError, match="finite and >= 0"):
        load_packed(tmp_path / "s.safetensors")
    save_file({**tensors, "q": tensors["q"].float()}, str(tmp_path / "q.safetensors"), metadata=meta)
    with pytest.raises(SparsecraftError, match="'q' has dtype torch.float32"):
        load_packed(tmp_path / "q.safetensors")


def test_bad_parameters_are_one_line_errors():
    w = torch.randn(4, 32)
    for G, msg in ((24, "power of two"), (8, r"G must be an integer in \[16, 4096\]"), (True, "G must be")):
        with pytest.raises(SparsecraftError, match=msg):
            pack(w, "csr16_int8", G=G)
    with pytest.raises(SparsecraftError, match="unknown parameter"):
        pack(w, "dense_int8", N=2)
    with pytest.raises(SparsecraftError, match="R a power of two"):
        pack(w, "block_int8", R=3)
    with pytest.raises(SparsecraftError, match="inference only"):
        SparseLinear.trainable(w, w != 0, format="csr16_int8")
    model = nn.Sequential(nn.Linear(32, 4))
    with pytest.raises(SparsecraftError, match="weights must be one of fp32, int8"):
        convert(model, weights="int4")
    with pytest.raises(SparsecraftError, match="power of two"):
        convert(model, weights="int8", group_size=40)
    with pytest.raises(SparsecraftError, match="not format 'nm'"):
        convert(model, weights="int8", format="nm")


def test_convert_int8_layer_by_layer():
    """Sparse layers -> csr16_int8, dense ones -> dense_int8, 1:4 zeros kept in csr16_int8 with a note."""
    require_native()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 8),
                          nn.ReLU(), nn.Linear(8, 16))
    with torch.no_grad():
        model[0].weight.copy_(magnitude_prune(model[0].weight, 0.8))
        model[2].weight.copy_(nm_prune(model[2].weight, 1, 4))
        model[6].weight.copy_(block_prune(model[6].weight, 0.5, 8, 1))
    dense = copy.deepcopy(model)
    fast, report = convert(model, fuse="never", weights="int8", mode="sparse")
    assert [r.format for r in report] == ["csr16_int8", "csr16_int8", "dense_int8", "block_int8"]
    assert report[3].params == {"R": 8, "G": 64}
    assert "nm zeros stored as csr16_int8" in report[1].note
    assert all(r.params == {"G": 64} for r in report[:3])
    nnz = int((dense[0].weight != 0).sum())
    groups = -(-nnz // 64)
    assert report[0].bytes_per_weight == (4 * 49 + 2 * nnz + 64 * groups + 4 * groups) / (48 * 64)
    assert report[2].as_dict()["bytes_per_weight"] == (-(-256 // 64) * 68) / 256
    dequantised = copy.deepcopy(dense)
    for i, layer in zip((0, 2, 4, 6), sparse_layers(fast).values()):
        dequantised[i].weight.data = layer.packed.to_dense()
    x = torch.randn(5, 64)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), dequantised(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast(x[:2]), dequantised(x[:2]), rtol=1e-5, atol=1e-5)
        assert float(torch.nn.functional.cosine_similarity(fast(x), dense(x)).min()) > 0.999


def test_int8_picks_the_smaller_layout():
    """csr16_int8 only where it takes fewer bytes than dense_int8 (above ~65% zeros); 2:4 stays dense_int8."""
    g = torch.Generator().manual_seed(4)
    w = torch.randn(32, 64, generator=g)
    for sparsity, fmt in ((0.0, "dense_int8"), (0.5, "dense_int8"), (0.6, "dense_int8"), (0.7, "csr16_int8"),
                          (0.9, "csr16_int8")):
        pruned = magnitude_prune(w, sparsity)
        sizes = int8_nbytes((32, 64), int((pruned != 0).sum()), 64)
        packed = pack_int8(pruned, sparse=True)
        assert packed.format == fmt and packed.nbytes == min(sizes.values()) == sizes[fmt]
    assert pack_int8(magnitude_prune(w, 0.9), sparse=False).format == "dense_int8"
    for sparsity, fmt in ((0.2, "dense_int8"), (0.5, "block_int8")):  # 4 x 1 blocks pay above ~35% zeros
        blocked = block_prune(w, sparsity, 4, 1)
        packed = pack_int8(blocked, sparse=True)
        assert packed.format == fmt and packed.nbytes == min(int8_nbytes((32, 64), int((blocked != 0).sum()), 64,
                                                                          {4: int((blocked != 0).sum()) // 4}).values())
    model = nn.Sequential(nn.Linear(64, 32))
    with torch.no_grad():
        model[0].weight.copy_(nm_prune(w, 2, 4))
    _, report = convert(model, weights="int8", fuse="never")
    assert report[0].format == "dense_int8" and "smaller than the sparse int8 layouts" in report[0].note


@pytest.mark.slow
def test_convert_int8_fused_bert_and_save_load(tmp_path, isa):
    """FusedBert with int8 Linears at 90% and 0%: equal to the dequantised dense model, padded inputs, and
    save_converted / load_converted give the same outputs bit for bit."""
    for model, want in ((_pruned("unstructured", 0.9), "csr16_int8"), (_pruned("block4x1", 0.7), "block_int8"),
                        (_bert(), "dense_int8")):
        dense = copy.deepcopy(model)
        fast, report = convert(model, weights="int8", group_size=32, mode="sparse")
        assert isinstance(fast, FusedBert)
        assert {r.format for r in report if r.name.startswith("layers.")} == {want}
        assert [r.format for r in report if r.name == "pooler.dense"] == ["dense_int8"]  # not pruned
        feed = _batch([5, 1, 9, 3], 12)
        keep = feed["attention_mask"].bool()
        with torch.no_grad():
            got = fast(**feed).last_hidden_state
            ref = dense(**feed).last_hidden_state
        cos = torch.nn.functional.cosine_similarity(got[keep], ref[keep])
        assert float(cos.min()) > 0.999
        path = save_converted(fast, tmp_path / f"{want}.safetensors")
        loaded = load_converted(path)
        sparsecraft.inference.set_mode(loaded, "sparse")
        assert {type(m.packed) for m in sparse_layers(loaded).values()} <= {Int8CSR, Int8Block, Int8Dense}
        with torch.no_grad():
            assert torch.equal(loaded(**feed).last_hidden_state, got)


def test_int8_layer_dequantised_model_equality(isa):
    """One layer, the model-level statement: a SparseLinear over int8 equals nn.Linear on the dequantised weight."""
    w = magnitude_prune(torch.randn(40, 96, generator=torch.Generator().manual_seed(3)), 0.5)
    for packed in (Int8CSR.pack(w), Int8Dense.pack(w, G=16), Int8Block.pack(w, R=8)):
        layer = SparseLinear(packed, torch.randn(40), mode="sparse")
        ref = nn.Linear(96, 40)
        ref.weight.data, ref.bias.data = packed.to_dense(), layer.bias.data.clone()
        x = torch.randn(2, 7, 96)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), ref(x), rtol=1e-5, atol=1e-5)


def test_cli_convert_int8(tmp_path, capsys):
    require_native()
    ckpt, out = tmp_path / "p.safetensors", tmp_path / "c.safetensors"
    assert main(["prune", "--model", "mlp", "--data", "digits", "--sparsity", "0.8", "--allocation", "uniform",
                 "--out", str(ckpt)]) == 0
    capsys.readouterr()
    assert main(["convert", "--checkpoint", str(ckpt), "--out", str(out), "--int8", "--group-size", "32",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {r["format"] for r in doc["rows"]} <= {"csr16_int8", "dense_int8"} and doc["rows"]
    assert doc["bytes_per_weight"] == pytest.approx(4 * doc["weight_bytes"] / doc["dense_weight_bytes"])
    assert all(r["bytes_per_weight"] < 1.2 for r in doc["rows"])
    model = load_converted(out)
    assert {m.format for m in sparse_layers(model).values()} == {r["format"] for r in doc["rows"]}
    assert model(torch.randn(3, 64)).shape == (3, 10)
    assert main(["convert", "--checkpoint", str(ckpt), "--out", str(tmp_path / "x"), "--group-size", "32"]) == 2
    assert main(["convert", "--checkpoint", str(ckpt), "--out", str(tmp_path / "y"), "--int8",
                 "--group-size", "20"]) == 2
    assert main(["convert", "--checkpoint", str(ckpt), "--out", str(tmp_path / "z"), "--int8", "--format", "nm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "add --int8" in err[0] and "power of two" in err[1] and "drop --format" in err[2]


def test_int8_op_under_torch_compile():
    """q8_linear has a fake implementation: the three int8 layouts trace with fullgraph=True; empty batch works."""
    require_native()
    w = block_prune(torch.randn(24, 32, generator=torch.Generator().manual_seed(5)), 0.5, 4, 1)
    layouts = [pack(w, "csr16_int8"), pack(w, "block_int8", R=4), pack(w, "dense_int8")]
    b = torch.randn(24)

    def f(x):
        return sum(torch.relu(p.linear(x, b)) for p in layouts)

    x = torch.randn(5, 32)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), f(x))
    assert all(p.linear(torch.zeros(0, 32)).shape == (0, 24) for p in layouts)
