"""Safe file output: atomic writes that never clobber an existing file without ``force``."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import SparsecraftError


def check_output(path: str | os.PathLike, force: bool = False) -> Path:
    """Return ``path`` as a Path, refusing one that exists unless ``force`` is set."""
    out = Path(path)
    if out.exists() and not force:
        raise SparsecraftError(f"{out} already exists; choose another path or pass --force to overwrite")
    if not out.parent.exists():
        raise SparsecraftError(f"directory {out.parent} does not exist; create it first")
    return out


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path`` atomically.

    Works for a file or a directory. On any exception the temporary output is removed and
    ``path`` is left untouched.
    """
    out = check_output(path, force)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent)) / out.name
    try:
        yield tmp
        if out.is_dir() and not tmp.is_dir():
            raise SparsecraftError(f"{out} is a directory; give a file path")
        if out.is_dir():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)
