"""Timing statistics: per-iteration times summarised as the figures a benchmark reports.

The median is the figure (robust to the stray slow iteration of a shared
machine); the minimum and maximum show the spread.
"""
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
