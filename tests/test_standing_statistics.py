"""sagan_tf.models.standing_statistics: standing batch-norm statistics against a numpy oracle.

The oracle records every batch norm's input for the same z/labels batches
(G in training mode) and averages, in numpy, the per-batch mean and variance
(biased for the conditional batch norms, Bessel-corrected for the final one,
each layer's own moving-average convention).
"""
import hashlib

import numpy as np
import pytest
import tensorflow as tf

import sagan_tf
from sagan_tf.models import layers, standing_statistics

Z_DIM, NUM_CLASSES, BATCHES, BATCH = 16, 5, 3, 6


@pytest.fixture(scope="module")
def generator():
    G = sagan_tf.Generator(arch="test", image_size=32, z_dim=Z_DIM, gf_dim=4,
                           num_classes=NUM_CLASSES).ensure_built()
    rng = np.random.default_rng(0)
    for v in G.trainable_variables:  # move off the initialisation (gamma=1, beta=0)
        v.assign_add(tf.constant(rng.normal(scale=0.05, size=v.shape), v.dtype))
    for v in standing_statistics.moving_statistics_variables(G):  # stale moving stats
        v.assign(tf.constant(rng.uniform(0.5, 2.0, size=v.shape), v.dtype))
    return G


def _oracle(G, seed, monkeypatch):
    """Average over the batches of each BN's per-batch (mean, var), from recorded inputs."""
    recorded = {}

    def recorder(cls):
        original = cls.call

        def call(self, x, *args, training=False, **kwargs):
            if training:
                recorded.setdefault(id(self), []).append(np.asarray(x, np.float64))
            return original(self, x, *args, training=training, **kwargs)
        monkeypatch.setattr(cls, "call", call)

    recorder(layers.ConditionalBatchNorm)
    recorder(layers.FinalBatchNorm)
    rng = np.random.default_rng(seed)  # the draws accumulate_standing_statistics makes
    for _ in range(BATCHES):
        z = rng.standard_normal((BATCH, Z_DIM)).astype(np.float32)
        labels = rng.integers(0, NUM_CLASSES, BATCH).astype(np.int32)
        G(tf.constant(z), tf.constant(labels), training=True, update_sn=False)
    monkeypatch.undo()
    expected = []
    for bn in standing_statistics.batch_norm_layers(G):
        xs = recorded[id(bn)]
        assert len(xs) == BATCHES
        means = [x.mean((0, 1, 2)) for x in xs]
        ddof = 1 if isinstance(bn, layers.FinalBatchNorm) else 0
        variances = [x.reshape(-1, x.shape[-1]).var(0, ddof=ddof) for x in xs]
        expected += [np.mean(means, 0), np.mean(variances, 0)]
    return expected


def _values(variables):
    return [v.numpy().copy() for v in variables]


def test_standing_statistics_equal_numpy_average_of_batch_statistics(generator, monkeypatch,
                                                                     tmp_path):
    G = generator
    bns = standing_statistics.batch_norm_layers(G)
    assert len(bns) == 7  # 3 blocks x 2 conditional batch norms + the final one
    moving = standing_statistics.moving_statistics_variables(G)
    stale = _values(moving)
    path = tf.train.Checkpoint(generator=G).write(str(tmp_path / "ckpt"))
    digests = {f: hashlib.sha256(open(f, "rb").read()).hexdigest()
               for f in tf.io.gfile.glob(path + "*")}
    others = [v for v in G.variables if all(v is not m for m in moving)]  # weights and u
    other_values = _values(others)

    expected = _oracle(G, seed=7, monkeypatch=monkeypatch)
    for v, value in zip(moving, stale):  # the oracle's training-mode calls moved them
        v.assign(value)
    standing_statistics.accumulate_standing_statistics(G, BATCHES, BATCH, seed=7)
    for v, want in zip(moving, expected):
        np.testing.assert_allclose(v.numpy().reshape(-1), want, rtol=2e-5, atol=1e-6,
                                   err_msg=v.path)
    assert [bn.decay for bn in bns] == [0.999] * 6 + [0.9999]  # decays put back
    for v, value in zip(others, other_values):  # no weight or spectral-norm u changed
        np.testing.assert_array_equal(v.numpy(), value, err_msg=v.path)
    for f, digest in digests.items():  # nothing written to the checkpoint on disk
        assert hashlib.sha256(open(f, "rb").read()).hexdigest() == digest
    assert sorted(tf.io.gfile.glob(path + "*")) == sorted(digests)
    for v, value in zip(moving, stale):
        v.assign(value)


def test_context_restores_moving_statistics_and_changes_samples(generator):
    G = generator
    moving = standing_statistics.moving_statistics_variables(G)
    before = _values(moving)
    z = tf.constant(np.random.default_rng(1).standard_normal((4, Z_DIM)), tf.float32)
    labels = tf.constant([0, 1, 2, 3])
    plain = G(z, labels, training=False, update_sn=False).numpy()
    with standing_statistics.standing_statistics(G, 2, BATCH, seed=3):
        standing = G(z, labels, training=False, update_sn=False).numpy()
        assert any(not np.array_equal(v.numpy(), b) for v, b in zip(moving, before))
    for v, b in zip(moving, before):
        np.testing.assert_array_equal(v.numpy(), b)
    assert np.abs(standing - plain).max() > 1e-3
    with standing_statistics.standing_statistics(G, 0, BATCH):  # 0: no-op
        np.testing.assert_array_equal(G(z, labels, training=False, update_sn=False), plain)
    with pytest.raises(ValueError, match="num_batches >= 1"):
        standing_statistics.accumulate_standing_statistics(G, 0, BATCH)
    assert standing_statistics.describe(0, 32) == "moving averages (the release)"
    assert standing_statistics.describe(16, 32) == "standing statistics over 16 batches of 32"


def test_sampling_use_standing_statistics_labels_and_applies(generator):
    """The tools' helper: batch size from config.json, label for their output line."""
    from sagan_tf.runs import rundir
    G = generator
    moving = standing_statistics.moving_statistics_variables(G)
    before = _values(moving)
    loaded = rundir.LoadedCheckpoint(G, None, {"batch_size": BATCH}, "config.json",
                                       "ckpt-1", 1)
    assert loaded.bn_statistics == "moving averages (the release)"
    assert rundir.use_standing_statistics(loaded, 0) == "moving averages (the release)"
    for v, b in zip(moving, before):
        np.testing.assert_array_equal(v.numpy(), b)
    label = rundir.use_standing_statistics(loaded, 2, seed=4)
    assert label == loaded.bn_statistics == f"standing statistics over 2 batches of {BATCH}"
    applied = _values(moving)
    for v, b in zip(moving, before):
        v.assign(b)
    standing_statistics.accumulate_standing_statistics(G, 2, BATCH, seed=4)
    for v, a in zip(moving, applied):
        np.testing.assert_array_equal(v.numpy(), a)
    for v, b in zip(moving, before):
        v.assign(b)
