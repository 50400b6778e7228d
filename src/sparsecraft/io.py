"""File input and output: atomic writes that never clobber without ``force``, and the one safetensors reader."""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from .errors import SparsecraftError


def check_output(path: str | os.PathLike, force: bool = False, directory: bool = False) -> Path:
    """Check that ``path`` may be written, before any work is done.

    Parameters
    ----------
    path : str or os.PathLike
        The output file or directory.
    force : bool
        Allow overwriting an existing ``path``.
    directory : bool
        ``path`` is written as a directory (else as a file).

    Returns
    -------
    Path
        ``path`` as a Path.

    Raises
    ------
    SparsecraftError
        One line if the path is empty, exists (without ``force``), is a directory where a file is
        written or a file where a directory is written, or if its directory is missing, is a file
        or cannot be written to.
    """
    if not os.fspath(path):
        raise SparsecraftError("the output path is empty; give a file name")
    out = Path(path)
    if not out.parent.is_dir():
        what = "is a file, not a directory" if out.parent.exists() else "does not exist; create it first"
        raise SparsecraftError(f"directory {out.parent} {what}")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise SparsecraftError(f"directory {out.parent} is not writable; choose another output path")
    sweep_stale_temps(out)  # first: an old output a killed writer left aside is restored, then protected
    if out.exists() and not force:
        raise SparsecraftError(f"{out} already exists; choose another path or pass --force to overwrite")
    if out.is_dir() and not directory:
        raise SparsecraftError(f"{out} is a directory; give a file path")
    if out.exists() and directory and not out.is_dir():
        raise SparsecraftError(f"{out} is a file; give a directory path (a model directory is written there)")
    return out


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, force: bool = False, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path`` atomically.

    Works for a file or a directory. An existing directory is renamed aside, the new one renamed
    in, and only then the old one deleted, so ``path`` is at every moment the old or the new
    output. On any exception the temporary output is removed and ``path`` is left untouched; OS
    and disk errors while writing (no space, no permission) become one line. Temporary outputs of
    the same name left by killed processes are swept first (by :func:`check_output`).

    Parameters
    ----------
    path : str or os.PathLike
        The final output path (checked with :func:`check_output`).
    force : bool
        Allow replacing an existing ``path``.
    directory : bool
        A directory is written at ``path`` (else a file).

    Yields
    ------
    Path
        A temporary path with the same name, in a fresh directory beside ``path``.
    """
    from safetensors import SafetensorError

    out = check_output(path, force, directory)
    try:
        work = Path(tempfile.mkdtemp(prefix=_temp_prefix(out) + f"{os.getpid()}.", dir=out.parent))
    except OSError as err:
        raise _write_error(out, err) from None
    tmp = work / out.name
    try:
        yield tmp
        if out.is_dir():
            os.replace(out, work / ".replaced")  # aside first: deleted with the work directory
        os.replace(tmp, out)
    except (OSError, SafetensorError) as err:
        raise _write_error(out, err) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _temp_prefix(out: Path) -> str:
    return f".{out.name}."


def _write_error(out: Path, err: Exception) -> SparsecraftError:
    """One line for an OS or disk error met while writing ``out``."""
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).strip().splitlines()[0][:160]
    return SparsecraftError(f"cannot write {out} ({reason}); free disk space, fix permissions or choose "
                            "another path; nothing was written")


def sweep_stale_temps(out: Path) -> list[Path]:
    """Remove temporary outputs of ``out`` left by processes that no longer run (killed mid-write).

    A writer killed between the two renames of a directory replacement left no ``out`` and the
    old output aside in its temporary: that old output is renamed back to ``out`` first.

    Parameters
    ----------
    out : Path
        The final output path; its temporaries are ``.<name>.<pid>.<random>`` beside it.

    Returns
    -------
    list of Path
        The temporaries removed (those of live processes, this one included, are kept).
    """
    prefix = _temp_prefix(out)
    removed = []
    for cand in sorted(out.parent.glob(glob.escape(prefix) + "*")):
        pid = cand.name[len(prefix):].split(".", 1)[0]
        if cand.is_dir() and pid.isdigit() and not _alive(int(pid)):
            if (cand / ".replaced").is_dir() and not os.path.lexists(out):
                os.replace(cand / ".replaced", out)
            shutil.rmtree(cand, ignore_errors=True)
            removed.append(cand)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (or a number no pid can be)
        return False
    except PermissionError:  # another user's process
        return True
    return True


MANIFEST = "sparsecraft-manifest.json"


def write_manifest(directory: str | os.PathLike) -> Path:
    """Record the SHA-256 of every file under ``directory`` in its ``sparsecraft-manifest.json``.

    Parameters
    ----------
    directory : str or os.PathLike
        An output directory (a transformers model), written before it is moved into place.

    Returns
    -------
    Path
        The manifest file.
    """
    root = Path(directory)
    digests = {str(f.relative_to(root)): _file_digest(f) for f in sorted(root.rglob("*")) if f.is_file()}
    out = root / MANIFEST
    out.write_text(json.dumps({"sha256": digests}, indent=1))
    return out


def verify_manifest(directory: str | os.PathLike) -> bool:
    """Check every file listed in ``directory``'s manifest against its SHA-256.

    Parameters
    ----------
    directory : str or os.PathLike

    Returns
    -------
    bool
        True when a manifest was found and every file matches, False when there is no manifest.

    Raises
    ------
    SparsecraftError
        One line naming the first missing, truncated or changed file, or an unreadable manifest.
    """
    root = Path(directory)
    if not (root / MANIFEST).is_file():
        return False
    try:
        digests = json.loads((root / MANIFEST).read_text())["sha256"]
        assert isinstance(digests, dict)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        raise SparsecraftError(f"{root / MANIFEST} is not a readable manifest; the directory is corrupt") from None
    for name, digest in digests.items():
        f = root / name
        if not f.is_file() or _file_digest(f) != digest:
            raise SparsecraftError(f"{f} is missing or does not match its checksum in {MANIFEST}; the directory "
                                   "is corrupt or truncated: write it again")
    return True


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open_for_reading(path) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def open_for_reading(path: Path) -> contextlib.AbstractContextManager:
    """``path.open("rb")``, an OS error being one line that names the file and its reason.

    Parameters
    ----------
    path : Path

    Returns
    -------
    The open binary file, a context manager.

    Raises
    ------
    SparsecraftError
        ``"<path> cannot be read (Permission denied); check its permissions"`` and the like.
    """
    try:
        return path.open("rb")
    except OSError as err:
        hint = "; check its permissions" if isinstance(err, PermissionError) else ""
        raise SparsecraftError(f"{path} cannot be read ({err.strerror or err}){hint}") from None


def check_readable(path: str | os.PathLike, kind: str = "file") -> Path:
    """Raise one line unless ``path`` is a regular file that this process can open.

    Parameters
    ----------
    path : str or os.PathLike
    kind : str
        What the file should be, for the message (``".safetensors file"``).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    SparsecraftError
        Missing, a directory, not a regular file (a FIFO, a device) or unreadable (permissions):
        a different message each, never "corrupt".
    """
    p = Path(path)
    if not p.exists():
        raise SparsecraftError(f"{p} does not exist; check the path")
    if p.is_dir():
        raise SparsecraftError(f"{p} is a directory, not a file; give the path of a {kind}")
    if not p.is_file():
        raise SparsecraftError(f"{p} is not a regular file; give the path of a {kind}")
    with open_for_reading(p):
        return p


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
        One line when the file is missing, a directory, unreadable (permissions), or not a complete
        safetensors file (another format, corrupt or truncated), each said apart.
    """
    from safetensors import SafetensorError, safe_open

    p = check_readable(path, ".safetensors file")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in sorted(f.keys()) if select is None or select(k)}
    except OSError as err:  # safetensors says "No such file" for any failed open: ours passed, so a race
        raise SparsecraftError(f"{p} cannot be read ({err.strerror or err}); check the file") from None
    except SafetensorError as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise SparsecraftError(f"{p} is not a readable safetensors file ({reason}); it is corrupt or truncated, "
                               "or of another format: write it again") from None
    return tensors, meta
