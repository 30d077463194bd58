"""Conversion of ImageNet (or any class-per-folder image set, a flat folder of
images with a label file, or prepared TFDS data) into the NUMERICS §7 records;
the library behind ``tools/convert_imagenet_to_records.py``.

Per image, a pixel pipeline (:mod:`sagan_tf.data.pixel_pipelines`) makes the uint8
``[S, S, 3]`` record: by default ``release``, the improved-GAN converter's steps
that wrote the release's records (:mod:`sagan_tf.data.release_pixels`: scipy-imread
modes, centred square crop, byte-scaling, Pillow's antialiased bilinear resize,
truncation); ``tf_half_pixel_bilinear`` is this port's earlier converter. Files
are decoded with PIL, the content and not the extension deciding the format
(ImageNet has PNG and CMYK files named ``.JPEG``); TFDS images are decoded with
PIL from their stored bytes in the same way. Files PIL cannot decode (or the
pipeline cannot take) are skipped and listed in ``manifest.json``.

Sources: :func:`convert_image_folder` (ImageNet ``train/``: a folder per class),
:func:`convert_flat_folder` (ILSVRC's validation folder and its label file),
:func:`convert_tfds` (a prepared TFDS split). What is read and the class checks
are :mod:`sagan_tf.data.image_folders`.

Output: ``<output_dir>/<split>-00000-of-0NNNN.tfrecords`` ... (``train-``,
``validation-``: one split per directory), written by
:mod:`sagan_tf.data.shard_writer` (atomic, fsynced, resumable), and
``manifest.json``: the split, the pixel pipeline, the class names (``synsets``)
in label order, images per class, the shards and the skipped files.
"""
from __future__ import annotations

import hashlib
import os
import re
from typing import Callable

import numpy as np

from sagan_tf.data import image_folders, pixel_pipelines
from sagan_tf.data.shard_writer import (STATE_DIR, atomic_write_json, shard_bounds,
                                        stderr_log, write_shards)

__all__ = [
    "STATE_DIR",
    "convert_image_folder",
    "convert_flat_folder",
    "convert_tfds",
]


def _write_manifest(output_dir, stats, synsets, settings, source):
    per_class = [0] * len(synsets)
    skipped = []
    for s in stats:
        for label, n in s["images_per_label"].items():
            per_class[int(label)] += n
        skipped.extend(s["skipped"])
    manifest = {
        "source": source,
        "split": settings["split"],
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
    atomic_write_json(os.path.join(output_dir, "manifest.json"), manifest)
    return manifest


def _check_one_split(output_dir: str, split: str) -> None:
    """Refuses an ``output_dir`` that already holds the records of another split
    (the trainer reads every ``*.tfrecords`` file of its directory)."""
    if not os.path.isdir(output_dir):
        return
    others = sorted({m.group(1) for m in (re.match(r"^(.+)-\d{5}-of-\d{5}\.tfrecords$", f)
                                          for f in os.listdir(output_dir)) if m} - {split})
    if others:
        raise FileExistsError(f"{output_dir} holds records of the split(s) {others}; write "
                              f"the {split!r} records into their own --output_dir")


def _convert_items(items, classes, output_dir, image_size, num_shards, num_workers, shuffle,
                   seed, log, progress_interval, start_method, pixel_pipeline, split, root,
                   source):
    """Writes ``items`` (``(path, label)``) as ``num_shards`` shards of ``split`` and the
    manifest; ``root``: the folder the fingerprints name paths relative to."""
    if not 1 <= int(num_shards) <= len(items):
        raise ValueError(f"--num_shards must be in [1, {len(items)}] (the number of images), "
                         f"got {num_shards}")
    if int(image_size) < 1:
        raise ValueError(f"--image_size must be >= 1, got {image_size}")
    _check_one_split(output_dir, split)
    if shuffle:
        order = np.random.default_rng(int(seed)).permutation(len(items))
        items = [items[i] for i in order]
    settings = {"image_size": int(image_size), "num_shards": int(num_shards),
                "shuffle": bool(shuffle), "seed": int(seed), "num_images_found": len(items),
                "num_classes": len(classes), "pixel_pipeline": pixel_pipeline, "split": split}
    bounds = shard_bounds(len(items), int(num_shards))

    def tasks_of(lo, hi):
        return lambda: [(path, None, label, int(image_size), pixel_pipeline)
                        for path, label in items[lo:hi]]

    fingerprints = [hashlib.sha1("\n".join(f"{os.path.relpath(p, root)}\t{l}"
                                           for p, l in items[lo:hi]).encode()).hexdigest()
                    for lo, hi in bounds]
    stats = write_shards(output_dir, [tasks_of(lo, hi) for lo, hi in bounds],
                         [hi - lo for lo, hi in bounds], fingerprints, int(image_size),
                         settings, num_workers=num_workers, log=log,
                         progress_interval=progress_interval, start_method=start_method,
                         prefix=split)
    manifest = _write_manifest(output_dir, stats, classes, settings, source)
    (log or stderr_log)(f"[convert] done: {manifest['num_images']} {split} images in "
                        f"{num_shards} shards, {manifest['num_skipped']} skipped; manifest "
                        f"{os.path.join(output_dir, 'manifest.json')}")
    return manifest


def convert_image_folder(imagenet_dir: str, output_dir: str, image_size: int = 128,
                         num_shards: int = 1024, num_workers: int = 1, shuffle: bool = True,
                         seed: int = 0, log: Callable[[str], None] | None = None,
                         progress_interval: float = 10.0, start_method: str | None = None,
                         pixel_pipeline: str = pixel_pipelines.RELEASE,
                         skip_non_class_folders: bool = False, expected_classes=None,
                         split: str = "train") -> dict:
    """Converts a class-per-folder image tree into ``num_shards`` record shards.

    Labels are the index of the class folder in sorted order; folders that are
    not classes are refused unless ``skip_non_class_folders``, and the classes
    are checked against ``expected_classes`` (None, a list, or ``"imagenet"``;
    :mod:`sagan_tf.data.image_folders`). With ``shuffle`` the images are spread
    over the shards in a seeded random order (every shard mixes all classes);
    otherwise in folder order. ``pixel_pipeline``: a key of
    :data:`sagan_tf.data.pixel_pipelines.PIPELINES` (default: the release's).
    Returns the manifest (also written to ``<output_dir>/manifest.json``).
    """
    _check_pixel_pipeline(pixel_pipeline)
    classes, items = image_folders.scan_class_folders(imagenet_dir, skip_non_class_folders,
                                                      log or stderr_log)
    image_folders.check_expected_classes(classes, expected_classes, imagenet_dir)
    return _convert_items(items, classes, output_dir, image_size, num_shards, num_workers,
                          shuffle, seed, log, progress_interval, start_method, pixel_pipeline,
                          split, imagenet_dir, {"imagenet_dir": os.path.abspath(imagenet_dir)})


def convert_flat_folder(image_dir: str, label_file: str, output_dir: str,
                        classes=None, image_size: int = 128, num_shards: int = 64,
                        num_workers: int = 1, shuffle: bool = True, seed: int = 0,
                        log: Callable[[str], None] | None = None,
                        progress_interval: float = 10.0, start_method: str | None = None,
                        pixel_pipeline: str = pixel_pipelines.RELEASE,
                        expected_classes=None, split: str = "validation") -> dict:
    """Converts one folder of images labelled by ``label_file`` (ILSVRC's
    validation folder) into ``<split>-*`` shards, with the same pixel pipeline
    and manifest as :func:`convert_image_folder`.

    ``classes``: the class names the labels index -- give the training records'
    (``image_folders.classes_from_records``) so both splits share one label
    space; default the sorted classes of ``label_file``.
    """
    _check_pixel_pipeline(pixel_pipeline)
    classes, items = image_folders.scan_flat_folder(image_dir, label_file, classes)
    image_folders.check_expected_classes(classes, expected_classes, label_file)
    return _convert_items(items, classes, output_dir, image_size, num_shards, num_workers,
                          shuffle, seed, log, progress_interval, start_method, pixel_pipeline,
                          split, image_dir, {"image_dir": os.path.abspath(image_dir),
                                             "label_file": os.path.abspath(label_file)})


def convert_tfds(name: str, output_dir: str, data_dir: str | None = None,
                 split: str = "train", image_size: int = 128, num_shards: int = 1024,
                 num_workers: int = 1, image_key: str = "image", label_key: str = "label",
                 log: Callable[[str], None] | None = None, progress_interval: float = 10.0,
                 start_method: str | None = None,
                 pixel_pipeline: str = pixel_pipelines.RELEASE,
                 expected_classes=None) -> dict:
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
    as the folder converter), checked against ``expected_classes`` (None, a list,
    ``"imagenet"``). The shards are named for the split (``validation-*`` for
    ``validation``, ``validation[:50%]``). Returns the manifest.
    """
    import tensorflow_datasets as tfds

    _check_pixel_pipeline(pixel_pipeline)
    log = log or stderr_log
    prefix = re.match(r"\w*", split).group(0) or "train"
    _check_one_split(output_dir, prefix)
    builder, num_examples = _open_tfds_split(name, data_dir, split, image_key, label_key)
    if not 1 <= int(num_shards) <= num_examples:
        raise ValueError(f"--num_shards must be in [1, {num_examples}] (examples in {split}), "
                         f"got {num_shards}")
    label_feature = builder.info.features[label_key]
    num_classes = getattr(label_feature, "num_classes", None)
    names = getattr(label_feature, "names", None)
    if not names:
        names = [str(i) for i in range(num_classes or 0)]
    image_folders.check_expected_classes(names, expected_classes, f"TFDS {name}")
    settings = {"image_size": int(image_size), "num_shards": int(num_shards),
                "tfds_name": name, "tfds_split": split, "num_images_found": num_examples,
                "num_classes": len(names), "pixel_pipeline": pixel_pipeline, "split": prefix}
    bounds = shard_bounds(num_examples, int(num_shards))
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
                         progress_interval=progress_interval, start_method=start_method,
                         prefix=prefix)
    if not names:  # label ids without names: size from the data
        top = max((int(l) for s in stats for l in s["images_per_label"]), default=-1)
        names = [str(i) for i in range(top + 1)]
    manifest = _write_manifest(output_dir, stats, names, settings,
                               {"tfds_name": name, "tfds_data_dir": data_dir,
                                "tfds_split": split, "tfds_version": version})
    log(f"[convert] done: {manifest['num_images']} {prefix} images in {num_shards} shards, "
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
