"""sagan_tf.perf.host_cost's counting (tools/perf/host_cost.py): ops per device, kernels per replica, all-reduces."""
import collections

import tensorflow as tf

from sagan_tf.perf import host_cost as tool


def test_counts_ops_per_device_and_all_reduces(strategy2):

    @tf.function(autograph=False)
    def step(x):
        with tf.device("/cpu:0"):
            a = tf.square(x) + 1.0
        with tf.device("/cpu:1"):
            b = tf.sqrt(a)
        return b * 2.0
    graph = step.get_concrete_function(tf.TensorSpec([3])).graph
    per_device, unplaced = tool.traced_ops(graph)
    # square, add (and its constant) on 0; sqrt on 1; the rest unplaced.
    assert per_device == {0: 3, 1: 1}
    assert unplaced == len(graph.get_operations()) - 4

    counts = {0: collections.Counter(CollectiveReduceV2=2, MatMul=5, Const=1),
              1: collections.Counter(CollectiveReduceV2=2, MatMul=5)}
    summary = tool.kernel_summary(counts, 2)
    assert summary["kernels_per_replica"] == [8, 7]
    assert summary["cross_replica_reductions"] == 2
    assert summary["kernels_by_type"]["MatMul"] == 5

    # The reduce-call counter sees the strategy's reductions while tracing.
    counter = tool._ReduceCounter(strategy2)
    values = strategy2.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(float(ctx.replica_id_in_sync_group)))
    total = strategy2.reduce(tf.distribute.ReduceOp.SUM, values, axis=None)
    assert float(total) == 1.0 and (counter.calls, counter.values) == (1, 1)
