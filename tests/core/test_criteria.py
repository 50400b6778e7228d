import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparsecraft
from sparsecraft import SparsecraftError
from sparsecraft.criteria import batchnorm_after, compute_scores
from sparsecraft.target import find_targets


def test_wanda_equals_numpy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3))
    x = torch.randn(50, 12)
    scores = compute_scores("wanda", model, find_targets(model), calib=[x[:20], x[20:]])
    w0 = model[0].weight.detach().numpy()
    np.testing.assert_allclose(scores["0.weight"].numpy(), np.abs(w0) * np.linalg.norm(x.numpy(), axis=0), rtol=1e-5)
    h = torch.relu(model[0](x)).detach().numpy()
    w2 = model[2].weight.detach().numpy()
    np.testing.assert_allclose(scores["2.weight"].numpy(), np.abs(w2) * np.linalg.norm(h, axis=0), rtol=1e-5)


def test_snip_taylor_movement_from_manual_gradients(cnn, batch):
    x, y = batch
    ref = copy.deepcopy(cnn)
    F.cross_entropy(ref(x), y).backward()
    targets = find_targets(cnn)
    snip = compute_scores("snip", cnn, targets, calib=(x, y))
    taylor = compute_scores("taylor", cnn, targets, calib=(x, y))
    move = compute_scores("movement", cnn, targets, calib=(x, y))
    for t in targets:
        w = ref.get_parameter(t.name)
        wg = (w * w.grad).detach()
        torch.testing.assert_close(snip[t.name], wg.abs())
        torch.testing.assert_close(taylor[t.name], wg.square())
        torch.testing.assert_close(move[t.name], -wg)
        assert t.param.grad is None  # criteria leave no gradients behind


def test_channel_norms_and_bn_scale(cnn):
    targets = find_targets(cnn)
    l1 = compute_scores("l1_norm", cnn, targets)
    w = cnn[0].weight.detach()
    torch.testing.assert_close(l1["0.weight"].reshape(8, -1).sum(1), w.abs().reshape(8, -1).sum(1))
    assert batchnorm_after(cnn) == {"0": cnn[1], "3": cnn[4]}
    with torch.no_grad():
        cnn[1].weight.copy_(torch.arange(8.0) - 3.5)
    sp = sparsecraft.prune(cnn, 0.5, pattern="channel", criterion="bn_scale", allocation="uniform", layers=["0"])
    kept_rows = sp.masks["0.weight"].reshape(8, -1).all(1)
    assert kept_rows.tolist() == [True, True, False, False, False, False, True, True]


def test_data_criteria_need_calibration(cnn):
    with pytest.raises(SparsecraftError, match="needs calibration data"):
        sparsecraft.prune(cnn, 0.5, criterion="snip")
    with pytest.raises(SparsecraftError, match="needs labelled"):
        sparsecraft.prune(cnn, 0.5, criterion="taylor", calib=torch.randn(4, 1, 8, 8))


def test_random_criterion_is_seeded(cnn):
    targets = find_targets(cnn)
    a = compute_scores("random", cnn, targets, generator=torch.Generator().manual_seed(3))
    b = compute_scores("random", cnn, targets, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a[k], b[k]) for k in a)
