"""Shared benchmark plumbing: machine description, timing (via :mod:`sparsecraft.timing`), plots, and writing results.

Every benchmark writes ``bench/results/<name>.json`` (machine, commit, date, rows) and
``bench/results/<name>.md`` (a short table), plus plots where a person would rather look.
Speed is always reported as a ratio against a baseline measured in the same run.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Callable, Sequence

from sparsecraft.timing import measure

RESULTS = Path(__file__).resolve().parent / "results"


def machine_info() -> dict[str, Any]:
    """CPU model and flags, cores, threads, torch version, commit and date."""
    import torch

    flags: set[str] = set()
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "cpu": model,
        "flags": sorted(f for f in flags
                        if f in {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni"}),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commit": commit,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def median_time(fn: Callable[[], Any], repeats: int = 20, warmup: int = 3, min_time: float = 0.0) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls after ``warmup`` (warm cache):
    :func:`sparsecraft.timing.measure` under the name the benchmarks use."""
    return measure(fn, rounds=repeats, warmup=warmup, min_time=min_time, stat="median")


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (benchmarks run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub markdown table of ``rows`` restricted to ``columns``; floats get 3 significant digits."""

    def fmt(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_results(name: str, rows: list[dict[str, Any]], markdown: str, extra: dict[str, Any] | None = None) -> Path:
    """Write ``<name>.json`` (machine + rows + extra) and ``<name>.md`` under bench/results/."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine_info(), **(extra or {}), "rows": rows}
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=float))
    os.replace(tmp, path)
    md = RESULTS / f"{name}.md"
    md.write_text(markdown.rstrip() + "\n")
    return path
