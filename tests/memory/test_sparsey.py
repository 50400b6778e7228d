import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsecraft.errors import SparsecraftError
from sparsecraft.memory import BucketEncoder, SparseyMemory


def small(**kw):
    params = dict(n_modules=8, module_size=64, levels=16, width=1)
    params.update(kw)
    return SparseyMemory(**params)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 30), d=st.integers(1, 6), levels=st.integers(2, 10), width=st.integers(1, 3),
       seed=st.integers(0, 100))
def test_encoder_turns_on_width_bits_per_feature(n, d, levels, width, seed):
    width = min(width, levels)
    X = np.random.default_rng(seed).normal(size=(n, d))
    enc = BucketEncoder(levels, width).fit(X)
    bits = enc.transform(X)
    assert bits.shape == (n, d * width)
    assert bits.min() >= 0 and bits.max() < enc.n_bits_
    per_feature = bits // levels
    assert all(np.array_equal(np.sort(row), np.repeat(np.arange(d), width)) for row in per_feature)


def test_encoder_neighbours_share_bits_and_a_constant_feature_keeps_one_bucket():
    X = np.column_stack([np.linspace(0, 1, 101), np.ones(101)])
    enc = BucketEncoder(levels=10, width=3).fit(X)
    assert enc.n_bits_ == 20 and enc.n_active_ == 6
    a, b, far = (set(row) for row in enc.transform([[0.50, 1.0], [0.52, 1.0], [0.99, 1.0]]))
    assert len(a & b) >= 5
    assert {bit for bit in a & far if bit < 10} == set()  # far values share no bit of the varying feature
    assert {bit for bit in a if bit >= 10} == {bit for bit in far if bit >= 10}


def test_every_item_is_stored_in_one_trial_and_recalled_exactly():
    X = np.random.default_rng(0).normal(size=(60, 20))
    mem = small()
    codes = mem.fit_transform(X)
    assert codes.shape == (60, 8) and codes.min() >= 0 and codes.max() < 64
    assert np.array_equal(mem.transform(X), codes)
    assert np.allclose(mem.familiarity(X), 1.0)
    assert mem.n_stored_ == 60
    # each stored item set exactly its active bits x its Q winners (union over items)
    bits = mem.encoder_.transform(X)
    expected = np.zeros_like(mem.weights_)
    for active, code in zip(bits, codes):
        expected[np.ix_(active, np.arange(8) * 64 + code)] = True
    assert np.array_equal(mem.weights_, expected)


def test_code_overlap_falls_with_input_distance():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(30, 40))
    overlaps, familiarities = [], []
    for noise in (0.01, 0.1, 3.0):
        mem = small(n_modules=16).fit(base)
        shifted = base + noise * rng.normal(size=base.shape)
        familiarities.append(mem.familiarity(shifted).mean())
        overlaps.append((mem.store(shifted) == mem.transform(base)).mean())
    assert overlaps[0] > 0.4 and overlaps[0] > overlaps[1] > overlaps[2]
    assert overlaps[2] < 0.05  # a novel input gets a random code: chance overlap is 1/64
    assert familiarities[0] > familiarities[1] > familiarities[2]


def test_class_from_code_overlap_and_constant_footprint():
    rng = np.random.default_rng(2)
    centers = rng.normal(size=(3, 30)) * 3
    y = np.tile(np.arange(3), 40)
    X = centers[y] + rng.normal(size=(120, 30))
    mem = small(n_modules=16).fit(X[:60], y[:60])
    size = mem.nbytes_
    mem.partial_fit(X[60:90], y[60:90])
    assert mem.nbytes_ == size and mem.n_stored_ == 90
    assert mem.score(X[90:], y[90:]) >= 0.9


def test_params_round_trip_through_sklearn_clone():
    from sklearn.base import clone

    mem = small(max_load=0.2)
    twin = clone(mem)
    assert twin.get_params() == mem.get_params() and twin.get_params()["max_load"] == 0.2


@pytest.mark.parametrize("call, message", [
    (lambda m: m.fit(np.zeros(5)), "X must be 2-D"),
    (lambda m: m.fit([[np.nan, 1.0], [0.0, 1.0]]), "X contains NaN or inf"),
    (lambda m: m.fit(np.eye(4), [0, 1]), "y has 2 entries but X has 4 rows"),
    (lambda m: m.transform(np.eye(4)), "SparseyMemory is not fitted yet; call fit"),
    (lambda m: m.fit(np.eye(4)).predict(np.eye(4)), "SparseyMemory is not fitted yet"),
    (lambda m: m.fit(np.eye(4)).transform(np.eye(3)), "X has 3 features but the encoder was fitted on 4"),
    (lambda m: m.fit(np.eye(4), [0, 1, 0, 1]).store(np.eye(4)), "fitted with labels; pass y"),
    (lambda m: m.fit(np.eye(4), [0, 1, 0, 1]).store(np.eye(4), [0, 1, 2, 0]), "y has labels not seen by fit"),
    (lambda m: m.set_params(module_size=1).fit(np.eye(4)), "module_size must be an integer >= 2"),
    (lambda m: m.set_params(max_load=0.0).fit(np.eye(4)), r"max_load must be in \(0, 1\]"),
    (lambda m: m.set_params(familiarity_floor=1.0).fit(np.eye(4)), r"familiarity_floor must be in \[0, 1\)"),
    (lambda m: m.set_params(width=20).fit(np.eye(4)), "width=20 must not exceed levels=16"),
    (lambda m: m.set_params(colour=1), "SparseyMemory has no parameter 'colour'"),
])
def test_bad_input_is_one_line(call, message):
    with pytest.raises(SparsecraftError, match=message) as err:
        call(small())
    assert "\n" not in str(err.value)
