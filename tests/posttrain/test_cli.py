"""``prune`` (post-training glue) and ``eval`` on the command line: end to end on MiniLM and every
error path (one line, exit 2, nothing written)."""
from __future__ import annotations

import argparse
import json

import pytest

from sparsecraft.cli import main
from sparsecraft.errors import SparsecraftError
from sparsecraft.posttrain.cli import add_arguments, run


def _prune(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return run(parser.parse_args(argv))


def test_add_arguments_skips_options_the_parent_defines() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sparsity", type=str, default="0.9")
    add_arguments(parser)
    args = parser.parse_args(["--out", "x"])
    assert args.sparsity == "0.9" and args.method == "sparsegpt" and args.calib_samples == 128


def test_prune_then_eval_minilm(tmp_path, capsys) -> None:
    out = tmp_path / "m24"
    assert _prune(["--method", "wanda", "--pattern", "2:4", "--calib-samples", "4", "--seq-len", "16",
                   "--out", str(out), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["method"] == "wanda" and meta["pattern"] == "2:4" and meta["overall_sparsity"] == 0.5
    assert len(meta["layers"]) == 36 and meta["source_model"] == "minilm"
    saved = json.loads((out / "sparsity.json").read_text())
    assert saved == meta
    assert main(["eval", "--model", str(out), "--eval-samples", "12", "--seq-len", "16", "-k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["eval_texts"] == 12 and result["sparsity"] == 0.5
    assert 0.0 < result["cosine"] < 1.0 and 0.0 <= result["knn3"] <= 1.0
    assert set(result["layers"]) == set(meta["layers"])
    with pytest.raises(SparsecraftError, match="already exists"):
        _prune(["--method", "magnitude", "--calib-samples", "1", "--out", str(out)])


def _tiny_model_dir(tmp_path, tokenizer, hidden: int):
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=32)
    path = tmp_path / f"bert{hidden}"
    BertModel(cfg).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("extra,message", [
    (["--model", "/no/such/model"], "neither 'minilm' nor a directory"),
    (["--calib-samples", "0"], "--calib-samples must be between 1"),
    (["--sparsity", "1.5"], "--sparsity must be a fraction"),
    (["--sparsity", "-0.1"], "--sparsity must be a fraction"),
    (["--method", "obs"], "unknown post-training method 'obs'"),
    (["--pattern", "2:2"], "N:M needs 0 < N < M"),
    (["--method", "owl-sparsegpt", "--pattern", "2:4"], "OWL"),
    (["BAD_DIR"], "does not exist"),
])
def test_prune_errors_write_nothing(tmp_path, capsys, extra: list[str], message: str) -> None:
    out = tmp_path / "out"
    argv = ["prune-posttrain", "--calib-samples", "2", "--seq-len", "8"]
    if extra == ["BAD_DIR"]:
        argv += ["--out", str(tmp_path / "missing" / "out")]
    else:
        argv += [*extra, "--out", str(out)]
    with pytest.raises(SparsecraftError, match=message):
        _prune(argv[1:])
    assert list(tmp_path.iterdir()) == []


def test_nm_that_does_not_divide_a_layer(tmp_path, minilm_tokenizer) -> None:
    model_dir = _tiny_model_dir(tmp_path, minilm_tokenizer, hidden=12)
    out = tmp_path / "out"
    with pytest.raises(SparsecraftError, match="12 inputs, not divisible by M=8"):
        _prune(["--model", str(model_dir), "--pattern", "4:8", "--calib-samples", "2", "--seq-len", "8", "--out", str(out)])
    assert not out.exists()
    assert _prune(["--model", str(model_dir), "--pattern", "2:4", "--calib-samples", "2", "--seq-len", "8", "--out", str(out)]) == 0
    assert json.loads((out / "sparsity.json").read_text())["overall_sparsity"] == 0.5


def test_eval_errors_are_one_line(tmp_path, capsys, minilm_tokenizer) -> None:
    assert main(["eval", "--model", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "neither 'minilm' nor a directory" in err
    model_dir = _tiny_model_dir(tmp_path, minilm_tokenizer, hidden=16)
    assert main(["eval", "--model", str(model_dir)]) == 2
    assert "pass --dense" in capsys.readouterr().err
