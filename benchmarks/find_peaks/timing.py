"""The one timing rule of both finders' benchmarks (``run_stemkit.py``, ``run_py4dstem.py``).

A single run of stemkit on 1024 patterns takes about 0.1-0.3 s, and the best of three such
runs mostly measured how lucky the fastest one was (runs of 0.319, 0.195 and 0.113 s were
seen on an idle machine). So each *measurement* repeats whole runs, back to back, until at
least ``min_time`` seconds have passed, and gives their mean time per run; a variant is
measured ``repeat`` times and its figure is the best measurement (its fastest stretch of
``min_time`` seconds). py4DSTEM, whose runs take 0.5-15 s, is timed by exactly the same
rule, so both sides are averaged over comparable stretches of wall-clock time.

Pure Python (no numpy): it runs in both virtual environments.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

MIN_TIME = 2.0  # seconds of whole runs per measurement
REPEAT = 3  # measurements per variant


def measure(run: Callable[[], Any], repeat: int = REPEAT, min_time: float = MIN_TIME) -> tuple[Any, list[float], list[int]]:
    """Call ``run()`` in ``repeat`` measurements of at least ``min_time`` seconds each.

    Returns the result of the last call, the mean seconds per call of each measurement and
    the number of calls in each.
    """
    seconds, counts, result = [], [], None
    for _ in range(max(1, int(repeat))):
        count, start = 0, time.perf_counter()
        while True:
            result = run()
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        seconds.append(elapsed / count)
        counts.append(count)
    return result, seconds, counts


def describe(n: int, seconds: list[float], counts: list[int]) -> str:
    """One line: the best measurement's rate, and every measurement as seconds per run × runs."""
    best = min(seconds)
    runs = ", ".join(f"{s:.3f} s × {c}" for s, c in zip(seconds, counts))
    return f"{n} patterns, best {best:.3f} s per run ({n / best:.0f} patterns/s); measurements (mean per run × runs): {runs}"
