"""CLI ``prune`` / ``report``: every user-error path of issue 3 item 10, JSON reports, round trips."""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sparsecraft import read_checkpoint
from sparsecraft.cli import build_parser

MLP_SHAPES = {"layers.1.weight": [256, 64], "layers.3.weight": [128, 256], "head.weight": [10, 128]}
MLP_PARAMS = 256 * 64 + 128 * 256 + 10 * 128  # 50432 prunable weights of the digits MLP


def _listing(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def _prune(*extra: str) -> list[str]:
    return ["prune", "--model", "mlp", "--data", "digits", *extra]


# --------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("args,match", [
    (("--sparsity", "1.0"), ("sparsity", "[0, 1)")),
    (("--sparsity", "-0.1"), ("sparsity", "[0, 1)")),
    (("--pattern", "2:4", "--sparsity", "0.9"), ("--sparsity does not apply to pattern 2:4", "remove it")),
    (("--pattern", "4:4"), ("N:M needs 0 < N < M", "4:4")),
    (("--pattern", "5:4"), ("N:M needs 0 < N < M", "5:4")),
    (("--pattern", "3:5"), ("reduction dimension 64 is not divisible by M=5", "layers.1.weight")),
    (("--pattern", "zigzag"), ("unknown pattern 'zigzag'", "unstructured", "2:4", "block4x1", "channel", "head64")),
    (("--criterion", "vibes"), ("unknown criterion 'vibes'", "magnitude", "snip", "wanda", "bn_scale")),
    (("--allocation", "fair"), ("unknown allocation 'fair'", "er, erk, global, uniform")),
    (("--layers", "fc9"), ("'fc9' matches no prunable layer", "layers.1, layers.3, head")),
    (("--keep-dense", "encoder.*"), ("'encoder.*' matches no prunable layer", "layers.1, layers.3, head")),
    (("--train-epochs", "-1"), ("--train-epochs must be >= 0",)),
])
def test_prune_bad_arguments_exit_2_and_write_nothing(cli, tmp_path, args, match):
    out = tmp_path / "out.safetensors"
    cli.fails(*_prune(*args, "--out", out), match=match)
    assert list(tmp_path.iterdir()) == []


def test_unknown_model_and_dataset_list_valid_names(cli, tmp_path):
    out = tmp_path / "o.safetensors"
    cli.fails("prune", "--model", "gpt5", "--out", out, match=("unknown model 'gpt5'", "cnn, mlp, transformer"))
    cli.fails("prune", "--model", "mlp", "--data", "imagenet", "--out", out,
              match=("unknown dataset 'imagenet'", "digits", "mnist1d", "text"))
    cli.fails("prune", "--model", "mlp", "--out", tmp_path / "no" / "dir.safetensors", match="does not exist")
    assert list(tmp_path.iterdir()) == []


def test_options_that_do_not_apply_are_rejected(cli, tmp_path, base_ckpt):
    out = tmp_path / "o.safetensors"
    cli.fails("prune", "--model", "minilm", "--out", out, match=("unknown model 'minilm'", "sparsecraft posttrain"))
    cli.fails("prune", "--checkpoint", base_ckpt, "--train-epochs", "2", "--out", out,
              match="--train-epochs applies to a fresh --model, not to --checkpoint")
    cli.fails("prune", "--checkpoint", base_ckpt, "--data", "mnist1d", "--out", out,
              match=("was trained on digits, not mnist1d", "remove --data"))
    assert list(tmp_path.iterdir()) == []


def test_bad_sparsity_fails_before_any_training(cli, tmp_path, monkeypatch):
    import sparsecraft.models as models

    def boom(*a, **k):
        raise AssertionError("trained before checking the arguments")

    monkeypatch.setattr(models, "train_classifier", boom)
    cli.fails(*_prune("--train-epochs", "50", "--sparsity", "2", "--out", tmp_path / "o.st"),
              match="sparsity")


def test_argparse_usage_errors_exit_2(cli, tmp_path):
    for argv in (["prune", "--model", "mlp"],  # --out missing
                 ["prune", "--model", "mlp", "--checkpoint", "x", "--out", str(tmp_path / "o")],
                 ["report"]):
        with pytest.raises(SystemExit) as info:
            cli(*argv)
        assert info.value.code == 2
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------- bad checkpoints
def _bad_files(base: Path, d: Path) -> dict[str, tuple[Path, str]]:
    data = base.read_bytes()
    flipped = bytearray(data)
    flipped[-5] ^= 0x40
    files = {"truncated": (data[: len(data) * 2 // 3], "corrupt or truncated"),
             "garbage": (b"not a checkpoint at all\n" * 10, "corrupt or truncated"),
             "empty": (b"", "corrupt or truncated"),
             "flipped": (bytes(flipped), "checksum mismatch")}
    out = {"missing": (d / "missing.safetensors", "not found")}
    for name, (content, msg) in files.items():
        path = d / f"{name}.safetensors"
        path.write_bytes(content)
        out[name] = (path, msg)
    return out


def test_report_and_prune_reject_missing_corrupt_truncated(cli, tmp_path, base_ckpt):
    bad = tmp_path / "bad"
    bad.mkdir()
    outdir = tmp_path / "out"
    outdir.mkdir()
    for name, (path, msg) in _bad_files(base_ckpt, bad).items():
        if name == "missing":
            cli.fails("report", path, match=("not found", str(path)))
        else:
            cli.fails("report", path, match=(msg, str(path)))
        cli.fails("prune", "--checkpoint", path, "--out", outdir / "o.safetensors", match=(msg, str(path)))
    assert list(outdir.iterdir()) == []


def test_prune_checkpoint_without_model_spec(cli, tmp_path):
    import sparsecraft

    model = torch.nn.Sequential(torch.nn.Linear(8, 4))
    path = tmp_path / "custom.safetensors"
    sparsecraft.prune(model, 0.5).save(str(path))
    cli.fails("prune", "--checkpoint", path, "--out", tmp_path / "o.safetensors", match="does not record which model")
    assert cli.json("report", path)["rows"][-1]["kept"] == 16


# ------------------------------------------------------------------------ --force / output
def test_existing_output_needs_force(cli, tmp_path):
    out = tmp_path / "o.safetensors"
    out.write_bytes(b"precious")
    cli.fails(*_prune("--out", out), match=(str(out), "already exists", "--force"))
    assert _listing(tmp_path) == {"o.safetensors": b"precious"}
    report = cli.json(*_prune("--out", out, "--force"))
    assert read_checkpoint(out).masks.keys() == MLP_SHAPES.keys()
    assert [p.name for p in tmp_path.iterdir()] == ["o.safetensors"]  # no temporary files left behind
    assert report["out"] == str(out)


def test_failed_prune_leaves_existing_output_untouched_even_with_force(cli, tmp_path):
    out = tmp_path / "o.safetensors"
    out.write_bytes(b"precious")
    cli.fails(*_prune("--pattern", "3:5", "--out", out, "--force"), match="not divisible")
    assert _listing(tmp_path) == {"o.safetensors": b"precious"}


# -------------------------------------------------------------------- reports, round trip
def test_report_json_exact_counts_and_model_order(cli, base_ckpt):
    rep = cli.json("report", base_ckpt)
    rows = rep["rows"]
    assert [r["layer"] for r in rows] == [*MLP_SHAPES, "total"]
    ckpt = read_checkpoint(base_ckpt)
    for r in rows[:-1]:
        assert r["shape"] == MLP_SHAPES[r["layer"]]
        assert r["kept"] == int(ckpt.masks[r["layer"]].sum()) == int(torch.count_nonzero(ckpt.state_dict[r["layer"]]))
        assert r["params"] == r["shape"][0] * r["shape"][1]
        assert r["pattern"] == "unstructured"
    assert rows[-1] == {"layer": "total", "shape": [], "pattern": "", "params": MLP_PARAMS,
                        "kept": MLP_PARAMS // 2, "sparsity": 0.5}
    assert rep["model"]["name"] == "mlp" and rep["extra"]["criterion"] == "magnitude"
    code, out, _ = cli("report", base_ckpt)  # the table names every layer and the total
    assert code == 0 and all(name in out for name in [*MLP_SHAPES, "total", str(MLP_PARAMS // 2)])


@pytest.mark.parametrize("args,kept", [
    (("--sparsity", "0.8"), MLP_PARAMS - round(0.8 * MLP_PARAMS)),
    (("--sparsity", "0.75", "--allocation", "uniform"),
     sum(s[0] * s[1] - round(0.75 * s[0] * s[1]) for s in MLP_SHAPES.values())),
    # the base's zeros stay zeros (issue 20): 2:4 and blocks keep at most their plan, only what was kept before
    (("--pattern", "2:4"), None),
    (("--pattern", "block4x1", "--sparsity", "0.6", "--keep-dense", "last"), None),
])
def test_prune_checkpoint_then_report_round_trip(cli, tmp_path, base_ckpt, args, kept):
    out = tmp_path / "again.safetensors"
    pruned = cli.json("prune", "--checkpoint", base_ckpt, *args, "--out", out)
    reported = cli.json("report", out)
    assert pruned["rows"] == reported["rows"]
    total = reported["rows"][-1]["kept"]
    assert total == kept if kept is not None else total < MLP_PARAMS // 2
    ckpt = read_checkpoint(out)
    model = ckpt.build_model()
    assert [r["layer"] for r in reported["rows"][:-1]] == list(ckpt.masks)
    assert ("head.weight" in ckpt.masks) == ("last" not in args)
    nonzero = sum(int(torch.count_nonzero(model.get_parameter(n))) for n in ckpt.masks)
    assert nonzero == total  # pruned weights are exact zeros, kept ones the base's non-zeros
    # weights that survive are the base checkpoint's own values, and were kept by the base
    base = read_checkpoint(base_ckpt)
    for name, mask in ckpt.masks.items():
        assert torch.equal(ckpt.state_dict[name][mask], base.state_dict[name][mask])
        assert not bool((mask & ~base.masks[name]).any())


def test_report_of_plain_safetensors_counts_nonzeros(cli, tmp_path):
    w = torch.zeros(6, 4)
    w[0, :3] = 1.0
    save_file({"fc.weight": w, "fc.bias": torch.ones(6)}, str(tmp_path / "model.safetensors"))
    for path in (tmp_path / "model.safetensors", tmp_path):  # a file or a model directory
        rows = cli.json("report", path)["rows"]
        assert rows == [{"layer": "fc.weight", "shape": [6, 4], "pattern": "unstructured", "params": 24,
                         "kept": 3, "sparsity": 0.875},
                        {"layer": "total", "shape": [], "pattern": "", "params": 24, "kept": 3, "sparsity": 0.875}]
    empty = tmp_path / "empty"
    empty.mkdir()
    cli.fails("report", empty, match="no .safetensors files")
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    cli.fails("report", tmp_path, match=("broken.safetensors", "not a readable safetensors file"))
    cli.fails("prune", "--checkpoint", tmp_path / "model.safetensors", "--out", tmp_path / "o.safetensors",
              match="not written by sparsecraft")
    assert not (tmp_path / "o.safetensors").exists()


# --------------------------------------------------------------------------------- help
def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(action.choices)


def test_every_subcommand_help_exits_0(cli):
    names = _subcommands()
    assert {"prune", "report", "demo"} <= set(names)
    for name in names:
        with pytest.raises(SystemExit) as info:
            cli(name, "--help")
        assert info.value.code == 0, name
    with pytest.raises(SystemExit) as info:
        cli("--help")
    assert info.value.code == 0
    code, out, err = cli()  # no command: one line on stderr naming the commands, exit 2 (issue 20)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "give a command:" in err
    assert all(name in err for name in names)


# ---------------------------------------------------------------------- real processes
def _sparsecraft() -> str:
    exe = Path(sys.executable).with_name("sparsecraft")
    assert exe.exists(), f"{exe} missing: install the package (pip install -e .)"
    return str(exe)


def test_subprocess_user_errors_have_no_traceback(tmp_path, base_ckpt):
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(base_ckpt.read_bytes()[:1000])
    out = tmp_path / "o.safetensors"
    script = (  # two real processes in one shell: an argument error and a truncated checkpoint
        f"{_sparsecraft()} prune --model mlp --sparsity 1.5 --out {out}; echo rc=$? >&2; "
        f"{_sparsecraft()} report {truncated}; echo rc=$? >&2"
    )
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert len(lines) == 4, proc.stderr
    assert lines[0].startswith("sparsecraft prune: error: --sparsity") and lines[1] == "rc=2"
    assert lines[2].startswith("sparsecraft report: error:") and "corrupt or truncated" in lines[2]
    assert lines[3] == "rc=2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]


def test_prune_trained_model_json_stdout_is_pure_json(cli, tmp_path):
    out = tmp_path / "trained.safetensors"
    code, stdout, _ = cli(*_prune("--train-epochs", "1", "--sparsity", "0.3", "--out", out, "--json"))
    assert code == 0 and stdout.startswith("{")  # progress bars go to stderr, never into the JSON
    rep = json.loads(stdout)
    assert rep["accuracy_before"] > 0.5 and 0.0 <= rep["accuracy_after"] <= 1.0  # one epoch learns digits
    assert rep["rows"][-1]["kept"] == MLP_PARAMS - round(0.3 * MLP_PARAMS)
    assert read_checkpoint(out).extra == {"criterion": "magnitude", "allocation": "global", "sparsity": 0.3}


def test_finetune_an_in_project_checkpoint_keeps_its_masks(cli, tmp_path, base_ckpt):
    from sparsecraft import read_checkpoint

    out = tmp_path / "ft.safetensors"
    result = cli.json("finetune", "--checkpoint", base_ckpt, "--epochs", "1", "--lr", "1e-3", "--out", out)
    assert result["dataset"] == "digits" and 0.0 <= result["accuracy_after"] <= 1.0
    before, after = read_checkpoint(base_ckpt), read_checkpoint(out)
    assert set(after.masks) == set(before.masks)
    for name, mask in before.masks.items():
        assert torch.equal(after.masks[name], mask) and not after.state_dict[name][~mask].any()
    assert any(not torch.equal(after.state_dict[n], before.state_dict[n]) for n in before.masks)
    assert result["rows"][-1]["kept"] == cli.json("report", base_ckpt)["rows"][-1]["kept"]
    cli.fails("finetune", "--checkpoint", base_ckpt, "--steps", "5", "--out", tmp_path / "x.safetensors",
              match="--steps applies to transformers models")
    assert not (tmp_path / "x.safetensors").exists()
