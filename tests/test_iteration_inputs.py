"""What the training iteration is given and how it runs, the same numbers bit for bit:
uint8 images scaled on the device, k iterations per compiled call, D's power
iterations shared between the G step and the D step."""
import numpy as np
import tensorflow as tf

from sagan_tf.data import pipeline as data, record_format
from sagan_tf.training.config import TrainConfig
from sagan_tf.training.trainer import Trainer

S, C, B = 32, 3, 2


def _records(tmp_path, n=8):
    rng = np.random.default_rng(0)
    record_format.write_records(str(tmp_path / "a.tfrecords"),
                                rng.integers(0, 256, (n, S, S, 3), dtype=np.uint8),
                                rng.integers(0, C, n))
    return str(tmp_path)


def _one_iteration(trainer, real, check):
    """``trainer.train_iterations`` for one iteration: ``(metrics, real, fake, check result)``."""
    [(metrics, finite)], real_images, fake = trainer.train_iterations([real], check)
    return metrics, real_images, fake, finite


def test_uint8_dataset_scaled_on_device_equals_the_float_dataset(tmp_path):
    data_dir = _records(tmp_path)
    kwargs = dict(shuffle=False, repeat=False)
    floats = list(data.make_dataset(data_dir, S, 4, C, **kwargs))
    raw = list(data.make_dataset(data_dir, S, 4, C, uint8_images=True, **kwargs))
    assert len(floats) == len(raw) == 2
    for (x, y), (x8, y8) in zip(floats, raw):
        assert x8.dtype == tf.uint8 and x.dtype == tf.float32
        np.testing.assert_array_equal(record_format.to_unit_range(x8).numpy(), x.numpy())
        np.testing.assert_array_equal(y8.numpy(), y.numpy())
    assert float(tf.reduce_min(floats[0][0])) >= -1.0 and float(tf.reduce_max(floats[0][0])) <= 1.0


def test_iteration_on_uint8_batches_equals_float_batches(strategy2):
    """The trainer scales uint8 batches inside the step: the same iteration,
    bit for bit, as on the host-scaled floats (2 replicas)."""
    config = dict(image_size=S, gf_dim=4, df_dim=4, z_dim=16, number_classes=C, batch_size=B,
                  seed=0, data_dir="unused")
    on_floats, on_uint8 = (Trainer(TrainConfig(**config), strategy2) for _ in range(2))
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (2 * B, S, S, 3), dtype=np.uint8)
    labels = rng.integers(0, C, 2 * B).astype(np.int32)
    check = lambda metrics: tf.constant(True)  # noqa: E731
    outs = []
    for trainer, x in ((on_floats, record_format.to_unit_range(images)),
                       (on_uint8, tf.constant(images))):
        real = list(trainer.distribute([(x, tf.constant(labels))]))
        outs.append(_one_iteration(trainer, real, check))
    (m_f, real_f, fake_f, _), (m_u, real_u, fake_u, _) = outs
    for k in m_f:
        assert float(m_f[k]) == float(m_u[k]), k
    np.testing.assert_array_equal(real_u.numpy(), real_f.numpy())  # summaries see floats
    np.testing.assert_array_equal(fake_u.numpy(), fake_f.numpy())
    for a, b in zip(on_floats.discriminator.variables, on_uint8.discriminator.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_k_iterations_in_one_call_equal_k_calls(strategy2):
    """`Trainer.train_iterations` with two iterations per compiled call gives
    the state, metrics, checks and random-generator state of two calls of one
    iteration, bit for bit (2 replicas)."""
    config = dict(image_size=S, gf_dim=4, df_dim=4, z_dim=16, number_classes=C, batch_size=B,
                  seed=0, data_dir="unused")
    single, looped = (Trainer(TrainConfig(**config), strategy2) for _ in range(2))
    rng = np.random.default_rng(2)
    batches = [(tf.constant(rng.integers(0, 256, (2 * B, S, S, 3), dtype=np.uint8)),
                tf.constant(rng.integers(0, C, 2 * B).astype(np.int32))) for _ in range(2)]
    check = lambda metrics: tf.math.is_finite(metrics["d_loss"])  # noqa: E731
    singles = [_one_iteration(single, list(single.distribute([b])), check) for b in batches]
    results, real, fake = looped.train_iterations(
        [list(looped.distribute([b])) for b in batches], check)
    assert len(results) == 2
    for (metrics, finite), (m1, _, _, f1) in zip(results, singles):
        assert bool(finite) and bool(f1)
        for k in m1:
            assert float(metrics[k]) == float(m1[k]), k
    np.testing.assert_array_equal(fake.numpy(), singles[-1][2].numpy())
    np.testing.assert_array_equal(real.numpy(), singles[-1][1].numpy())
    for net in ("generator", "discriminator"):
        for a, b in zip(getattr(single, net).variables, getattr(looped, net).variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    for a, b in zip(single.d_optimizer.variables, looped.d_optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(single.rng.state.numpy(), looped.rng.state.numpy())
    assert int(looped.step.numpy()) == 2


class _RecomputingTrainer(Trainer):
    """A Trainer whose first D step computes D's power iterations again."""

    def _shared_power_iterations(self):
        return None


def test_reusing_d_power_iterations_changes_no_number():
    """The first D step takes D's spectral-norm forward tensors from the G
    step's D pass (`Trainer._shared_power_iterations`): two iterations give the
    state and metrics of recomputing them, bit for bit, with fewer ops."""
    config = dict(image_size=S, gf_dim=4, df_dim=4, z_dim=16, number_classes=C, batch_size=B,
                  seed=0, data_dir="unused")
    strategy = tf.distribute.get_strategy()
    rng = np.random.default_rng(4)
    batches = [(tf.constant(rng.integers(0, 256, (B, S, S, 3), dtype=np.uint8)),
                tf.constant(rng.integers(0, C, B).astype(np.int32))) for _ in range(2)]
    check = lambda metrics: tf.constant(True)  # noqa: E731
    runs = {}
    for reuse in (True, False):
        trainer = (Trainer if reuse else _RecomputingTrainer)(TrainConfig(**config), strategy)
        outs = [_one_iteration(trainer, [b], check) for b in batches]
        fn = trainer.compiled_iterations(1, check).function
        ops = len(fn._list_all_concrete_functions()[0].graph.get_operations())  # pylint: disable=protected-access
        runs[reuse] = trainer, outs, ops
    (reused, outs_r, ops_r), (plain, outs_p, ops_p) = runs[True], runs[False]
    assert ops_r < ops_p - 10 * 16  # ~16 forward ops of each of D's layers
    for (m_r, _, fake_r, _), (m_p, _, fake_p, _) in zip(outs_r, outs_p):
        for k in m_p:
            assert float(m_r[k]) == float(m_p[k]), k
        np.testing.assert_array_equal(fake_r.numpy(), fake_p.numpy())
    for net in ("generator", "discriminator", "d_optimizer", "g_optimizer"):
        for a, b in zip(getattr(reused, net).variables, getattr(plain, net).variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
