"""``--iterations_per_loop k``: the training loop with k iterations per compiled call.

The k-iteration call itself is checked bit for bit against single calls (2
replicas, compiled) in ``tests/test_iteration_inputs.py``; here the loop around
it: which calls run k iterations, that summaries, progress lines and
checkpoints still come at their steps, that the run's state is the same, and
the flags it refuses.
"""
import dataclasses
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.data import record_format
from sagan_tf.training.trainer import Trainer
from sagan_tf.training.config import ConfigError, TrainConfig
from sagan_tf.training.loop import train

S, B, C = 32, 2, 4


@pytest.fixture()
def eager_functions():
    """Runs tf.functions eagerly (no traces: the loop logic is what is tested)."""
    tf.config.run_functions_eagerly(True)
    yield
    tf.config.run_functions_eagerly(False)


def _records(directory):
    rng = np.random.default_rng(0)
    os.makedirs(directory, exist_ok=True)
    record_format.write_records(os.path.join(directory, "part-0.tfrecords"),
                                rng.integers(0, 256, (24, S, S, 3), dtype=np.uint8),
                                rng.integers(0, C, 24))
    return str(directory)


def _summary_steps(logdir):
    steps = set()
    for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            if any(v.tag == "d_loss" for v in event.summary.value):
                steps.add(event.step)
    return sorted(steps)


def test_k_iterations_per_call_same_run_same_cadence(tmp_path, eager_functions):
    config = TrainConfig(data_dir=_records(tmp_path / "data"), image_size=S, gf_dim=4, df_dim=4,
                         z_dim=16, number_classes=C, batch_size=B, seed=0, shuffle=False,
                         max_steps=10, save_summaries_steps=3, log_every_steps=3,
                         save_checkpoint_steps=5, save_checkpoint_secs=0,
                         checkpoint_dir=str(tmp_path / "single"))
    calls = []

    class CountingTrainer(Trainer):
        def train_iterations(self, real_batches, check=None):
            calls.append(len(real_batches))
            return super().train_iterations(real_batches, check)

    lines_1, lines_k = [], []
    single = train(config, log=lines_1.append, make_trainer=CountingTrainer)
    assert calls == [1] * 10
    calls.clear()
    looped = train(dataclasses.replace(config, iterations_per_loop=2,
                                       checkpoint_dir=str(tmp_path / "looped")),
                   log=lines_k.append, make_trainer=CountingTrainer)
    # Events: summaries and progress lines at 3, 6, 9, checkpoints at 5 and 10,
    # and step 1 (timing). A call of 2 runs from step s when s >= 1, s + 2 <= 10
    # and step s + 1 has no event (a call never has one in its middle).
    events = {3, 5, 6, 9, 10}
    step, plan = 0, []
    while step < 10:
        k = 2 if step >= 1 and step + 2 <= 10 and (step + 1) not in events else 1
        plan.append(k)
        step += k
    assert plan == [1, 2, 2, 1, 2, 1, 1]
    assert calls == plan, calls
    assert single["step"] == looped["step"] == 10

    a = tf.train.load_checkpoint(single["checkpoint"])
    b = tf.train.load_checkpoint(looped["checkpoint"])
    for key in a.get_variable_to_shape_map():
        np.testing.assert_array_equal(a.get_tensor(key), b.get_tensor(key), err_msg=key)
    assert single["metrics"] == looped["metrics"]
    # The same summary steps, progress lines and step checkpoints.
    steps = _summary_steps(config.logdir)
    assert steps == _summary_steps(os.path.join(tmp_path / "looped", f"imagenet_{B}"))
    assert {1, 3, 6, 9} <= set(steps), steps
    progress = [line.split()[1] for line in lines_1 if line.startswith("step ")]
    assert progress and progress == [line.split()[1] for line in lines_k
                                     if line.startswith("step ")]
    # The first call of 2 traced its function: named in the next progress line,
    # kept out of the steady-state speed (as the first step is).
    assert sum("(includes tracing the 2-iteration call)" in line for line in lines_k) == 1
    assert not any("iteration call" in line for line in lines_1)
    assert looped["steps_per_second"] > 0 and single["steps_per_second"] > 0
    for run in ("single", "looped"):
        names = {os.path.basename(p).split(".")[0]
                 for p in glob.glob(str(tmp_path / run / f"imagenet_{B}" / "ckpt-*.index"))}
        assert names == {"ckpt-5", "ckpt-10"}, names


@pytest.mark.parametrize("changes, message", [
    (dict(iterations_per_loop=0), "--iterations_per_loop must be an integer >= 1"),
    (dict(iterations_per_loop=4, on_nan="skip_step"), "needs --on_nan stop"),
    (dict(iterations_per_loop=4, strategy="tpu"), "not supported with --strategy tpu"),
])
def test_refused_settings(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**changes).validate()
