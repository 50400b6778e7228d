"""Issue 20 items 5 and 7: a transformers export carries a checksum manifest, verified on load and by `report`."""
from __future__ import annotations

import pytest
from safetensors.torch import save_file

from sparsecraft.cli import main
from sparsecraft.errors import SparsecraftError
from sparsecraft.io import MANIFEST
from sparsecraft.models.hf import export_pretrained, load_pretrained


def _damage(path, how: str) -> None:
    raw = path.read_bytes()
    if how == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    else:
        flipped = bytearray(raw)
        flipped[-100] ^= 0x01  # a weight, not the header: only a checksum sees it
        path.write_bytes(bytes(flipped))


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_damaged_export_is_refused_on_load_and_by_report(tmp_path, tiny_bert, capsys, how):
    out = export_pretrained(tiny_bert, None, tmp_path / "hf")
    assert (out / MANIFEST).is_file()
    _damage(out / "model.safetensors", how)
    with pytest.raises(SparsecraftError, match="model.safetensors is missing or does not match its checksum"):
        load_pretrained(str(out))
    capsys.readouterr()
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "corrupt" in err


def test_truncated_model_without_manifest_is_one_line(tmp_path, tiny_bert):
    out = export_pretrained(tiny_bert, None, tmp_path / "hf")
    (out / MANIFEST).unlink()
    _damage(out / "model.safetensors", "truncate")
    with pytest.raises(SparsecraftError, match="corrupt, truncated or missing"):
        load_pretrained(str(out))


def test_report_refuses_a_file_without_weights_and_skips_masks(tmp_path, capsys):
    import torch

    save_file({"counts": torch.arange(4)}, str(tmp_path / "foreign.safetensors"))
    assert main(["report", str(tmp_path / "foreign.safetensors")]) == 2
    assert "holds no weight matrices" in capsys.readouterr().err
    save_file({"fc.weight": torch.ones(2, 2), "__mask__.fc.weight": torch.ones(2, 2, dtype=torch.bool)},
              str(tmp_path / "masked.safetensors"))
    assert main(["report", str(tmp_path / "masked.safetensors"), "--json"]) == 0
    assert '"__mask__' not in capsys.readouterr().out
