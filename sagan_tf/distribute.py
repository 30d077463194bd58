"""Distribution strategies for training: mirrored, multi-worker, TPU, logical CPUs.

The release trained with 4 GPU "towers" of 64 images each and averaged the
tower gradients (NUMERICS §6). In TF2 that is a `tf.distribute.Strategy` whose
replicas play the towers; the per-replica batch is `--batch_size`, the number
of replicas comes from the strategy (`--num_towers` is informational only).

On a CPU-only machine `configure_cpu_replicas(n)` splits the one physical CPU
into `n` logical devices so that a real `MirroredStrategy` with `n` replicas
can be exercised (tests, the demo). It must run before TensorFlow executes any
op, because the runtime fixes the device list when it initialises.
"""
import tensorflow as tf

__all__ = ["STRATEGY_KINDS", "configure_cpu_replicas", "make_strategy"]

#: Accepted values of `make_strategy(kind=...)` / `--strategy`.
STRATEGY_KINDS = ("mirrored", "multiworker", "tpu", "default")


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


def make_strategy(kind="mirrored", num_cpu_replicas=0, tpu=None):
    """Creates the distribution strategy named by `kind`.

    Args:
      kind: one of `STRATEGY_KINDS`:
        * "mirrored": `MirroredStrategy` over all visible GPUs; on a CPU-only
          machine with `num_cpu_replicas > 1`, over that many logical CPUs
          (call `configure_cpu_replicas` first), else one CPU replica.
        * "multiworker": `MultiWorkerMirroredStrategy`; the cluster comes from
          the `TF_CONFIG` environment variable.
        * "tpu": `TPUStrategy` on the TPU named by `tpu` (resolved with
          `TPUClusterResolver`; `None` = the local/default TPU).
        * "default": the default (single-device, no-op) strategy.
      num_cpu_replicas: logical CPU replicas for "mirrored" on a CPU-only
        machine; 0 or 1 means one replica.
      tpu: TPU name or grpc address for "tpu".

    Returns:
      A `tf.distribute.Strategy`.

    Raises:
      ValueError: for an unknown `kind`, or `num_cpu_replicas > 1` with a
        strategy or machine it cannot apply to.
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
        return tf.distribute.get_strategy()
    if kind == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)

    # kind == "mirrored"
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        if num_cpu_replicas > 1:
            raise ValueError(
                f"num_cpu_replicas={num_cpu_replicas} is for CPU-only machines, but "
                f"{len(gpus)} GPU(s) are visible; drop --num_cpu_replicas (the GPUs "
                f"are the replicas) or hide the GPUs with CUDA_VISIBLE_DEVICES=''")
        return tf.distribute.MirroredStrategy()
    if num_cpu_replicas > 1:
        cpus = tf.config.list_logical_devices("CPU")
        if len(cpus) < num_cpu_replicas:
            raise RuntimeError(
                f"num_cpu_replicas={num_cpu_replicas} but only {len(cpus)} logical CPU "
                f"device(s) exist; call sagan_tf.distribute.configure_cpu_replicas("
                f"{num_cpu_replicas}) before any TensorFlow op")
        return tf.distribute.MirroredStrategy(
            [f"/cpu:{i}" for i in range(num_cpu_replicas)])
    return tf.distribute.MirroredStrategy(["/cpu:0"])
