"""Checkpoints whose metadata is valid JSON but wrong: one-line errors, never a traceback."""

import pytest
import torch
from safetensors.torch import save_file

from sparsecraft import SparsecraftError, read_checkpoint
from sparsecraft.checkpoint import FORMAT, MASK_PREFIX, _digest, header_metadata


def _write(path, tensors, meta):
    save_file(tensors, str(path), metadata=header_metadata(meta))
    return path


def _meta(tensors, masks):
    return {"format": FORMAT, "sha256": {k: _digest(v) for k, v in tensors.items()}, "masks": masks, "model": None,
            "extra": {}}


W = torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 3.0, 0.0, 4.0]])
MASK = W != 0


@pytest.mark.parametrize("case,match", [
    ("no_digests", "metadata is incomplete"),
    ("masks_not_dict", "metadata is incomplete"),
    ("mask_info_without_shape", "metadata is incomplete"),
    ("uint8_mask", "wrong shape or dtype"),
    ("bad_pattern_name", r"fc.weight: unknown pattern 'zigzag'"),
    ("mask_breaks_pattern", r"fc.weight: mask does not follow pattern channel"),
    ("nonzero_where_pruned", "non-zero weights where its mask is False"),
])
def test_wrong_metadata_is_one_line_error(tmp_path, case, match):
    weight, mask, info = W.clone(), MASK.clone(), {"pattern": "unstructured", "shape": [2, 4], "kept": 4}
    if case == "uint8_mask":
        mask = mask.to(torch.uint8)
    if case == "bad_pattern_name":
        info["pattern"] = "zigzag"
    if case == "mask_breaks_pattern":
        info["pattern"] = "channel"
    if case == "nonzero_where_pruned":
        weight[0, 1] = 5.0
    if case == "mask_info_without_shape":
        del info["shape"]
    tensors = {"fc.weight": weight, MASK_PREFIX + "fc.weight": mask}
    meta = _meta(tensors, {"fc.weight": info})
    if case == "no_digests":
        del meta["sha256"]
    if case == "masks_not_dict":
        meta["masks"] = ["fc.weight"]
    path = _write(tmp_path / f"{case}.safetensors", tensors, meta)
    with pytest.raises(SparsecraftError, match=match) as err:
        read_checkpoint(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_valid_handmade_checkpoint_reads(tmp_path):
    tensors = {"fc.weight": W, MASK_PREFIX + "fc.weight": MASK}
    path = _write(tmp_path / "ok.safetensors", tensors,
                  _meta(tensors, {"fc.weight": {"pattern": "2:4", "shape": [2, 4], "kept": 4}}))
    ckpt = read_checkpoint(path)
    assert str(ckpt.patterns["fc.weight"]) == "2:4" and torch.equal(ckpt.masks["fc.weight"], MASK)
