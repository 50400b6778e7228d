"""``sparsecraft train``: error paths (exit 2, one line, nothing written) and one real run."""
import json

import pytest
import torch

from sparsecraft import read_checkpoint
from sparsecraft.cli import main


@pytest.mark.parametrize("args,match", [
    (("--method", "lottery"), "unknown training method 'lottery'"),
    (("--sparsity", "1.0"), "--sparsity must be a fraction in [0, 1)"),
    (("--sparsity", "abc"), "--sparsity must be a number"),
    (("--allocation", "fair"), "unknown allocation 'fair'"),
    (("--pattern", "zigzag"), "unknown pattern 'zigzag'"),
    (("--method", "gmp", "--pattern", "2:4"), "gmp needs a pattern whose sparsity can grow"),
    (("--method", "srste", "--pattern", "unstructured"), "pass an N:M pattern"),
    (("--epochs", "0"), "--epochs must be an integer >= 1"),
    (("--model", "transformer"), "--model must be mlp or cnn"),
    (("--method", "static", "--criterion", "vibes"), "unknown criterion 'vibes'"),
])
def test_bad_arguments_exit_2_one_line_nothing_written(args, match, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    argv = ["train", "--out", str(out), *args]
    if "--sparsity" in args and args[args.index("--sparsity") + 1] == "abc":
        with pytest.raises(SystemExit) as err:     # argparse rejects a non-number itself
            main(argv)
        assert err.value.code == 2
        return
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and match in lines[0], err
    assert list(tmp_path.iterdir()) == []


def test_existing_output_refused(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"keep")
    assert main(["train", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"keep"


def test_train_rigl_saves_checkpoint_and_json_report(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    code = main(["train", "--model", "mlp", "--data", "digits", "--method", "rigl", "--sparsity", "0.9",
                 "--allocation", "erk", "--epochs", "1", "--out", str(out), "--json"])  # progress bar on: stdout stays JSON
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    total = report["rows"][-1]
    assert total["layer"] == "total" and abs(total["sparsity"] - 0.9) < 0.01
    assert 0.0 <= report["test_accuracy"] <= 1.0 and report["steps"] == 23
    ckpt = read_checkpoint(out)
    assert ckpt.extra["method"] == "rigl"
    model = ckpt.build_model()
    assert sum(int(m.sum()) for m in ckpt.masks.values()) == total["kept"]
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
