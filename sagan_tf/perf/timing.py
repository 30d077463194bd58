"""Timing statistics: per-iteration times summarised as the figures a benchmark reports.

The median is the figure (robust to the stray slow iteration of a shared
machine); the minimum and maximum show the spread.
"""
import os
import statistics
import time

#: The keys of ``timing_figures``.
TIMING_KEYS = ("median_seconds_per_iteration", "min_seconds_per_iteration",
               "max_seconds_per_iteration", "images_per_second")


def timing_figures(times, images_per_iteration):
    """``{median,min,max}_seconds_per_iteration`` and ``images_per_second``
    (images per iteration / median) of a list of seconds; all None when empty."""
    if not times:
        return dict.fromkeys(TIMING_KEYS)
    med = statistics.median(times)
    return {"median_seconds_per_iteration": med, "min_seconds_per_iteration": min(times),
            "max_seconds_per_iteration": max(times),
            "images_per_second": images_per_iteration / med if med > 0 else None}


def timed(fn, into):
    """Calls ``fn()``, appends its wall-clock seconds to the list ``into``, returns its value."""
    t0 = time.perf_counter()
    value = fn()
    into.append(time.perf_counter() - t0)
    return value


def alternate(runners, rounds, steps, warmup):
    """Times the callables of ``runners`` (``{name: fn}``) alternately in one
    process: ``warmup`` untimed calls of each, then ``rounds`` rounds in ABBA
    order (every other round reversed), ``steps`` timed calls of each per round,
    so that all see the same machine state.

    Returns ``({name: {"median", "min", "n"}}, loads)``: seconds per call, and
    the 1-minute load average before the first round and after each round.
    """
    for fn in runners.values():
        for _ in range(warmup):
            fn()
    names, times = list(runners), {k: [] for k in runners}
    loads = [os.getloadavg()[0]]
    for r in range(rounds):
        for k in (names if r % 2 == 0 else names[::-1]):
            for _ in range(steps):
                timed(runners[k], times[k])
        loads.append(os.getloadavg()[0])
    return ({k: {"median": statistics.median(t), "min": min(t), "n": len(t)}
             for k, t in times.items()}, loads)
