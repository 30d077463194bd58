"""Conversion of ImageNet (or any class-per-folder image set, or prepared TFDS data)
into the NUMERICS §7 records; the library behind ``tools/convert_imagenet_to_records.py``.

Per image (as the improved-GAN converter the release trained on):
  decode to RGB uint8 -> largest centred square crop -> bilinear resize to
  ``image_size`` -> uint8 ``[S, S, 3]`` record with its label.

Decoding uses PIL; every mode is converted to RGB (grayscale ``L``/``1``/``I;16``,
``CMYK`` JPEGs, ``RGBA``/``LA`` (alpha dropped, as ``tf.io.decode_image(channels=3)``),
palette ``P``), and the file content, not the extension, decides the format (ImageNet
has PNG and CMYK files named ``.JPEG``). EXIF orientation is ignored, as TF decoders
do. Files PIL cannot decode are skipped and listed in ``manifest.json``.

Resize: `center_crop_resize` is a numpy re-implementation of TensorFlow 2's
``tf.image.resize(crop, [S, S], method="bilinear", antialias=False)`` (the
``ResizeBilinear`` kernel with ``half_pixel_centers=True``, float32 arithmetic),
rounded to nearest (ties to even, as ``tf.round``) and cast to uint8. It is checked
against ``tf.image.resize`` in the tests (equal up to +-1 of rounding). It is kept
free of TensorFlow so that worker processes stay light.

Output: ``<output_dir>/train-00000-of-0NNNN.tfrecords`` ... Each shard is written to a
temporary name and renamed when complete, so an existing shard is complete; a rerun
skips finished shards (logged), checking from a small state file
(``<output_dir>/.convert_state/<shard>.json``, written before the rename) that the
finished shard was made from the same inputs and settings. ``manifest.json`` lists the
synsets, images per class and skipped files.
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
from PIL import Image

__all__ = [
    "load_image_rgb",
    "center_crop",
    "resize_bilinear",
    "center_crop_resize",
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
def load_image_rgb(path: str) -> np.ndarray:
    """Decodes an image file of any format/mode PIL reads into RGB uint8 ``[H, W, 3]``."""
    with Image.open(path) as img:
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            arr = np.asarray(img, dtype=np.float64)
            scale = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
            arr = np.rint(np.clip(arr / scale, 0, 1) * 255).astype(np.uint8)
            return np.repeat(arr[:, :, None], 3, axis=2)
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        rgb = img.convert("RGB")
        return np.asarray(rgb, dtype=np.uint8).copy()


def center_crop(image: np.ndarray) -> np.ndarray:
    """Largest centred square crop of ``[H, W, C]``: side ``min(H, W)``, offsets
    ``(H - side) // 2`` and ``(W - side) // 2``."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[top:top + side, left:left + side]


def _bilinear_axis(in_size: int, out_size: int):
    """Indices and weights of TF's half-pixel-centre bilinear resize along one axis."""
    scale = np.float32(in_size) / np.float32(out_size)
    pos = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(pos)
    lower = np.maximum(floor, 0).astype(np.int64)
    upper = np.minimum(np.ceil(pos), in_size - 1).astype(np.int64)
    return lower, upper, (pos - floor).astype(np.float32)


def resize_bilinear(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """``tf.image.resize(image, size, "bilinear", antialias=False)`` in numpy.

    Args:
      image: ``[H, W, C]`` (any real dtype; computed in float32).
      size: ``S`` or ``(out_h, out_w)``.

    Returns:
      float32 ``[out_h, out_w, C]``, not rounded.
    """
    out_h, out_w = (size, size) if np.isscalar(size) else size
    img = np.asarray(image, dtype=np.float32)
    y0, y1, wy = _bilinear_axis(img.shape[0], int(out_h))
    x0, x1, wx = _bilinear_axis(img.shape[1], int(out_w))
    wx = wx[None, :, None]
    top_left, top_right = img[y0][:, x0], img[y0][:, x1]
    bottom_left, bottom_right = img[y1][:, x0], img[y1][:, x1]
    top = top_left + (top_right - top_left) * wx
    bottom = bottom_left + (bottom_right - bottom_left) * wx
    return top + (bottom - top) * wy[:, None, None]


def center_crop_resize(image: np.ndarray, image_size: int) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` -> uint8 ``[S, S, 3]``: largest centred square crop,
    bilinear resize (TF half-pixel centres, no antialias), rounded to nearest."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
    resized = resize_bilinear(center_crop(image), int(image_size))
    return np.rint(np.clip(resized, 0.0, 255.0)).astype(np.uint8)


def _process_task(task):
    """Worker: ``(source, image_or_None, label, image_size)`` -> ``(label, uint8 [S,S,3]
    or None, source, error or None)``; ``image_or_None`` None means decode ``source``."""
    source, image, label, image_size = task
    try:
        if image is None:
            image = load_image_rgb(source)
        else:
            image = np.asarray(image)
            if image.ndim == 2:
                image = image[:, :, None]
            if image.shape[2] == 1:
                image = np.repeat(image, 3, axis=2)
            elif image.shape[2] == 4:
                image = image[:, :, :3]
            if image.dtype != np.uint8:
                raise ValueError(f"image dtype {image.dtype}, expected uint8")
        if min(image.shape[:2]) < 1:
            raise ValueError(f"empty image of shape {image.shape}")
        return label, center_crop_resize(image, image_size), source, None
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
            if state.get("fingerprint") != shard_fingerprints[k] or \
                    state.get("settings") != settings:
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


def _write_shard(output_dir, name, results, fingerprint, settings, progress, log):
    """Writes shard ``name`` from ``_process_task`` results, then its state file;
    returns the state (with ``resumed=False``)."""
    from sagan_tf.record_format import RecordWriter, encode_example  # pylint: disable=import-outside-toplevel
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
        "resize": "largest centred square crop, tf.image.resize bilinear "
                  "(half-pixel centres, no antialias), round to nearest",
    }
    _atomic_write_json(os.path.join(output_dir, "manifest.json"), manifest)
    return manifest


def convert_image_folder(imagenet_dir: str, output_dir: str, image_size: int = 128,
                         num_shards: int = 1024, num_workers: int = 1, shuffle: bool = True,
                         seed: int = 0, log: Callable[[str], None] | None = None,
                         progress_interval: float = 10.0,
                         start_method: str | None = None) -> dict:
    """Converts a class-per-folder image tree into ``num_shards`` record shards.

    Labels are the index of the synset folder in sorted order. With ``shuffle`` the
    images are spread over the shards in a seeded random order (so every shard mixes
    all classes); otherwise in folder order. Returns the manifest (also written to
    ``<output_dir>/manifest.json``).
    """
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
                "num_classes": len(synsets)}
    bounds = _shard_bounds(len(items), int(num_shards))

    def tasks_of(lo, hi):
        return lambda: [(path, None, label, int(image_size)) for path, label in items[lo:hi]]

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
                 start_method: str | None = None) -> dict:
    """Converts an already prepared TensorFlow Datasets split (e.g. ``imagenet2012``,
    ``imagenet_resized/64x64``) into the same records (same crop and resize).

    Reads with ``tfds.builder(name, data_dir=data_dir)`` and never downloads. Shard
    ``k`` holds the contiguous slice ``split[lo:hi]`` in the stored order (TFDS
    shuffles at preparation). Labels are TFDS' label ids (for ``imagenet2012`` the
    index of the synset in sorted order, as the folder converter). Returns the
    manifest.
    """
    import tensorflow_datasets as tfds

    log = log or _stderr_log
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
    num_examples = builder.info.splits[split].num_examples
    if not 1 <= int(num_shards) <= num_examples:
        raise ValueError(f"--num_shards must be in [1, {num_examples}] (examples in {split}), "
                         f"got {num_shards}")
    label_feature = features[label_key]
    num_classes = getattr(label_feature, "num_classes", None)
    names = getattr(label_feature, "names", None)
    if not names:
        names = [str(i) for i in range(num_classes or 0)]
    settings = {"image_size": int(image_size), "num_shards": int(num_shards),
                "tfds_name": name, "tfds_split": split, "num_images_found": num_examples,
                "num_classes": len(names)}
    bounds = _shard_bounds(num_examples, int(num_shards))
    version = str(builder.info.version)

    def tasks_of(lo, hi):
        def generate():
            ds = builder.as_dataset(split=f"{split}[{lo}:{hi}]", shuffle_files=False)
            for i, ex in enumerate(tfds.as_numpy(ds)):
                yield (f"{name}:{split}[{lo + i}]", ex[image_key], int(ex[label_key]),
                       int(image_size))
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


def tf_io_exists(path: str) -> bool:
    """``tf.io.gfile.exists`` (works for gs:// TFDS directories too)."""
    import tensorflow as tf
    return tf.io.gfile.exists(path)
