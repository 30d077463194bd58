"""Distribution strategies for training: mirrored, multi-worker, TPU, logical CPUs.

The release trained with 4 GPU "towers" of 64 images each and averaged the
tower gradients (NUMERICS §6). In TF2 that is a `tf.distribute.Strategy` whose
replicas play the towers; the per-replica batch is `--batch_size`, and
`--num_towers N` takes the first N GPUs as the release's towers did (which
devices, and the errors when they do not exist: `sagan_tf.training.devices`).

On a CPU-only machine the replicas are logical CPU devices
(`sagan_tf.training.devices.configure_cpu_replicas`, before any op runs).
The mirrored strategy all-reduces the gradients with `--cross_device_ops`
(NCCL on GPUs by default); an NCCL failure at the first step is reported
with what a Docker container needs (`nccl_failure`).
"""
import dataclasses
import re

import tensorflow as tf

# Accepted values of `make_strategy(kind=...)` / `--strategy`.
from sagan_tf.options import CROSS_DEVICE_OPS, STRATEGY_KINDS
from sagan_tf.training import devices

__all__ = ["STRATEGY_KINDS", "CROSS_DEVICE_OPS", "NCCL_DOCKER_HINT", "cross_device_ops",
           "nccl_failure", "make_strategy", "make_strategy_and_plan"]


#: What an NCCL failure inside a container needs (its shared memory is 64 MB by default).
NCCL_DOCKER_HINT = ("inside Docker, start the container with --ipc=host or --shm-size=1g "
                    "(NCCL needs more than the default 64 MB of /dev/shm); or pass "
                    "--cross_device_ops hierarchical_copy (no NCCL)")
_NCCL_ERROR = re.compile(r"nccl|/dev/shm|shared memory", re.IGNORECASE)


def cross_device_ops(name, plan):
    """``(tf.distribute.CrossDeviceOps or None, resolved name)`` of
    ``--cross_device_ops name`` on :class:`DevicePlan` ``plan``'s devices.

    Raises:
      ValueError: an unknown name, or ``nccl`` without GPUs.
    """
    if name not in CROSS_DEVICE_OPS:
        raise ValueError(f"--cross_device_ops must be one of {CROSS_DEVICE_OPS}, got {name!r}")
    on_gpus = plan is not None and plan.kind == "gpu"
    if name == "auto":
        if not on_gpus:
            return None, "reduction_to_one"  # what MirroredStrategy picks on CPUs
        name = "nccl"
    if name == "nccl":
        if not on_gpus:
            raise ValueError("--cross_device_ops nccl needs GPUs; on the CPU pass "
                             "reduction_to_one or hierarchical_copy (or auto)")
        return tf.distribute.NcclAllReduce(), name
    if name == "hierarchical_copy":
        return tf.distribute.HierarchicalCopyAllReduce(), name
    return tf.distribute.ReductionToOneDevice(), name


def nccl_failure(error):
    """The one-line report of an NCCL failure (``error``: the exception of the
    first training step), with the Docker hint; None when it is not NCCL's."""
    text = str(getattr(error, "message", None) or error)
    if not _NCCL_ERROR.search(text):
        return None
    first = next((ln.strip() for ln in text.splitlines() if _NCCL_ERROR.search(ln)),
                 text.strip().splitlines()[0])
    return (f"the all-reduce across GPUs (NCCL) failed at the first step: {first}; "
            f"{NCCL_DOCKER_HINT}")


def make_strategy(kind="mirrored", num_cpu_replicas=0, tpu=None, num_towers=0,
                  allow_cpu=False, cross_device_ops_name="auto"):
    """The strategy of :func:`make_strategy_and_plan`."""
    return make_strategy_and_plan(kind, num_cpu_replicas, tpu, num_towers, allow_cpu,
                                  cross_device_ops_name)[0]


def make_strategy_and_plan(kind="mirrored", num_cpu_replicas=0, tpu=None, num_towers=0,
                           allow_cpu=False, cross_device_ops_name="auto"):
    """Creates the distribution strategy named by `kind`, on the devices of
    :func:`sagan_tf.training.devices.plan_training_devices`.

    Args:
      kind: one of `STRATEGY_KINDS`:
        * "mirrored": `MirroredStrategy` over the first `num_towers` GPUs (0:
          all visible GPUs); without GPUs, over `num_cpu_replicas` logical
          CPUs (call `configure_cpu_replicas` first), else one CPU replica.
        * "multiworker": `MultiWorkerMirroredStrategy` over the first
          `num_towers` GPUs of each worker; the cluster comes from the
          `TF_CONFIG` environment variable.
        * "tpu": `TPUStrategy` on the TPU named by `tpu` (resolved with
          `TPUClusterResolver`; `None` = the local/default TPU).
        * "default": the default (single-device, no-op) strategy.
      num_cpu_replicas: logical CPU replicas for "mirrored" on a CPU-only
        machine; 0 or 1 means one replica.
      tpu: TPU name or grpc address for "tpu".
      num_towers: GPUs per worker ("mirrored", "multiworker"); 0: all visible.
      allow_cpu: train on the CPU even when an NVIDIA driver is present but
        TensorFlow sees no GPU.
      cross_device_ops_name: "mirrored"'s all-reduce, one of `CROSS_DEVICE_OPS`
        (:func:`cross_device_ops`; the plan's ``all_reduce`` names it).

    Returns:
      `(strategy, plan)`: a `tf.distribute.Strategy` and its
      :class:`sagan_tf.training.devices.DevicePlan` (None for "tpu" and "default").

    Raises:
      ValueError: for an unknown `kind`, or `num_cpu_replicas > 1` with a
        strategy or machine it cannot apply to;
        :class:`sagan_tf.training.devices.DeviceError` (a ValueError) for fewer GPUs
        than `num_towers` or a driver without visible GPUs.
      RuntimeError: if fewer logical CPUs exist than `num_cpu_replicas`.
    """
    if kind not in STRATEGY_KINDS:
        raise ValueError(f"strategy must be one of {STRATEGY_KINDS}, got {kind!r}")
    num_cpu_replicas = int(num_cpu_replicas or 0)
    if num_cpu_replicas < 0:
        raise ValueError(f"num_cpu_replicas must be >= 0, got {num_cpu_replicas}")
    if num_cpu_replicas > 1 and kind != "mirrored":
        raise ValueError(
            f"num_cpu_replicas={num_cpu_replicas} only applies to strategy='mirrored', "
            f"got strategy={kind!r}")

    if cross_device_ops_name != "auto" and kind != "mirrored":
        raise ValueError(f"--cross_device_ops {cross_device_ops_name} only applies to "
                         f"--strategy mirrored, got {kind!r}")
    if kind == "default":
        return tf.distribute.get_strategy(), None
    if kind == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver), None

    plan = devices.training_plan(num_towers, allow_cpu, num_cpu_replicas)
    devices.apply_training_plan(plan)  # a no-op once the entry point applied it
    if kind == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy(), plan
    if plan.kind == "cpu" and len(plan.devices) > 1:
        cpus = tf.config.list_logical_devices("CPU")
        if len(cpus) < len(plan.devices):
            raise RuntimeError(
                f"num_cpu_replicas={num_cpu_replicas} but only {len(cpus)} logical CPU "
                f"device(s) exist; call sagan_tf.training.devices.configure_cpu_replicas("
                f"{num_cpu_replicas}) before any TensorFlow op")
    ops, name = cross_device_ops(cross_device_ops_name, plan)
    plan = dataclasses.replace(plan, all_reduce=name)
    return tf.distribute.MirroredStrategy(list(plan.devices), cross_device_ops=ops), plan
