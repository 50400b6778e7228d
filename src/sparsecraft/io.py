"""File input and output: atomic writes that never clobber without ``force``, and the one safetensors reader."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from .errors import SparsecraftError


def check_output(path: str | os.PathLike, force: bool = False) -> Path:
    """Check that ``path`` may be written.

    Parameters
    ----------
    path : str or os.PathLike
        The output file or directory.
    force : bool
        Allow overwriting an existing ``path``.

    Returns
    -------
    Path
        ``path`` as a Path; a one-line :class:`SparsecraftError` if it exists (without ``force``)
        or its directory does not.
    """
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

    Parameters
    ----------
    path : str or os.PathLike
        The final output path (checked with :func:`check_output`).
    force : bool
        Allow replacing an existing ``path``.

    Yields
    ------
    Path
        A temporary path with the same name, in a fresh directory beside ``path``.
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


def read_safetensors(path: str | os.PathLike, select: Optional[Callable[[str], bool]] = None,
                     ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the header metadata of a safetensors file.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.safetensors`` file.
    select : Callable[[str], bool], optional
        Load only the tensors whose name it accepts (``lambda name: False`` reads the metadata
        alone); all tensors by default.

    Returns
    -------
    tensors : dict[str, torch.Tensor]
        The (selected) tensors, on the CPU, keyed by name in sorted name order.
    metadata : dict[str, str]
        The header's ``__metadata__`` (empty when the file has none).

    Raises
    ------
    SparsecraftError
        One line when the file is missing, is a directory, or is not a complete safetensors file
        (another format, corrupt or truncated).
    """
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.exists():
        raise SparsecraftError(f"{p} does not exist; check the path")
    if not p.is_file():
        raise SparsecraftError(f"{p} is not a file; give the path of a .safetensors file")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in sorted(f.keys()) if select is None or select(k)}
    except OSError as err:
        raise SparsecraftError(f"{p} cannot be read ({err.strerror or err}); check its permissions") from None
    except SafetensorError as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise SparsecraftError(f"{p} is not a readable safetensors file ({reason}); it is corrupt or truncated, "
                               "or of another format: write it again") from None
    return tensors, meta
