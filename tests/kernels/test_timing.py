"""sparsecraft.timing on a scripted clock: what is called, how often, and which statistic comes back."""
from __future__ import annotations

import time

import pytest
import torch

from sparsecraft.errors import SparsecraftError
from sparsecraft.timing import Stopwatch, compare, default_clock, measure


class ScriptedClock:
    """Advances by the next of ``steps`` on each read (cycling), so durations are known exactly."""

    def __init__(self, steps: list[float]) -> None:
        self.now, self.steps, self.reads = 0.0, steps, 0

    def __call__(self) -> float:
        value = self.now
        self.now += self.steps[self.reads % len(self.steps)]
        self.reads += 1
        return value


def test_compare_interleaves_after_warmup_and_takes_min_or_median():
    calls: list[str] = []
    flushes: list[int] = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    # each timed call reads the clock twice: start (step 0 after it) and end; durations a: 3,1,2  b: 5,4,6
    clock = ScriptedClock([3, 0, 5, 0, 1, 0, 4, 0, 2, 0, 6, 0])
    t = compare(fns, rounds=3, warmup=2, before=lambda: flushes.append(len(calls)), clock=clock)
    assert calls == ["a", "b"] * 5  # 2 warm-up rounds then 3 timed rounds, in turn
    assert flushes == [4, 5, 6, 7, 8, 9]  # before every timed call, not the warm-up ones
    assert t == {"a": 1, "b": 4}
    clock = ScriptedClock([3, 0, 5, 0, 1, 0, 4, 0, 2, 0, 6, 0])
    assert compare(fns, rounds=3, warmup=0, stat="median", clock=clock) == {"a": 2, "b": 5}


def test_compare_min_time_runs_until_max_rounds():
    n = []
    compare({"f": lambda: n.append(1)}, rounds=2, warmup=0, min_time=1e9, max_rounds=7, clock=ScriptedClock([1]))
    assert len(n) == 7
    n.clear()
    compare({"f": lambda: n.append(1)}, rounds=4, warmup=1, min_time=0.0, clock=ScriptedClock([1]))
    assert len(n) == 5


def test_compare_refuses_bad_arguments():
    with pytest.raises(SparsecraftError, match="stat must be"):
        compare({"f": lambda: None}, stat="mean")
    with pytest.raises(SparsecraftError, match="rounds must be"):
        compare({"f": lambda: None}, rounds=0)


def test_measure_is_compare_of_one():
    calls = []
    assert measure(lambda: calls.append(1), rounds=3, warmup=1, clock=ScriptedClock([2, 0, 7, 0, 3, 0])) == 3
    assert len(calls) == 4


def test_stopwatch_running_stopped_and_as_context_manager():
    sw = Stopwatch(ScriptedClock([10, 1, 1, 100]))  # start 0; reads then return 10, 11, 12, 112
    assert sw.seconds == 10  # running: start to now
    assert sw.stop() == 11
    assert sw.seconds == 11  # frozen after stop
    with Stopwatch(ScriptedClock([5, 2, 3])) as block:  # created at 0, entered at 5, left at 7
        pass
    assert block.seconds == 2
    with Stopwatch() as wall:
        pass
    assert wall.seconds >= 0


def test_default_clock_follows_torch_threads():
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert default_clock() is time.thread_time
        torch.set_num_threads(2)
        assert default_clock() is time.perf_counter
    finally:
        torch.set_num_threads(saved)
