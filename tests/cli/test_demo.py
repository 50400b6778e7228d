import json

from sparsecraft.cli import main


def test_demo_runs_every_stage_and_reports_json(capsys):
    rc = main(["demo", "--epochs", "1", "--finetune-epochs", "1", "--sparse-epochs", "1",
               "--skip-transformer", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    methods = [r["method"] for r in out["pruning"]]
    assert methods[0] == "dense" and len(methods) == 9
    for row in out["pruning"][1:]:
        assert 0.0 <= row["acc_oneshot"] <= 1.0 and 0.0 <= row["acc_finetuned"] <= 1.0
    by_method = {r["method"]: r for r in out["pruning"]}
    assert abs(by_method["magnitude / global"]["sparsity"] - 0.9) < 1e-4  # round(0.9 * n) of n weights
    assert abs(by_method["magnitude 2:4"]["sparsity"] - 0.5) < 1e-9
    assert [r["method"] for r in out["sparse_training"]] == ["dense", "static random (ERK)", "set", "rigl"]
    assert all(0.85 < r["sparsity"] < 0.9 for r in out["sparse_training"][1:])
    assert out["transformer"] == []


def test_demo_rejects_zero_epochs(capsys):
    assert main(["demo", "--epochs", "0"]) == 2
    assert "--epochs must be >= 1" in capsys.readouterr().err



def test_demo_piped_has_no_blank_lines_from_progress_bars():
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-m", "sparsecraft", "demo", "--epochs", "1", "--finetune-epochs", "1",
                           "--sparse-epochs", "1", "--skip-transformer"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "3. train sparse" in done.stdout
    assert "\n\n\n" not in done.stdout  # one blank line between sections at most
    assert done.stderr == ""  # a finished progress bar left a blank line here each (5 in this run)
