"""Peers for ``bench.runtime``: the same pruned MiniLM exported to ONNX, run by ONNX Runtime and DeepSparse.

Runs only in the peers venv made by ``bash bench/peers_venv.sh`` (deepsparse 1.8.0 needs numpy<2);
that venv sees the project venv's torch and transformers through a .pth file. The export builds
BERT's additive attention mask by hand on the eager attention path: the default SDPA graph exports
ops DeepSparse cannot run (it then falls back and is ~80x slower).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn


class _AdditiveMaskBert(nn.Module):
    """last_hidden_state of a transformers BERT encoder with the (1 - mask) * -1e4 mask added to the scores."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        model.config._attn_implementation = "eager"

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        additive = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -10000.0
        hidden = self.model.embeddings(input_ids=input_ids)
        return self.model.encoder(hidden, attention_mask=additive).last_hidden_state


def export(model: nn.Module, feed: dict[str, torch.Tensor], path: Path) -> Path:
    """Write ``model`` (a dense masked transformers BERT) as ONNX for inputs shaped like ``feed``."""
    import copy

    wrapped = _AdditiveMaskBert(copy.deepcopy(model)).eval()
    torch.onnx.export(wrapped, (feed["input_ids"], feed["attention_mask"]), str(path), dynamo=False,
                      input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                      opset_version=17)
    return path


def runners(path: Path, feed: dict[str, torch.Tensor], threads: int) -> dict[str, Callable[[], Any]]:
    """``{"onnxruntime": fn, "deepsparse": fn}`` running the exported model on ``feed``."""
    import deepsparse
    import onnxruntime as ort

    arrays = [feed["input_ids"].numpy(), feed["attention_mask"].numpy()]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    ort_feed = dict(zip(["input_ids", "attention_mask"], arrays))
    engine = deepsparse.Engine(model=str(path), batch_size=int(arrays[0].shape[0]), num_cores=threads)
    return {"onnxruntime": lambda: session.run(None, ort_feed), "deepsparse": lambda: engine(arrays)}


def outputs(fns: dict[str, Callable[[], Any]]) -> dict[str, torch.Tensor]:
    """Each runner's last_hidden_state as a torch tensor (for the equality check)."""
    return {k: torch.from_numpy(f()[0]) for k, f in fns.items()}
