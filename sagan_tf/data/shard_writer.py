"""Writing record shards from per-image tasks: resumable, crash-safe, in worker processes.

The engine behind :mod:`sagan_tf.data.imagenet_records`. Each shard is
written to ``<shard>.tmp-<pid>``, flushed to disk (fsync) and renamed when
complete, so a file with a shard's name is always complete, also after a
power loss; a rerun skips finished shards (logged), checking from a small
state file (``<output_dir>/.convert_state/<shard>.json``, written before the
rename) that a finished shard was made from the same inputs, settings and
pixel pipeline, and removes the temporary files a killed run left behind.
Images are decoded and resized by worker processes
(``concurrent.futures.ProcessPoolExecutor``): a worker that dies -- killed by
the out-of-memory killer, say -- fails the run with one line naming the shard
(the finished shards are kept; the same command resumes) instead of hanging.
"""
from __future__ import annotations

import concurrent.futures
import glob
import json
import multiprocessing
import os
import re
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Sequence

from sagan_tf.data import pixel_pipelines

__all__ = ["STATE_DIR", "shard_name", "shard_bounds", "write_shards", "available_cpus",
           "atomic_write_json", "stderr_log", "ConversionWorkerDied"]

STATE_DIR = ".convert_state"


class ConversionWorkerDied(ChildProcessError):
    """A decode/resize worker process ended abruptly (killed, out of memory)."""


def available_cpus() -> int:
    """The CPUs this process may run on (``os.sched_getaffinity``: container and
    ``taskset`` limits count, unlike ``os.cpu_count``)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def process_task(task):
    """Worker: ``(source, payload, label, image_size, pipeline)`` -> ``(label, uint8
    [S,S,3] or None, source, error or None)``. ``payload``: None (decode the file
    ``source``), the encoded file's bytes, or a decoded image array."""
    source, payload, label, image_size, pipeline = task
    try:
        if payload is None or isinstance(payload, (bytes, bytearray)):
            image = pixel_pipelines.pixels_from_file(source if payload is None else payload,
                                                     pipeline, image_size)
        else:
            image = pixel_pipelines.pixels_from_array(payload, pipeline, image_size)
        return label, image, source, None
    except Exception as e:  # noqa: BLE001 -- any undecodable file is skipped and reported
        return label, None, source, f"{type(e).__name__}: {e}"


# ----------------------------------------------------------------------------------
# Folder scan, sharding, writing
# ----------------------------------------------------------------------------------
def shard_name(index: int, num_shards: int, prefix: str = "train") -> str:
    """``train-00003-of-01024.tfrecords``."""
    return f"{prefix}-{index:05d}-of-{num_shards:05d}.tfrecords"


def shard_bounds(num_items: int, num_shards: int) -> list[tuple[int, int]]:
    return [(k * num_items // num_shards, (k + 1) * num_items // num_shards)
            for k in range(num_shards)]


def atomic_write_json(path: str, obj) -> None:
    """Writes ``obj`` as JSON to ``path``: a temporary file, fsynced, renamed."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _Progress:
    def __init__(self, total: int, log, interval: float):
        self.total, self.log, self.interval = total, log, interval
        self.done = self.skipped = 0
        self.start = self.last = time.monotonic()

    def update(self, shard: str, force: bool = False):
        now = time.monotonic()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        self.log(f"[convert] {self.done}/{self.total} images "
                 f"({100.0 * self.done / max(self.total, 1):.1f}%), {rate:.1f} images/s, "
                 f"ETA {_format_eta(eta) if eta != float('inf') else '?'}, "
                 f"{self.skipped} skipped, writing {shard}")


def write_shards(output_dir: str, shard_tasks: Sequence[Callable[[], Iterable]],
                 shard_sizes: Sequence[int], shard_fingerprints: Sequence[str],
                 image_size: int, settings: dict, num_workers: int = 1,
                 log: Callable[[str], None] | None = None, progress_interval: float = 10.0,
                 start_method: str | None = None, prefix: str = "train") -> list[dict]:
    """Writes ``len(shard_tasks)`` shards; finished shards are skipped (resume).

    Args:
      output_dir: created if needed.
      shard_tasks: per shard, a zero-argument callable giving the shard's tasks
        ``(source, image_or_None, label, image_size)`` in order (called only for
        shards still to write).
      shard_sizes: number of tasks per shard (progress, ETA).
      shard_fingerprints: per shard, a string identifying its inputs; a finished shard
        whose state file has another fingerprint or other ``settings`` is an error.
      image_size: ``S``.
      settings: JSON-able conversion settings stored with every shard.
      num_workers: decode/resize processes (``<= 1``: in this process); a worker
        that dies raises :class:`ConversionWorkerDied` (the finished shards stay).
      log: message sink (default: stderr).
      progress_interval: seconds between progress lines.
      start_method: multiprocessing start method (default ``fork`` where available:
        workers only run PIL/numpy).

    Returns:
      Per shard ``{"shard", "num_images", "images_per_label": {label: n},
      "skipped": [{"file", "error"}], "resumed": bool}``.
    """
    log = log or stderr_log
    num_shards = len(shard_tasks)
    os.makedirs(os.path.join(output_dir, STATE_DIR), exist_ok=True)
    _remove_stale_temporaries(output_dir, log)
    stats, pending = _finished_shards(output_dir, num_shards, shard_fingerprints, settings,
                                      prefix, log)
    progress = _Progress(sum(shard_sizes[k] for k in pending), log, progress_interval)
    if pending:
        log(f"[convert] writing {len(pending)} of {num_shards} shards "
            f"({progress.total} images) to {output_dir} with {max(num_workers, 1)} worker(s)")
    executor = None
    if num_workers > 1 and pending:
        if start_method is None:
            start_method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
        executor = concurrent.futures.ProcessPoolExecutor(
            num_workers, mp_context=multiprocessing.get_context(start_method))
    try:
        for k in pending:
            name = shard_name(k, num_shards, prefix)
            tasks = shard_tasks[k]()
            results = (executor.map(process_task, tasks, chunksize=8) if executor is not None
                       else map(process_task, tasks))
            try:
                stats[k] = _write_shard(output_dir, name, results, shard_fingerprints[k],
                                        settings, progress, log)
            except BrokenProcessPool as e:
                raise ConversionWorkerDied(
                    f"a conversion worker process died while shard {name} was written (killed, "
                    f"e.g. by the out-of-memory killer?); the {sum(s is not None for s in stats)} "
                    "finished shard(s) are kept: rerun the same command to resume (fewer "
                    "--num_workers if memory is short)") from e
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    return stats  # type: ignore[return-value]


def _remove_stale_temporaries(output_dir, log):
    """Removes ``*.tmp-<pid>`` files of runs whose process is gone (a killed run's)."""
    for path in (glob.glob(os.path.join(glob.escape(output_dir), "*.tmp-*"))
                 + glob.glob(os.path.join(glob.escape(output_dir), STATE_DIR, "*.tmp-*"))):
        match = re.search(r"\.tmp-(\d+)$", path)
        if match is None or _process_alive(int(match.group(1))):
            continue
        os.remove(path)
        log(f"[convert] removed {path}, left by an interrupted run")


def _process_alive(pid):
    """True if a process ``pid`` exists (another converter may be writing)."""
    if pid == os.getpid():
        return False  # this process writes nothing yet: the file is a predecessor's
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _finished_shards(output_dir, num_shards, shard_fingerprints, settings, prefix, log):
    """``(stats, pending)``: the state of each finished shard (None for the others)
    and the indices of the shards still to write. A finished shard made from
    other inputs or settings, or without its state file, is a ``FileExistsError``."""
    stats: list[dict | None] = [None] * num_shards
    pending = []
    for k in range(num_shards):
        name = shard_name(k, num_shards, prefix)
        path = os.path.join(output_dir, name)
        state_path = os.path.join(output_dir, STATE_DIR, name + ".json")
        if os.path.exists(path):
            if not os.path.exists(state_path):
                raise FileExistsError(
                    f"{path} exists but has no conversion state ({state_path}); it was not "
                    "written by this converter run: remove it or use another --output_dir")
            with open(state_path, encoding="utf-8") as f:
                state = json.load(f)
            stored = _stored_settings(state)
            if stored.get("pixel_pipeline") != settings.get("pixel_pipeline"):
                raise FileExistsError(
                    f"finished shard {path} was written by the pixel pipeline "
                    f"{stored.get('pixel_pipeline')!r}, this run asks for "
                    f"{settings.get('pixel_pipeline')!r}; records of two pipelines must not "
                    f"mix: resume with --pixel_pipeline {stored.get('pixel_pipeline')}, or "
                    "convert into an empty --output_dir")
            if state.get("fingerprint") != shard_fingerprints[k] or stored != settings:
                raise FileExistsError(
                    f"finished shard {path} was made from other inputs or settings "
                    f"(stored settings {state.get('settings')}, now {settings}); use an empty "
                    "--output_dir or the same flags and inputs as before")
            log(f"[convert] shard {name} already finished ({state['num_images']} images), "
                "skipping it (resume)")
            state["resumed"] = True
            stats[k] = state
        else:
            pending.append(k)
    return stats, pending


def _stored_settings(state: dict) -> dict:
    """A shard state's settings; one written before pixel pipelines were named
    came from ``tf_half_pixel_bilinear``."""
    stored = dict(state.get("settings") or {})
    stored.setdefault("pixel_pipeline", pixel_pipelines.TF_HALF_PIXEL_BILINEAR)
    stored.setdefault("split", "train")  # before splits were named, every shard was train
    return stored


def _write_shard(output_dir, name, results, fingerprint, settings, progress, log):
    """Writes shard ``name`` from ``process_task`` results, then its state file;
    returns the state (with ``resumed=False``)."""
    from sagan_tf.data.record_format import (  # pylint: disable=import-outside-toplevel
        RecordWriter, encode_example)
    per_label: dict[str, int] = {}
    skipped = []
    with RecordWriter(os.path.join(output_dir, name)) as writer:
        for label, image, source, error in results:
            if error is not None:
                skipped.append({"file": str(source), "error": error})
                progress.skipped += 1
                log(f"[convert] skipping unreadable {source}: {error}")
            else:
                writer.write_serialized(encode_example(image, label))
                per_label[str(label)] = per_label.get(str(label), 0) + 1
            progress.done += 1
            progress.update(name)
        state = {"shard": name, "num_images": writer.num_records,
                 "images_per_label": per_label, "skipped": skipped,
                 "fingerprint": fingerprint, "settings": settings}
        # State first, then the shard's rename (in RecordWriter.__exit__): an
        # existing shard always has its state.
        atomic_write_json(os.path.join(output_dir, STATE_DIR, name + ".json"), state)
    state = dict(state, resumed=False)
    progress.update(name, force=True)
    return state


