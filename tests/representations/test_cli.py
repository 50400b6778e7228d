"""``sparsecraft activations``: JSON report equals the library measurement; bad input exits 2."""
import json

import pytest
import torch

from sparsecraft.cli import main
from sparsecraft.data import load_dataset
from sparsecraft.models import model_for_data
from sparsecraft.representations import measure_activation_sparsity


def test_json_report_matches_library(capsys):
    assert main(["activations", "--model", "mlp", "--samples", "50", "--topk-fraction", "0.25", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    data = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    model = model_for_data("mlp", data)
    expected = measure_activation_sparsity(model, data.test_x[:50])
    assert [r["layer"] for r in report["rows"]] == [e.name for e in expected]
    assert [r["zeros"] for r in report["rows"]] == [e.zeros for e in expected]
    assert report["samples"] == 50 and report["metric"] == "accuracy"
    assert report["topk_layers"] == ["layers.2", "layers.4"]
    assert 0.0 <= report["topk"] <= 1.0


@pytest.mark.parametrize("argv,message", [
    (["--model", "mlp", "--eps", "-1"], "--eps must be >= 0"),
    (["--model", "mlp", "--topk-fraction", "0"], "--topk-fraction must be in (0, 1]"),
    (["--model", "mlp", "--samples", "0"], "--samples must be an integer >= 1"),
    (["--model", "cnn", "--topk-fraction", "0.5", "--samples", "8"], "no MLP hidden activation"),
    (["--checkpoint", "missing.safetensors"], "not found"),
])
def test_bad_input_exits_2_with_one_line(argv, message, capsys):
    assert main(["activations", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
