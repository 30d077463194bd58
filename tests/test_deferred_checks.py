"""The non-finite check without a host round trip per iteration (``--on_nan=stop``).

Each iteration's check is kept as a tensor (`NonFiniteGuard.defer`) and read
later (`settle`), before anything is written; the first bad iteration is
still the one named. The loop-level behaviour (nothing non-finite saved,
the error names the step) is tests/test_faults.py's
`test_non_finite_step_stops_or_is_skipped`, which now runs through this path.
"""
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.training import faults
from sagan_tf.training.config import TrainConfig
from sagan_tf.training.faults import NonFiniteGuard
from sagan_tf.training.trainer import Trainer


@pytest.fixture(scope="module")
def trainer():
    return Trainer(TrainConfig(image_size=32, gf_dim=4, df_dim=4, z_dim=16, number_classes=3,
                               batch_size=2, seed=0, data_dir="unused"),
                   tf.distribute.get_strategy())


def _metrics(d_loss):
    return {k: tf.constant(v, tf.float32) for k, v in
            dict(d_loss=d_loss, d_loss_real=1.0, d_loss_fake=0.5, g_loss=0.25).items()}


def test_settle_names_the_first_bad_deferred_iteration(trainer):
    guard = NonFiniteGuard(trainer, "stop")
    for step, d_loss in ((1, 1.0), (2, np.nan), (3, np.inf), (4, 2.0)):
        metrics = _metrics(d_loss)
        assert guard.defer(step, metrics, guard.state_check(metrics))
    assert guard.settle() == (2, "non-finite d_loss=nan")
    assert guard.settle() is None  # forgotten once read


def test_settle_of_finite_iterations_and_an_overflowing_sum(trainer):
    guard = NonFiniteGuard(trainer, "stop")
    metrics = _metrics(3e38)
    other = dict(metrics, g_loss=tf.constant(3e38))
    # Every value finite, but the in-graph sum overflows: settled as finite.
    assert not bool(guard.state_check(other))
    guard.defer(7, other, guard.state_check(other))
    guard.defer(8, metrics, guard.state_check(metrics))
    assert guard.settle() is None


def test_only_stop_defers_and_settling_is_due_after_the_limit(trainer):
    assert not NonFiniteGuard(trainer, "skip_step").defer(1, _metrics(1.0), tf.constant(True))
    guard = NonFiniteGuard(trainer, "stop")
    for step in range(1, faults.MAX_UNSETTLED_CHECKS + 1):
        assert not guard.must_settle()
        guard.defer(step, _metrics(1.0), tf.constant(True))
    assert guard.must_settle()
    assert guard.settle() is None and not guard.must_settle()


@pytest.mark.parametrize("steps", [[5], [3, 4, 5]])
def test_a_non_finite_weight_is_found_when_the_losses_are_finite(trainer, steps):
    """With ``stop`` the iterations check their losses; the state is checked
    when the checks are read, and a bad weight is reported at the last step
    read, with the range since the state was last seen finite."""
    guard = NonFiniteGuard(trainer, "stop")
    var = trainer.generator.trainable_variables[3]
    saved = var.numpy()
    try:
        var.assign(np.full(saved.shape, np.inf, saved.dtype))
        for step in steps:
            metrics = _metrics(1.0)
            check = guard.state_check(metrics)
            assert bool(check)  # the losses alone
            guard.defer(step, metrics, check)
        step, problem = guard.settle()
        want = f"non-finite weight {var.path} (the losses were finite)"
        if len(steps) > 1:
            want += "; the state was finite after step 2"
        assert step == 5 and problem == want
        # The in-step check of skip_step covers the state itself.
        assert not bool(NonFiniteGuard(trainer, "skip_step").state_check(_metrics(1.0)))
    finally:
        var.assign(saved)
