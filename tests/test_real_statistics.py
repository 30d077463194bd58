"""sagan_tf.evaluation.real_statistics: the cached real activations (all records and per class)."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.evaluation import metrics, real_statistics


def _write(path, content):
    with open(path, "wb") as f:
        f.write(content)


def _data_files(tmp_path):
    """Two stand-in record files (the caches key on names, sizes and mtimes only)."""
    data = tmp_path / "data"
    data.mkdir()
    files = [str(data / f"{i}.tfrecords") for i in range(2)]
    for f in files:
        _write(f, b"x" * 10)
    return files


def test_real_activation_cache_roundtrip_and_key(tmp_path, rng):
    files, ev = _data_files(tmp_path), str(tmp_path / "eval")
    cache = real_statistics.RealActivationCache(ev, files, "clf", 20, 32)
    assert cache.load() is None
    pool = rng.normal(size=(20, 6)).astype(np.float32)
    images = rng.uniform(-1, 1, size=(16, 32, 32, 3)).astype(np.float32)
    path = cache.save(pool, images)
    assert path == cache.path and os.path.basename(path) == f"real_activations_{cache.key}.npz"
    assert sorted(os.listdir(ev)) == [os.path.basename(path)]  # no temp file left
    again = real_statistics.RealActivationCache(ev, list(reversed(files)), "clf", 20, 32)
    assert again.key == cache.key
    np.testing.assert_array_equal(again.load()["pool_3"], pool)
    np.testing.assert_array_equal(again.load()["images"], images)
    # Any change of classifier, count, image size or data files changes the key.
    keys = {real_statistics.RealActivationCache(ev, files, "other", 20, 32).key,
            real_statistics.RealActivationCache(ev, files, "clf", 21, 32).key,
            real_statistics.RealActivationCache(ev, files, "clf", 20, 64).key,
            real_statistics.RealActivationCache(ev, files[:1], "clf", 20, 32).key}
    _write(files[0], b"y" * 11)
    keys.add(real_statistics.RealActivationCache(ev, files, "clf", 20, 32).key)
    assert cache.key not in keys and len(keys) == 5
    with pytest.raises(ValueError, match="expected 20"):
        cache.save(pool[:5], images)


def test_real_activation_cache_ignores_corrupt_file(tmp_path):
    f = tmp_path / "a.tfrecords"
    _write(f, b"z")
    cache = real_statistics.RealActivationCache(str(tmp_path / "ev"), [str(f)], "clf", 4, 8)
    os.makedirs(cache.eval_dir)
    _write(cache.path, b"not an npz")
    assert cache.load() is None
    desc = json.loads(json.dumps(cache.description))
    assert desc["count"] == 4 and desc["data_files"][0][0] == "a.tfrecords"


def test_real_class_activation_cache_roundtrip_and_key(tmp_path, rng):
    files, ev = _data_files(tmp_path), str(tmp_path / "eval")
    cache = real_statistics.RealClassActivationCache(ev, files, "clf", 5, 3, 32)
    assert cache.load() is None
    pool = rng.normal(size=(14, 6)).astype(np.float32)
    labels = np.repeat(np.arange(3), [5, 5, 4])
    path = cache.save(pool, labels)
    assert os.path.basename(path) == f"real_class_activations_{cache.key}.npz"
    loaded = real_statistics.RealClassActivationCache(ev, files[::-1], "clf", 5, 3, 32).load()
    np.testing.assert_array_equal(loaded["pool_3"], pool)
    np.testing.assert_array_equal(loaded["labels"], labels)
    keys = {real_statistics.RealClassActivationCache(ev, files, "other", 5, 3, 32).key,
            real_statistics.RealClassActivationCache(ev, files, "clf", 6, 3, 32).key,
            real_statistics.RealClassActivationCache(ev, files, "clf", 5, 4, 32).key,
            real_statistics.RealClassActivationCache(ev, files, "clf", 5, 3, 64).key,
            real_statistics.RealClassActivationCache(ev, files[:1], "clf", 5, 3, 32).key}
    _write(files[0], b"y" * 11)
    keys.add(real_statistics.RealClassActivationCache(ev, files, "clf", 5, 3, 32).key)
    assert cache.key not in keys and len(keys) == 6
    _write(cache.path, b"not an npz")
    assert cache.load() is None


def test_compute_real_class_activations_takes_per_class_records(rng):
    """Up to per_class rows of each class, grouped by class; a short class keeps what
    there is; each row is the classifier's pool_3 of that very record."""
    feats = {}

    class Doubler:
        def __call__(self, images):
            return {metrics.POOL_KEY: tf.reduce_mean(images, [1, 2]) * 2.0}

    images = rng.uniform(-1, 1, size=(60, 4, 4, 3)).astype(np.float32)
    labels = np.concatenate([np.zeros(30), np.ones(28), [2, 2]]).astype(np.int32)
    rng.shuffle(labels)
    for x, y in zip(images, labels):
        feats.setdefault(int(y), []).append(x.mean((0, 1)) * 2.0)
    dataset = [(tf.constant(images[i:i + 8]), tf.constant(labels[i:i + 8]))
               for i in range(0, 56, 8)] + [(tf.constant(images[56:]), tf.constant(labels[56:]))]
    pool, out_labels, counts = real_statistics.compute_real_class_activations(
        Doubler(), dataset, num_classes=4, per_class=5)
    assert counts.tolist() == [5, 5, 2, 0]
    assert out_labels.tolist() == [0] * 5 + [1] * 5 + [2] * 2
    for c in range(3):  # the first records of each class, in data order
        np.testing.assert_allclose(pool[out_labels == c], np.array(feats[c][:counts[c]]),
                                   rtol=1e-6)
