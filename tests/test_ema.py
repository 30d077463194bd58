"""Tests of the averaged generator (sagan_tf/models/ema.py, --g_ema_decay).

The oracle is the definition: the weighted mean of G's weights recorded after
every iteration, in float64 numpy; tiny networks as in test_training.py.
"""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.runs import checkpoints, rundir
from sagan_tf.models import ema
from sagan_tf.training.config import ConfigError
from sagan_tf.training.trainer import Trainer
from sagan_tf.training.loop import train

S, B, C = 32, 2, 4


def _config(**kw):
    """test_training.py's tiny configuration."""
    from tests.test_training import _tiny_config
    return _tiny_config(**kw)


def _inputs(trainer, seed):
    rng = np.random.default_rng(seed)
    n = trainer.global_batch_size
    images = rng.uniform(-1, 1, (n, S, S, 3)).astype(np.float32)
    labels = rng.integers(0, C, n).astype(np.int32)
    return [list(trainer.distribute([(tf.constant(images), tf.constant(labels))]))]


def _numpy_average(trainer, decay, steps):
    """Runs ``steps`` iterations; returns the oracle: for trainable variables
    the weighted mean ``sum_s d^(t-s) w_s / sum_s d^(t-s)`` of G's weights after
    each iteration (computed from the recorded history, not by the
    recurrence), for the others G's values at the end."""
    G = trainer.generator
    history = []
    for t in range(1, steps + 1):
        trainer.train_iterations(_inputs(trainer, t))
        history.append([v.numpy().astype(np.float64) for v in G.variables])
    weights = decay ** np.arange(steps - 1, -1, -1, dtype=np.float64)
    weights /= weights.sum()
    return [sum(w * h[i] for w, h in zip(weights, history)) if v.trainable
            else history[-1][i] for i, v in enumerate(G.variables)]


def test_decay_schedule():
    assert float(ema.decay_at(0.999, 1)) == 0.0  # the average starts at G's weights
    assert float(ema.decay_at(0.5, 2)) == pytest.approx(0.5 * 0.5 / 0.75, rel=1e-6)
    d = 0.9999  # near 1, float32 stays accurate: d (1 - d^(t-1)) / (1 - d^t)
    for t in (2, 10, 1000, 10 ** 6):
        exact = d * (1 - d ** (t - 1)) / (1 - d ** t)
        assert float(ema.decay_at(d, t)) == pytest.approx(exact, rel=1e-5), t
    assert float(ema.decay_at(0.999, 10 ** 7)) == pytest.approx(0.999)


def test_average_follows_the_recurrence_and_leaves_training_alone():
    decay = 0.5  # large steps, so a wrong coefficient shows
    with_ema = Trainer(_config(g_ema_decay=decay))
    without = Trainer(_config())
    # It starts as a copy of G.
    for a, g in zip(with_ema.generator_ema.variables, with_ema.generator.variables):
        np.testing.assert_array_equal(a.numpy(), g.numpy())
    expected = _numpy_average(with_ema, decay, 3)
    for t in range(1, 4):
        without.train_iterations(_inputs(without, t))
    averaged = with_ema.generator_ema.variables
    assert len(averaged) == len(expected)
    for a, e, g in zip(averaged, expected, with_ema.generator.variables):
        np.testing.assert_allclose(a.numpy(), e, rtol=1e-5, atol=1e-6, err_msg=a.path)
        if not g.trainable:  # u and BN statistics: copies of G's
            np.testing.assert_array_equal(a.numpy(), g.numpy())
    moved = [np.abs(a.numpy() - g.numpy()).max()
             for a, g in zip(averaged, with_ema.generator.variables) if g.trainable]
    assert max(moved) > 0  # the average lags G
    # Keeping an average does not change the training trajectory, bit for bit.
    for a, b in ((with_ema.generator, without.generator),
                 (with_ema.discriminator, without.discriminator)):
        for va, vb in zip(a.variables, b.variables):
            np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=va.path)
    assert "generator_ema" not in without.checkpoint._trackable_children()  # release layout
    assert without.generator_ema is None


def test_two_replicas_keep_one_average(strategy2):
    trainer = Trainer(_config(g_ema_decay=0.5), strategy2)
    expected = _numpy_average(trainer, 0.5, 2)
    for a, e in zip(trainer.generator_ema.variables, expected):
        parts = trainer.strategy.experimental_local_results(a.value)
        assert len(parts) == 2
        np.testing.assert_array_equal(parts[0].numpy(), parts[1].numpy())
        np.testing.assert_allclose(parts[0].numpy(), e, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    """A 2-step run with --g_ema_decay, checkpointed."""
    from tests.test_training import _write_records
    root = tmp_path_factory.mktemp("ema_run")
    data = _write_records(root / "data")
    config = _config(g_ema_decay=0.9, data_dir=data, checkpoint_dir=str(root / "runs"),
                     max_steps=2)
    result = train(config, log=lambda *a: None)
    return config, result


def test_checkpoint_holds_both_generators_and_loading_picks(ema_run):
    config, result = ema_run
    trainer, path = result["trainer"], result["checkpoint"]
    assert checkpoints.count_variables(path, "generator_ema") == len(
        trainer.generator_ema.variables)
    for weights, source in (("auto", trainer.generator_ema), ("ema", trainer.generator_ema),
                            ("raw", trainer.generator)):
        loaded = rundir.load_checkpoint(config.checkpoint_dir, generator_weights=weights)
        assert loaded.generator_weights == ("raw" if weights == "raw" else "ema")
        for a, b in zip(loaded.generator.variables, source.variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f"{weights} {a.path}")
    with pytest.raises(ValueError, match="generator_weights"):
        rundir.generator_child(path, "best")


def test_resume_must_keep_the_average_setting(ema_run):
    config, _ = ema_run
    with pytest.raises(ConfigError, match="g_ema_decay"):
        train(dataclasses.replace(config, g_ema_decay=0.0, max_steps=3), log=lambda *a: None)


def test_ema_requested_from_a_run_without_one(tmp_path):
    from tests.test_training import _write_records
    data = _write_records(tmp_path / "data")
    config = _config(data_dir=data, checkpoint_dir=str(tmp_path / "runs"), max_steps=1)
    result = train(config, log=lambda *a: None)
    assert rundir.generator_child(result["checkpoint"], "auto") == "generator"
    with pytest.raises(checkpoints.CheckpointMismatchError,
                       match="no averaged generator.*--g_ema_decay"):
        rundir.load_checkpoint(config.checkpoint_dir, generator_weights="ema")


def test_config_rejects_bad_decay():
    for bad in (-0.1, 1.0, "0.9", True):
        with pytest.raises(ConfigError, match="g_ema_decay"):
            _config(g_ema_decay=bad).validate()


def test_choosing_weights_of_a_vanished_or_truncated_checkpoint(ema_run, tmp_path):
    """The evaluator's watch loop tells these apart (NotFoundError: deleted by
    the trainer; DataLossError: skipped as unreadable)."""
    import glob
    import os
    import shutil
    import tensorflow as tf
    path = ema_run[1]["checkpoint"]
    with pytest.raises(tf.errors.NotFoundError):
        rundir.generator_child(str(tmp_path / "ckpt-404"))
    for f in glob.glob(path + ".*"):
        shutil.copy(f, tmp_path)
    copy = str(tmp_path / os.path.basename(path))
    data = glob.glob(copy + ".data-*")[0]
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)
    with pytest.raises(tf.errors.DataLossError, match="cannot read checkpoint"):
        rundir.generator_child(copy)
