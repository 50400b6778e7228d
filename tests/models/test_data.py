import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsecraft.data import (
    DATASETS,
    ByteTokenizer,
    lm_windows,
    load_dataset,
    load_digits,
    load_mnist1d,
    load_text,
    paragraphs,
)
from sparsecraft.data import mnist1d as mnist1d_module
from sparsecraft.errors import SparsecraftError


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x.reshape(len(x), -1)}


def test_digits_matches_sklearn_stratified_split(digits):
    from sklearn.datasets import load_digits as sk
    from sklearn.model_selection import train_test_split

    bunch = sk()
    _, _, y_tr, y_te = train_test_split(
        bunch.images, bunch.target, test_size=0.2, stratify=bunch.target, random_state=0
    )
    assert digits.train_x.shape == (1437, 1, 8, 8) and digits.test_x.shape == (360, 1, 8, 8)
    assert digits.train_x.dtype == torch.float32 and digits.train_y.dtype == torch.int64
    assert torch.equal(digits.train_y, torch.from_numpy(y_tr))
    assert torch.equal(digits.test_y, torch.from_numpy(y_te))
    # stratified: each class's test share is within one image of 20%
    full = np.bincount(bunch.target, minlength=10)
    test = torch.bincount(digits.test_y, minlength=10).numpy()
    assert np.all(np.abs(test - 0.2 * full) <= 1)
    assert digits.num_classes == 10 and digits.input_shape == (1, 8, 8) and digits.task == "classification"


def test_digits_standardized_with_train_stats(digits):
    assert abs(float(digits.train_x.mean())) < 1e-5
    assert abs(float(digits.train_x.std()) - 1.0) < 1e-5
    assert abs(float(digits.test_x.mean())) < 0.1  # same scaling, not re-centred


def test_digits_deterministic_and_seed_dependent(digits):
    again = load_digits(seed=0)
    assert torch.equal(again.train_x, digits.train_x) and torch.equal(again.test_y, digits.test_y)
    other = load_digits(seed=1)
    assert not torch.equal(other.train_y, digits.train_y)


def test_calib_is_fixed_subset_of_train(digits):
    assert digits.calib_x.shape == (128, 1, 8, 8)
    assert _rows(digits.calib_x) <= _rows(digits.train_x)
    assert load_digits(seed=0, calib_size=5).calib_x.shape == (5, 1, 8, 8)


def test_mnist1d_shapes_balance_and_determinism():
    d = load_mnist1d(seed=3, num_samples=200)
    assert d.train_x.shape == (160, 1, 40) and d.test_x.shape == (40, 1, 40)
    labels = torch.cat([d.train_y, d.test_y])
    assert torch.equal(torch.bincount(labels, minlength=10), torch.full((10,), 20))
    again = load_mnist1d(seed=3, num_samples=200)
    assert torch.equal(d.train_x, again.train_x) and torch.equal(d.test_y, again.test_y)
    assert not torch.equal(load_mnist1d(seed=4, num_samples=200).train_x, d.train_x)
    assert abs(float(d.train_x.mean())) < 1e-5 and abs(float(d.train_x.std()) - 1) < 1e-5
    assert _rows(d.train_x).isdisjoint(_rows(d.test_x))


def test_mnist1d_leaves_global_rng_alone():
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    load_mnist1d(num_samples=50)
    assert np.random.rand() == expected_np and random.random() == expected_py


def test_mnist1d_cache_roundtrip_and_corrupt_file(tmp_path, monkeypatch):
    fresh = load_mnist1d(seed=1, num_samples=100, cache=True, cache_dir=tmp_path)
    path = tmp_path / "mnist1d" / "n100_seed1.npz"
    assert path.exists()

    def boom(*args, **kwargs):
        raise AssertionError("regenerated although a valid cache exists")

    real = mnist1d_module._generate
    monkeypatch.setattr(mnist1d_module, "_generate", boom)
    cached = load_mnist1d(seed=1, num_samples=100, cache=True, cache_dir=tmp_path)
    assert torch.equal(cached.train_x, fresh.train_x) and torch.equal(cached.test_y, fresh.test_y)

    monkeypatch.setattr(mnist1d_module, "_generate", real)
    path.write_bytes(b"not an npz")
    repaired = load_mnist1d(seed=1, num_samples=100, cache=True, cache_dir=tmp_path)
    assert torch.equal(repaired.train_x, fresh.train_x)
    assert np.load(path)["x"].shape == (80, 40)


def test_text_splits_disjoint_complete_deterministic():
    s = load_text(seed=0)
    all_paras = paragraphs()
    parts = [s.calibration, s.eval, s.train]
    assert sum(map(len, parts)) == len(all_paras) == len(set(all_paras))
    assert set(s.calibration).isdisjoint(s.eval)
    assert set(s.calibration).isdisjoint(s.train) and set(s.eval).isdisjoint(s.train)
    assert set().union(*parts) == set(all_paras)
    assert len(s.calibration) == round(0.1 * len(all_paras))
    assert load_text(seed=0) == s
    assert load_text(seed=1).train != s.train
    assert any("assert" in p for p in all_paras)  # real English from the language reference


@settings(max_examples=60, deadline=None)
@given(st.text())
def test_byte_tokenizer_roundtrip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids.dtype == torch.int64 and len(ids) == len(text.encode("utf-8"))
    assert ids.numel() == 0 or (0 <= int(ids.min()) and int(ids.max()) < tok.vocab_size)
    assert tok.decode(ids) == text


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 60), st.integers(1, 10), st.integers(1, 12))
def test_lm_windows_shift_property(length, seq_len, stride):
    ids = torch.arange(length) * 7 % 256
    x, y = lm_windows(ids, seq_len, stride)
    expected = 0 if length < seq_len + 1 else (length - seq_len - 1) // stride + 1
    assert x.shape == y.shape == (expected, seq_len)
    for i in range(expected):
        start = i * stride
        assert torch.equal(x[i], ids[start : start + seq_len])
        assert torch.equal(y[i], ids[start + 1 : start + seq_len + 1])


def test_text_dataset_windows():
    d = load_dataset("text", seq_len=32)
    assert d.task == "lm" and d.num_classes == 256 and d.input_shape == (32,)
    assert d.train_x.shape[1:] == (32,) and d.train_y.shape == d.train_x.shape
    assert torch.equal(d.train_x[:, 1:], d.train_y[:, :-1])
    assert len(d.train_x) > 5 * len(d.test_x) > 0 and len(d.calib_x) > 0
    first_eval = load_text(seed=0).eval[0].encode("utf-8")[:32]
    assert ByteTokenizer().decode(d.test_x[0]).encode("utf-8") == first_eval


def test_registry_and_bad_arguments():
    assert DATASETS.names() == ["digits", "mnist1d", "text"]
    with pytest.raises(SparsecraftError, match="unknown dataset 'cifar'.*digits, mnist1d, text"):
        load_dataset("cifar")
    with pytest.raises(SparsecraftError, match="num_samples"):
        load_mnist1d(num_samples=5)
    with pytest.raises(SparsecraftError, match="test_fraction"):
        load_digits(test_fraction=1.5)
    with pytest.raises(SparsecraftError, match="calib_fraction"):
        load_text(calib_fraction=0.6, eval_fraction=0.5)
    with pytest.raises(SparsecraftError, match="seq_len"):
        lm_windows(torch.arange(10), 0)
    with pytest.raises(SparsecraftError, match="1-D"):
        lm_windows(torch.zeros(2, 5, dtype=torch.long), 2)
