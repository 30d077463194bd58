"""Conversion of ImageNet (or any class-per-folder image set, or prepared TFDS data)
into the NUMERICS §7 records; the library behind ``tools/convert_imagenet_to_records.py``.

Per image, a pixel pipeline (:mod:`sagan_tf.data.pixel_pipelines`) makes the uint8
``[S, S, 3]`` record: by default ``release``, the improved-GAN converter's steps
that wrote the release's records (:mod:`sagan_tf.data.release_pixels`: scipy-imread
modes, centred square crop, byte-scaling, Pillow's antialiased bilinear resize,
truncation); ``tf_half_pixel_bilinear`` is this port's earlier converter. Files
are decoded with PIL, the content and not the extension deciding the format
(ImageNet has PNG and CMYK files named ``.JPEG``); TFDS images are decoded with
PIL from their stored bytes in the same way. Files PIL cannot decode (or the
pipeline cannot take) are skipped and listed in ``manifest.json``.

Output: ``<output_dir>/train-00000-of-0NNNN.tfrecords`` ... Each shard is written to a
temporary name and renamed when complete, so an existing shard is complete; a rerun
skips finished shards (logged), checking from a small state file
(``<output_dir>/.convert_state/<shard>.json``, written before the rename) that the
finished shard was made from the same inputs, settings and pixel pipeline.
``manifest.json`` names the pixel pipeline and lists the synsets, images per class
and skipped files.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
import time
from typing import Callable, Iterable, Sequence

import numpy as np

from sagan_tf.data import pixel_pipelines

__all__ = [
    "scan_image_folder",
    "shard_name",
    "write_shards",
    "convert_image_folder",
    "convert_tfds",
]

STATE_DIR = ".convert_state"


# ----------------------------------------------------------------------------------
# Per image
# ----------------------------------------------------------------------------------
def _process_task(task):
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
def scan_image_folder(imagenet_dir: str) -> tuple[list[str], list[tuple[str, int]]]:
    """Scans a class-per-folder tree (ImageNet ``train/``).

    Returns:
      ``(synsets, items)``: ``synsets`` the sorted subfolder names, ``items`` the
      ``(path, label)`` of every regular non-hidden file, ``label`` = index of its
      folder in ``synsets``; files sorted by name within each folder.
    """
    if not os.path.isdir(imagenet_dir):
        raise FileNotFoundError(f"image folder {imagenet_dir!r} does not exist (--imagenet_dir)")
    synsets = sorted(e.name for e in os.scandir(imagenet_dir)
                     if e.is_dir() and not e.name.startswith("."))
    if not synsets:
        raise FileNotFoundError(f"no class subfolders in {imagenet_dir!r}; --imagenet_dir must be "
                                "the train folder with one subfolder of images per synset")
    items = []
    for label, synset in enumerate(synsets):
        folder = os.path.join(imagenet_dir, synset)
        names = sorted(e.name for e in os.scandir(folder)
                       if e.is_file() and not e.name.startswith("."))
        items.extend((os.path.join(folder, name), label) for name in names)
    if not items:
        raise FileNotFoundError(f"no image files in the {len(synsets)} subfolders of "
                                f"{imagenet_dir!r}")
    return synsets, items


def shard_name(index: int, num_shards: int, prefix: str = "train") -> str:
    """``train-00003-of-01024.tfrecords``."""
    return f"{prefix}-{index:05d}-of-{num_shards:05d}.tfrecords"


def _shard_bounds(num_items: int, num_shards: int) -> list[tuple[int, int]]:
    return [(k * num_items // num_shards, (k + 1) * num_items // num_shards)
            for k in range(num_shards)]


def _atomic_write_json(path: str, obj) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _stderr_log(message: str) -> None:
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
      num_workers: decode/resize processes (``<= 1``: in this process).
      log: message sink (default: stderr).
      progress_interval: seconds between progress lines.
      start_method: multiprocessing start method (default ``fork`` where available:
        workers only run PIL/numpy).

    Returns:
      Per shard ``{"shard", "num_images", "images_per_label": {label: n},
      "skipped": [{"file", "error"}], "resumed": bool}``.
    """
    log = log or _stderr_log
    num_shards = len(shard_tasks)
    os.makedirs(os.path.join(output_dir, STATE_DIR), exist_ok=True)
    stats, pending = _finished_shards(output_dir, num_shards, shard_fingerprints, settings,
                                      prefix, log)
    progress = _Progress(sum(shard_sizes[k] for k in pending), log, progress_interval)
    if pending:
        log(f"[convert] writing {len(pending)} of {num_shards} shards "
            f"({progress.total} images) to {output_dir} with {max(num_workers, 1)} worker(s)")
    pool = None
    if num_workers > 1 and pending:
        if start_method is None:
            start_method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
        pool = multiprocessing.get_context(start_method).Pool(num_workers)
    try:
        for k in pending:
            name = shard_name(k, num_shards, prefix)
            tasks = shard_tasks[k]()
            results = (pool.imap(_process_task, tasks, chunksize=8) if pool is not None
                       else map(_process_task, tasks))
            stats[k] = _write_shard(output_dir, name, results, shard_fingerprints[k], settings,
                                    progress, log)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return stats  # type: ignore[return-value]


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
    return stored


def _write_shard(output_dir, name, results, fingerprint, settings, progress, log):
    """Writes shard ``name`` from ``_process_task`` results, then its state file;
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
        _atomic_write_json(os.path.join(output_dir, STATE_DIR, name + ".json"), state)
    state = dict(state, resumed=False)
    progress.update(name, force=True)
    return state


def _write_manifest(output_dir, stats, synsets, settings, source):
    per_class = [0] * len(synsets)
    skipped = []
    for s in stats:
        for label, n in s["images_per_label"].items():
            per_class[int(label)] += n
        skipped.extend(s["skipped"])
    manifest = {
        "source": source,
        "settings": settings,
        "num_images": sum(per_class),
        "num_classes": len(synsets),
        "synsets": list(synsets),
        "images_per_class": {syn: per_class[i] for i, syn in enumerate(synsets)},
        "num_skipped": len(skipped),
        "skipped": skipped,
        "shards": [s["shard"] for s in stats],
        "format": "NUMERICS §7: image_raw (S*S*3 uint8 HWC RGB), label, height, width, depth",
        "pixel_pipeline": settings["pixel_pipeline"],
        "pixel_pipeline_description": pixel_pipelines.PIPELINES[settings["pixel_pipeline"]],
    }
    _atomic_write_json(os.path.join(output_dir, "manifest.json"), manifest)
    return manifest


def convert_image_folder(imagenet_dir: str, output_dir: str, image_size: int = 128,
                         num_shards: int = 1024, num_workers: int = 1, shuffle: bool = True,
                         seed: int = 0, log: Callable[[str], None] | None = None,
                         progress_interval: float = 10.0, start_method: str | None = None,
                         pixel_pipeline: str = pixel_pipelines.RELEASE) -> dict:
    """Converts a class-per-folder image tree into ``num_shards`` record shards.

    Labels are the index of the synset folder in sorted order. With ``shuffle`` the
    images are spread over the shards in a seeded random order (so every shard mixes
    all classes); otherwise in folder order. ``pixel_pipeline``: a key of
    :data:`sagan_tf.data.pixel_pipelines.PIPELINES` (default: the release's). Returns the
    manifest (also written to ``<output_dir>/manifest.json``).
    """
    _check_pixel_pipeline(pixel_pipeline)
    synsets, items = scan_image_folder(imagenet_dir)
    if not 1 <= int(num_shards) <= len(items):
        raise ValueError(f"--num_shards must be in [1, {len(items)}] (the number of images), "
                         f"got {num_shards}")
    if int(image_size) < 1:
        raise ValueError(f"--image_size must be >= 1, got {image_size}")
    if shuffle:
        order = np.random.default_rng(int(seed)).permutation(len(items))
        items = [items[i] for i in order]
    settings = {"image_size": int(image_size), "num_shards": int(num_shards),
                "shuffle": bool(shuffle), "seed": int(seed), "num_images_found": len(items),
                "num_classes": len(synsets), "pixel_pipeline": pixel_pipeline}
    bounds = _shard_bounds(len(items), int(num_shards))

    def tasks_of(lo, hi):
        return lambda: [(path, None, label, int(image_size), pixel_pipeline)
                        for path, label in items[lo:hi]]

    fingerprints = [hashlib.sha1("\n".join(f"{os.path.relpath(p, imagenet_dir)}\t{l}"
                                           for p, l in items[lo:hi]).encode()).hexdigest()
                    for lo, hi in bounds]
    stats = write_shards(output_dir, [tasks_of(lo, hi) for lo, hi in bounds],
                         [hi - lo for lo, hi in bounds], fingerprints, int(image_size),
                         settings, num_workers=num_workers, log=log,
                         progress_interval=progress_interval, start_method=start_method)
    manifest = _write_manifest(output_dir, stats, synsets, settings,
                               {"imagenet_dir": os.path.abspath(imagenet_dir)})
    (log or _stderr_log)(f"[convert] done: {manifest['num_images']} images in {num_shards} "
                         f"shards, {manifest['num_skipped']} skipped; manifest "
                         f"{os.path.join(output_dir, 'manifest.json')}")
    return manifest


def convert_tfds(name: str, output_dir: str, data_dir: str | None = None,
                 split: str = "train", image_size: int = 128, num_shards: int = 1024,
                 num_workers: int = 1, image_key: str = "image", label_key: str = "label",
                 log: Callable[[str], None] | None = None, progress_interval: float = 10.0,
                 start_method: str | None = None,
                 pixel_pipeline: str = pixel_pipelines.RELEASE) -> dict:
    """Converts an already prepared TensorFlow Datasets split (e.g. ``imagenet2012``,
    ``imagenet_resized/64x64``) into the same records (same pixel pipeline).

    Reads with ``tfds.builder(name, data_dir=data_dir)`` and never downloads. An
    image feature (``tfds.features.Image``) is read undecoded and its stored bytes
    are decoded with PIL in the workers, exactly as a file of the folder converter
    (for ``imagenet2012`` these are ImageNet's own JPEGs, except the CMYK and PNG
    files TFDS re-encoded as RGB JPEGs when it prepared the data); any other image
    feature comes decoded as an array. Shard ``k`` holds the contiguous slice
    ``split[lo:hi]`` in the stored order (TFDS shuffles at preparation). Labels are
    TFDS' label ids (for ``imagenet2012`` the index of the synset in sorted order,
    as the folder converter). Returns the manifest.
    """
    import tensorflow_datasets as tfds

    _check_pixel_pipeline(pixel_pipeline)
    log = log or _stderr_log
    builder, num_examples = _open_tfds_split(name, data_dir, split, image_key, label_key)
    if not 1 <= int(num_shards) <= num_examples:
        raise ValueError(f"--num_shards must be in [1, {num_examples}] (examples in {split}), "
                         f"got {num_shards}")
    label_feature = builder.info.features[label_key]
    num_classes = getattr(label_feature, "num_classes", None)
    names = getattr(label_feature, "names", None)
    if not names:
        names = [str(i) for i in range(num_classes or 0)]
    settings = {"image_size": int(image_size), "num_shards": int(num_shards),
                "tfds_name": name, "tfds_split": split, "num_images_found": num_examples,
                "num_classes": len(names), "pixel_pipeline": pixel_pipeline}
    bounds = _shard_bounds(num_examples, int(num_shards))
    version = str(builder.info.version)
    encoded = isinstance(builder.info.features[image_key], tfds.features.Image)
    decoders = {image_key: tfds.decode.SkipDecoding()} if encoded else None

    def tasks_of(lo, hi):
        def generate():
            ds = builder.as_dataset(split=f"{split}[{lo}:{hi}]", shuffle_files=False,
                                    decoders=decoders)
            for i, ex in enumerate(tfds.as_numpy(ds)):
                yield (f"{name}:{split}[{lo + i}]", ex[image_key], int(ex[label_key]),
                       int(image_size), pixel_pipeline)
        return generate

    fingerprints = [f"{name}:{version}:{split}[{lo}:{hi}]" for lo, hi in bounds]
    stats = write_shards(output_dir, [tasks_of(lo, hi) for lo, hi in bounds],
                         [hi - lo for lo, hi in bounds], fingerprints, int(image_size),
                         settings, num_workers=num_workers, log=log,
                         progress_interval=progress_interval, start_method=start_method)
    if not names:  # label ids without names: size from the data
        top = max((int(l) for s in stats for l in s["images_per_label"]), default=-1)
        names = [str(i) for i in range(top + 1)]
    manifest = _write_manifest(output_dir, stats, names, settings,
                               {"tfds_name": name, "tfds_data_dir": data_dir,
                                "tfds_split": split, "tfds_version": version})
    log(f"[convert] done: {manifest['num_images']} images in {num_shards} shards, "
        f"{manifest['num_skipped']} skipped")
    return manifest


def _open_tfds_split(name, data_dir, split, image_key, label_key):
    """``(builder, number of examples in split)`` of a prepared TFDS dataset, or an
    error naming the flag to fix."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # noqa: BLE001
        raise FileNotFoundError(f"cannot open TFDS dataset {name!r} in data_dir {data_dir!r}: "
                                f"{e}") from e
    if not tf_io_exists(builder.data_dir) or not builder.info.splits:
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir!r} (--tfds_data_dir); "
            "prepare it first (tfds build / download_and_prepare); this tool never downloads")
    if split not in builder.info.splits:
        raise ValueError(f"TFDS dataset {name!r} has splits {sorted(builder.info.splits)}, "
                         f"not {split!r} (--tfds_split)")
    features = builder.info.features
    for key in (image_key, label_key):
        if key not in features:
            raise ValueError(f"TFDS dataset {name!r} has features {sorted(features.keys())}, "
                             f"no {key!r}")
    return builder, builder.info.splits[split].num_examples


def _check_pixel_pipeline(pixel_pipeline: str) -> None:
    if pixel_pipeline not in pixel_pipelines.PIPELINES:
        raise ValueError(f"--pixel_pipeline must be one of {sorted(pixel_pipelines.PIPELINES)}, "
                         f"got {pixel_pipeline!r}")


def tf_io_exists(path: str) -> bool:
    """``tf.io.gfile.exists`` (works for gs:// TFDS directories too)."""
    import tensorflow as tf
    return tf.io.gfile.exists(path)
