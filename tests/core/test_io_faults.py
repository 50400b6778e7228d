"""Issue 20 items 3 and 4: output paths checked before any work, one-line write errors, atomic
directory replacement, and temporaries of killed writers swept."""
from __future__ import annotations

import errno
import os

import pytest

from sparsecraft import io
from sparsecraft.errors import SparsecraftError


def test_parent_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(SparsecraftError, match=r"directory .*f is a file, not a directory"):
        io.check_output(tmp_path / "f" / "out.safetensors")


def test_empty_path_is_refused():
    with pytest.raises(SparsecraftError, match="the output path is empty"):
        io.check_output("")


def test_directory_where_a_file_is_written_and_file_where_a_directory_is(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("x")
    with pytest.raises(SparsecraftError, match="is a directory; give a file path"):
        io.check_output(tmp_path / "d", force=True)
    with pytest.raises(SparsecraftError, match="is a file; give a directory path"):
        io.check_output(tmp_path / "f", force=True, directory=True)


def test_unwritable_directory_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(io.os, "access", lambda path, mode: False)  # the tests may run as root
    with pytest.raises(SparsecraftError, match="is not writable"):
        io.check_output(tmp_path / "out.safetensors")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_os_errors_while_writing_are_one_line_and_leave_nothing(tmp_path, code):
    out = tmp_path / "out.bin"
    with pytest.raises(SparsecraftError, match=f"cannot write {out} \\({os.strerror(code)}\\)") as err:
        with io.atomic_path(out) as tmp:
            tmp.write_bytes(b"partial")
            raise OSError(code, os.strerror(code))
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_directory_is_replaced_by_renaming_the_old_one_aside_first(tmp_path, monkeypatch):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.bin").write_text("old")

    def killed_while_deleting(path, *args, **kwargs):  # a SIGKILL during the first delete
        raise KeyboardInterrupt

    monkeypatch.setattr(io.shutil, "rmtree", killed_while_deleting)
    with pytest.raises(KeyboardInterrupt):
        with io.atomic_path(out, force=True, directory=True) as tmp:
            tmp.mkdir()
            (tmp / "new.bin").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.bin"]  # the complete new output is in place
    (left,) = [p for p in tmp_path.iterdir() if p.name != "model"]  # the old one, aside, for the next sweep
    assert left.name.startswith(f".model.{os.getpid()}.") and (left / ".replaced" / "old.bin").read_text() == "old"


def test_stale_temporaries_are_swept_and_live_ones_kept(tmp_path):
    out = tmp_path / "out.bin"
    dead, live = tmp_path / f".out.bin.{2**40}.abc", tmp_path / f".out.bin.{os.getpid()}.xyz"
    for d in (dead, live):
        d.mkdir()
        (d / "out.bin").write_bytes(b"x" * 100)
    (tmp_path / ".other.bin.1.abc").mkdir()  # another output's temporary is not ours to touch
    with io.atomic_path(out) as tmp:
        tmp.write_bytes(b"done")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".other.bin.1.abc", live.name, "out.bin"])


def _killed_between_the_renames(tmp_path):
    """What a SIGKILL between the two renames of a directory replacement leaves: no output, the old
    one aside in the dead writer's temporary, the complete new one beside it."""
    out = tmp_path / "model"
    work = tmp_path / f".model.{2**40}.abc"
    (work / ".replaced").mkdir(parents=True)
    (work / ".replaced" / "old.bin").write_text("old")
    (work / "model").mkdir()
    (work / "model" / "new.bin").write_text("new")
    return out


def test_sweep_restores_the_old_output_when_a_kill_came_between_the_renames(tmp_path):
    out = _killed_between_the_renames(tmp_path)
    assert io.sweep_stale_temps(out) == [tmp_path / f".model.{2**40}.abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert (out / "old.bin").read_text() == "old"


def test_a_restored_output_is_not_overwritten_without_force(tmp_path):
    out = _killed_between_the_renames(tmp_path)
    with pytest.raises(SparsecraftError, match="already exists.*--force"):
        io.check_output(out, directory=True)
    assert (out / "old.bin").read_text() == "old"


def test_sweep_keeps_the_output_there_is(tmp_path):
    out = _killed_between_the_renames(tmp_path)
    out.mkdir()
    (out / "newer.bin").write_text("newer")
    io.sweep_stale_temps(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"] and [p.name for p in out.iterdir()] == ["newer.bin"]


def _deny_reading(monkeypatch, suffix: str = "") -> None:
    """Opening files (whose name ends in ``suffix``) fails with EACCES, as for a chmod 000 file
    when the tests do not run as root."""
    real_open = io.Path.open

    def deny(self, *args, **kwargs):
        if self.name.endswith(suffix):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(io.Path, "open", deny)


def _saved_checkpoint(path):
    import torch
    from torch import nn

    import sparsecraft

    torch.manual_seed(0)
    sparsecraft.prune(nn.Sequential(nn.Linear(4, 4)), 0.5).save(str(path))
    return path


@pytest.mark.parametrize("reader", ["read_safetensors", "read_checkpoint"])
def test_unreadable_file_is_unreadable_not_corrupt(tmp_path, monkeypatch, reader):
    from sparsecraft import checkpoint

    path = _saved_checkpoint(tmp_path / "ck.safetensors")
    _deny_reading(monkeypatch)
    read = getattr(io, reader, None) or getattr(checkpoint, reader)
    with pytest.raises(SparsecraftError, match=f"^{path} cannot be read \\(Permission denied\\); "
                                               "check its permissions$"):
        read(path)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads a chmod 000 file")
def test_chmod_000_file_is_unreadable_not_missing(tmp_path):
    path = _saved_checkpoint(tmp_path / "ck.safetensors")
    path.chmod(0)
    with pytest.raises(SparsecraftError, match="cannot be read \\(Permission denied\\)"):
        io.read_safetensors(path)


def test_directory_given_for_a_checkpoint_is_a_directory_not_missing(tmp_path):
    from sparsecraft.checkpoint import read_checkpoint

    with pytest.raises(SparsecraftError, match=f"^checkpoint {tmp_path} is a directory, not a file; give the "
                                               "path of a .safetensors checkpoint$"):
        read_checkpoint(tmp_path)
    with pytest.raises(SparsecraftError, match=f"^{tmp_path} is a directory, not a file; give the path of a "
                                               ".safetensors file$"):
        io.read_safetensors(tmp_path)


def test_unreadable_file_of_a_model_directory_is_unreadable_not_corrupt(monkeypatch):
    from sparsecraft.models.hf import load_pretrained

    _deny_reading(monkeypatch, "model.safetensors")
    with pytest.raises(SparsecraftError, match="model.safetensors cannot be read \\(Permission denied\\); "
                                               "check its permissions$"):
        load_pretrained("minilm")


def test_unreadable_file_listed_in_a_manifest_is_unreadable_not_corrupt(tmp_path, monkeypatch):
    (tmp_path / "weights.bin").write_bytes(b"w")
    io.write_manifest(tmp_path)
    _deny_reading(monkeypatch, ".bin")
    with pytest.raises(SparsecraftError, match="weights.bin cannot be read \\(Permission denied\\)"):
        io.verify_manifest(tmp_path)
