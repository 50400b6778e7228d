"""The convert and bench-kernels subcommands: outputs, JSON, and one-line errors with exit 2."""
from __future__ import annotations

import json

import torch

from sparsecraft.cli import main
from sparsecraft.inference import load_converted, sparse_layers

from .conftest import require_native


def test_bench_kernels_json(capsys):
    require_native()
    threads = torch.get_num_threads()
    try:
        rc = main(["bench-kernels", "--shape", "64x128", "--sparsity", "0.9", "--batch", "1,5",
                   "--pattern", "unstructured,2:4,4x1", "--rounds", "2", "--threads", "1", "--json"])
    finally:
        torch.set_num_threads(threads)  # the command sets it for its process; keep other tests unaffected
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["threads"] == 1 and len(doc["rows"]) == 6
    by = {(r["pattern"], r["batch"]): r for r in doc["rows"]}
    assert by[("2:4", 1)]["bytes_vs_dense"] == 0.625
    assert by[("unstructured", 1)]["sparsity"] == 0.9
    assert all(r["kernel_ms"] > 0 and r["dispatch_choice"] in ("sparse", "dense") for r in doc["rows"])


def test_bench_kernels_bad_arguments(capsys):
    assert main(["bench-kernels", "--shape", "64by128"]) == 2
    assert main(["bench-kernels", "--sparsity", "90"]) == 2
    assert main(["bench-kernels", "--pattern", "3:4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and "--pattern" in err


def test_convert_checkpoint_roundtrip(tmp_path, capsys):
    ckpt, out = tmp_path / "p.safetensors", tmp_path / "c.safetensors"
    assert main(["prune", "--model", "mlp", "--data", "digits", "--sparsity", "0.8", "--allocation", "uniform",
                 "--out", str(ckpt)]) == 0
    capsys.readouterr()
    assert main(["convert", "--checkpoint", str(ckpt), "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["weight_bytes"] < doc["dense_weight_bytes"]
    assert {r["format"] for r in doc["rows"]} == {"csr16"}
    model = load_converted(out)
    assert len(sparse_layers(model)) == len(doc["rows"])
    assert model(torch.randn(3, 64)).shape == (3, 10)
    assert main(["convert", "--checkpoint", str(ckpt), "--out", str(out)]) == 2  # exists, no --force
    assert main(["convert", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert main(["convert", "--hf", str(tmp_path), "--out", str(tmp_path / "y")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_convert_hf_bert_dir_writes_the_fused_path(tmp_path, capsys):
    import transformers

    import sparsecraft
    from sparsecraft.inference import FusedBert
    from sparsecraft.models.hf import load_tokenizer

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_attention_heads=2, num_hidden_layers=2,
                                  intermediate_size=64, max_position_embeddings=32)
    model = transformers.BertModel(cfg).eval()
    sparsecraft.prune(model, sparsity=0.9, allocation="uniform", layers=["encoder.layer.*"]).finalize()
    src, out = tmp_path / "bert", tmp_path / "bert.sparse.safetensors"
    model.save_pretrained(src)
    load_tokenizer("minilm").save_pretrained(src)
    assert main(["convert", "--hf", str(src), "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {r["layer"] for r in doc["rows"]} >= {"layers.0.qkv", "layers.1.ffn_out"}
    loaded = load_converted(out)
    assert isinstance(loaded, FusedBert)
    ids = torch.randint(1, 30000, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).last_hidden_state, model(input_ids=ids).last_hidden_state,
                                   rtol=1e-4, atol=1e-4)
