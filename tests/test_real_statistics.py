"""sagan_tf.evaluation.real_statistics: the cached real statistics (moments of all records,
activations per class)."""
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


def test_real_statistics_cache_roundtrip_and_key(tmp_path, rng):
    files, ev = _data_files(tmp_path), str(tmp_path / "eval")
    cache = real_statistics.RealStatisticsCache(ev, files, "clf", 20, 32)
    assert cache.load() is None
    pool = rng.normal(size=(20, 6)).astype(np.float32)
    mean, cov = pool.mean(0).astype(np.float64), np.cov(pool.T.astype(np.float64))
    images = rng.uniform(-1, 1, size=(16, 32, 32, 3)).astype(np.float32)
    path = cache.save(mean, cov, 20, pool, images)
    assert path == cache.path and os.path.basename(path) == f"real_statistics_{cache.key}.npz"
    assert sorted(os.listdir(ev)) == [os.path.basename(path)]  # no temp file left
    again = real_statistics.RealStatisticsCache(ev, list(reversed(files)), "clf", 20, 32)
    assert again.key == cache.key
    np.testing.assert_array_equal(again.load()["pool_3"], pool)
    np.testing.assert_array_equal(again.load()["images"], images)
    np.testing.assert_array_equal(again.load()["covariance"], cov)
    assert again.load()["covariance"].dtype == np.float64
    # Any change of classifier, count, image size, split, kept rows or data files
    # changes the key.
    keys = {real_statistics.RealStatisticsCache(ev, files, "other", 20, 32).key,
            real_statistics.RealStatisticsCache(ev, files, "clf", 21, 32).key,
            real_statistics.RealStatisticsCache(ev, files, "clf", None, 32).key,
            real_statistics.RealStatisticsCache(ev, files, "clf", 20, 64).key,
            real_statistics.RealStatisticsCache(ev, files, "clf", 20, 32, split="train").key,
            real_statistics.RealStatisticsCache(ev, files, "clf", 20, 32,
                                                num_activations=10).key,
            real_statistics.RealStatisticsCache(ev, files[:1], "clf", 20, 32).key}
    _write(files[0], b"y" * 11)
    keys.add(real_statistics.RealStatisticsCache(ev, files, "clf", 20, 32).key)
    assert cache.key not in keys and len(keys) == 8
    with pytest.raises(ValueError, match="expected moments of 20"):
        cache.save(mean, cov, 5, pool[:5], images)


def test_cache_key_includes_tf32(tmp_path, monkeypatch):
    """Whether TF32 matmuls are on changes the classifier's features: another key."""
    files, ev = _data_files(tmp_path), str(tmp_path / "eval")
    monkeypatch.setattr(tf.config.experimental, "tensor_float_32_execution_enabled",
                        lambda: False)
    off = real_statistics.RealStatisticsCache(ev, files, "clf", 20, 32).key
    per_class_off = real_statistics.RealClassActivationCache(ev, files, "clf", 5, 3, 32).key
    monkeypatch.setattr(tf.config.experimental, "tensor_float_32_execution_enabled",
                        lambda: True)
    assert real_statistics.RealStatisticsCache(ev, files, "clf", 20, 32).key != off
    assert real_statistics.RealClassActivationCache(ev, files, "clf", 5, 3, 32).key != per_class_off


def test_caches_read_and_write_through_gfile(tmp_path, rng, monkeypatch):
    """Data files and the cache on a TF filesystem (ram://, as gs://): fingerprinted
    with tf.io.gfile.stat, written and read back; no os.stat / open on those paths."""
    data = "ram://sagan_cache_test/data"
    tf.io.gfile.makedirs(data)
    files = [f"{data}/train-{i}.tfrecords" for i in range(2)]
    for f in files:
        with tf.io.gfile.GFile(f, "wb") as out:
            out.write(b"x" * 10)
    real_stat, real_open = os.stat, open

    def no_url(fn):
        def guarded(path, *a, **k):
            assert "://" not in str(path), f"{fn.__name__} on {path}"
            return fn(path, *a, **k)
        return guarded
    monkeypatch.setattr(os, "stat", no_url(real_stat))
    monkeypatch.setattr("builtins.open", no_url(real_open))
    ev = "ram://sagan_cache_test/eval"
    cache = real_statistics.RealStatisticsCache(ev, files, "clf", 4, 8)
    assert cache.description["data_files"][0][:2] == ["train-0.tfrecords", 10]
    pool = rng.normal(size=(4, 3)).astype(np.float32)
    cache.save(pool.mean(0), np.cov(pool.T), 4, pool, np.zeros((16, 8, 8, 3), np.float32))
    np.testing.assert_array_equal(
        real_statistics.RealStatisticsCache(ev, files, "clf", 4, 8).load()["pool_3"], pool)
    from sagan_tf.evaluation import evaluation_loop
    record = evaluation_loop.EvaluatedRecord(ev)
    record.add("/run/ckpt-5", {"fid": 1.0})
    assert "/run/ckpt-5" in evaluation_loop.EvaluatedRecord(ev)


def test_streamed_moments_equal_those_of_the_stored_activations(rng):
    """compute_real_statistics' float64 moments over a batched data set (the last
    batch cut at count) equal numpy's of the activations it keeps."""
    class Features:  # a classifier whose pool_3 is the flattened image
        def __call__(self, images):
            return {metrics.POOL_KEY: tf.reshape(images, [tf.shape(images)[0], -1])}
    images = rng.uniform(-1, 1, size=(50, 2, 2, 3)).astype(np.float32)
    batches = [(tf.constant(images[i:i + 8]), tf.zeros([len(images[i:i + 8])], tf.int32))
               for i in range(0, 50, 8)]
    out = real_statistics.compute_real_statistics(Features(), batches, 45, 45,
                                                  num_grid_images=4)
    rows = images.reshape(50, -1)[:45].astype(np.float64)
    assert out["count"] == 45
    np.testing.assert_array_equal(out["pool_3"], images.reshape(50, -1)[:45])
    np.testing.assert_allclose(out["mean"], rows.mean(0), rtol=1e-12)
    np.testing.assert_allclose(out["covariance"], np.cov(rows.T), rtol=1e-10, atol=1e-12)
    whole = real_statistics.compute_real_statistics(Features(), batches, None, 10)
    assert whole["count"] == 50 and whole["pool_3"].shape == (10, 12)
    np.testing.assert_allclose(whole["covariance"], np.cov(images.reshape(50, -1).T),
                               rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="ended after 50 of 60"):
        real_statistics.compute_real_statistics(Features(), batches, 60, 60)


def test_real_statistics_cache_ignores_corrupt_file(tmp_path):
    f = tmp_path / "a.tfrecords"
    _write(f, b"z")
    cache = real_statistics.RealStatisticsCache(str(tmp_path / "ev"), [str(f)], "clf", 4, 8)
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
