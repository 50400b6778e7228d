"""DDP with torchrun (2 processes, gloo): identical masks at every update, same loss curve as one
process with the same global batch."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .ddp_worker import run

HERE = Path(__file__).parent


@pytest.mark.parametrize("path", ["masked", "sparse"])
def test_ddp_two_ranks_match_single_process(tmp_path, path):
    """The sparse-kernel run under DDP equals the masked-dense single-process run."""
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1] / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(HERE / "ddp_worker.py"), str(out), path],
        env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ddp = torch.load(out)
    single = run(distributed=False)
    n_updates = ddp["kinds"].count("drop_grow")
    assert n_updates >= 4 and ddp["kinds"] == single["kinds"]
    assert all(ddp["equal"]) and len(ddp["equal"]) == len(ddp["kinds"])   # masks equal across ranks at every update
    assert len(ddp["losses"]) == len(single["losses"]) == 12
    torch.testing.assert_close(torch.tensor(ddp["losses"]), torch.tensor(single["losses"]), rtol=1e-4, atol=1e-5)
    for a, b in zip(ddp["masks"], single["masks"]):                        # and equal to the 1-process run
        assert all(torch.equal(a[n], b[n]) for n in a)
