"""Property tests: save -> read -> load is bit-exact for random small models, patterns and sparsities."""
import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import sparsecraft
from sparsecraft import Sparsifier, read_checkpoint


def _model(kind: str, width: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "linear":
        return nn.Sequential(nn.Linear(8, 4 * width), nn.ReLU(), nn.Linear(4 * width, 8))
    if kind == "conv1d":
        return nn.Sequential(nn.Conv1d(4, 4 * width, 3), nn.ReLU(), nn.Conv1d(4 * width, 4, 1))
    if kind == "conv2d":
        return nn.Sequential(nn.Conv2d(4, 4 * width, 3), nn.BatchNorm2d(4 * width), nn.Conv2d(4 * width, 4, 1))
    return nn.Sequential(nn.Embedding(4 * width, 8), nn.Linear(8, 4 * width))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["linear", "conv1d", "conv2d", "embedding"]), width=st.integers(1, 5),
       pattern=st.sampled_from(["unstructured", "2:4", "1:4", "block4x1", "block2x2", "channel", "head4"]),
       criterion=st.sampled_from(["magnitude", "random", "l2_norm"]),
       allocation=st.sampled_from(["global", "uniform", "er", "erk"]),
       sparsity=st.floats(0.0, 0.99), seed=st.integers(0, 1000))
def test_checkpoint_round_trip_is_bit_exact(kind, width, pattern, criterion, allocation, sparsity, seed):
    model = _model(kind, width, seed)
    sp = sparsecraft.prune(model, sparsity=sparsity, pattern=pattern, criterion=criterion, allocation=allocation)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "ck.safetensors"
        sp.save(str(path), extra={"seed": seed})
        ckpt = read_checkpoint(path)
        assert ckpt.extra == {"seed": seed}
        assert list(ckpt.masks) == list(sp.masks)  # model order kept
        fresh = _model(kind, width, seed + 1)
        sp2 = Sparsifier.load(str(path), fresh)
    for (k, a), (k2, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert k == k2 and a.dtype == b.dtype and torch.equal(a, b), k
    for name, mask in sp.masks.items():
        assert torch.equal(sp2.masks[name], mask) and str(sp2.patterns[name]) == pattern
    assert sp2.report() == sp.report()
