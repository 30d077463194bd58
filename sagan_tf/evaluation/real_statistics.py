"""The real statistics FID / KID / intra-FID compare with: computed once, cached.

* all records (FID, KID, manifold metrics): the float64 mean and covariance of
  the classifier's ``pool_3`` streamed over ``count`` shuffled records of a
  split -- or over the whole split (``count`` None) -- plus the ``pool_3`` of
  the first ``num_activations`` of them (KID and the manifold metrics need
  rows, FID only the moments) and the first 16 images (the eval summaries'
  real grid) -- :class:`RealStatisticsCache`, :func:`compute_real_statistics`,
  :func:`real_statistics`. Memory and cache size are ``d + d^2`` float64
  (32 MB at ``d = 2048``) plus the kept rows, whatever ``count`` is;
* per class (intra-FID): the ``pool_3`` of up to ``per_class`` records of every
  class -- :class:`RealClassActivationCache`, :func:`compute_real_class_activations`,
  :func:`real_class_statistics`. With ``per_class <= d`` these rows are the
  exact and smallest form of each class's moments (a covariance of rank
  ``<= per_class - 1``; :mod:`sagan_tf.evaluation.frechet`), ``per_class x d``
  float32 per class where a dense covariance would be ``d x d`` float64.

A cache file ``<eval_dir>/<prefix>_<key>.npz`` is keyed by a hash of all that
changes its content: the data files (names, sizes, mtimes, through
``tf.io.gfile.stat``), the split, the classifier source, the counts, the image
size and whether TF32 matmuls are on. It is read and written through
``tf.io.gfile`` (``gs://`` works), atomically; a corrupt or mismatching file is
ignored (logged) and recomputed.
"""
import hashlib
import io
import json
import logging
import os
import time

import numpy as np
import tensorflow as tf

from sagan_tf.evaluation import frechet
from sagan_tf.evaluation.metrics import POOL_KEY, ActivationAccumulator
from sagan_tf.fileio import atomic_write

__all__ = [
    "RealStatisticsCache", "RealClassActivationCache", "data_files_fingerprint",
    "split_pattern", "compute_real_statistics", "compute_real_class_activations",
    "real_statistics", "real_class_statistics", "moments_of",
]

log = logging.getLogger(__name__)


def data_files_fingerprint(data_files):
    """A JSON-able list ``[[basename, size, mtime_ns], ...]`` sorted by name
    (``tf.io.gfile.stat``: local paths and ``gs://`` alike)."""
    entries = []
    for f in data_files:
        st = tf.io.gfile.stat(f)
        entries.append([os.path.basename(f), int(st.length), int(st.mtime_nsec)])
    return sorted(entries)


def split_pattern(split):
    """The record-file glob of ``split`` (``validation-*.tfrecords``); None: all files."""
    return "*.tfrecords" if split is None else f"{split}-*.tfrecords"


def _cache_key(description):
    """16 hex digits of the SHA-256 of a cache description (a JSON-able dict)."""
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode("utf8")).hexdigest()[:16]


class _StatisticsCache:
    """An ``.npz`` of arrays in ``<eval_dir>``, named by the hash of its description.

    Subclasses set ``PREFIX`` (file name), ``WHAT`` (for the log),
    ``ARRAYS`` (the stored arrays besides ``description``) and check a loaded
    file's consistency in :meth:`_consistent`.
    """

    VERSION = 2
    PREFIX = WHAT = None
    ARRAYS = ()

    def __init__(self, eval_dir, data_files, classifier_source, image_size, split=None,
                 **counts):
        if not data_files:
            raise ValueError(f"{type(self).__name__} needs at least one data file")
        self.eval_dir = eval_dir
        self.description = {
            "version": self.VERSION,
            "data_files": data_files_fingerprint(data_files),
            "split": split,
            "classifier": str(classifier_source),
            **{k: (None if v is None else int(v)) for k, v in counts.items()},
            "image_size": int(image_size),
            "tensor_float_32": bool(tf.config.experimental.tensor_float_32_execution_enabled()),
        }
        self.key = _cache_key(self.description)
        self.path = os.path.join(eval_dir, f"{self.PREFIX}_{self.key}.npz")

    def _consistent(self, arrays):
        raise NotImplementedError

    def load(self):
        """The stored arrays (a dict), or None if absent, unreadable or mismatching."""
        if not tf.io.gfile.exists(self.path):
            return None
        try:
            with tf.io.gfile.GFile(self.path, "rb") as f:
                content = io.BytesIO(f.read())
            with np.load(content, allow_pickle=False) as z:
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


class RealStatisticsCache(_StatisticsCache):
    """Cache of the real moments (``mean``, ``covariance``, ``count``), the first
    ``num_activations`` rows of ``pool_3`` and a few real ``images``.

    File: ``<eval_dir>/real_statistics_<key>.npz``; ``count`` None in the key
    means the whole split (the file's ``count`` says how many records that was).
    """

    PREFIX, WHAT = "real_statistics", "real-statistics"
    ARRAYS = ("mean", "covariance", "count", POOL_KEY, "images")

    def __init__(self, eval_dir, data_files, classifier_source, count, image_size,
                 num_activations=None, split=None):
        """See the class doc; ``data_files`` is the list of record files."""
        super().__init__(eval_dir, data_files, classifier_source, image_size, split=split,
                         count=count, num_activations=num_activations)

    def _consistent(self, arrays):
        want = self.description["count"]
        return want is None or int(arrays["count"]) == want

    def save(self, mean, covariance, count, pool, images):
        """Stores the moments, the kept ``pool`` rows and ``images`` atomically."""
        want = self.description["count"]
        if want is not None and int(count) != want:
            raise ValueError(f"expected moments of {want} records, got {count}")
        return self._save({"mean": np.asarray(mean, np.float64),
                           "covariance": np.asarray(covariance, np.float64),
                           "count": np.asarray(int(count)),
                           POOL_KEY: np.asarray(pool, np.float32),
                           "images": np.asarray(images, np.float32)})


class RealClassActivationCache(_StatisticsCache):
    """Cache of real ``pool_3`` rows per class, for intra-FID.

    File: ``<eval_dir>/real_class_activations_<key>.npz`` holding ``pool_3``
    ``[N, F]`` and ``labels [N]`` (up to ``per_class`` rows of each class).
    """

    PREFIX, WHAT, ARRAYS = ("real_class_activations", "per-class real-activation",
                            (POOL_KEY, "labels"))

    def __init__(self, eval_dir, data_files, classifier_source, per_class, num_classes,
                 image_size, split=None):
        """See the class doc; ``data_files`` is the list of record files."""
        super().__init__(eval_dir, data_files, classifier_source, image_size, split=split,
                         per_class=per_class, num_classes=num_classes)

    def _consistent(self, arrays):
        return len(arrays[POOL_KEY]) == len(arrays["labels"])

    def save(self, pool, labels):
        """Stores ``pool`` [N, F] and ``labels`` [N] atomically; returns the path."""
        return self._save({POOL_KEY: np.asarray(pool, np.float32),
                           "labels": np.asarray(labels, np.int32)})


def moments_of(statistics):
    """The :class:`~sagan_tf.evaluation.frechet.Moments` of a :func:`real_statistics` dict."""
    return frechet.Moments(np.asarray(statistics["mean"], np.float64),
                           int(statistics["count"]),
                           covariance=np.asarray(statistics["covariance"], np.float64))


def compute_real_statistics(classifier, dataset, count, num_activations, num_grid_images=16):
    """Streams ``classifier`` over ``dataset``: float64 moments of ``count`` images
    (None: until the data set ends), the ``pool_3`` of the first ``num_activations``.

    Args:
      classifier: a :class:`sagan_tf.evaluation.metrics.Classifier`.
      dataset: iterable of ``(images [B, S, S, 3] in [-1, 1], labels)`` batches.
      count: images of the moments (the last batch is cut), or None for all.
      num_activations: rows of ``pool_3`` kept (at most ``count``).
      num_grid_images: how many of the first images to return for the grid.

    Returns:
      ``{"mean" [F], "covariance" [F, F] (float64), "count", "pool_3" float32
      [num_activations, F], "images" [num_grid_images, S, S, 3]}``.
    """
    moments = frechet.MomentAccumulator()
    kept = ActivationAccumulator(num_activations, keep_logits=False)

    @tf.function
    def features(images):
        return classifier(images)[POOL_KEY]

    grid = []
    for images, _ in dataset:
        if sum(len(g) for g in grid) < num_grid_images:
            grid.append(images[:num_grid_images].numpy())
        pool = features(images).numpy()
        if count is not None:
            pool = pool[:count - moments.count]
        moments.add(pool)
        kept.add(pool)
        if count is not None and moments.count >= count:
            break
    if count is not None and moments.count < count:
        raise ValueError(f"the data set ended after {moments.count} of {count} real images")
    m = moments.moments()
    return {"mean": m.mean, "covariance": m.covariance, "count": m.count,
            POOL_KEY: kept.result()[0], "images": np.concatenate(grid, 0)[:num_grid_images]}


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
                    batch_size, shuffle_buffer_size=100000, seed=None, num_grid_images=16,
                    num_activations=None, split=None):
    """The real statistics of :func:`compute_real_statistics` over the records of
    ``split`` in ``data_dir`` (None: every record file there): ``count`` shuffled
    records (repeating when the split is smaller), or the whole split once
    (``count`` None); read from the :class:`RealStatisticsCache` in ``eval_dir``
    when present, else computed and cached. ``num_activations``: rows of
    ``pool_3`` kept (default and at most: ``count``)."""
    from sagan_tf.data import (pipeline as data,  # pylint: disable=import-outside-toplevel
                               record_format)
    pattern = split_pattern(split)
    if count is not None:
        num_activations = min(int(num_activations or count), int(count))
    cache = RealStatisticsCache(eval_dir, record_format.list_record_files(data_dir, pattern),
                                classifier.source, count, image_size,
                                num_activations=num_activations, split=split)

    def compute():
        dataset = data.make_dataset(data_dir, image_size, batch_size, num_classes, shuffle=True,
                                    shuffle_buffer_size=shuffle_buffer_size,
                                    repeat=count is not None, seed=seed, pattern=pattern,
                                    drop_remainder=count is not None)
        return compute_real_statistics(classifier, dataset, count, num_activations,
                                       num_grid_images=num_grid_images)
    detail = f" of {count} records" if count is not None else " of the whole split"
    return _load_or_compute(cache, compute, "Real statistics", detail)


def real_class_statistics(classifier, data_dir, eval_dir, per_class, image_size, num_classes,
                          batch_size, shuffle_buffer_size=100000, seed=None, split=None):
    """``{"pool_3": [N, F], "labels": [N]}``: up to ``per_class`` real records of
    each class (one shuffled epoch of the ``split`` records in ``data_dir``),
    read from / written to the :class:`RealClassActivationCache` in ``eval_dir``."""
    from sagan_tf.data import (pipeline as data,  # pylint: disable=import-outside-toplevel
                               record_format)
    pattern = split_pattern(split)
    cache = RealClassActivationCache(eval_dir, record_format.list_record_files(data_dir, pattern),
                                     classifier.source, per_class, num_classes, image_size,
                                     split=split)

    def compute():
        dataset = data.make_dataset(data_dir, image_size, batch_size, num_classes, shuffle=True,
                                    shuffle_buffer_size=shuffle_buffer_size, repeat=False,
                                    seed=seed, pattern=pattern)
        pool, labels, _ = compute_real_class_activations(classifier, dataset, num_classes,
                                                         per_class)
        return {POOL_KEY: pool, "labels": labels}
    return _load_or_compute(cache, compute, "Per-class real activations",
                            f" ({per_class} per class)")
