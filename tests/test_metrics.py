"""sagan_tf.evaluation.metrics: classifier loading, IS/FID/KID against numpy/scipy, accumulator.

The real-statistics caches are tested in tests/test_real_statistics.py.

Also provides :func:`save_standin_classifier`, the tiny stand-in classifier
SavedModel (Inception interface) used by tests/test_evaluation.py.
"""
import hashlib
import os

import numpy as np
import pytest
import scipy.linalg
import scipy.special
import tensorflow as tf

from sagan_tf.evaluation import metrics


# ---------------------------------------------------------------------------
# The stand-in classifier (built by the tests; no download).
# ---------------------------------------------------------------------------

class _StandIn(tf.Module):
    """Random-weight stand-in: 4x4 area pooling -> dense+ReLU (pool_3) -> dense (logits).

    With ``report_size=True`` the first feature is the input height, so tests
    can see what size the images were resized to.
    """

    def __init__(self, input_size, feature_dim, num_logits, dynamic, input_size_attr,
                 names, pool_4d, report_size, seed):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.w1 = tf.Variable(rng.normal(size=(48, feature_dim)).astype(np.float32) * 0.5)
        self.w2 = tf.Variable(rng.normal(size=(feature_dim, num_logits)).astype(np.float32))
        if input_size_attr:
            self.input_size = tf.Variable(input_size, trainable=False, dtype=tf.int32)
        self._names, self._pool_4d, self._report_size = names, pool_4d, report_size
        shape = [None, None, None, 3] if dynamic else [None, input_size, input_size, 3]
        self.fn = tf.function(self._call, input_signature=[
            tf.TensorSpec(shape, tf.float32, name="images")])

    def _call(self, images):
        x = tf.image.resize(images, [4, 4], method="area")
        x = tf.reshape(x, [-1, 48])
        feats = tf.nn.relu(tf.matmul(x, self.w1))
        if self._report_size:
            h = tf.cast(tf.shape(images)[1], tf.float32)
            feats = tf.concat([tf.fill([tf.shape(images)[0], 1], h), feats[:, 1:]], 1)
        logits = tf.matmul(feats, self.w2)
        if self._pool_4d:
            feats = feats[:, None, None, :]
        return {self._names[0]: feats, self._names[1]: logits}


def save_standin_classifier(path, input_size=32, feature_dim=16, num_logits=10,
                            dynamic=False, input_size_attr=True, style="callable",
                            names=("pool_3", "logits"), pool_4d=False, report_size=False,
                            seed=0):
    """Saves a tiny classifier SavedModel with the Inception interface at ``path``.

    style: "callable" (object callable + serving_default signature) or
    "signature" (only a ``default`` signature, like a TF1 Hub module).
    """
    m = _StandIn(input_size, feature_dim, num_logits, dynamic, input_size_attr, names,
                 pool_4d, report_size, seed)
    if style == "callable":
        m.__call__ = m.fn
        tf.saved_model.save(m, str(path), signatures={"serving_default": m.fn})
    elif style == "signature":
        tf.saved_model.save(m, str(path), signatures={"default": m.fn})
    else:
        raise ValueError(style)
    return str(path)


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    return save_standin_classifier(tmp_path_factory.mktemp("cls") / "standin")


# ---------------------------------------------------------------------------
# Independent numpy / scipy oracles (written from the definitions).
# ---------------------------------------------------------------------------

def np_inception_score(logits):
    logits = np.asarray(logits, np.float64)
    p_yx = scipy.special.softmax(logits, axis=1)
    p_y = p_yx.mean(axis=0)
    kl = np.sum(p_yx * (scipy.special.log_softmax(logits, axis=1) - np.log(p_y)), axis=1)
    return float(np.exp(kl.mean()))


def np_fid(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
    covmean = np.real(covmean)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * covmean))


def np_kid_one_block(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1.0) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean())


# ---------------------------------------------------------------------------
# Metrics.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_inception_score_matches_numpy(rng, scale):
    logits = (rng.normal(size=(300, 12)) * scale).astype(np.float32)
    ours = metrics.inception_score(logits)
    ref = np_inception_score(logits)
    assert ours == pytest.approx(ref, rel=1e-4)
    assert 1.0 < ours < 12.0


def test_inception_score_extremes():
    # Confident and evenly spread over K classes -> K; identical rows -> 1.
    k = 8
    logits = np.full((k * 10, k), -30.0, np.float32)
    logits[np.arange(k * 10), np.arange(k * 10) % k] = 30.0
    assert metrics.inception_score(logits) == pytest.approx(k, rel=1e-4)
    same = np.tile(np.arange(k, dtype=np.float32), (50, 1))
    assert metrics.inception_score(same) == pytest.approx(1.0, abs=1e-5)


def test_fid_matches_scipy(rng):
    a = rng.normal(size=(500, 16)).astype(np.float32)
    mix = rng.normal(size=(16, 16)) * 0.3 + np.eye(16)
    b = (rng.normal(size=(400, 16)) @ mix + 0.4).astype(np.float32)
    ours = metrics.frechet_distance(a, b)
    ref = np_fid(a, b)
    assert ours == pytest.approx(ref, rel=1e-4)
    assert ours > 1.0


def test_fid_of_a_set_with_itself_is_zero(rng):
    a = (rng.normal(size=(300, 16)) * 2 + 1).astype(np.float32)
    assert abs(metrics.frechet_distance(a, a)) < 1e-4  # trace of the covariance is ~64
    shifted = a + 0.5
    assert metrics.frechet_distance(a, shifted) == pytest.approx(16 * 0.25, rel=1e-3)


def test_kid_matches_unbiased_mmd_and_signs(rng):
    x = rng.normal(size=(200, 8))
    y = rng.normal(size=(150, 8)) + 0.5
    assert metrics.kernel_distance(x, y) == pytest.approx(np_kid_one_block(x, y), rel=1e-6)
    assert metrics.kernel_distance(x, y) > 0
    # Same distribution: the unbiased estimator scatters around 0, so some estimates
    # are negative (a biased one, like FID, never is) and the mean is ~0.
    ests = np.array([metrics.kernel_distance(rng.normal(size=(60, 8)), rng.normal(size=(60, 8)))
                     for _ in range(30)])
    assert (ests < 0).any() and (ests > 0).any()
    assert abs(ests.mean()) < 3 * ests.std(ddof=1) / np.sqrt(len(ests))
    # ...while the shifted pair is far outside that scatter.
    assert metrics.kernel_distance(x, y) > 5 * ests.std()


# ---------------------------------------------------------------------------
# Classifier loading.
# ---------------------------------------------------------------------------

def test_standin_loads_through_inception_path(standin, rng):
    clf = metrics.load_classifier(standin)
    assert (clf.input_size, clf.feature_dim, clf.num_logits) == (32, 16, 10)
    images = rng.uniform(-1, 1, size=(5, 32, 32, 3)).astype(np.float32)
    out = clf(images)
    assert out["pool_3"].shape == (5, 16) and out["logits"].shape == (5, 10)
    # Same numbers as the SavedModel itself (no resize at the native size).
    raw = tf.saved_model.load(standin)(tf.constant(images))
    np.testing.assert_allclose(out["logits"].numpy(), raw["logits"].numpy(), rtol=1e-6)


def test_resizes_to_signature_size_without_attribute(tmp_path, rng):
    path = save_standin_classifier(tmp_path / "c", input_size=24, input_size_attr=False,
                                   report_size=True, style="signature", pool_4d=True)
    clf = metrics.load_classifier(path)
    assert clf.input_size == 24
    out = clf(rng.uniform(-1, 1, size=(3, 16, 16, 3)).astype(np.float32))
    np.testing.assert_array_equal(out["pool_3"][:, 0].numpy(), 24.0)
    assert out["pool_3"].shape == (3, 16)  # [B,1,1,F] flattened


def test_default_inception_handle_resizes_to_299(tmp_path, monkeypatch, rng):
    # A fake TF-Hub-like module placed where tensorflow_hub caches the TF-GAN
    # Inception handle, so the default (no --inception_path) path loads offline.
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path))
    cached = tmp_path / hashlib.sha1(metrics.INCEPTION_TFHUB.encode("utf8")).hexdigest()
    save_standin_classifier(cached, dynamic=True, input_size_attr=False, report_size=True,
                            pool_4d=True, num_logits=1008, feature_dim=32)
    clf = metrics.load_classifier()
    assert clf.source == metrics.INCEPTION_TFHUB
    assert clf.input_size == metrics.INCEPTION_INPUT_SIZE == 299
    out = clf(rng.uniform(-1, 1, size=(2, 32, 32, 3)).astype(np.float32))
    np.testing.assert_array_equal(out["pool_3"][:, 0].numpy(), 299.0)
    assert out["logits"].shape == (2, 1008)


def test_resize_is_tf1_bilinear_and_keeps_range(rng):
    x = rng.uniform(-1, 1, size=(2, 8, 8, 3)).astype(np.float32)
    y = metrics.resize_images(x, 16).numpy()
    assert y.shape == (2, 16, 16, 3)
    assert y.min() >= -1 and y.max() <= 1
    # TF1 resize_bilinear (align_corners=False, no half-pixel centres): output
    # pixel (2i, 2j) samples input (i, j) exactly.
    np.testing.assert_allclose(y[:, ::2, ::2], x, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(metrics.resize_images(x, 8).numpy(), x)  # native size: as is


def test_missing_classifier_path_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "no_such_model")
    with pytest.raises(FileNotFoundError, match="no_such_model.*does not exist"):
        metrics.load_classifier(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(metrics.ClassifierError, match="empty.*not a SavedModel"):
        metrics.load_classifier(str(tmp_path / "empty"))


def test_wrong_outputs_is_a_clear_error(tmp_path):
    path = save_standin_classifier(tmp_path / "wrong", names=("features", "probs"))
    with pytest.raises(metrics.ClassifierError) as err:
        metrics.load_classifier(path)
    msg = str(err.value)
    assert "wrong" in msg and "features" in msg and "probs" in msg and "pool_3" in msg


def test_unreachable_hub_handle_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path))
    with pytest.raises(metrics.ClassifierError, match="inception_path"):
        metrics.load_classifier("https://127.0.0.1:9/no/such/module/1")


# ---------------------------------------------------------------------------
# Accumulator and cache.
# ---------------------------------------------------------------------------

def test_accumulator_preallocates_and_truncates(rng):
    acc = metrics.ActivationAccumulator(10)
    batches = [(rng.normal(size=(4, 1, 1, 3)), rng.normal(size=(4, 5))) for _ in range(3)]
    stored = [acc.add(p, l) for p, l in batches]
    assert stored == [4, 4, 2] and acc.full and acc.pool.shape == (10, 3)
    assert acc.add(*batches[0]) == 0
    pool, logits = acc.result()
    np.testing.assert_allclose(pool, np.concatenate([b[0].reshape(4, 3) for b in batches])[:10],
                               rtol=1e-6)
    np.testing.assert_allclose(logits, np.concatenate([b[1] for b in batches])[:10], rtol=1e-6)
    with pytest.raises(ValueError):
        metrics.ActivationAccumulator(5).result()


# ---------------------------------------------------------------------------
# Intra-FID and class accuracy.
# ---------------------------------------------------------------------------

def test_intra_fid_is_the_mean_of_per_class_scipy_fids(rng):
    """Per-class sqrtm FIDs (scipy) averaged; classes with < 2 rows on a side left out."""
    num_classes, dim = 4, 5
    real_labels = np.repeat(np.arange(num_classes), [30, 25, 40, 1])  # class 3: 1 real row
    gen_labels = np.tile(np.arange(num_classes), 20)
    real = (rng.normal(size=(len(real_labels), dim)) + real_labels[:, None]).astype(np.float32)
    mix = rng.normal(size=(dim, dim)) * 0.3 + np.eye(dim)
    gen = (rng.normal(size=(len(gen_labels), dim)) @ mix + 0.8 * gen_labels[:, None]
           ).astype(np.float32)
    mean, per_class, skipped = metrics.intra_fid(real, real_labels, gen, gen_labels,
                                                 num_classes + 1)  # class 4: no rows at all
    ref = {c: np_fid(real[real_labels == c], gen[gen_labels == c]) for c in range(3)}
    assert sorted(per_class) == [0, 1, 2]
    for c in range(3):
        assert per_class[c] == pytest.approx(ref[c], rel=1e-4)
    assert mean == pytest.approx(np.mean(list(ref.values())), rel=1e-4)
    assert skipped == {3: (1, 20), 4: (0, 0)}
    # Not the FID of the pooled sets: the class structure matters.
    assert mean != pytest.approx(np_fid(real[real_labels < 3], gen[gen_labels < 3]), rel=0.05)
    assert metrics.intra_fid(real, real_labels, gen, gen_labels, 0) == (None, {}, {})


def test_class_accuracy_is_argmax_agreement(rng):
    logits = rng.normal(size=(50, 7)).astype(np.float32)
    labels = rng.integers(0, 7, size=50)
    labels[:20] = logits[:20].argmax(1)
    expected = np.mean(logits.argmax(1) == labels)
    assert metrics.class_accuracy(logits, labels) == pytest.approx(expected)
    assert metrics.class_accuracy(logits, logits.argmax(1)) == 1.0
    with pytest.raises(ValueError, match="as many labels"):
        metrics.class_accuracy(logits, labels[:3])


# ---------------------------------------------------------------------------
# sagan_tf/evaluation/demo_classifier.py (tools/train_demo_classifier.py)
# ---------------------------------------------------------------------------

def test_demo_classifier_tool_trains_and_exports(tmp_path):
    from sagan_tf.data import record_format
    from sagan_tf.evaluation import demo_classifier
    rng = np.random.default_rng(0)
    # Two easily separable classes: dark and bright images.
    labels = np.repeat([0, 1], 32)
    images = np.where(labels[:, None, None, None] == 0,
                      rng.integers(0, 60, size=(64, 16, 16, 3)),
                      rng.integers(190, 256, size=(64, 16, 16, 3))).astype(np.uint8)
    record_format.write_records(str(tmp_path / "d.tfrecords"), images, labels)
    info = demo_classifier.train_demo_classifier(str(tmp_path), str(tmp_path / "clf"),
                                                input_size=24, steps=30, batch_size=16,
                                                learning_rate=3e-3)
    assert info["num_classes"] == 2 and info["input_size"] == 24
    assert info["train_accuracy"] > 0.9
    clf = metrics.load_classifier(str(tmp_path / "clf"))
    assert (clf.input_size, clf.num_logits, clf.feature_dim) == (24, 2, info["feature_dim"])
    x = images.astype(np.float32) * (2 / 255) - 1  # the data decoding; resized to 24 inside
    pred = np.argmax(clf(x)["logits"].numpy(), axis=1)
    assert (pred == labels).mean() > 0.9
    assert metrics.inception_score(clf(x)["logits"].numpy()) > 1.5
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_demo_classifier_tool_holds_out_and_stops_early(tmp_path):
    from sagan_tf.evaluation import demo_classifier, heldout_training
    from sagan_tf.data import record_format
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 40)
    images = np.where(labels[:, None, None, None] == 0,
                      rng.integers(0, 60, size=(80, 16, 16, 3)),
                      rng.integers(190, 256, size=(80, 16, 16, 3))).astype(np.uint8)
    record_format.write_records(str(tmp_path / "d.tfrecords"), images, labels)
    lines = []
    info = demo_classifier.train_demo_classifier(str(tmp_path), str(tmp_path / "clf"),
                                                input_size=16, steps=400, batch_size=16,
                                                learning_rate=3e-3,
                                                holdout_fraction=0.25, eval_every=20,
                                                patience=2, log=lines.append)
    assert (info["num_train"], info["num_heldout"]) == (60, 20)
    # Separable classes: perfect early, then `patience` rounds without gain end it.
    assert info["heldout_accuracy"] == 1.0 and info["steps"] < 400
    assert info["steps"] == info["best_step"] + 2 * 20 and len(lines) == info["steps"] // 20
    # The reported accuracy is the exported classifier's on the held-out records.
    _, held = heldout_training.split_heldout(80, 0.25, seed=0)
    clf = metrics.load_classifier(str(tmp_path / "clf"))
    x = images[held].astype(np.float32) * (2 / 255) - 1
    assert np.mean(np.argmax(clf(x)["logits"].numpy(), 1) == labels[held]) == 1.0
    train, held2 = heldout_training.split_heldout(10, 0.1, seed=3)
    assert len(held2) == 1 and sorted(np.concatenate([train, held2])) == list(range(10))
    with pytest.raises(ValueError, match="holdout_fraction must be in"):
        heldout_training.split_heldout(10, 1.0)
