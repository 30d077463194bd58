"""sagan_tf.perf.host_cost's counting (tools/perf/host_cost.py): ops per device, kernels per replica, all-reduces."""
import collections

import pytest
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


def test_counts_keep_gpu_and_host_devices_of_the_same_index_apart():
    """On a GPU machine the host's CPU:0 and the first replica's GPU:0 share
    index 0: kernels are counted per device of the replicas' type."""
    graph_def = tf.compat.v1.GraphDef()
    for name, op, device in (("a", "Conv2D", "GPU:0"), ("b", "MatMul", "GPU:0"),
                             ("c", "MatMul", "GPU:1"), ("send", "_Send", "CPU:0"),
                             ("rng", "RngReadAndSkip", "CPU:0")):
        graph_def.node.add(name=name, op=op,
                           device=f"/job:localhost/replica:0/task:0/device:{device}")
    gpu = tool.partition_counts([graph_def], "GPU")
    assert gpu[0] == collections.Counter(Conv2D=1, MatMul=1) and gpu[1]["MatMul"] == 1
    assert gpu[None] == collections.Counter(_Send=1, RngReadAndSkip=1)
    assert tool.kernel_summary(gpu, 2)["kernels_per_replica"] == [2, 1]
    cpu = tool.partition_counts([graph_def], "CPU")
    assert cpu[0] == collections.Counter(_Send=1, RngReadAndSkip=1) and set(cpu) == {0, None}


def test_release_variant_counts_the_tf1_graphs_kernels():
    """The release's TF1 graph as a variant: it runs, and its kernels are
    counted from the partition graphs of a traced G and D step."""
    run_once, info = tool.release_variant(
        dict(gf_dim=8, df_dim=8, batch_size=1, number_classes=3), threads=1)
    run_once()
    assert info["replicas"] == 1 and info["ops_traced"] == info["ops_traced_per_replica"][0]
    kernels = info["kernels_per_replica"][0]
    # The optimised partitions run fewer nodes than the graph holds, but
    # thousands at the release's depth (spectral norm in every layer).
    assert 1000 < kernels < info["ops_traced"], info
    assert info["cross_replica_reductions"] == 0
    # Power iterations: several matrix products per SN layer (_MklMatMul with oneDNN).
    assert sum(n for t, n in info["kernels_by_type"].items() if t.endswith("MatMul")) > 100
    assert sum(info["kernels_step_stats"].values()) > 1000
    with pytest.raises(ValueError, match="128x128 only"):
        tool.release_variant(dict(gf_dim=2, df_dim=2, batch_size=1, number_classes=3,
                                  image_size=32), threads=1)


def test_alternate_runs_abba_rounds_after_warmup():
    """sagan_tf.perf.timing.alternate (host_cost's and profile_step's timing):
    warm-up calls first, then rounds in A B / B A order, steps calls each."""
    from sagan_tf.perf.timing import alternate
    calls = []
    runners = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    figures, loads = alternate(runners, rounds=3, steps=2, warmup=1)
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] + ["b", "b", "a", "a"] + ["a", "a", "b", "b"]
    assert {k: v["n"] for k, v in figures.items()} == {"a": 6, "b": 6}
    assert all(0 <= v["min"] <= v["median"] for v in figures.values())
    assert len(loads) == 4
