import json

import pytest

from sparsecraft.cli import main


@pytest.fixture(autouse=True)
def _one_thread(torch_one_thread):
    """Every test here runs with one torch thread (see tests/conftest.py)."""


class Cli:
    """Runs ``sparsecraft.cli.main`` in-process and returns (exit code, stdout, stderr)."""

    def __init__(self, capsys: pytest.CaptureFixture) -> None:
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main([str(a) for a in argv])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *argv: str) -> dict:
        code, out, err = self(*argv, "--json")
        assert code == 0, err
        return json.loads(out)

    def fails(self, *argv: str, match: str | tuple[str, ...]) -> str:
        """Assert a user error: exit 2, one line on stderr naming the problem, no traceback."""
        code, out, err = self(*argv)
        assert code == 2, (out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "error:" in lines[0], err
        assert "Traceback" not in err
        for m in (match,) if isinstance(match, str) else match:
            assert m in lines[0], lines[0]
        return lines[0]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture) -> Cli:
    return Cli(capsys)


@pytest.fixture(scope="session")
def base_ckpt(tmp_path_factory: pytest.TempPathFactory):
    """An untrained MLP for digits pruned 50% (global magnitude), written by the CLI once per session."""
    path = tmp_path_factory.mktemp("cli") / "mlp50.safetensors"
    assert main(["prune", "--model", "mlp", "--data", "digits", "--sparsity", "0.5", "--out", str(path)]) == 0
    return path
