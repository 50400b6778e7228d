"""Convolutional sparse coding with heterogeneous kernel sizes."""
import numpy as np
import pytest
import torch

from sparsecraft.coding import ConvSparseCoding, image_crops
from sparsecraft.errors import SparsecraftError


@pytest.fixture(scope="module")
def crops():
    return image_crops(24, 6, random_state=0)


@pytest.fixture(scope="module")
def model(crops):
    return ConvSparseCoding([3] * 3 + [5] * 3 + [7] * 2, lam=0.5, n_steps=5, batch_size=3, code_iter=20,
                            lr=0.5, random_state=0).fit(crops)


def test_crops_are_normalized(crops):
    assert crops.shape == (6, 24, 24)
    assert (crops**2).mean() == pytest.approx(1.0)


def test_adjoint_and_lipschitz(model):
    gen = torch.Generator().manual_seed(1)
    z = [torch.randn(2, d.shape[0], 24, 24, generator=gen) for d in model.kernels_]
    x = torch.randn(2, 1, 24, 24, generator=gen)
    lhs = float((model._synth(z) * x).sum())
    rhs = float(sum((a * b).sum() for a, b in zip(z, model._adjoint(x))))
    assert lhs == pytest.approx(rhs, rel=1e-4)
    L = model._lipschitz((24, 24))
    ratio = float((model._synth(z) ** 2).sum()) / float(sum((t**2).sum() for t in z))
    assert ratio <= L


def test_bank_shapes_and_unit_norm_kernels(model):
    ks = model.kernels()
    assert [k.shape for k in ks] == [(3, 3, 3), (3, 5, 5), (2, 7, 7)]
    for k in ks:
        np.testing.assert_allclose(np.linalg.norm(k.reshape(len(k), -1), axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("penalty", ["l1", "l0", "cel0"])
def test_codes_are_sparse_and_trade_error_for_sparsity(crops, model, penalty):
    model.penalty = penalty
    lams = (0.05, 1.0) if penalty == "l1" else (0.01, 0.2)
    errs, nnzs = [], []
    for lam in lams:
        codes = model.transform(crops, lam=lam, n_iter=60)
        assert [c.shape for c in codes] == [(6, 3, 24, 24), (6, 3, 24, 24), (6, 2, 24, 24)]
        rec = model.inverse_transform(codes)
        errs.append(np.linalg.norm(rec - crops) / np.linalg.norm(crops))
        nnzs.append(sum(int((c != 0).sum()) for c in codes))
    model.penalty = "l1"
    assert errs[0] < errs[1] < 1.0
    assert nnzs[1] < nnzs[0] < 8 * crops.size


def test_learning_reduces_reconstruction_error(crops):
    def err(steps):
        m = ConvSparseCoding([5] * 6, lam=0.5, n_steps=steps, batch_size=3, code_iter=20, lr=0.5, random_state=0)
        m.fit(crops)
        rec = m.inverse_transform(m.transform(crops, n_iter=60))
        return np.linalg.norm(rec - crops) / np.linalg.norm(crops)

    assert err(15) < err(1)


def test_bad_kernel_sizes(crops):
    with pytest.raises(SparsecraftError, match="odd positive integers"):
        ConvSparseCoding([4, 5]).fit(crops)
    with pytest.raises(SparsecraftError, match="exceeds the image size"):
        ConvSparseCoding([31]).fit(crops)
    with pytest.raises(SparsecraftError, match="images must be 3-D"):
        ConvSparseCoding([3]).fit(crops[0])
