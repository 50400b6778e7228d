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
    (("--method", "rigl", "--rounds", "2"), "--rounds does not apply to rigl; remove it"),
    (("--method", "dense", "--update-every", "5"), "--update-every does not apply to dense"),
    (("--method", "snip", "--criterion", "magnitude"), "--criterion does not apply to snip"),
    (("--method", "soup", "--lambda-w", "0.1"), "--lambda-w does not apply to soup"),
    (("--method", "imp", "--rounds", "0"), "rounds must be an integer >= 1"),
    (("--method", "masksparsity", "--allocation", "erk"), "masksparsity allocates channels"),
    (("--method", "dense", "--sparse-kernels"), "method 'dense' cannot train on the sparse kernels (it has no masks"),
    (("--method", "imp", "--sparse-kernels"), "method 'imp' cannot train on the sparse kernels (it rewinds"),
    (("--method", "srste", "--sparse-kernels"), "train it masked-dense (without sparse_kernels / --sparse-kernels)"),
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
                 "--allocation", "erk", "--epochs", "1", "--out", str(out),
                 "--json"])  # progress bar on: stdout stays JSON
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


def _train_json(tmp_path, capsys, *args):
    out = tmp_path / "m.safetensors"
    assert main(["train", "--model", "mlp", "--data", "digits", "--epochs", "1", "--no-progress", "--json",
                 "--out", str(out), *args]) == 0
    return json.loads(capsys.readouterr().out), read_checkpoint(out)


def test_nm_method_gets_its_default_pattern_from_metadata(tmp_path, capsys):
    report, ckpt = _train_json(tmp_path, capsys, "--method", "srste", "--mask-every", "2")
    layers = report["rows"][:-1]
    assert layers and {r["pattern"] for r in layers} == {"2:4"}
    assert ckpt.extra["pattern"] == "2:4" and ckpt.extra["mask_every"] == 2 and ckpt.extra["sparsity"] == 0.5
    assert all(int(m.reshape(-1, 4).sum(1).max()) <= 2 for m in ckpt.masks.values())


def test_soup_through_the_cli(tmp_path, capsys):
    report, ckpt = _train_json(tmp_path, capsys, "--method", "soup", "--sparsity", "0.8", "--rounds", "2",
                               "--ingredients", "2", "--soup", "greedy")
    assert [round(p["sparsity"], 6) for p in report["phases"]] == [round(1 - 0.2 ** 0.5, 6), 0.8]
    assert abs(report["rows"][-1]["sparsity"] - 0.8) < 0.01
    assert ckpt.extra["method"] == "soup" and ckpt.extra["soup"] == "greedy" and ckpt.extra["ingredients"] == 2
    assert sum(int(m.sum()) for m in ckpt.masks.values()) == report["rows"][-1]["kept"]


def test_masksparsity_saves_the_smaller_model_without_masks_or_spec(tmp_path, capsys):
    report, ckpt = _train_json(tmp_path, capsys, "--method", "masksparsity", "--select-fraction", "0")
    assert {r["pattern"] for r in report["rows"][:-1]} == {"channel"}
    assert report["params_after"] < report["params_before"] and report["rows"][-1]["sparsity"] == 0.5
    assert ckpt.masks == {} and not ckpt.model_spec and ckpt.extra["method"] == "masksparsity"
    params = sum(t.numel() for k, t in ckpt.state_dict.items() if k.endswith(("weight", "bias")))
    assert params == report["params_after"]


def test_dense_saves_plain_weights_with_spec(tmp_path, capsys):
    report, ckpt = _train_json(tmp_path, capsys, "--method", "dense")
    assert report["rows"] == [] and ckpt.masks == {} and ckpt.extra["sparsity"] == 0.0
    assert ckpt.build_model()(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


def test_a_new_method_needs_no_cli_code(tmp_path, capsys, monkeypatch):
    from sparsecraft.options import Option
    from sparsecraft.training import UPDATERS, Updater

    class Toy(Updater):
        """Magnitude masks at init, in 4x1 blocks by default."""

        name = "toy"
        default_sparsity = 0.5
        default_pattern = "block4x1"
        options = (Option("toy_strength", float, 1.0, "how strong the toy is"),)

        def __init__(self, config=None, total_steps=None, seed=0, toy_strength=1.0):
            super().__init__(config, total_steps, seed)
            self.toy_strength = toy_strength

        def setup(self, calib):
            self.sparsifier = self.initial_masks("magnitude")

    monkeypatch.setitem(UPDATERS._items, "toy", Toy)
    report, ckpt = _train_json(tmp_path, capsys, "--method", "toy", "--toy-strength", "0.25")
    assert {r["pattern"] for r in report["rows"][:-1]} == {"block4x1"} and report["left_dense"] == ["head.weight"]
    assert ckpt.extra["toy_strength"] == 0.25 and ckpt.extra["sparsity"] == 0.5
    assert main(["train", "--method", "rigl", "--toy-strength", "2", "--out", str(tmp_path / "x")]) == 2
    assert "--toy-strength does not apply to rigl" in capsys.readouterr().err


def test_help_states_the_defaults_that_differ_from_the_papers(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "the SET paper rewires until the end: 1.0" in text
    assert "the first layer is sparse too; RigL keeps it dense: --keep-dense first" in text


def test_sparse_kernels_cnn_equals_masked_dense_run(tmp_path, capsys):
    args = ["train", "--model", "cnn", "--data", "digits", "--method", "set", "--sparsity", "0.8", "--epochs", "1",
            "--update-every", "5", "--no-progress", "--json"]
    assert main([*args, "--out", str(tmp_path / "dense.safetensors")]) == 0
    dense = json.loads(capsys.readouterr().out)
    assert main([*args, "--sparse-kernels", "--out", str(tmp_path / "kernels.safetensors")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kernel_layers"] == 6 and report["repacks"] > 0  # 5 convs + the head
    assert report["masked_dense"] == {"blocks.1.conv1.weight": "stride (2, 2) with a 3x3 kernel"}
    assert abs(report["test_accuracy"] - dense["test_accuracy"]) <= 1 / 300
    a, b = read_checkpoint(tmp_path / "dense.safetensors"), read_checkpoint(tmp_path / "kernels.safetensors")
    assert set(a.masks) == set(b.masks) and all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)
    for name, t in a.state_dict.items():
        torch.testing.assert_close(b.state_dict[name], t, rtol=0, atol=1e-4, msg=name)
    assert b.build_model()(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
