"""Issue 20 from the command line: non-finite values, output paths, corrupt inputs, messages."""
from __future__ import annotations

from pathlib import Path

import pytest

from sparsecraft import read_checkpoint


def _train(out: Path, *extra: str) -> list[str]:
    return ["train", "--model", "mlp", "--method", "static", "--epochs", "1", "--no-progress", "--out", str(out),
            *extra]


# ------------------------------------------------------------------ 1. non-finite values
@pytest.mark.parametrize("lr", ["inf", "nan", "-inf"])
def test_train_refuses_non_finite_lr(cli, tmp_path, lr):
    cli.fails(*_train(tmp_path / "o.safetensors", f"--lr={lr}"), match="--lr must be a finite number > 0")
    assert list(tmp_path.iterdir()) == []


def test_train_that_diverges_stops_with_one_line_and_writes_nothing(cli, tmp_path):
    cli.fails(*_train(tmp_path / "o.safetensors", "--lr", "1e30"), match=("training diverged", "non-finite loss"))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------- 7. pruning again, counts
def test_pruning_a_checkpoint_again_keeps_its_zeros(cli, tmp_path):
    p90, again = tmp_path / "p90.safetensors", tmp_path / "again.safetensors"
    assert cli("prune", "--model", "mlp", "--sparsity", "0.9", "--out", p90)[0] == 0
    report = cli.json("prune", "--checkpoint", p90, "--out", again)
    ckpt = read_checkpoint(again)
    nonzero = sum(int((ckpt.state_dict[n] != 0).sum()) for n in ckpt.masks)
    assert report["rows"][-1]["kept"] == nonzero
    assert report["rows"][-1]["sparsity"] >= 0.9
