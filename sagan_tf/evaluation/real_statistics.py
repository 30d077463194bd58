"""The real statistics FID / KID / intra-FID compare with: computed once, cached on disk.

* all records: the classifier's ``pool_3`` of ``count`` shuffled training
  records (and the first 16 images, for the eval summaries' real grid) --
  :class:`RealActivationCache`, :func:`compute_real_activations`,
  :func:`real_statistics`;
* per class (intra-FID): up to ``per_class`` records of every class --
  :class:`RealClassActivationCache`, :func:`compute_real_class_activations`,
  :func:`real_class_statistics`.

A cache file ``<eval_dir>/<prefix>_<key>.npz`` is keyed by a hash of the data
files (names, sizes, mtimes), the classifier source and the counts, so new
data or another classifier make a new entry; it is written atomically and a
corrupt or mismatching file is ignored (logged) and recomputed.
"""
import hashlib
import json
import logging
import os
import time

import numpy as np
import tensorflow as tf

from sagan_tf.evaluation.metrics import POOL_KEY, ActivationAccumulator
from sagan_tf.fileio import atomic_write

__all__ = [
    "RealActivationCache", "RealClassActivationCache", "data_files_fingerprint",
    "compute_real_activations", "compute_real_class_activations", "real_statistics",
    "real_class_statistics",
]

log = logging.getLogger(__name__)


def data_files_fingerprint(data_files):
    """A JSON-able list ``[[basename, size, mtime_ns], ...]`` sorted by name."""
    entries = []
    for f in data_files:
        st = os.stat(f)
        entries.append([os.path.basename(f), int(st.st_size), int(st.st_mtime_ns)])
    return sorted(entries)


def _cache_key(description):
    """16 hex digits of the SHA-256 of a cache description (a JSON-able dict)."""
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode("utf8")).hexdigest()[:16]


class _ActivationCache:
    """An ``.npz`` of arrays in ``<eval_dir>``, named by the hash of its description.

    Subclasses set ``PREFIX`` (file name), ``WHAT`` (for the log),
    ``ARRAYS`` (the stored arrays besides ``description``) and check a loaded
    file's consistency in :meth:`_consistent`.
    """

    VERSION = 1
    PREFIX = WHAT = None
    ARRAYS = ()

    def __init__(self, eval_dir, data_files, classifier_source, image_size, **counts):
        if not data_files:
            raise ValueError(f"{type(self).__name__} needs at least one data file")
        self.eval_dir = eval_dir
        self.description = {
            "version": self.VERSION,
            "data_files": data_files_fingerprint(data_files),
            "classifier": str(classifier_source),
            **{k: int(v) for k, v in counts.items()},
            "image_size": int(image_size),
        }
        self.key = _cache_key(self.description)
        self.path = os.path.join(eval_dir, f"{self.PREFIX}_{self.key}.npz")

    def _consistent(self, arrays):
        raise NotImplementedError

    def load(self):
        """The stored arrays (a dict), or None if absent, unreadable or mismatching."""
        if not os.path.exists(self.path):
            return None
        try:
            with np.load(self.path, allow_pickle=False) as z:
                desc = json.loads(str(z["description"]))
                arrays = {name: z[name] for name in self.ARRAYS}
        except Exception as e:  # pylint: disable=broad-except
            log.warning("Ignoring unreadable %s cache %s: %s", self.WHAT, self.path, e)
            return None
        if desc != self.description or not self._consistent(arrays):
            log.warning("Ignoring %s cache %s: description mismatch", self.WHAT, self.path)
            return None
        return arrays

    def _save(self, arrays):
        payload = {**arrays,
                   "description": np.asarray(json.dumps(self.description, sort_keys=True))}
        atomic_write(self.path, lambda f: np.savez(f, **payload))
        return self.path


class RealActivationCache(_ActivationCache):
    """On-disk cache of the real ``pool_3`` activations (and a few real images).

    File: ``<eval_dir>/real_activations_<key>.npz`` where ``key`` hashes the
    sorted data file names with their sizes and mtimes, the classifier
    source, the number of records and the image size -- so a change to any of
    them (new/rewritten data, another classifier) makes a new entry. Written
    atomically (temp file + rename), so a concurrent or interrupted write
    never leaves a truncated cache behind.
    """

    PREFIX, WHAT, ARRAYS = "real_activations", "real-activation", (POOL_KEY, "images")

    def __init__(self, eval_dir, data_files, classifier_source, count, image_size):
        """See the class doc; ``data_files`` is the list of record files."""
        super().__init__(eval_dir, data_files, classifier_source, image_size, count=count)

    def _consistent(self, arrays):
        return arrays[POOL_KEY].shape[0] == self.description["count"]

    def load(self):
        """Returns ``{"pool_3": [count, F], "images": [16, S, S, 3]}`` or None if absent.

        A corrupt or mismatching file is ignored (logged) and reported as absent.
        """
        return super().load()

    def save(self, pool, images):
        """Stores ``pool`` [count, F] and a few real ``images`` atomically."""
        pool = np.asarray(pool, np.float32)
        if pool.shape[0] != self.description["count"]:
            raise ValueError(f"expected {self.description['count']} activations, "
                             f"got {pool.shape[0]}")
        return self._save({POOL_KEY: pool, "images": np.asarray(images, np.float32)})


class RealClassActivationCache(_ActivationCache):
    """On-disk cache of real ``pool_3`` activations per class, for intra-FID.

    File: ``<eval_dir>/real_class_activations_<key>.npz`` holding ``pool_3``
    ``[N, F]`` and ``labels [N]`` (up to ``per_class`` rows of each class);
    ``key`` hashes the data files (names, sizes, mtimes), the classifier
    source, ``per_class``, the number of classes and the image size, so new
    data or another classifier make a new entry. Written atomically.
    """

    PREFIX, WHAT, ARRAYS = ("real_class_activations", "per-class real-activation",
                            (POOL_KEY, "labels"))

    def __init__(self, eval_dir, data_files, classifier_source, per_class, num_classes,
                 image_size):
        """See the class doc; ``data_files`` is the list of record files."""
        super().__init__(eval_dir, data_files, classifier_source, image_size,
                         per_class=per_class, num_classes=num_classes)

    def _consistent(self, arrays):
        return len(arrays[POOL_KEY]) == len(arrays["labels"])

    def load(self):
        """Returns ``{"pool_3": [N, F], "labels": [N]}`` or None if absent / unreadable."""
        return super().load()

    def save(self, pool, labels):
        """Stores ``pool`` [N, F] and ``labels`` [N] atomically; returns the path."""
        return self._save({POOL_KEY: np.asarray(pool, np.float32),
                           "labels": np.asarray(labels, np.int32)})


def compute_real_activations(classifier, dataset, count, num_grid_images=16):
    """Runs ``classifier`` over the first ``count`` images of ``dataset``.

    Args:
      classifier: a :class:`sagan_tf.evaluation.metrics.Classifier`.
      dataset: iterable of ``(images [B, S, S, 3] in [-1, 1], labels)`` batches
        (shuffled training records; repeating if ``count`` exceeds the data).
      count: number of activations to collect.
      num_grid_images: how many of the first images to return for the grid.

    Returns:
      ``(pool_3 float32 [count, F], images float32 [num_grid_images, S, S, 3])``.
    """
    acc = ActivationAccumulator(count, keep_logits=False)

    @tf.function
    def features(images):
        return classifier(images)[POOL_KEY]

    grid = []
    for images, _ in dataset:
        if sum(len(g) for g in grid) < num_grid_images:
            grid.append(images[:num_grid_images].numpy())
        acc.add(features(images).numpy())
        if acc.full:
            break
    if not acc.full:
        raise ValueError(f"the data set ended after {acc.count} of {count} real images")
    grid = np.concatenate(grid, 0)[:num_grid_images]
    return acc.result()[0], grid


def compute_real_class_activations(classifier, dataset, num_classes, per_class):
    """Classifies up to ``per_class`` real images of every class of ``dataset``.

    Reads ``dataset`` (shuffled records, one epoch) until every class has
    ``per_class`` images or the data ends; only the images still needed are
    classified.

    Returns:
      ``(pool_3 float32 [N, F], labels int32 [N], counts int [num_classes])``,
      rows grouped by class; ``counts[c] < per_class`` for a class with fewer
      records.
    """
    counts = np.zeros(int(num_classes), np.int64)
    pools, labels_out = [], []

    @tf.function(reduce_retracing=True)  # the kept part of a batch varies in size
    def features(images):
        return classifier(images)[POOL_KEY]

    for images, labels in dataset:
        labels = labels.numpy()
        keep = []
        for i, c in enumerate(labels):
            if counts[c] < per_class:
                counts[c] += 1
                keep.append(i)
        if keep:
            pools.append(features(tf.gather(images, keep)).numpy())
            labels_out.append(labels[keep])
        if counts.min() >= per_class:
            break
    if not pools:
        raise ValueError("the data set holds no records for the per-class statistics")
    pool, labels = np.concatenate(pools), np.concatenate(labels_out).astype(np.int32)
    order = np.argsort(labels, kind="stable")
    return pool[order], labels[order], counts


def _load_or_compute(cache, compute, name, detail):
    """``cache.load()``, else ``compute()`` -> the arrays to ``cache.save``, logged."""
    real = cache.load()
    if real is not None:
        log.info("%s read from %s", name, cache.path)
        return real
    t0 = time.time()
    arrays = compute()
    cache.save(*arrays.values())
    log.info("%s%s computed in %.1fs, cached in %s", name, detail, time.time() - t0, cache.path)
    return arrays


def real_statistics(classifier, data_dir, eval_dir, count, image_size, num_classes,
                    batch_size, shuffle_buffer_size=100000, seed=None, num_grid_images=16):
    """``{"pool_3": [count, F], "images": [16, S, S, 3]}`` of the training data in
    ``data_dir``: read from its :class:`RealActivationCache` in ``eval_dir`` when
    present, else computed from ``count`` shuffled records (repeating) and cached."""
    from sagan_tf.data import (pipeline as data,  # pylint: disable=import-outside-toplevel
                               record_format)
    cache = RealActivationCache(eval_dir, record_format.list_record_files(data_dir), classifier.source,
                                count, image_size)

    def compute():
        dataset = data.make_dataset(data_dir, image_size, batch_size, num_classes, shuffle=True,
                                    shuffle_buffer_size=shuffle_buffer_size, repeat=True,
                                    seed=seed)
        pool, images = compute_real_activations(classifier, dataset, count,
                                                num_grid_images=num_grid_images)
        return {POOL_KEY: pool, "images": images}
    return _load_or_compute(cache, compute, "Real activations", f" of {count} records")


def real_class_statistics(classifier, data_dir, eval_dir, per_class, image_size, num_classes,
                          batch_size, shuffle_buffer_size=100000, seed=None):
    """``{"pool_3": [N, F], "labels": [N]}``: up to ``per_class`` real records of
    each class (one shuffled epoch of ``data_dir``), read from / written to the
    :class:`RealClassActivationCache` in ``eval_dir``."""
    from sagan_tf.data import (pipeline as data,  # pylint: disable=import-outside-toplevel
                               record_format)
    cache = RealClassActivationCache(eval_dir, record_format.list_record_files(data_dir),
                                     classifier.source, per_class, num_classes, image_size)

    def compute():
        dataset = data.make_dataset(data_dir, image_size, batch_size, num_classes, shuffle=True,
                                    shuffle_buffer_size=shuffle_buffer_size, repeat=False,
                                    seed=seed)
        pool, labels, _ = compute_real_class_activations(classifier, dataset, num_classes,
                                                         per_class)
        return {POOL_KEY: pool, "labels": labels}
    return _load_or_compute(cache, compute, "Per-class real activations",
                            f" ({per_class} per class)")
