"""compressed-tensors sparse formats: our writer and reader against the compressed-tensors package itself.

compressed-tensors 0.14.0.1 is the last release with the sparse compressors (``sparse-bitmask``,
``sparse-24-bitmask``); its decompressors must give our weights back bit for bit, and our reader
must read what its compressors write.
"""
from __future__ import annotations

import json

import pytest
import torch
from compressed_tensors.compressors import BaseCompressor, ModelCompressor
from compressed_tensors.config import SparsityCompressionConfig
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import sparsecraft
from sparsecraft.export import load_compressed, read_compressed, save_compressed
from sparsecraft.export.compressed_tensors import CT_FORMATS, compress_state_dict, pairs_2of4

from .conftest import encoder_linears, pruned_bert, same_bits, same_state, tiny_bert


def _their_decompress(path) -> dict[str, torch.Tensor]:
    mc = ModelCompressor.from_pretrained(str(path))
    return dict(mc.sparsity_compressor.decompress(str(path)))


@pytest.mark.parametrize("pattern,fmt", [("unstructured", "sparse-bitmask"), ("2:4", "sparse-24-bitmask")])
def test_our_export_decompresses_bit_exactly_in_compressed_tensors(tmp_path, pattern, fmt):
    model = pruned_bert(pattern)
    state = model.state_dict()
    out = save_compressed(model, tmp_path / "ct")
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors"
    sc = qc["sparsity_config"]
    assert sc["format"] == fmt and sc["targets"] == ["Linear"] and sc["ignore"] == ["pooler.dense"]
    # the block validates as compressed-tensors' own config class for that format
    parsed = SparsityCompressionConfig.load_from_registry(fmt, **sc)
    assert parsed.sparsity_structure == ("2:4" if fmt.startswith("sparse-24") else "unstructured")
    zeros = sum(int((state[f"{n}.weight"] == 0).sum()) for n in encoder_linears(model))
    total = sum(state[f"{n}.weight"].numel() for n in encoder_linears(model))
    assert sc["global_sparsity"] == pytest.approx(zeros / total)
    assert same_state(_their_decompress(out), state)
    assert same_state(read_compressed(out)[0], state)
    back = load_compressed(out)
    assert same_state(back.state_dict(), state)
    ids = torch.randint(0, 1000, (2, 9))
    torch.testing.assert_close(back(input_ids=ids).last_hidden_state, model(input_ids=ids).last_hidden_state,
                               rtol=0, atol=0)


@pytest.mark.parametrize("pattern,fmt", [("unstructured", "sparse-bitmask"), ("2:4", "sparse-24-bitmask")])
def test_compressed_tensors_writes_what_we_write_and_we_read_it(tmp_path, pattern, fmt):
    model = pruned_bert(pattern)
    state = model.state_dict()
    names = {n for n in encoder_linears(model)}
    cfg = SparsityCompressionConfig.load_from_registry(fmt, targets=["Linear"], ignore=["pooler.dense"])
    theirs = BaseCompressor.load_from_registry(fmt, config=cfg).compress(state, compression_targets=names)
    ours = compress_state_dict(state, [f"{n}.weight" for n in names], fmt)
    assert same_state(ours, theirs)  # the same tensors, byte for byte, under the same names
    out = tmp_path / "theirs"
    out.mkdir()
    model.config.save_pretrained(out)
    save_file({k: v.contiguous() for k, v in theirs.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    ModelCompressor(sparsity_config=cfg).update_config(str(out))
    assert same_state(read_compressed(out)[0], state)
    assert same_state(load_compressed(out).state_dict(), state)


def test_2of4_groups_with_fewer_than_two_nonzeros_come_back(tmp_path):
    model = pruned_bert("2:4")
    w = model.encoder.layer[0].attention.self.query.weight
    with torch.no_grad():
        w[0, :8] = 0.0  # two empty groups
        w[1, 0] = 0.0  # a group with one non-zero
    keep = pairs_2of4("q", w)
    assert keep.reshape(-1, 4).sum(1).eq(2).all() and keep[0, :4].tolist() == [True, True, False, False]
    out = save_compressed(model, tmp_path / "ct", format="sparse-24-bitmask")
    assert same_state(_their_decompress(out), model.state_dict())


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 9), cols=st.integers(1, 21), density=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_bitmask_matches_compressed_tensors_on_any_shape(rows, cols, density, seed):
    from compressed_tensors.compressors.sparse_compressors.sparse_bitmask import BitmaskTensor

    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * (torch.rand(rows, cols, generator=g) < density)
    ours = CT_FORMATS.get("sparse-bitmask").compress("w", w)
    theirs = BitmaskTensor.from_dense(w).dict(name_prefix="", device="cpu")
    assert same_state(ours, {k.lstrip("."): v for k, v in theirs.items()})
    assert same_bits(CT_FORMATS.get("sparse-bitmask").decompress(ours), w + 0.0)  # -0.0 * mask: stored as +0.0


def test_sizes_shrink_with_sparsity(tmp_path):
    model = pruned_bert("unstructured", 0.9)
    dense = tmp_path / "dense.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(dense))
    out = save_compressed(model, tmp_path / "ct")
    expected = 0  # per weight (R, C): 4 bytes a value -> 4 per non-zero, R * ceil(C / 8) bitmask, 8R offsets, shape
    for n in encoder_linears(model):
        w = model.get_submodule(n).weight
        rows, cols = w.shape
        expected += 4 * w.numel() - (4 * int((w != 0).sum()) + rows * -(-cols // 8) + 8 * rows + 16)
    saved = dense.stat().st_size - (out / "model.safetensors").stat().st_size
    # the rest: the safetensors header grows by one JSON entry (~80 bytes) per stored part
    assert 0 <= expected - saved < 4 * 96 * len(encoder_linears(model))
    assert expected > 0.7 * 4 * sum(model.get_submodule(n).weight.numel() for n in encoder_linears(model))


def test_bad_input_is_one_line(tmp_path):
    model = pruned_bert("unstructured")
    with pytest.raises(sparsecraft.SparsecraftError, match="not 2:4 sparse.*sparse-bitmask"):
        save_compressed(model, tmp_path / "a", format="sparse-24-bitmask")
    with pytest.raises(sparsecraft.SparsecraftError, match="unknown compressed-tensors format 'csr'"):
        save_compressed(model, tmp_path / "b", format="csr")
    with pytest.raises(sparsecraft.SparsecraftError, match="needs a transformers model"):
        save_compressed(torch.nn.Linear(4, 4), tmp_path / "c")
    with pytest.raises(sparsecraft.SparsecraftError, match="min_sparsity must be a fraction in"):
        save_compressed(model, tmp_path / "d", min_sparsity=5)
    assert not any(tmp_path.iterdir())
    out = save_compressed(model, tmp_path / "e")
    with pytest.raises(sparsecraft.SparsecraftError, match="already exists"):
        save_compressed(model, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["quantization_config"]["config_groups"] = {"group_0": {"targets": ["Linear"]}}
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(sparsecraft.SparsecraftError, match="is corrupt or truncated"):
        read_compressed(out)  # the manifest catches the edit
    (out / "sparsecraft-manifest.json").unlink()
    with pytest.raises(sparsecraft.SparsecraftError, match="quantized compressed-tensors model"):
        read_compressed(out)


def test_dense_linears_below_min_sparsity_stay_dense(tmp_path):
    model = tiny_bert()
    layers = encoder_linears(model)
    sparsecraft.prune(model, 0.5, layers=layers[:2], allocation="uniform").finalize()
    out = save_compressed(model, tmp_path / "ct")
    sc = json.loads((out / "config.json").read_text())["quantization_config"]["sparsity_config"]
    assert set(sc["ignore"]) == set(layers[2:]) | {"pooler.dense"}
    assert same_state(read_compressed(out)[0], model.state_dict())


@pytest.mark.slow
def test_minilm_round_trip_through_compressed_tensors(tmp_path):
    from sparsecraft.models.hf import load_pretrained

    model, tokenizer = load_pretrained("minilm")
    sparsecraft.prune(model, 0.5, "2:4", layers=encoder_linears(model)).finalize()
    out = save_compressed(model, tmp_path / "minilm24", tokenizer=tokenizer)
    assert same_state(_their_decompress(out), model.state_dict())
    assert (out / "tokenizer.json").is_file()
