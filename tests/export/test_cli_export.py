"""``sparsecraft export --format compressed-tensors`` from a checkpoint and from a transformers directory."""
from __future__ import annotations

import json

import pytest
import torch

import sparsecraft
from sparsecraft.cli import main
from sparsecraft.export import read_compressed
from sparsecraft.models.hf import export_pretrained, hf_spec, load_tokenizer

from .conftest import encoder_linears, same_state, tiny_bert


@pytest.fixture
def pruned_dir(tmp_path):
    """A 2:4-pruned tiny BERT: a transformers directory (with MiniLM's tokenizer) and a sparsecraft checkpoint."""
    model = tiny_bert()
    sp = sparsecraft.prune(model, 0.5, "2:4", layers=encoder_linears(model))
    hf = export_pretrained(model, load_tokenizer("minilm"), tmp_path / "hf")
    ckpt = tmp_path / "m.safetensors"
    sp.save(str(ckpt), model_spec=hf_spec(str(hf), model))
    return hf, ckpt, {k: v.clone() for k, v in sp.finalize().state_dict().items()}


def _run(capsys, *argv):
    capsys.readouterr()
    code = main([str(a) for a in argv])
    return (code, *capsys.readouterr())


def test_export_from_checkpoint_and_directory(tmp_path, capsys, pruned_dir):
    hf, ckpt, state = pruned_dir
    for flag, src in (("--checkpoint", ckpt), ("--hf", hf)):
        code, stdout, err = _run(capsys, "export", "--format", "compressed-tensors", flag, src,
                                 "--out", tmp_path / f"ct{flag}", "--json")
        assert code == 0, err
        report = json.loads(stdout)
        assert report["sparsity_config"]["format"] == "sparse-24-bitmask"
        assert {r["file"] for r in report["rows"]} >= {"config.json", "model.safetensors", "tokenizer.json"}
        back, _ = read_compressed(report["out"])
        assert same_state(back, state)


def test_export_user_errors_are_one_line(tmp_path, capsys, pruned_dir):
    hf, ckpt, _ = pruned_dir
    cases = [(("--format", "tflite"), "unknown --format 'tflite'"),
             (("--format", "compressed-tensors", "--sparse-format", "csr"), "unknown compressed-tensors format 'csr'"),
             (("--format", "compressed-tensors", "--min-sparsity", "50"), "--min-sparsity must be a fraction")]
    for extra, message in cases:
        code, _, err = _run(capsys, "export", "--hf", hf, "--out", tmp_path / "x", *extra)
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    mlp = tmp_path / "mlp.safetensors"
    sparsecraft.prune(torch.nn.Sequential(torch.nn.Linear(8, 8)), 0.5).save(str(mlp), model_spec={"name": "mlp"})
    code, _, err = _run(capsys, "export", "--format", "compressed-tensors", "--checkpoint", mlp,
                        "--out", tmp_path / "y")
    assert code == 2 and "needs a transformers model" in err


def test_export_onnx_from_checkpoint_and_converted(tmp_path, capsys, pruned_dir):
    from sparsecraft.export.onnx import TOLERANCE
    from sparsecraft.inference import convert, save_converted

    hf, ckpt, _ = pruned_dir
    fast, _ = convert(load_pretrained_dir(hf), min_sparsity=0.0, mode="dense")
    conv = save_converted(fast, tmp_path / "fast.safetensors")
    for flag, src in (("--checkpoint", ckpt), ("--converted", conv)):
        code, stdout, err = _run(capsys, "export", "--format", "onnx", flag, src, "--out", tmp_path / f"m{flag}.onnx",
                                 "--json")
        assert code == 0, err
        report = json.loads(stdout)
        assert report["rows"][0]["max_abs_diff"] <= TOLERANCE and report["bytes"] > 0
    code, _, err = _run(capsys, "export", "--format", "onnx", "--hf", hf, "--out", tmp_path / "x.onnx",
                        "--sparse-format", "sparse-bitmask")
    assert code == 2 and "--sparse-format does not apply to --format onnx" in err
    code, _, err = _run(capsys, "export", "--format", "compressed-tensors", "--converted", conv,
                        "--out", tmp_path / "y")
    assert code == 2 and "--converted applies to --format onnx" in err


def load_pretrained_dir(path):
    from sparsecraft.models.hf import load_pretrained

    return load_pretrained(str(path))[0]
