"""Every training method declares its options and defaults; make_updater and the updater
interface (run / report / summary) need no knowledge of any one method."""
import inspect

import pytest
import torch

from sparsecraft import SparsecraftError
from sparsecraft.training import UPDATERS, SparsityConfig, evaluate, geometric_sparsities, make_updater, training_pairs

from .conftest import blobs, tiny_mlp


@pytest.mark.parametrize("method", UPDATERS.names())
def test_declared_options_are_exactly_the_init_keywords_with_their_defaults(method):
    cls = UPDATERS.get(method)
    params = inspect.signature(cls.__init__).parameters
    keywords = {n: p.default for n, p in params.items() if n not in ("self", "config", "total_steps", "seed")}
    assert {o.name: o.default for o in cls.options} == keywords
    for opt in cls.options:
        assert opt.help and "\n" not in opt.help and "%" not in opt.help   # argparse formats help with %
    assert cls.default_config().pattern == cls.default_pattern


@pytest.mark.parametrize("method", ["static", "snip", "soup"])
def test_unknown_option_is_one_line_listing_valid_options(method):
    with pytest.raises(SparsecraftError) as info:
        make_updater(method, frobnicate=1)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"training method {method!r} has no option 'frobnicate'; ")
    valid = [o.name for o in UPDATERS.get(method).options]
    assert msg.endswith(", ".join(valid) if valid else "it takes no options")


@pytest.mark.parametrize("method,pattern,allocation,sparsity", [
    ("srste", "2:4", "erk", 0.5), ("gradflow", "2:4", "erk", 0.5), ("bidirectional", "2:4", "erk", 0.5),
    ("rigl", "unstructured", "erk", 0.9), ("masksparsity", "unstructured", "uniform", 0.5),
    ("dense", "unstructured", "erk", 0.0),
])
def test_default_config_comes_from_metadata(method, pattern, allocation, sparsity):
    u = make_updater(method)
    assert (u.config.pattern, u.config.allocation, u.config.sparsity) == (pattern, allocation, sparsity)
    given = UPDATERS.get(method).default_config(allocation="global")
    assert (given.pattern, given.allocation) == (pattern, "global")


def test_describe_lists_option_values_and_dense_ignores_sparsity():
    d = make_updater("imp", SparsityConfig(0.75), rounds=2, rewind_step=1).describe()
    assert d["method"] == "imp" and d["sparsity"] == 0.75 and d["rounds"] == 2 and d["rewind_step"] == 1
    assert d["round_sparsities"] == pytest.approx([0.5, 0.75])
    assert make_updater("gradflow", decay_end=0.5).describe()["decay_end"] == 0.5
    assert make_updater("dense", SparsityConfig(0.9)).describe()["sparsity"] == 0.0


def test_drop_grow_update_every_defaults_to_a_twentieth_of_training():
    u = make_updater("set", SparsityConfig(0.8), total_steps=200).attach(tiny_mlp())
    assert u.update_every == 10 and u.describe()["update_every"] == 10
    assert make_updater("set", SparsityConfig(0.8), total_steps=200,
                        update_every=7).attach(tiny_mlp()).update_every == 7


def test_list_option_from_the_command_line_or_python():
    a = make_updater("imp", SparsityConfig(0.8), round_sparsities="0.5, 0.8".split(","))
    option = {o.name: o for o in UPDATERS.get("imp").options}["round_sparsities"]
    b = make_updater("imp", SparsityConfig(0.8), round_sparsities=option.check("0.5,0.8"))
    assert a.round_sparsities == b.round_sparsities == [0.5, 0.8] and a.rounds == 2


def test_run_trains_finalizes_and_summarizes():
    model = tiny_mlp()
    u = make_updater("rigl", SparsityConfig(0.8, allocation="uniform"), seed=1)
    out = u.run(model, blobs(96), epochs=2, batch_size=32, lr=1e-2, seed=1, progress=False)
    assert out is model and u.total_steps == 6 and u.update_every == 1
    rows = u.report()
    assert rows[-1]["layer"] == "total" and rows[-1]["sparsity"] == pytest.approx(0.8, abs=0.01)
    summary = u.summary()
    assert summary["steps"] == 6 and summary["left_dense"] == [] and summary["final_train_loss"] > 0
    assert make_updater("dense").report() == []


def test_masksparsity_reports_channels_and_params_through_the_interface():
    from sparsecraft.models import build_model

    torch.manual_seed(0)
    cnn = build_model("cnn", in_channels=1, num_classes=4, channels=(8, 16))
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 4, (40,))
    u = make_updater("masksparsity", select_fraction=0.0)
    small = u.run(cnn, (x, y), epochs=1, batch_size=20, progress=False)
    assert u.sparsifier is None                      # saved as plain weights
    rows = u.report()
    assert [r["pattern"] for r in rows[:-1]] == ["channel", "channel"] and rows[-1]["kept"] == 12
    summary = u.summary()
    assert summary["params_after"] == sum(p.numel() for p in small.parameters()) < summary["params_before"]
    assert summary["steps"] == 2


def test_soup_runs_through_the_updater_interface(data):
    model = tiny_mlp()
    u = make_updater("soup", SparsityConfig(0.75, allocation="global"), rounds=2, ingredients=2, holdout=0.25,
                     retrain_epochs=1)
    with pytest.raises(SparsecraftError, match="updater.run"):
        u.attach(model)
    out = u.run(model, data, epochs=2, batch_size=16, lr=1e-2, seed=3, progress=False)
    assert out is model and u.sparsifier is not None
    phases = u.summary()["phases"]
    assert [p["sparsity"] for p in phases] == pytest.approx(geometric_sparsities(0.75, 2))
    assert [len(p["ingredient_scores"]) for p in phases] == [2, 2] and all(p["used"] == [0, 1] for p in phases)
    x, y = training_pairs(data)                     # the held-out quarter, drawn from seed 3, scores the soup
    val = torch.randperm(len(x), generator=torch.Generator().manual_seed(3))[:24]
    assert phases[-1]["soup_score"] == evaluate(model, x[val], y[val])
    total = sum(m.numel() for m in u.sparsifier.masks.values())
    assert round(u.sparsity() * total) == round(0.75 * total) and u.report()[-1]["layer"] == "total"
    for name, mask in u.sparsifier.masks.items():
        assert bool((dict(model.named_parameters())[name][~mask] == 0).all())
    assert u.describe()["ingredients"] == 2 and u.describe()["method"] == "soup"


def test_soup_bad_options():
    with pytest.raises(SparsecraftError, match="holdout"):
        make_updater("soup", holdout=1.0)
    with pytest.raises(SparsecraftError, match="soup must be"):
        make_updater("soup", soup="spicy")
