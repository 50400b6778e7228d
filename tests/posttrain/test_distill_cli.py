"""``sparsecraft distill`` on the command line: a tiny BERT end to end (checkpoint that report, eval,
convert and finetune read; JSONL log; plot; Hugging Face export; interrupt + --resume), a few
MiniLM steps, and every error path (one line, exit 2, nothing written)."""
from __future__ import annotations

import json

import pytest
import torch

from sparsecraft import read_checkpoint
from sparsecraft.cli import main
from sparsecraft.posttrain.longrun import read_metrics


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def tiny_dir(tmp_path, minilm_tokenizer):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    path = tmp_path / "tiny"
    BertModel(cfg).save_pretrained(path)
    minilm_tokenizer.save_pretrained(path)
    return path


def _argv(model, out, *extra: str) -> list[str]:
    return ["distill", "--model", str(model), "--steps", "6", "--prune-end", "4", "--prune-every", "1",
            "--seq-len", "16", "--batch-size", "32", "--eval-every", "2", "--eval-samples", "24", "--lr", "1e-3",
            *extra, "--out", str(out)]


def test_distill_then_report_eval_convert_finetune(tiny_dir, tmp_path, capsys) -> None:
    out = tmp_path / "d.safetensors"
    code, text, err = _run(capsys, _argv(tiny_dir, out, "--pattern", "block4x1", "--sparsity", "0.75",
                                         "--criterion", "obert", "--fisher-grads", "2", "--plot",
                                         str(tmp_path / "d.png"), "--export-hf", str(tmp_path / "hf"), "--json"))
    assert code == 0, err
    result = json.loads(text)
    assert [r["step"] for r in result["rows"]] == [2, 4, 6] and result["overall_sparsity"] == pytest.approx(0.75)
    assert result["distill"]["criterion"] == "obert" and 0 < result["cosine"] <= 1
    assert read_metrics(tmp_path / "d.safetensors.metrics.jsonl") == result["rows"]
    assert all(0 < r["train_cosine"] <= 1 and 0 <= r["train_knn10"] <= 1 for r in result["rows"])
    assert (tmp_path / "d.png").stat().st_size > 1000 and not (tmp_path / "d.safetensors.state").exists()
    ckpt = read_checkpoint(out)
    assert len(ckpt.masks) == 12 and all(str(p) == "block4x1" for p in ckpt.patterns.values())
    assert ckpt.extra["method"] == "gradual-obert" and ckpt.model_spec["name"] == "hf"

    code, text, _ = _run(capsys, ["report", str(out), "--json"])
    assert code == 0 and json.loads(text)["rows"][-1]["sparsity"] == pytest.approx(0.75)
    code, text, _ = _run(capsys, ["eval", "--checkpoint", str(out), "--eval-samples", "24", "--seq-len", "16",
                                  "--json"])
    assert code == 0 and json.loads(text)["sparsity"] == pytest.approx(0.75)
    code, text, _ = _run(capsys, ["convert", "--checkpoint", str(out), "--out", str(tmp_path / "d.sparse"),
                                  "--min-sparsity", "0.5", "--json"])
    assert code == 0, text
    code, _, err = _run(capsys, ["finetune", "--checkpoint", str(out), "--steps", "1", "--seq-len", "16",
                                 "--out", str(tmp_path / "ft.safetensors"), "--json"])
    assert code == 0, err
    from transformers import AutoModel

    exported = AutoModel.from_pretrained(tmp_path / "hf")
    assert torch.equal(exported.encoder.layer[1].output.dense.weight == 0,
                       ~ckpt.masks["encoder.layer.1.output.dense.weight"])


def test_cyclic_rate_and_no_training_probe(tiny_dir, tmp_path, capsys) -> None:
    out = tmp_path / "c.safetensors"
    code, text, err = _run(capsys, _argv(tiny_dir, out, "--lr-schedule", "cyclic", "--cycle-floor", "0.5",
                                         "--prune-every", "2", "--train-probe", "0", "--json"))
    assert code == 0, err
    rows = json.loads(text)["rows"]
    # the rate of steps 1, 3 (halfway through a 2-step cycle: 1 -> 0.5) and 5 (halfway through the recovery)
    assert [r["lr"] for r in rows] == pytest.approx([0.75e-3, 0.75e-3, 0.5e-3])
    assert not any("train_cosine" in r for r in rows)


def test_interrupted_run_resumes_to_the_same_checkpoint(tiny_dir, tmp_path, capsys, monkeypatch) -> None:
    full = tmp_path / "full.safetensors"
    assert _run(capsys, _argv(tiny_dir, full, "--criterion", "movement", "--json"))[0] == 0

    from sparsecraft.posttrain import longrun

    real = longrun.run_to_end
    monkeypatch.setattr(longrun, "run_to_end", lambda *a, **kw: real(*a, **kw, stop_after=3))
    out = tmp_path / "part.safetensors"
    code, _, err = _run(capsys, _argv(tiny_dir, out, "--criterion", "movement", "--json"))
    assert code == 130 and "interrupted at step 3" in err and "--resume" in err and not out.exists()
    code, _, err = _run(capsys, _argv(tiny_dir, out, "--criterion", "movement", "--json"))
    assert code == 2 and "continue it with --resume" in err
    code, _, err = _run(capsys, _argv(tiny_dir, out, "--criterion", "magnitude", "--resume", "--json"))
    assert code == 2 and "other settings (criterion)" in err
    monkeypatch.setattr(longrun, "run_to_end", real)
    code, text, err = _run(capsys, _argv(tiny_dir, out, "--criterion", "movement", "--resume", "--json"))
    assert code == 0, err
    assert [r["step"] for r in json.loads(text)["rows"]] == [2, 4, 6]
    a, b = read_checkpoint(full), read_checkpoint(out)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


def test_a_few_minilm_steps(tmp_path, capsys) -> None:
    out = tmp_path / "m.safetensors"
    code, text, err = _run(capsys, ["distill", "--pattern", "2:4", "--steps", "2", "--prune-end", "1",
                                    "--seq-len", "16", "--batch-size", "8", "--eval-samples", "12",
                                    "--out", str(out), "--json"])
    assert code == 0, err
    assert json.loads(text)["overall_sparsity"] == 0.5
    assert all(str(p) == "2:4" for p in read_checkpoint(out).patterns.values())


@pytest.mark.parametrize("extra,message", [
    (["--model", "/no/such/model"], "neither 'minilm' nor a directory"),
    (["--sparsity", "1.5"], "--sparsity must be a fraction"),
    (["--steps", "0"], "--steps must be an integer >= 1"),
    (["--pattern", "block3x1"], "does not split into 3x1"),
    (["--pattern", "2:4", "--sparsity", "0.5"], "--sparsity does not apply to pattern 2:4"),
    (["--criterion", "snip"], "unknown gradual pruning criterion 'snip'"),
    (["--fisher-grads", "4"], "--fisher-grads does not apply to criterion wanda"),
    (["--prune-end", "9"], "prune_start < prune_end <= steps"),
    (["--cycle-floor", "0"], "--cycle-floor must be in (0, 1]"),
    (["--text", "/no/such.txt"], "cannot read text file"),
    (["--resume"], "no saved run"),
    (["CORRUPT"], "not a readable distillation state"),
    (["EXISTS"], "already exists"),
])
def test_distill_errors_write_nothing(tiny_dir, tmp_path, capsys, extra: list[str], message: str) -> None:
    out = tmp_path / "out" / "d.safetensors"
    out.parent.mkdir()
    if extra == ["CORRUPT"]:
        (out.parent / "d.safetensors.state").write_bytes(b"garbage")
        extra = ["--resume"]
    elif extra == ["EXISTS"]:
        out.write_text("keep me")
        extra = []
    before = {p: p.read_bytes() for p in out.parent.iterdir()}
    code, _, err = _run(capsys, _argv(extra[1] if extra[:1] == ["--model"] else tiny_dir, out,
                                      *(extra[2:] if extra[:1] == ["--model"] else extra)))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert {p: p.read_bytes() for p in out.parent.iterdir()} == before
