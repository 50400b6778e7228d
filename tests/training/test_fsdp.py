"""FSDP2 (``fully_shard``) with torchrun (2 processes, gloo, CPU): per method, identical masks on
every rank at every update, the same losses, masks and weights as one process with the same global
batch, exact zeros at pruned positions, and a sharded checkpoint that reloads weights and masks."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from sparsecraft.errors import SparsecraftError
from sparsecraft.training import SparsityConfig, make_updater
from sparsecraft.training.fsdp import shard

from .fsdp_worker import METHODS, run

HERE = Path(__file__).parent
NM_METHODS = ("srste", "gradflow", "bidirectional")  # no masks on the modules until finalize()


@pytest.fixture(scope="module")
def sharded_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp")
    out = tmp / "fsdp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1] / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(HERE / "fsdp_worker.py"), str(out), ",".join(METHODS), str(tmp / "ckpt")],
        env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return torch.load(out)


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_fsdp_two_ranks_match_single_process(sharded_runs, method):
    sharded, single = sharded_runs[method], run(method, distributed=False)
    assert sharded["kinds"] == single["kinds"]
    if method != "static":
        assert len(sharded["kinds"]) >= 6                                   # masks changed during training
    assert all(sharded["equal"]) and len(sharded["equal"]) == len(sharded["kinds"])
    assert len(sharded["losses"]) == len(single["losses"]) == 12
    torch.testing.assert_close(torch.tensor(sharded["losses"]), torch.tensor(single["losses"]), rtol=0, atol=1e-5)
    for a, b in zip(sharded["masks"], single["masks"]):
        assert all(torch.equal(a[n], b[n]) for n in b)
    assert sharded["final_masks"].keys() == single["final_masks"].keys()
    for name, mask in single["final_masks"].items():
        assert torch.equal(sharded["final_masks"][name], mask)
        assert bool((sharded["finalized"][name][~mask] == 0).all())
        if method not in NM_METHODS:                         # N:M trains dense weights; zeros come at finalize()
            assert bool((sharded["weights"][name][~mask] == 0).all())
            assert bool((sharded["exp_avg"][name][~mask] == 0).all())      # no optimizer state when pruned
        torch.testing.assert_close(sharded["exp_avg"][name], single["exp_avg"][name], rtol=0, atol=1e-6)
    for key, w in single["finalized"].items():
        torch.testing.assert_close(sharded["finalized"][key], w, rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("method", [m for m in METHODS if m not in NM_METHODS])
def test_fsdp_sharded_checkpoint_reloads_weights_and_masks(sharded_runs, method):
    out = sharded_runs[method]
    assert out["restored_masks"].keys() == out["final_masks"].keys()
    for name, mask in out["final_masks"].items():
        assert torch.equal(out["restored_masks"][name], mask)
    for key, w in out["weights"].items():
        assert torch.equal(out["restored_weights"][key], w)


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))


def test_shard_needs_total_steps():
    with pytest.raises(SparsecraftError, match=r"^shard\(\) needs the updater's total_steps"):
        shard(_mlp(), make_updater("static", SparsityConfig(0.5)))


def test_shard_rejects_attached_updater():
    model = _mlp()
    updater = make_updater("static", SparsityConfig(0.5), total_steps=4).attach(model)
    with pytest.raises(SparsecraftError, match="pass an updater that is not attached yet"):
        shard(model, updater)


def test_shard_rejects_unsupported_method():
    with pytest.raises(SparsecraftError, match="method 'imp' does not run under FSDP; use one of static"):
        shard(_mlp(), make_updater("imp", SparsityConfig(0.5), total_steps=4))


def test_shard_rejects_sparse_kernels():
    updater = make_updater("static", SparsityConfig(0.5), total_steps=4, sparse_kernels=True)
    with pytest.raises(SparsecraftError, match="sparse_kernels cannot be combined with FSDP"):
        shard(_mlp(), updater)
