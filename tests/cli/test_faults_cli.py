"""Issue 20 from the command line: non-finite values, output paths, corrupt inputs, messages."""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
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


# ----------------------------------------------------------- 3, 4. output paths and kills
def _run_python(code: str, limit_bytes: int | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:  # a full disk: writes past the limit fail with EFBIG (the signal ignored)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          preexec_fn=limit if limit_bytes else None,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def _cli_code(*argv: str, before: str = "") -> str:
    return f"import sys\n{before}\nfrom sparsecraft.cli import main\nsys.exit(main({list(map(str, argv))!r}))\n"


def test_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    out = tmp_path / "o.safetensors"
    done = _run_python(_cli_code("prune", "--model", "mlp", "--out", out), limit_bytes=64 * 1024)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and f"cannot write {out}" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_sigterm_while_writing_removes_the_temporary(tmp_path):
    out = tmp_path / "o.safetensors"
    killer = ("import os, signal, safetensors.torch as st\n"
              "def save_file(tensors, filename, metadata=None):\n"
              "    open(filename, 'wb').write(b'partial' * 1000)\n"
              "    os.kill(os.getpid(), signal.SIGTERM)\n"
              "st.save_file = save_file\n")
    done = _run_python(_cli_code("prune", "--model", "mlp", "--out", out, before=killer))
    assert done.returncode == 143 and done.stderr.strip() == "terminated", done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("make,match", [
    (lambda d: (d / "f").write_text("x") and d / "f" / "o.safetensors", "is a file, not a directory"),
    (lambda d: (d / "sub").mkdir() or d / "sub", "is a directory; give a file path"),
])
def test_bad_out_is_refused_before_training(cli, tmp_path, make, match):
    out = make(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    cli.fails(*_train(out, "--force"), match=match)
    assert sorted(tmp_path.rglob("*")) == before


def test_empty_out_is_named(cli, tmp_path):
    cli.fails("prune", "--model", "mlp", "--out", "", match="the output path is empty")


# ------------------------------------------------------------------------ 8. manners
@pytest.mark.parametrize("argv,match", [
    (("prune", "--sparsity", "x"), "argument --sparsity: invalid float value: 'x'"),
    (("prune", "--model", "mlp"), "the following arguments are required: --out"),
    (("bogus",), "invalid choice: 'bogus'"),
])
def test_usage_errors_are_one_line_on_stderr(cli, argv, match):
    with pytest.raises(SystemExit) as exit_:
        cli(*argv)
    out, err = cli.capsys.readouterr()
    assert exit_.value.code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and match in err and "--help" in err


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_seed_out_of_numpy_range_is_refused(cli, tmp_path, seed):
    cli.fails("prune", "--model", "mlp", f"--seed={seed}", "--out", tmp_path / "o.safetensors",
              match="--seed must be an integer in [0, 2**32)")


def test_solver_warning_is_one_line(cli, tmp_path):
    A = np.random.default_rng(0).standard_normal((10, 4))
    A[:, 3] = A[:, 0]
    np.savez(tmp_path / "p.npz", A=A, y=A[:, 0] + A[:, 1])
    code, _, err = cli("solve", "--data", tmp_path / "p.npz", "--method", "omp", "--k", "4")
    assert code == 0 and err.strip() == ("sparsecraft solve: warning: Orthogonal matching pursuit ended prematurely "
                                         "due to linear dependence in the dictionary. The requested precision might "
                                         "not have been met.")


# ------------------------------------------------------------------ 5. unchecked inputs
def _npz_cases(d: Path) -> list[tuple[Path, str]]:
    A = np.random.default_rng(0).standard_normal((8, 5))
    good = d / "good.npz"
    np.savez(good, A=A, y=A[:, 0])
    raw = good.read_bytes()
    cases = {"truncated.npz": raw[: len(raw) // 2], "empty.npz": b""}
    flipped = bytearray(raw)
    flipped[100] ^= 0x10  # inside A's data: the zip CRC no longer matches
    cases["flipped.npz"] = bytes(flipped)
    for name, content in cases.items():
        (d / name).write_bytes(content)
    np.save(d / "one.npy", A)
    np.savez(d / "scalar.npz", A=np.float64(1.0), y=np.float64(2.0))
    np.savez(d / "cube.npz", A=np.zeros((2, 3, 4)), y=np.zeros(2))
    np.savez(d / "emptyA.npz", A=np.zeros((0, 3)), y=np.zeros(0))
    np.savez(d / "complex.npz", A=A + 1j, y=A[:, 0])
    return [(d / "truncated.npz", "not a readable .npz file"), (d / "empty.npz", "not a readable .npz file"),
            (d / "flipped.npz", "not a readable .npz file"), (d / "one.npy", "holds one array (.npy)"),
            (d / "scalar.npz", "A must be a non-empty 2-D array (n, d), got shape ()"),
            (d / "cube.npz", "got shape (2, 3, 4)"), (d / "emptyA.npz", "got shape (0, 3)"),
            (d / "complex.npz", "A has dtype complex128; give real numbers"), (d, "is a directory")]


def test_solve_refuses_bad_data_files_in_one_line(cli, tmp_path):
    for path, match in _npz_cases(tmp_path):
        cli.fails("solve", "--data", path, "--method", "omp", "--k", "2", match=match)


def test_bench_kernels_refuses_a_shape_beyond_memory(cli):
    cli.fails("bench-kernels", "--shape", "1000000x1000000", match=("--shape 1000000x1000000 needs about", "GiB"))
