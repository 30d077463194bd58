"""Distribution strategies for training: mirrored, multi-worker, TPU, logical CPUs.

The release trained with 4 GPU "towers" of 64 images each and averaged the
tower gradients (NUMERICS §6). In TF2 that is a `tf.distribute.Strategy` whose
replicas play the towers; the per-replica batch is `--batch_size`, and
`--num_towers N` takes the first N GPUs as the release's towers did (which
devices, and the errors when they do not exist: `sagan_tf.training.devices`).

On a CPU-only machine `configure_cpu_replicas(n)` splits the one physical CPU
into `n` logical devices so that a real `MirroredStrategy` with `n` replicas
can be exercised (tests, the demo). It must run before TensorFlow executes any
op, because the runtime fixes the device list when it initialises.
"""
import tensorflow as tf

# Accepted values of `make_strategy(kind=...)` / `--strategy`.
from sagan_tf.options import STRATEGY_KINDS
from sagan_tf.training import devices

__all__ = ["STRATEGY_KINDS", "configure_cpu_replicas", "make_strategy",
           "make_strategy_and_plan"]


def configure_cpu_replicas(n):
    """Splits the physical CPU into `n` logical CPU devices (`/cpu:0` .. `/cpu:n-1`).

    Idempotent: if the CPU is already split into exactly `n` logical devices
    (e.g. by the test harness), nothing happens.

    Args:
      n: number of logical CPU devices, >= 1.

    Raises:
      ValueError: if `n < 1`.
      RuntimeError: if TensorFlow has already initialised its devices with a
        different CPU layout (some op ran before this call).
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"num_cpu_replicas must be >= 1, got {n}")
    cpus = tf.config.list_physical_devices("CPU")
    current = tf.config.get_logical_device_configuration(cpus[0])
    if (current is None and n == 1) or (current is not None and len(current) == n):
        return
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as e:
        have = len(tf.config.list_logical_devices("CPU"))
        raise RuntimeError(
            f"configure_cpu_replicas({n}) must be called before any TensorFlow op "
            f"runs (the runtime is already initialised with {have} logical CPU "
            f"device(s)). Call it first thing in the program, before building "
            f"models, datasets or tensors.") from e


def make_strategy(kind="mirrored", num_cpu_replicas=0, tpu=None, num_towers=0,
                  allow_cpu=False):
    """The strategy of :func:`make_strategy_and_plan`."""
    return make_strategy_and_plan(kind, num_cpu_replicas, tpu, num_towers, allow_cpu)[0]


def make_strategy_and_plan(kind="mirrored", num_cpu_replicas=0, tpu=None, num_towers=0,
                           allow_cpu=False):
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

    if kind == "default":
        return tf.distribute.get_strategy(), None
    if kind == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver), None

    plan = devices.training_plan(num_towers, allow_cpu, num_cpu_replicas)
    if plan.kind == "gpu":  # no-op once the entry point did it before the runtime started
        devices.show_only_first_gpus(len(plan.devices))
    if kind == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy(), plan
    if plan.kind == "cpu" and len(plan.devices) > 1:
        cpus = tf.config.list_logical_devices("CPU")
        if len(cpus) < len(plan.devices):
            raise RuntimeError(
                f"num_cpu_replicas={num_cpu_replicas} but only {len(cpus)} logical CPU "
                f"device(s) exist; call sagan_tf.training.distribute.configure_cpu_replicas("
                f"{num_cpu_replicas}) before any TensorFlow op")
    return tf.distribute.MirroredStrategy(list(plan.devices)), plan
