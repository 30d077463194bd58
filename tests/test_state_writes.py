"""State writes across replicas (sagan_tf/models/state_writes.py), on 2 logical CPUs.

* `u` is computed from values every replica holds equally, so each replica
  writes its own copy and the copies stay bit-identical with no
  cross-replica reduction;
* the batch-norm moving statistics stay the mean over replicas of each
  replica's update, now from one grouped reduction per pass.
"""
import numpy as np
import tensorflow as tf

from sagan_tf.models import state_writes
from sagan_tf.training.config import TrainConfig
from sagan_tf.training.trainer import Trainer

S, C, B = 32, 3, 2


def _tiny_trainer(strategy):
    return Trainer(TrainConfig(image_size=S, gf_dim=4, df_dim=4, z_dim=16, number_classes=C,
                               batch_size=B, seed=0, data_dir="unused"), strategy)


class _ReduceRecorder:
    """Records the destinations (``id``s of the variables) of each cross-replica
    reduction of the strategy."""

    def __init__(self, strategy):
        self.single, self.batched = [], []
        extended = strategy.extended
        reduce_to, batch_reduce_to = extended._reduce_to, extended._batch_reduce_to

        def recorded_reduce_to(op, value, destinations, options):
            self.single.append(id(destinations))
            return reduce_to(op, value, destinations, options)

        def recorded_batch_reduce_to(op, pairs, options):
            self.batched.append([id(d) for _, d in pairs])
            return batch_reduce_to(op, pairs, options)
        extended._reduce_to, extended._batch_reduce_to = (recorded_reduce_to,
                                                          recorded_batch_reduce_to)


def test_u_copies_stay_bit_identical_without_a_reduction(strategy2):
    """Two iterations on 2 replicas fed different images and noise: every `u`
    has two copies, bit-identical, that moved; no reduction writes a `u`; the
    batch-norm statistics are reduced in one group per G pass."""
    trainer = _tiny_trainer(strategy2)
    recorder = _ReduceRecorder(strategy2)
    us = [v for v in trainer.generator.variables + trainer.discriminator.variables
          if v.path.endswith("/u")]
    assert us and all(v.value.synchronization == tf.VariableSynchronization.ON_READ for v in us)
    before = [v.numpy().copy() for v in us]
    rng = np.random.default_rng(0)
    for _ in range(2):
        images = rng.uniform(-1, 1, (2 * B, S, S, 3)).astype(np.float32)
        labels = rng.integers(0, C, 2 * B)
        trainer.train_iterations([trainer.distribute([(tf.constant(images),
                                                       tf.constant(labels))])])
    for v, old in zip(us, before):
        copies = [c.numpy() for c in strategy2.experimental_local_results(v.value)]
        assert len(copies) == 2
        np.testing.assert_array_equal(copies[0], copies[1], err_msg=v.path)
        assert not np.array_equal(copies[0], old), v.path
    reduced = set(recorder.single) | {d for group in recorder.batched for d in group}
    assert not reduced & {id(v.value) for v in us}
    bn = [v for v in trainer.generator.non_trainable_variables if not v.path.endswith("/u")]
    bn_ids = {id(v.value) for v in bn}
    bn_groups = [g for g in recorder.batched if set(g) & bn_ids]
    assert len(bn_groups) == 2 and all(set(g) == bn_ids for g in bn_groups)  # one per G pass
    assert not set(recorder.single) & bn_ids
    for v in bn:
        copies = [c.numpy() for c in strategy2.experimental_local_results(v.value)]
        np.testing.assert_array_equal(copies[0], copies[1], err_msg=v.path)


def test_grouped_write_is_the_replica_mean_and_local_write_is_per_replica(strategy2):
    """`write` in replica context: a mean-aggregated mirrored variable gets
    the mean of the replicas' values on every copy; a sync-on-read one gets
    each replica's own value."""
    with strategy2.scope():
        mirrored = tf.Variable([0.0, 0.0], aggregation=tf.VariableAggregation.MEAN)
        local = tf.Variable([0.0, 0.0], synchronization=tf.VariableSynchronization.ON_READ,
                            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    values = [np.array([1.0, 3.0], np.float32), np.array([2.0, 7.0], np.float32)]
    per_replica = strategy2.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(values[ctx.replica_id_in_sync_group]))

    @tf.function(autograph=False)
    def step(x):
        strategy2.run(lambda x: state_writes.write([(mirrored, x * 0.1), (local, x)]),
                      args=(x,))
    step(per_replica)
    mean = (values[0] * np.float32(0.1) + values[1] * np.float32(0.1)) / np.float32(2.0)
    for copy in strategy2.experimental_local_results(mirrored):
        np.testing.assert_array_equal(copy.numpy(), mean)
    for copy, want in zip(strategy2.experimental_local_results(local), values):
        np.testing.assert_array_equal(copy.numpy(), want)
    np.testing.assert_array_equal(local.numpy(), values[0])  # read outside: replica 0
