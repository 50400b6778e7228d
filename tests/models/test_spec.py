"""Model specs rebuild the model a checkpoint holds; training and models depend one way."""
import subprocess
import sys

import torch

from sparsecraft.models import build_from_spec, build_model, fits_spec, model_for_data, model_spec


def test_spec_round_trip_rebuilds_the_same_architecture(digits):
    spec = model_spec("cnn", digits, channels=(8, 16))
    assert spec["data"] == {"name": "digits", "input_shape": [1, 8, 8], "num_classes": 10, "task": "classification"}
    torch.manual_seed(0)
    model = model_for_data("cnn", digits, channels=(8, 16))
    rebuilt = build_from_spec(spec)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert fits_spec(model, spec)
    bare = {"name": "mlp", "kwargs": {"in_features": 12, "num_classes": 3, "hidden": [5]}}
    assert fits_spec(build_model("mlp", in_features=12, num_classes=3, hidden=[5]), bare)
    assert not fits_spec(build_model("mlp", in_features=12, num_classes=3, hidden=[6]), bare)


def test_channel_removal_breaks_the_spec(digits):
    from sparsecraft.training import find_chains, remove_channels

    model = model_for_data("mlp", digits)
    spec = model_spec("mlp", digits)
    chain = find_chains(model)[0]
    width = model.get_submodule(chain.producer).out_features
    remove_channels(model, {chain: torch.arange(width) % 2 == 0})
    assert not fits_spec(model, spec)


def test_training_never_imports_models():
    code = "import sys, sparsecraft.training; assert 'sparsecraft.models' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
