"""Long CPU runs that survive: resume states, Ctrl-C / SIGTERM, a progress bar with ETA, a JSONL log, a plot.

:func:`run_to_end` advances a :class:`~sparsecraft.posttrain.gradual.GradualDistiller` to its last
step. Every ``save_every`` steps, and when SIGINT or SIGTERM arrives (after the step in progress),
it writes the distiller's full state atomically to ``state_path`` (a ``torch.save`` file); a run
interrupted that way raises :class:`Interrupted` and :func:`load_state` + ``load_state_dict``
continue it exactly. Every ``eval_every`` steps the metrics go to one JSON line per step in a log
that a resumed run truncates back to its state's step, so the log never holds a step twice.
:func:`plot_metrics` draws cosine / top-10 agreement and sparsity against steps from that log.
"""
from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any, Callable

import torch

from ..errors import SparsecraftError
from ..io import atomic_path
from .gradual import STATE_FORMAT, GradualDistiller

Evaluate = Callable[[torch.nn.Module], dict[str, float]]


class Interrupted(KeyboardInterrupt):
    """The run stopped on SIGINT/SIGTERM after saving its state (``path``) at ``step``."""

    def __init__(self, path: Path, step: int) -> None:
        super().__init__(f"interrupted at step {step}; state saved to {path}; continue with --resume")
        self.path, self.step = path, step


class StopSignals:
    """Context manager: SIGINT and SIGTERM set :attr:`requested` instead of killing the process.

    The previous handlers come back on exit. Outside the main thread signals cannot be caught, so
    nothing is installed there.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._saved: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.requested = True

    def __enter__(self) -> "StopSignals":
        try:
            self._saved = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        except ValueError:  # not the main thread
            self._saved = {}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._saved.items():
            signal.signal(s, handler)


def save_state(distiller: GradualDistiller, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write ``distiller.state_dict()`` (plus JSON-able ``extra``) atomically to ``path``, replacing it."""
    with atomic_path(path, force=True) as tmp:
        torch.save({**distiller.state_dict(), "extra": extra or {}}, tmp)


def load_state(path: str | Path) -> dict[str, Any]:
    """A state written by :func:`save_state`; one-line :class:`SparsecraftError` if missing or corrupt."""
    p = Path(path)
    if not p.is_file():
        raise SparsecraftError(f"no saved run at {p} to resume; start without --resume")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
        assert isinstance(state, dict) and state.get("format") == STATE_FORMAT
        assert {"config", "step", "model", "masks", "optimizer", "rng", "generator", "order"} <= state.keys()
    except Exception:  # any unreadable or foreign file is the same user error
        raise SparsecraftError(f"{p} is not a readable distillation state (corrupt or truncated); delete it and "
                               "start again without --resume") from None
    return state


class MetricsLog:
    """Append-only JSONL log of metrics, one object per line with a ``step`` key.

    Parameters
    ----------
    path : str or Path
    resume_step : int or None
        ``None``: start a new log (an existing file is replaced); else keep the lines up to this
        step and append after them.
    """

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step] if resume_step is not None else []
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a :class:`MetricsLog` (empty if the file does not exist); a torn last line is skipped."""
    p = Path(path)
    if not p.is_file():
        return []
    rows = []
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return [r for r in rows if isinstance(r, dict) and "step" in r]


def _progress(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("eta"),
                    TimeRemainingColumn(), console=Console(stderr=True), disable=not enabled, transient=True)


def run_to_end(distiller: GradualDistiller, *, state_path: str | Path | None = None, save_every: int = 0,
               evaluate: Evaluate | None = None, eval_every: int = 0, log: MetricsLog | None = None,
               progress: bool = False, stop_after: int | None = None,
               state_extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Train until the last step, saving, evaluating and logging on the way.

    Parameters
    ----------
    distiller : GradualDistiller
        Fresh or loaded from a state.
    state_path : str or Path, optional
        Where the resume state goes (every ``save_every`` steps and on SIGINT/SIGTERM).
    save_every : int
        Steps between states (0: only on a signal).
    evaluate : callable, optional
        ``evaluate(model) -> {name: value}`` on held-out data, every ``eval_every`` steps and at the end.
    log : MetricsLog, optional
        Receives ``{step, loss, lr, sparsity, target, **evaluate(...)}`` at every evaluation.
    progress : bool
        A progress bar with the loss, sparsity and ETA (on a terminal); elsewhere one line to
        stderr per evaluation.
    stop_after : int, optional
        Behave as if a stop signal arrived after this step (tests, time-boxed runs).
    state_extra : dict, optional
        JSON-able settings saved with every state (``state["extra"]``), to check on resume.

    Returns
    -------
    list of dict
        The rows logged by this call.

    Raises
    ------
    Interrupted
        After a stop signal, once the state is saved.
    """
    total = distiller.config.steps
    rows: list[dict[str, Any]] = []
    losses: list[float] = []
    with StopSignals() as stop, _progress(progress and sys.stderr.isatty()) as bar:
        task = bar.add_task("distillation", total=total, completed=distiller.step)
        while distiller.step < total:
            info = distiller.train_step()
            losses.append(info["loss"])
            step = distiller.step
            bar.update(task, completed=step,
                       description=f"distillation loss {info['loss']:.4f} sparsity {info['sparsity']:.2f}")
            if evaluate is not None and (step == total or (eval_every and step % eval_every == 0)):
                row = {**info, "loss": sum(losses) / len(losses), **evaluate(distiller.student)}
                losses.clear()
                rows.append(row)
                if log is not None:
                    log.write(row)
                if progress and not sys.stderr.isatty():
                    text = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "step")
                    print(f"[{step}/{total}] {text}", file=sys.stderr, flush=True)
            stopping = stop.requested or (stop_after is not None and step >= stop_after and step < total)
            if state_path is not None and (stopping or (save_every and step % save_every == 0 and step < total)):
                save_state(distiller, state_path, state_extra)
            if stopping:
                if state_path is None:
                    raise KeyboardInterrupt
                raise Interrupted(Path(state_path), step)
    return rows


def plot_metrics(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Cosine, top-10 agreement (held-out; training text dotted, where logged) and sparsity against steps, as a PNG.

    Needs matplotlib (``pip install sparsecraft[bench]``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SparsecraftError("plotting needs matplotlib: pip install 'sparsecraft[bench]'") from None
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key in ("cosine", "knn10"):
        if rows and key in rows[0]:
            line = ax.plot(steps, [r[key] for r in rows], marker=".", label=key)[0]
            if "train_" + key in rows[0]:
                ax.plot(steps, [r["train_" + key] for r in rows], linestyle=":", color=line.get_color(),
                        label=f"{key} (training text)")
    ax.set_xlabel("step")
    ax.set_ylabel("agreement with the dense model")
    ax.set_ylim(0, 1.02)
    right = ax.twinx()
    right.plot(steps, [r["sparsity"] for r in rows], color="grey", linestyle="--", label="sparsity")
    right.set_ylabel("sparsity")
    right.set_ylim(0, 1.02)
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="lower left", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path, force=True) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)
