"""Option ranges declared once and refused in one line by the CLI and the API alike; a converted
model refuses another dtype as such (issue 20 item 8)."""
import math

import pytest
import torch
from torch import nn

import sparsecraft
from sparsecraft import SparsecraftError
from sparsecraft.options import Option
from sparsecraft.posttrain import METHODS
from sparsecraft.posttrain.pipeline import check_request
from sparsecraft.training import UPDATERS, make_updater


@pytest.mark.parametrize("kind,bounds,value,message", [
    (float, "(0, inf)", math.nan, "--x must be a finite number > 0, got nan"),
    (float, "(0, inf)", math.inf, "--x must be a finite number > 0, got inf"),
    (float, "(0, inf)", 0.0, "--x must be a finite number > 0, got 0.0"),
    (float, "[0, inf)", -1e-9, "--x must be a finite number >= 0, got -1e-09"),
    (int, "[1, inf)", 0, "--x must be an integer >= 1, got 0"),
    (float, "(0, 1]", 1.5, "--x must lie in (0, 1], got 1.5"),
    (float, "[0, 1)", 1.0, "--x must lie in [0, 1), got 1.0"),
])
def test_values_outside_the_bounds_are_refused_in_one_line(kind, bounds, value, message):
    with pytest.raises(SparsecraftError) as err:
        Option("x", kind, None, "", bounds=bounds).check(value)
    assert str(err.value) == message


@pytest.mark.parametrize("bounds,value", [("(0, inf)", 1e-12), ("[0, inf)", 0.0), ("(0, 1]", 1.0),
                                          ("[1, inf)", 1), ("[0, 1)", 0.0)])
def test_values_inside_the_bounds_pass(bounds, value):
    assert Option("x", type(value), None, "", bounds=bounds).check(value) == value


def test_a_malformed_declaration_fails_at_once():
    with pytest.raises(ValueError, match="bounds must be an interval"):
        Option("x", int, 1, "", bounds="1..10")


def test_every_numeric_option_declares_its_bounds():
    options = [o for _, cls in UPDATERS.items() for o in cls.options]
    options += [o for _, method in METHODS.items() for o in method.options]
    assert [o.name for o in options if o.type in (int, float) and o.bounds is None] == []


@pytest.mark.parametrize("method,options,message", [
    ("set", {"update_every": 0}, "--update-every must be an integer >= 1, got 0"),
    ("rigl", {"drop_fraction": math.nan}, "--drop-fraction must lie in (0, 1), got nan"),
    ("masksparsity", {"penalty": math.inf}, "--penalty must be a finite number >= 0, got inf"),
])
def test_make_updater_refuses_out_of_range_options(method, options, message):
    with pytest.raises(SparsecraftError) as err:
        make_updater(method, **options)
    assert str(err.value) == message


@pytest.mark.parametrize("method,options,message", [
    ("sparsegpt", {"percdamp": math.nan}, "--percdamp must be a finite number > 0, got nan"),
    ("sparsegpt", {"percdamp": 0.0}, "--percdamp must be a finite number > 0, got 0.0"),
    ("owl-wanda", {"owl_m": -1.0}, "--owl-m must be a finite number > 0, got -1.0"),
    ("owl-wanda", {"owl_lambda": 1.0}, "--owl-lambda must lie in [0, 1), got 1.0"),
])
def test_posttrain_refuses_out_of_range_options_before_any_work(method, options, message):
    with pytest.raises(SparsecraftError) as err:
        check_request(method, 0.5, "unstructured", options)
    assert str(err.value) == message


def test_a_converted_model_refuses_another_dtype_and_stays_float32():
    from sparsecraft.inference import convert

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    sparsecraft.prune(model, 0.5)
    converted, _ = convert(model)
    before = {k: v.clone() for k, v in converted.state_dict().items()}
    for cast in (lambda m: m.half(), lambda m: m.to(torch.bfloat16), lambda m: m.double()):
        with pytest.raises(SparsecraftError, match="^SparseLinear keeps its packed values float32 and cannot "
                                                   "become torch.[a-z0-9]+; leave the converted model float32"
                                                   ) as err:
            cast(converted)
        assert "corrupt" not in str(err.value)
    after = converted.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    x = torch.randn(3, 16)
    assert converted(x.half()).dtype == torch.float16
