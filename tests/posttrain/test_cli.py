"""``sparsecraft posttrain`` and ``eval`` on the command line: end to end on MiniLM (prune with
SparseGPT 2:4, then report, convert and fine-tune the same checkpoint as any other), and every
error path (one line, exit 2, nothing written)."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from sparsecraft import Sparsifier, read_checkpoint
from sparsecraft.cli import main


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_posttrain_sparsegpt_24_then_report_convert_eval_and_finetune(tmp_path, capsys) -> None:
    out = tmp_path / "m24.safetensors"
    code, text, _ = _run(capsys, ["posttrain", "--model", "minilm", "--method", "sparsegpt", "--pattern", "2:4",
                                  "--calib-samples", "4", "--seq-len", "16", "--blocksize", "64",
                                  "--out", str(out), "--export-hf", str(tmp_path / "m24-hf"), "--json"])
    assert code == 0
    result = json.loads(text)
    assert result["method"] == "sparsegpt" and result["pattern"] == "2:4" and result["overall_sparsity"] == 0.5
    assert len(result["rows"]) == 36 and result["source_model"] == "minilm"

    # report: the checkpoint's masks, exactly half of every encoder Linear kept
    code, text, _ = _run(capsys, ["report", str(out), "--json"])
    assert code == 0
    report = json.loads(text)
    layers = [r for r in report["rows"] if r["layer"] != "total"]
    assert len(layers) == 36 and all(r["pattern"] == "2:4" and 2 * r["kept"] == r["params"] for r in layers)
    assert report["extra"]["method"] == "sparsegpt" and report["model"]["name"] == "hf"

    # convert: every encoder Linear becomes packed N:M 2:4
    code, text, _ = _run(capsys, ["convert", "--checkpoint", str(out),
                                  "--out", str(tmp_path / "m24.sparse.safetensors"), "--json"])
    assert code == 0
    converted = json.loads(text)["rows"]
    packed = [r for r in converted if r["format"] != "dense"]
    # the fused BERT path packs a block's Q/K/V as one layer: 4 packed Linears in each of the 6 blocks
    assert len(packed) == 24 and all(r["format"] == "nm" and r["params"] == "N=2,M=4" for r in packed)
    from sparsecraft.inference import load_converted

    fast = load_converted(tmp_path / "m24.sparse.safetensors")

    # eval: against the source model recorded in the checkpoint
    code, text, _ = _run(capsys, ["eval", "--checkpoint", str(out), "--eval-samples", "12", "--seq-len", "16",
                                  "-k", "3", "--json"])
    assert code == 0
    metrics = json.loads(text)
    assert metrics["dense"] == "minilm" and metrics["eval_texts"] == 12 and metrics["sparsity"] == 0.5
    assert 0.5 < metrics["cosine"] < 1.0 and len(metrics["layers"]) == 36

    # fine-tune with the masks held by the Sparsifier loaded from the same checkpoint
    from sparsecraft.models.hf import load_pretrained
    from sparsecraft.posttrain import distill
    from sparsecraft.posttrain.hf import calibration_texts, encode

    ckpt = read_checkpoint(out)
    sp = Sparsifier.load(str(out), ckpt.build_model())
    teacher, tokenizer = load_pretrained("minilm")
    batches = encode(tokenizer, calibration_texts(4), 16, batch_size=2)
    with torch.no_grad():
        before = fast(**batches[0]).last_hidden_state
        keep = batches[0]["attention_mask"].bool()  # the fused path leaves padded positions zero
        torch.testing.assert_close(sp.model(**batches[0]).last_hidden_state[keep], before[keep], rtol=1e-4, atol=1e-4)
    weights = {n: sp.model.get_parameter(n).detach().clone() for n in sp.masks}
    history = distill(sp, teacher, batches, "squarehead", steps=3, lr=1e-4)
    assert len(history) == 3
    for name, mask in sp.masks.items():
        w = sp.model.get_parameter(name)
        assert not w[~mask].any() and sp.patterns[name].name == "2:4"
        sp.patterns[name].validate(w != 0)
    assert any(not torch.equal(sp.model.get_parameter(n), w) for n, w in weights.items())

    # the Hugging Face export loads with transformers as usual and has the same zeros
    from transformers import AutoModel

    exported = AutoModel.from_pretrained(tmp_path / "m24-hf")
    assert torch.equal(exported.encoder.layer[0].attention.self.query.weight == 0,
                       ~ckpt.masks["encoder.layer.0.attention.self.query.weight"])


def test_posttrain_layers_and_options(tmp_path, capsys) -> None:
    out = tmp_path / "attn.safetensors"
    code, text, _ = _run(capsys, ["posttrain", "--method", "owl-wanda", "--sparsity", "0.6", "--owl-lambda", "0.05",
                                  "--layers", "*.attention.*", "--calib-samples", "2", "--seq-len", "8",
                                  "--out", str(out), "--json"])
    assert code == 0
    rows = json.loads(text)["rows"]
    assert len(rows) == 24 and all(".attention." in r["layer"] for r in rows)
    masks = read_checkpoint(out).masks
    assert set(masks) == {f"{r['layer']}.weight" for r in rows}


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
    (["--pattern", "block4x1"], "supports pattern 'unstructured' or N:M"),
    (["--method", "owl-sparsegpt", "--pattern", "2:4"], "OWL"),
    (["--pattern", "2:4", "--sparsity", "0.5"], "--sparsity does not apply to pattern 2:4"),
    (["--method", "wanda", "--blocksize", "64"], "--blocksize does not apply to method wanda"),
    (["--method", "sparsegpt", "--owl-m", "3"], "--owl-m does not apply to method sparsegpt"),
    (["--blocksize", "0"], "--blocksize must be an integer >= 1, got 0"),
    (["--layers", "pooler"], "matches no prunable layer"),
    (["BAD_DIR"], "does not exist"),
])
def test_posttrain_errors_write_nothing(tmp_path, capsys, extra: list[str], message: str) -> None:
    argv = ["posttrain", "--calib-samples", "2", "--seq-len", "8"]
    if extra == ["BAD_DIR"]:
        argv += ["--out", str(tmp_path / "missing" / "out.safetensors")]
    else:
        argv += [*extra, "--out", str(tmp_path / "out.safetensors")]
    code, _, err = _run(capsys, argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept(tmp_path, capsys) -> None:
    out = tmp_path / "out.safetensors"
    out.write_text("keep me")
    code, _, err = _run(capsys, ["posttrain", "--method", "magnitude", "--calib-samples", "1", "--out", str(out)])
    assert code == 2 and "already exists" in err and out.read_text() == "keep me"


def test_nm_that_does_not_divide_a_layer(tmp_path, capsys, minilm_tokenizer) -> None:
    model_dir = _tiny_model_dir(tmp_path, minilm_tokenizer, hidden=12)
    out = tmp_path / "out.safetensors"
    code, _, err = _run(capsys, ["posttrain", "--model", str(model_dir), "--pattern", "4:8", "--calib-samples", "2",
                                 "--seq-len", "8", "--out", str(out)])
    assert code == 2 and "12 inputs, not divisible by M=8" in err and not out.exists()
    code, _, _ = _run(capsys, ["posttrain", "--model", str(model_dir), "--pattern", "2:4", "--calib-samples", "2",
                               "--seq-len", "8", "--out", str(out), "--json"])
    assert code == 0 and read_checkpoint(out).model_spec["source"] == str(model_dir.resolve())


def test_eval_errors_are_one_line(tmp_path, capsys, minilm_tokenizer) -> None:
    code, _, err = _run(capsys, ["eval", "--checkpoint", str(tmp_path / "nothing.safetensors")])
    assert code == 2 and "\n" not in err.strip() and "not found" in err
    model_dir = _tiny_model_dir(tmp_path, minilm_tokenizer, hidden=16)
    code, _, err = _run(capsys, ["eval", "--hf", str(model_dir)])
    assert code == 2 and "pass --dense" in err


def test_eval_refuses_an_in_project_checkpoint(tmp_path, capsys) -> None:
    import sparsecraft
    from sparsecraft.models import MLP

    model = MLP(8, 4, hidden=(16,))
    sparsecraft.prune(copy.deepcopy(model), 0.5).save(str(tmp_path / "mlp.safetensors"))
    code, _, err = _run(capsys, ["eval", "--checkpoint", str(tmp_path / "mlp.safetensors")])
    assert code == 2 and "not a transformers model" in err


def test_finetune_a_posttrained_checkpoint_keeps_its_masks(tmp_path, capsys) -> None:
    pruned = tmp_path / "w.safetensors"
    assert _run(capsys, ["posttrain", "--method", "wanda", "--sparsity", "0.7", "--calib-samples", "2",
                         "--seq-len", "8", "--out", str(pruned), "--json"])[0] == 0
    out = tmp_path / "w-ft.safetensors"
    code, text, err = _run(capsys, ["finetune", "--checkpoint", str(pruned), "--steps", "2", "--seq-len", "16",
                                    "--out", str(out), "--json"])
    assert code == 0, err
    result = json.loads(text)
    assert result["loss"] == "squarehead" and result["steps"] == 2 and len(result["history"]) == 2
    before, after = read_checkpoint(pruned), read_checkpoint(out)
    assert after.extra["finetune"]["teacher"] == "minilm" and after.extra["method"] == "wanda"
    assert all(torch.equal(before.masks[n], after.masks[n]) for n in before.masks)
    assert any(not torch.equal(before.state_dict[n], after.state_dict[n]) for n in before.masks)
    code, _, err = _run(capsys, ["finetune", "--checkpoint", str(pruned), "--epochs", "1", "--out",
                                 str(tmp_path / "x.safetensors")])
    assert code == 2 and "--epochs applies to in-project models" in err and not (tmp_path / "x.safetensors").exists()
