"""`sparsecraft solve`: recovery from an .npz, JSON report, bad input -> exit 2 with nothing written."""
import json

import numpy as np
import pytest

from sparsecraft.cli import main


@pytest.fixture()
def problem(tmp_path):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((60, 120))
    x = np.zeros(120)
    x[[3, 50, 99]] = [1.0, -2.0, 0.5]
    path = tmp_path / "prob.npz"
    np.savez(path, A=A, y=A @ x)
    return path, x


@pytest.mark.parametrize("method,extra", [("omp", ["--k", "3"]), ("iht", ["--k", "3"]), ("sbl", []),
                                          ("cel0", ["--lam", "0.05"])])
def test_solve_recovers_and_writes(problem, tmp_path, capsys, method, extra):
    path, x = problem
    out = tmp_path / f"{method}.npz"
    assert main(["solve", "--data", str(path), "--method", method, "--out", str(out), "--json", *extra]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"][0]["nonzeros"] == 3
    np.testing.assert_allclose(np.load(out)["x"], x, atol=1e-5)


def test_solve_bad_input_exit_2_and_nothing_written(problem, tmp_path, capsys):
    path, _ = problem
    out = tmp_path / "x.npz"
    assert main(["solve", "--data", str(path), "--method", "omp", "--k", "500", "--out", str(out)]) == 2
    assert "--k 500 must lie in [1, 60]" in capsys.readouterr().err
    assert not out.exists()
    assert main(["solve", "--data", str(path), "--method", "lasso"]) == 2
    assert "needs --alpha" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    np.savez(bad, B=np.zeros(3))
    assert main(["solve", "--data", str(bad), "--method", "sbl"]) == 2
    assert "lacks array(s) A, y" in capsys.readouterr().err
    nan = tmp_path / "nan.npz"
    np.savez(nan, A=np.full((4, 4), np.nan), y=np.zeros(4))
    assert main(["solve", "--data", str(nan), "--method", "sbl"]) == 2
    assert "NaN or inf" in capsys.readouterr().err
