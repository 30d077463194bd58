r"""The host's share of a training iteration: kernels, reductions, host work.

At minimal compute (``test`` networks, 128x128, gf=df=8, batch 2 per
replica, 10 classes) a training iteration is almost all per-op overhead:
every kernel the executor runs costs a launch and bookkeeping on the host,
whatever its size. On a GPU that overhead is what the host must finish in
the GPU's time per iteration. This tool measures it, in ONE process, for the
port with 1, 2 and 4 logical CPU replicas (``--replicas``) and for the
release's TF1 graph (one tower), alternating their iterations (ABBA) so
that all see the same machine state:

* ``ops_traced_per_replica``: ops of the traced iteration graph placed on
  each replica's device (``ops_traced_unplaced``: the cross-replica part);
* ``kernels_per_replica``: nodes of the optimised graph's partition on each
  replica's device after Grappler (what the executor runs per call; from
  the function's instantiation run metadata), ``kernels_by_type`` the top
  types of replica 0, and ``kernels_executed_per_replica`` the kernels the
  TensorFlow profiler saw run per iteration (all devices) / replicas;
* ``cross_replica_reductions``: collective all-reduce ops per iteration in
  the optimised graph (``CollectiveReduceV2``, ``NcclAllReduce`` ...), counted
  on replica 0's partition, and ``reduce_calls_traced``: the
  strategy's reduce / batch-reduce calls and the values they carry;
* ``seconds_per_iteration``: median and minimum over ``--rounds`` rounds of
  ``--steps`` iterations, and ratios to 1 replica and to the release graph.

The port's iteration is what the training loop runs: ``Trainer.train_iterations``
on fixed per-replica real batches, the noise drawn inside, the loop's
non-finite check (``NonFiniteGuard.state_check``) inside, its result read
on the host. The release graph's iteration is ``sess.run(g_train_op)``
then ``sess.run(d_train_op)``; its partition graphs and step statistics
come from a ``FULL_TRACE`` run.

``--loop``: the loop's own per-step host work besides the compiled call,
from ``sagan_tf.training.loop.open_loop`` on a small demo data set (128x128):
the input iterator's ``next``, the finiteness read, the summaries and
progress line, each timed per step.

``tools/perf/host_cost.py`` is the command line. With as many GPUs as replicas, the replicas are
GPUs: ops and kernels are then counted per GPU (the host's ``CPU:0``
partition, which shares GPU 0's index, is not merged into it), and
``placement`` says whether an op asked for on a GPU runs on the CPU
(:mod:`sagan_tf.perf.placement`).
"""
import collections
import os
import tempfile
import time

from sagan_tf.perf.placement import check_placement, first_call_partitions
from sagan_tf.perf.timing import alternate

__all__ = ["REDUCTION_OPS", "replica_devices", "traced_ops", "partition_counts",
           "kernel_summary", "profiled_kernels", "port_variant", "release_variant",
           "measure_iterations", "measure_loop", "format_table"]

#: Op types of a cross-replica all-reduce in an optimised graph.
REDUCTION_OPS = ("CollectiveReduce", "CollectiveReduceV2", "CollectiveReduceV3",
                 "NcclAllReduce", "CollectiveAllToAllV2", "CollectiveGatherV2")


def replica_devices(replicas):
    """The first ``replicas`` GPUs if there are that many, else logical CPUs."""
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    kind = "gpu" if len(gpus) >= replicas else "cpu"
    return [f"/{kind}:{i}" for i in range(replicas)]


def _device_index(device, device_type):
    """``"/job:localhost/replica:0/task:0/device:CPU:1"`` -> 1 when its type is
    ``device_type``; None if unplaced or of another type (on a GPU machine
    ``GPU:0`` and the host's ``CPU:0`` must not be counted as one device)."""
    if not device:
        return None
    import tensorflow as tf
    spec = tf.DeviceSpec.from_string(device)
    return spec.device_index if (spec.device_type or "").upper() == device_type else None


def traced_ops(graph, device_type="CPU"):
    """``({device index: op count}, unplaced count)`` of a traced ``tf.Graph``,
    over the devices of ``device_type`` (the replicas'); ops on devices of
    another type are in neither."""
    per_device, unplaced = collections.Counter(), 0
    for op in graph.get_operations():
        index = _device_index(op.device, device_type)
        if index is not None:
            per_device[index] += 1
        elif not op.device:
            unplaced += 1
    return dict(per_device), unplaced


def partition_counts(graph_defs, device_type="CPU"):
    """``{device index: Counter(op type)}`` over partition ``GraphDef``s for the
    devices of ``device_type``; the nodes of other devices under None."""
    out = collections.defaultdict(collections.Counter)
    for graph_def in graph_defs:
        for node in graph_def.node:
            out[_device_index(node.device, device_type)][node.op] += 1
    return dict(out)


def kernel_summary(counts, replicas):
    """Kernels per replica, reductions, top types of replica 0 (from ``partition_counts``)."""
    per_replica = [sum(counts.get(i, {}).values()) for i in range(replicas)]
    first = counts.get(0, collections.Counter())
    return {"kernels_per_replica": per_replica,
            "cross_replica_reductions": sum(first[t] for t in REDUCTION_OPS),
            "kernels_by_type": dict(first.most_common(15))}


def profiled_kernels(fn, steps):
    """Kernels the TF profiler saw run per call of ``fn`` (all devices), by type
    (the counts of :func:`sagan_tf.perf.op_profile.profile_ops`)."""
    from sagan_tf.perf.op_profile import profile_ops
    return {op_type: row["count"] / steps for op_type, row in profile_ops(fn, steps).items()}


class _ReduceCounter:
    """Counts the strategy's reduce / batch-reduce calls while the step is traced."""

    def __init__(self, strategy):
        self.calls, self.values = 0, 0
        extended = strategy.extended
        for name in ("_reduce_to", "_batch_reduce_to"):
            original = getattr(extended, name)
            setattr(extended, name, self._wrap(original, batched=name == "_batch_reduce_to"))

    def _wrap(self, original, batched):
        def counted(reduce_op, value_destination_pairs_or_value, *args, **kwargs):
            self.calls += 1
            self.values += (len(value_destination_pairs_or_value) if batched else 1)
            return original(reduce_op, value_destination_pairs_or_value, *args, **kwargs)
        return counted


def port_variant(replicas, size):
    """A trainer on the first ``replicas`` logical CPUs; returns ``(run_once, info)``."""
    import numpy as np
    import tensorflow as tf
    from sagan_tf.training.config import TrainConfig
    from sagan_tf.training.faults import NonFiniteGuard
    from sagan_tf.training.trainer import Trainer
    image_size = size.get("image_size", 128)
    cfg = TrainConfig(batch_size=size["batch_size"], image_size=image_size,
                      gf_dim=size["gf_dim"], df_dim=size["df_dim"],
                      number_classes=size["number_classes"], generator_type="test",
                      discriminator_type="test", seed=0)
    # Strategies of one process need distinct collective group keys (else the
    # 4-replica step joins the 2-replica one's group).
    base, tf.distribute.MirroredStrategy._collective_key_base = (  # pylint: disable=protected-access
        tf.distribute.MirroredStrategy._collective_key_base, 1000 * replicas)  # pylint: disable=protected-access
    devices = replica_devices(replicas)
    try:
        strategy = tf.distribute.MirroredStrategy(devices)
    finally:
        tf.distribute.MirroredStrategy._collective_key_base = base  # pylint: disable=protected-access
    reduce_counter = _ReduceCounter(strategy)
    trainer = Trainer(cfg, strategy)
    guard = NonFiniteGuard(trainer, "stop")
    rs = np.random.default_rng(0)
    n = trainer.global_batch_size
    images = tf.constant(rs.uniform(-1, 1, (n, image_size, image_size, 3)), tf.float32)
    labels = tf.constant(rs.integers(0, size["number_classes"], n), tf.int32)
    real = [trainer.distribute((images, labels))]

    def run_once():
        results, real_images, fake = trainer.train_iterations([real], guard.state_check)
        [(metrics, all_finite)] = results
        if not bool(all_finite):
            raise RuntimeError(f"non-finite iteration ({replicas} replicas)")
        return metrics, real_images, fake

    t0 = time.perf_counter()
    _, partitions = first_call_partitions(run_once)  # the instantiation's optimised graphs
    first = time.perf_counter() - t0
    function = trainer.compiled_iterations(1, guard.state_check).function
    graph = function._list_all_concrete_functions()[0].graph  # pylint: disable=protected-access
    kind = "GPU" if devices[0].startswith("/gpu") else "CPU"
    per_device, unplaced = traced_ops(graph, kind)
    info = {"replicas": replicas, "first_iteration_seconds": first,
            "ops_traced": len(graph.get_operations()),
            "ops_traced_per_replica": [per_device.get(i, 0) for i in range(replicas)],
            "ops_traced_unplaced": unplaced,
            "reduce_calls_traced": {"calls": reduce_counter.calls,
                                    "values": reduce_counter.values},
            "placement": check_placement(graph, partitions, devices)}
    info.update(kernel_summary(partition_counts(partitions, kind), replicas))
    return run_once, info


def release_variant(size, threads):
    """The release's TF1 graph (one tower); returns ``(run_once, info)``."""
    import tensorflow as tf
    from sagan_tf.parity.tf1_release_session import ReleaseGraphSession
    if size.get("image_size", 128) != 128:
        raise ValueError("the release's graph is 128x128 only")
    v1 = tf.compat.v1
    ref = ReleaseGraphSession(size["batch_size"], size["gf_dim"], size["df_dim"], 128,  # z_dim
                              size["number_classes"], "test", threads)
    t0 = time.perf_counter()
    ref.iteration()
    first = time.perf_counter() - t0
    partitions, executed = [], collections.Counter()
    for part in ("g", "d"):
        meta = v1.RunMetadata()
        ref.session.run(ref._ops[f"{part}_train_op"],  # pylint: disable=protected-access
                        options=v1.RunOptions(trace_level=v1.RunOptions.FULL_TRACE,
                                              output_partition_graphs=True),
                        run_metadata=meta)
        partitions += list(meta.partition_graphs)
        for dev in meta.step_stats.dev_stats:
            executed[dev.device] += len(dev.node_stats)
    info = {"replicas": 1, "first_iteration_seconds": first,
            "ops_traced": len(ref.graph.get_operations()),
            "ops_traced_per_replica": [len(ref.graph.get_operations())],
            "kernels_step_stats": dict(executed)}
    kind = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
    info.update(kernel_summary(partition_counts(partitions, kind), 1))
    return ref.iteration, info


def measure_iterations(replica_counts, size, release=True, threads=2, profile_steps=2,
                       rounds=10, steps=2, warmup=2):
    """Builds every variant, counts its graph, profiles and times them alternately.

    ``size``: ``{"gf_dim", "df_dim", "batch_size", "number_classes"}`` and
    optionally ``"image_size"`` (default 128);
    ``release``: also the release's TF1 graph (``threads`` for its session).
    Returns ``{"variants": {name: info}, "load_average_during": [...]}``.
    """
    runners, infos = {}, {}
    for r in replica_counts:
        name = f"port_{r}"
        runners[name], infos[name] = port_variant(r, size)
    if release:
        runners["release_tf1"], infos["release_tf1"] = release_variant(size, threads)
    if profile_steps:
        for name, fn in runners.items():
            fn()
            kernels = profiled_kernels(fn, profile_steps)
            total = sum(kernels.values())
            infos[name]["kernels_executed"] = total
            infos[name]["kernels_executed_per_replica"] = total / infos[name]["replicas"]
    load_before = os.getloadavg()[0]
    timing, _ = alternate(runners, rounds, steps, warmup)
    for name, t in timing.items():
        infos[name]["seconds_per_iteration"] = t
        kernels = infos[name].get("kernels_executed_per_replica")
        if kernels:  # at minimal compute, an upper bound on the host's time per kernel
            infos[name]["microseconds_per_kernel"] = 1e6 * t["median"] / kernels
        for base in ("port_1", "release_tf1"):
            if base in timing and base != name:
                infos[name][f"median_vs_{base}"] = t["median"] / timing[base]["median"]
                infos[name][f"min_vs_{base}"] = t["min"] / timing[base]["min"]
    return {"variants": infos, "load_average_during": [load_before, os.getloadavg()[0]]}


def measure_loop(size, steps):
    """Per-step host work of the training loop besides the compiled iteration."""
    import tensorflow as tf
    from sagan_tf.data import demo_data
    from sagan_tf.training import loop as training
    from sagan_tf.training.config import TrainConfig
    timers = collections.defaultdict(list)

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                timers[name].append(time.perf_counter() - t0)
        return wrapper

    with tempfile.TemporaryDirectory(prefix="host_cost_") as scratch:
        data_dir = os.path.join(scratch, "data")
        demo_data.write_demo_dataset(data_dir, num_images=64, image_size=128,
                                     num_classes=size["number_classes"], num_shards=2)
        config = TrainConfig(
            data_dir=data_dir, checkpoint_dir=os.path.join(scratch, "run"), image_size=128,
            number_classes=size["number_classes"], gf_dim=size["gf_dim"],
            df_dim=size["df_dim"], batch_size=size["batch_size"], seed=0,
            max_steps=steps + 2, save_summaries_steps=10, log_every_steps=10,
            save_checkpoint_steps=0, save_checkpoint_secs=0)
        with training.open_loop(config, log=lambda *a: None) as loop:
            loop.run(until=2)  # tracing, first summaries
            trainer, guard = loop.trainer, loop.guard
            loop._real_batches = timed("iterator_next", loop._real_batches)  # pylint: disable=protected-access
            trainer.train_iterations = timed("compiled_iteration", trainer.train_iterations)
            guard.check = timed("finiteness_read", guard.check)
            loop._write_summaries = timed("summaries", loop._write_summaries)  # pylint: disable=protected-access
            loop._log_progress = timed("progress_line", loop._log_progress)  # pylint: disable=protected-access
            loop._after_step = timed("after_step", loop._after_step)  # pylint: disable=protected-access
            t0 = time.perf_counter()
            loop.run(until=2 + steps)
            wall = time.perf_counter() - t0
    per_step = {k: sum(v) / steps for k, v in timers.items()}
    per_step["host_work"] = wall / steps - per_step.get("compiled_iteration", 0.0)
    return {"loop_seconds_per_step": wall / steps, "per_step_seconds": per_step,
            "calls": {k: len(v) for k, v in timers.items()}, "steps": steps,
            "tensorflow": tf.__version__}


def format_table(result):
    lines = ["| variant | ops traced / replica | kernels / replica (graph) | executed / replica "
             "(profiler) | all-reduce ops | reduce calls (values) | s/it median (min) "
             "| vs 1 replica | vs release |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for name, v in result["variants"].items():
        t = v.get("seconds_per_iteration", {})
        calls = v.get("reduce_calls_traced", {})
        lines.append(
            f"| {name} | {v['ops_traced_per_replica'][0]} | {v['kernels_per_replica'][0]} | "
            f"{v.get('kernels_executed_per_replica', float('nan')):.0f} | "
            f"{v['cross_replica_reductions']} | {calls.get('calls', '-')} "
            f"({calls.get('values', '-')}) | {t.get('median', float('nan')):.4f} "
            f"({t.get('min', float('nan')):.4f}) | {v.get('median_vs_port_1', 1.0):.2f} | "
            f"{v.get('median_vs_release_tf1', 1.0):.2f} |")
    return "\n".join(lines)
