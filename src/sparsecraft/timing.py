"""The one way sparsecraft times things: elapsed seconds, and interleaved repeats of callables.

* :class:`Stopwatch` measures elapsed wall seconds of a block (``with Stopwatch() as sw: ...``,
  then ``sw.seconds``) or since it was created (``sw = Stopwatch()`` ... ``sw.seconds``).
* :func:`compare` times several callables in turn, round after round (so a busy machine slows them
  alike), after warm-up calls, and reports each one's minimum or median seconds per call.
  :func:`measure` does the same for one callable.
* :func:`default_clock` is the clock to pass when only relative speed matters: CPU time of the
  calling thread when torch runs single-threaded (preemption by other jobs does not count), wall
  time otherwise (thread CPU time would miss the work of the other threads).

Every time here is in seconds.
"""
from __future__ import annotations

import statistics
import time
from types import TracebackType
from typing import Any, Callable, Mapping, Optional

from .errors import SparsecraftError

Clock = Callable[[], float]
STATS = ("min", "median")


def default_clock() -> Clock:
    """The clock for benchmarking torch code in this process.

    Returns
    -------
    Callable[[], float]
        :func:`time.thread_time` (seconds of CPU time of the calling thread) when
        ``torch.get_num_threads() == 1``, else :func:`time.perf_counter` (wall seconds).
    """
    import torch

    return time.thread_time if torch.get_num_threads() == 1 else time.perf_counter


class Stopwatch:
    """Elapsed seconds since creation (or since entering ``with``), frozen by :meth:`stop` / leaving ``with``.

    Parameters
    ----------
    clock : Callable[[], float], optional
        Source of seconds; :func:`time.perf_counter` (wall time) by default.

    Examples
    --------
    >>> with Stopwatch() as sw:
    ...     work()
    >>> sw.seconds          # wall seconds the block took
    >>> total = Stopwatch()  # running from here
    >>> total.seconds       # seconds so far
    """

    def __init__(self, clock: Clock = time.perf_counter) -> None:
        self._clock = clock
        self._start = clock()
        self._stop: Optional[float] = None

    @property
    def seconds(self) -> float:
        """Seconds from the start to :meth:`stop` if it was called, else to now."""
        end = self._stop if self._stop is not None else self._clock()
        return end - self._start

    def stop(self) -> float:
        """Freeze the elapsed time.

        Returns
        -------
        float
            The elapsed seconds, as :attr:`seconds` will report from now on.
        """
        self._stop = self._clock()
        return self.seconds

    def __enter__(self) -> "Stopwatch":
        self._start, self._stop = self._clock(), None
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.stop()


def compare(fns: Mapping[str, Callable[[], Any]], rounds: int = 15, warmup: int = 2, min_time: float = 0.0,
            max_rounds: Optional[int] = None, before: Optional[Callable[[], None]] = None, stat: str = "min",
            clock: Clock = time.perf_counter) -> dict[str, float]:
    """Seconds per call of each callable, timed in turn round after round.

    Each callable is first called ``warmup`` times. Then every round calls ``before`` (if given,
    untimed) and each callable once, in order, timing the call with ``clock``. Rounds go on until
    at least ``rounds`` are done and ``min_time`` wall seconds have passed, but stop at
    ``max_rounds`` once ``rounds`` are done.

    Parameters
    ----------
    fns : Mapping[str, Callable[[], Any]]
        The callables to time, by name; their results are discarded.
    rounds : int
        Least number of rounds (timed calls per callable), >= 1.
    warmup : int
        Untimed calls of each callable before the first round.
    min_time : float
        Least wall seconds to keep timing (measured with :func:`time.perf_counter`).
    max_rounds : int, optional
        Most rounds once ``rounds`` are done, whatever ``min_time`` says; unbounded by default.
    before : Callable[[], None], optional
        Called untimed before each timed call (e.g. a cache flush).
    stat : {'min', 'median'}
        'min': the least disturbed round (the best estimate of a path's own speed on a shared
        machine); 'median': the typical round.
    clock : Callable[[], float]
        Source of seconds for each call: wall time by default; :func:`default_clock` gives
        thread CPU time when torch is single-threaded.

    Returns
    -------
    dict[str, float]
        Seconds per call of each callable (``stat`` over the rounds), keyed like ``fns``.
    """
    if stat not in STATS:
        raise SparsecraftError(f"stat must be one of {', '.join(STATS)}, got {stat!r}")
    if rounds < 1:
        raise SparsecraftError(f"rounds must be at least 1, got {rounds}")
    for _ in range(warmup):
        for f in fns.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    n = 0
    while n < rounds or ((max_rounds is None or n < max_rounds) and time.perf_counter() - start < min_time):
        for k, f in fns.items():
            if before is not None:
                before()
            t0 = clock()
            f()
            times[k].append(clock() - t0)
        n += 1
    agg = min if stat == "min" else statistics.median
    return {k: agg(v) for k, v in times.items()}


def measure(fn: Callable[[], Any], rounds: int = 20, warmup: int = 3, min_time: float = 0.0, stat: str = "median",
            clock: Clock = time.perf_counter) -> float:
    """Seconds per call of one callable; :func:`compare` with a single entry.

    Parameters
    ----------
    fn : Callable[[], Any]
        The callable to time.
    rounds, warmup, min_time, stat, clock
        As for :func:`compare` (here ``stat`` defaults to 'median').

    Returns
    -------
    float
        Seconds per call (``stat`` over the timed calls).
    """
    return compare({"fn": fn}, rounds=rounds, warmup=warmup, min_time=min_time, stat=stat, clock=clock)["fn"]
