"""Where a compiled step's ops run (sagan_tf/perf/placement.py), on the CPU.

Soft placement's silent fallback is real here: an op asked for on /gpu:0 of
a machine without GPUs runs on the CPU, as an op without a GPU kernel would
on a GPU machine. The logical CPUs of conftest stand for replicas whose ops
stay where they were asked for.
"""
import numpy as np
import tensorflow as tf

from sagan_tf.perf import placement


def _step_and_partitions():
    @tf.function(autograph=False)
    def step(x):
        with tf.device("/cpu:1"):  # a replica's ops: stay on their device
            a = tf.square(x) + 1.0
        with tf.device("/gpu:0"):  # no such device: soft placement moves it to the CPU
            b = tf.sqrt(a, name="wants_gpu")
        return b * 2.0
    x = tf.constant([1.0, 4.0])
    graph = step.get_concrete_function(x).graph
    result, partitions = placement.first_call_partitions(lambda: step(x))
    np.testing.assert_allclose(result.numpy(), [2 * 2 ** 0.5, 2 * 17 ** 0.5], rtol=1e-6)
    return graph, partitions


def test_an_op_soft_placed_on_the_cpu_is_found():
    graph, partitions = _step_and_partitions()
    requested = placement.requested_devices(graph)
    assert requested["wants_gpu"] == "/device:GPU:0" and requested["Square"] == "/device:CPU:1"
    placed = placement.placed_devices(partitions)
    assert placed["Square"].endswith("device:CPU:1")
    [moved] = placement.moved_ops(requested, placed)
    assert moved["op"] == "wants_gpu" and moved["placed"].endswith("device:CPU:0")
    verdict = placement.check_placement(graph, partitions, ["/gpu:0"])
    assert not verdict["ok"] and verdict["moved_by_type"] == {"Sqrt": 1}
    assert verdict["replica_type"] == "GPU" and verdict["ops_requested_on_replicas"] == 1


def test_a_hand_made_placement_on_the_wrong_device():
    """Requested vs placed as the check reads them: an op moved to the CPU, or
    to another logical CPU, is reported; ops that stayed, or that nobody
    placed (Grappler's), are not."""
    requested = {"conv": "/device:GPU:0", "mm": "/device:GPU:1", "host": "/device:CPU:0",
                 "replica": "/device:CPU:1", "moved_replica": "/device:CPU:1"}
    job = "/job:localhost/replica:0/task:0/device:"
    placed = {"conv": job + "GPU:0", "mm": job + "CPU:0", "host": job + "CPU:0",
              "replica": job + "CPU:1", "moved_replica": job + "CPU:0",
              "ConstantFolding/x": job + "CPU:0"}
    moved = placement.moved_ops(requested, placed)
    assert [m["op"] for m in moved] == ["mm", "moved_replica"]
    assert placement.moved_ops(requested, placed, to_type="GPU") == []


def test_the_training_step_on_cpu_replicas_keeps_its_placement(strategy2):
    """The port's real iteration on two logical CPU replicas: every op asked
    for on a replica runs there (the check's verdict on a CPU run)."""
    from sagan_tf.perf import host_cost
    _, info = host_cost.port_variant(2, dict(image_size=32, gf_dim=4, df_dim=4, batch_size=1,
                                             number_classes=3))
    verdict = info["placement"]
    assert verdict["ok"] and verdict["replica_type"] == "CPU", verdict
    assert verdict["ops_requested_on_replicas"] > 100
