"""Builds (once, JIT) and loads the native kernels; picks the ISA at run time.

The C++ sources in ``csrc/`` are compiled with :func:`torch.utils.cpp_extension.load` (ninja) into
``$SPARSECRAFT_CACHE`` (default ``~/.cache/sparsecraft``)/``kernels-<hash>``, where the hash covers
the sources, the torch version, the compiler version, the flags and the Python version, so a
changed source or torch rebuilds and an unchanged one loads in milliseconds.
``python -m sparsecraft.kernels.build`` builds eagerly. If the compiler is missing or the build
fails, :func:`native` returns ``None`` after one warning line, and every sparse layer falls back
to torch's dense matmul (correct, not faster).

The extension registers six operators, ``torch.ops.sparsecraft.block_linear``, ``nm_linear``,
``bitmask_linear``, ``q8_linear`` (int8 values with per-group scales, csr16 or dense order), ``sddmm``
(the weight gradient at kept positions) and ``conv_cf`` (direct sparse convolution, csr16 or R x 1
blocks) (fake implementations in ``_fake.py``). Three copies of their hot loops are
compiled (AVX-512, AVX2+FMA, portable) with per-file target pragmas and the best one the CPU
supports is used; ``SPARSECRAFT_ISA=avx2|portable`` or :func:`set_isa` forces a lower one.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from types import ModuleType
from typing import Optional

from ..errors import SparsecraftError

CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES = ["ops.cpp", "kern_avx512.cpp", "kern_avx2.cpp", "kern_portable.cpp"]
HEADERS = ["kern_common.h", "kern_impl.h"]
#: tuples: torch's ``cpp_extension.load`` appends its own flags to the lists it is given, which would
#: change :func:`build_dir`'s hash after the first build
CFLAGS = ("-O3", "-fopenmp", "-fno-math-errno", "-Wno-unused-function")
LDFLAGS = ("-fopenmp",)
ISAS = ("portable", "avx2", "avx512")

_lock = threading.Lock()
_state: dict[str, object] = {}


def _compiler() -> str:
    cxx = os.environ.get("CXX", "c++")
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()[0] if out.returncode == 0 and out.stdout else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def build_dir() -> Path:
    """The cache directory of the build for the current sources, torch, compiler, flags and Python.

    Returns
    -------
    Path
        ``$SPARSECRAFT_CACHE`` (default ``~/.cache/sparsecraft``) / ``kernels-<16 hex digits of the hash>``;
        it may not exist yet.
    """
    import torch

    h = hashlib.sha256()
    for name in SOURCES + HEADERS:
        h.update(name.encode())
        h.update((CSRC / name).read_bytes())
    h.update(torch.__version__.encode())
    h.update(_compiler().encode())
    h.update(" ".join(CFLAGS + LDFLAGS).encode())
    h.update(sys.version.encode())
    root = Path(os.environ.get("SPARSECRAFT_CACHE", Path.home() / ".cache" / "sparsecraft"))
    return root / f"kernels-{h.hexdigest()[:16]}"


def _build(verbose: bool = False) -> ModuleType:
    from torch.utils import cpp_extension

    if not _compiler():
        raise RuntimeError("no C++ compiler found (install g++ or clang++, or set CXX)")
    out = build_dir()
    out.mkdir(parents=True, exist_ok=True)
    if not any(out.glob("*.so")):
        print(f"sparsecraft: compiling the native sparse kernels into {out} (first use, 1-2 minutes)",
              file=sys.stderr, flush=True)
    return cpp_extension.load(
        name=f"sparsecraft_kernels_{out.name.split('-')[1]}",
        sources=[str(CSRC / s) for s in SOURCES],
        extra_include_paths=[str(CSRC)],
        extra_cflags=list(CFLAGS),
        extra_ldflags=list(LDFLAGS),
        build_directory=str(out),
        verbose=verbose,
    )


def native(verbose: bool = False) -> Optional[ModuleType]:
    """The loaded extension module, building it on first use (thread-safe, once per process).

    Loading registers the six ops (``torch.ops.sparsecraft.block_linear``, ``nm_linear``,
    ``bitmask_linear``, ``q8_linear``, ``sddmm``, ``conv_cf``) and their fake implementations, and applies
    ``$SPARSECRAFT_ISA`` if set.

    Parameters
    ----------
    verbose : bool
        Show the compiler's output when this call builds.

    Returns
    -------
    ModuleType or None
        The extension (``cpu_isa()``, ``get_isa()``, ``set_isa(level)``), or None when
        ``$SPARSECRAFT_NO_NATIVE`` is set or the build failed (one RuntimeWarning; see
        :func:`build_error`).
    """
    if "module" in _state:
        return _state["module"]  # type: ignore[return-value]
    with _lock:
        if "module" in _state:
            return _state["module"]  # type: ignore[return-value]
        module: Optional[ModuleType]
        if os.environ.get("SPARSECRAFT_NO_NATIVE"):
            module, _state["error"] = None, "disabled by SPARSECRAFT_NO_NATIVE"
        else:
            try:
                module = _build(verbose)
            except Exception as err:  # noqa: BLE001 - any build failure means "use the fallback"
                module = None
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                _state["error"] = first
                warnings.warn(
                    f"sparsecraft: native sparse kernels unavailable ({first}); sparse layers fall back "
                    "to dense torch matmul. Run `python -m sparsecraft.kernels.build` to see the full error.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        _state["module"] = module
        if module is not None:
            from . import _fake  # noqa: F401  registers fake kernels for torch.compile

            forced = os.environ.get("SPARSECRAFT_ISA")
            if forced:
                _apply_isa(module, forced)
        return module


def available() -> bool:
    """Whether the native kernels are built and loaded (builds them on first call).

    Returns
    -------
    bool
        True when :func:`native` returns the extension; False means every sparse layer runs
        torch's dense matmul instead.
    """
    return native() is not None


def build_error() -> Optional[str]:
    """Why the native kernels are unavailable.

    Returns
    -------
    str or None
        The first line of the build error (or the ``$SPARSECRAFT_NO_NATIVE`` note), None when they load.
    """
    native()
    return _state.get("error")  # type: ignore[return-value]


def _apply_isa(module: ModuleType, name: str) -> str:
    if name not in ISAS:
        raise SparsecraftError(f"unknown ISA {name!r}; choose one of: {', '.join(ISAS)}")
    level = ISAS.index(name)
    if level > module.cpu_isa():
        raise SparsecraftError(f"ISA {name!r} is not supported by this CPU; the best is {ISAS[module.cpu_isa()]!r}")
    module.set_isa(level)
    return name


def supported_isas() -> list[str]:
    """The ISA paths this CPU can run.

    Returns
    -------
    list[str]
        A prefix of ``['portable', 'avx2', 'avx512']`` (lowest first); empty without the native build.
    """
    module = native()
    return [] if module is None else list(ISAS[: module.cpu_isa() + 1])


def get_isa() -> Optional[str]:
    """The ISA path the kernels use now.

    Returns
    -------
    str or None
        'avx512', 'avx2' or 'portable'; None without the native build.
    """
    module = native()
    return None if module is None else ISAS[module.get_isa()]


def set_isa(name: str) -> str:
    """Force the kernels onto one ISA path for this process.

    Parameters
    ----------
    name : str
        'portable', 'avx2' or 'avx512'; at most what the CPU supports (:func:`supported_isas`).

    Returns
    -------
    str
        ``name``. A one-line SparsecraftError for an unknown or unsupported path, or without the
        native build.
    """
    module = native()
    if module is None:
        raise SparsecraftError(f"native kernels are unavailable ({build_error()}); cannot set the ISA")
    return _apply_isa(module, name)


def clean() -> None:
    """Delete the cached build of the current sources (:func:`build_dir`); the next process rebuilds."""
    shutil.rmtree(build_dir(), ignore_errors=True)
