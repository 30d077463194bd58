r"""Times the SAGAN training iteration and the sampling path (issue #5).

Train mode times exactly what the training loop runs per iteration: noise
drawn from the trainer's generator, ``Trainer.make_inputs_from_global``
(split over replicas) and the compiled ``Trainer.train_step`` (G step + D
step, SPEC §6), on fixed random real images (no input pipeline). Sample mode
times ``G(z, y, training=False)`` in a ``tf.function``. After ``--warmup``
iterations (tracing / compilation) it times ``--iterations`` iterations and
prints ONE JSON line (see ``run_benchmark``).

Examples (docs/PERFORMANCE.md lists the exact command of every figure):

  python tools/benchmark.py --gf_dim 16 --df_dim 16 --number_classes 10 \
      --batch_size 8 --threads 2
  python tools/benchmark.py --xla --mixed_precision mixed_bfloat16 --num_replicas 2
"""
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from sagan_tf import cli  # noqa: E402

FLAGS = flags.FLAGS
#: Keys every result line has (tests check them).
RESULT_KEYS = ("median_seconds_per_iteration", "min_seconds_per_iteration",
               "max_seconds_per_iteration", "images_per_second", "peak_host_memory_bytes",
               "peak_device_memory_bytes", "parameters", "flops_per_iteration", "config")


def setup_devices(num_replicas=1, threads=0):
    """Thread pools and logical CPU replicas; must run before any TensorFlow op.

    Returns the list of replica device names.
    """
    import tensorflow as tf
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if num_replicas > len(gpus):
            raise ValueError(f"--num_replicas {num_replicas} but only {len(gpus)} GPU(s)")
        return [f"/gpu:{i}" for i in range(num_replicas)]
    if num_replicas > 1:
        from sagan_tf.distribute import configure_cpu_replicas
        configure_cpu_replicas(num_replicas)
    return [f"/cpu:{i}" for i in range(num_replicas)]


def _timings(times, images_per_iteration):
    if not times:
        return {"median_seconds_per_iteration": None, "min_seconds_per_iteration": None,
                "max_seconds_per_iteration": None, "images_per_second": None}
    med = statistics.median(times)
    return {"median_seconds_per_iteration": med, "min_seconds_per_iteration": min(times),
            "max_seconds_per_iteration": max(times),
            "images_per_second": images_per_iteration / med if med > 0 else None}


def peak_host_memory_bytes():
    """Peak resident set size of this process (``ru_maxrss``; KiB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) if sys.platform == "darwin" else int(rss) * 1024


def peak_device_memory_bytes(devices):
    """Sum over GPU replicas of ``get_memory_info(...)["peak"]``; None on CPU."""
    import tensorflow as tf
    gpu = [d for d in devices if "gpu" in d.lower()]
    if not gpu:
        return None
    return int(sum(tf.config.experimental.get_memory_info("GPU:" + d.split(":")[-1])["peak"]
                   for d in gpu))


def count_graph_flops(concrete_fn):
    """Floating-point operations of one call of a concrete function (TF profiler).

    Counts the ops of the function's graph (convolutions, matmuls, elementwise
    ops with registered FLOP statistics), i.e. forward and backward passes of
    the traced step. Returns None if the profiler is unavailable.
    """
    import tensorflow as tf
    try:
        opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        opts["output"] = "none"
        prof = tf.compat.v1.profiler.profile(graph=concrete_fn.graph, options=opts)
        return int(prof.total_float_ops)
    except Exception:  # noqa: BLE001 - the figure is optional
        return None


def _reference_module():
    """tools/tf1_reference_benchmark.py, loaded by path (works however this file was loaded)."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tf1_reference_benchmark.py")
    spec = importlib.util.spec_from_file_location("sagan_tf1_reference_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_benchmark(arch="test", image_size=128, gf_dim=64, df_dim=64, z_dim=128,
                  number_classes=1000, batch_size=8, devices=("/cpu:0",), xla=False,
                  mixed_precision="none", attention_query_block_size=0, attention="release",
                  iterations=5, warmup=2, mode="train", sample_batch_size=100, flops=True,
                  seed=0, threads=0, strategy=None, compare_tf1_reference=False):
    """Builds a Trainer for the configuration, times it, returns the result dict.

    Keys: the ``RESULT_KEYS`` (train figures when ``mode`` includes train,
    else the sampling ones), ``num_replicas``, ``global_batch_size``,
    ``parameters_generator``/``_discriminator``, ``first_iteration_seconds``,
    ``step_traces`` (how often the step function was traced: 1 = no retracing),
    ``sample`` (sampling figures, when timed) and ``config`` (the arguments).
    ``strategy``: an existing strategy to use instead of a ``MirroredStrategy``
    over ``devices`` (tests).

    ``compare_tf1_reference``: also build the release's TF1 graph
    (``tools/tf1_reference_benchmark.py``, same configuration, one tower) and
    time it in the same process, its iterations alternating with the port's,
    so that both see the same machine state (on a shared or throttled
    machine, runs minutes apart differ by more than the two codes do). Adds
    ``tf1_reference`` (its timing keys and parameters) and
    ``speedup_vs_tf1_reference`` (reference median / port median; > 1: the
    port is faster).
    """
    import numpy as np
    import tensorflow as tf
    from sagan_tf.networks import count_parameters
    from sagan_tf.training import TrainConfig, Trainer

    if strategy is not None:
        devices = list(strategy.extended.worker_devices)
    if compare_tf1_reference and (
            len(devices) != 1 or image_size != 128 or arch not in ("test", "baseline")
            or mixed_precision != "none" or attention != "release"
            or attention_query_block_size):
        raise ValueError("--compare_tf1_reference needs the release's setting: one "
                         "replica, --image_size 128, --arch test|baseline, float32, "
                         "release attention without query blocks")
    config = dict(arch=arch, image_size=image_size, gf_dim=gf_dim, df_dim=df_dim, z_dim=z_dim,
                  number_classes=number_classes, batch_size=batch_size,
                  num_replicas=len(devices), xla=xla, mixed_precision=mixed_precision,
                  attention_query_block_size=attention_query_block_size, attention=attention,
                  iterations=iterations, warmup=warmup, threads=threads, mode=mode,
                  sample_batch_size=sample_batch_size, seed=seed,
                  devices=list(devices), tensorflow=tf.__version__)
    cfg = TrainConfig(batch_size=batch_size, image_size=image_size, z_dim=z_dim, gf_dim=gf_dim,
                      df_dim=df_dim, number_classes=number_classes, generator_type=arch,
                      discriminator_type=arch, seed=seed, xla=xla,
                      mixed_precision=mixed_precision, attention=attention,
                      attention_query_block_size=attention_query_block_size)
    strategy = strategy or tf.distribute.MirroredStrategy(list(devices))
    trainer = Trainer(cfg, strategy)
    G, D = trainer.generator, trainer.discriminator
    result = {"num_replicas": trainer.num_replicas,
              "global_batch_size": trainer.global_batch_size,
              "parameters_generator": count_parameters(G),
              "parameters_discriminator": count_parameters(D)}
    result["parameters"] = result["parameters_generator"] + result["parameters_discriminator"]

    train_figures = {}
    if mode in ("train", "both"):
        rs = np.random.default_rng(seed)
        n = trainer.global_batch_size
        images = tf.constant(rs.uniform(-1, 1, (n, image_size, image_size, 3)), tf.float32)
        labels = tf.constant(rs.integers(0, number_classes, n), tf.int32)

        def iteration():
            # What the loop does per iteration, minus reading records.
            out, _, _ = trainer.train_step(trainer.make_inputs_from_global(images, labels))
            return float(out["d_loss"])  # waits for the step

        reference = None
        if compare_tf1_reference and iterations:
            reference = _reference_module().ReleaseGraphSession(
                batch_size, gf_dim, df_dim, z_dim, number_classes, arch, threads)
        times, reference_times = [], []

        def timed(fn, into):
            t0 = time.perf_counter()
            value = fn()
            into.append(time.perf_counter() - t0)
            return value

        if iterations:
            t0 = time.perf_counter()
            iteration()
            result["first_iteration_seconds"] = time.perf_counter() - t0
            for _ in range(warmup - 1):
                iteration()
            for _ in range(warmup if reference else 0):
                reference.iteration()
            for i in range(iterations):
                # Alternate, in ABBA order: both see the same machine state,
                # and neither always runs right after the other.
                if reference and i % 2 == 0:
                    timed(reference.iteration, reference_times)
                loss = timed(iteration, times)
                if reference and i % 2 == 1:
                    timed(reference.iteration, reference_times)
        train_figures = _timings(times, n)
        if reference:
            result["tf1_reference"] = {**_timings(reference_times, n),
                                       "parameters": reference.parameters}
            reference.close()
            ref_med, med = (result["tf1_reference"]["median_seconds_per_iteration"],
                            train_figures["median_seconds_per_iteration"])
            result["speedup_vs_tf1_reference"] = ref_med / med if ref_med and med else None
        if times:
            train_figures["finite_loss"] = bool(np.isfinite(loss))
        result["step_traces"] = trainer._compiled_step.experimental_get_tracing_count()
        result["flops_per_iteration"] = None
        if flops:
            # The same step traced once more without XLA (the profiler does
            # not look inside compiled clusters); tracing changes no state.
            inputs = trainer.make_inputs_from_global(images, labels)
            saved = trainer.config.xla
            trainer.config.xla = False
            try:
                fn = tf.function(trainer._step, autograph=False).get_concrete_function(inputs)
            finally:
                trainer.config.xla = saved
            result["flops_per_iteration"] = count_graph_flops(fn)

    sample_figures = None
    if mode in ("sample", "both") and iterations:
        rs = np.random.default_rng(seed + 1)
        z = tf.constant(rs.standard_normal((sample_batch_size, z_dim)), tf.float32)
        y = tf.constant(rs.integers(0, number_classes, sample_batch_size), tf.int32)
        sample_fn = tf.function(lambda z, y: G(z, y, training=False, update_sn=False),
                                autograph=False, jit_compile=bool(xla))
        with tf.device(devices[0]):
            for _ in range(warmup):
                sample_fn(z, y).numpy()
            times = []
            for _ in range(iterations):
                t0 = time.perf_counter()
                sample_fn(z, y).numpy()
                times.append(time.perf_counter() - t0)
        sample_figures = _timings(times, sample_batch_size)
        sample_figures["batch_size"] = sample_batch_size
        sample_figures["flops_per_batch"] = (
            count_graph_flops(sample_fn.get_concrete_function(z, y)) if flops else None)
        result["sample"] = sample_figures

    result.update(train_figures or {k: v for k, v in (sample_figures or {}).items()
                                    if k in RESULT_KEYS})
    result.setdefault("flops_per_iteration",
                      sample_figures["flops_per_batch"] if sample_figures else None)
    result["peak_host_memory_bytes"] = peak_host_memory_bytes()
    result["peak_device_memory_bytes"] = peak_device_memory_bytes(devices)
    result["config"] = config
    return result


def define_flags():
    """Defines the command-line flags (only when run as a script, so that importing
    this module next to other absl programs, e.g. in tests, defines nothing)."""
    flags.DEFINE_enum("arch", "test", ["test", "baseline", "test_64"],
                      "Generator and discriminator type.")
    flags.DEFINE_integer("image_size", 128, "Image side.")
    flags.DEFINE_integer("gf_dim", 64, "Generator base channels.")
    flags.DEFINE_integer("df_dim", 64, "Discriminator base channels.")
    flags.DEFINE_integer("z_dim", 128, "Latent dimension.")
    flags.DEFINE_integer("number_classes", 1000, "Classes.")
    flags.DEFINE_integer("batch_size", 8, "Images per replica.")
    flags.DEFINE_integer("num_replicas", 1,
                         "Replicas: the first N GPUs if there are GPUs, else N logical CPU devices.")
    flags.DEFINE_boolean("xla", False, "TrainConfig.xla: XLA-compile the forward/backward passes.")
    flags.DEFINE_enum("mixed_precision", "none", ["none", "mixed_bfloat16", "mixed_float16"],
                      "TrainConfig.mixed_precision.")
    flags.DEFINE_integer("attention_query_block_size", 0,
                         "Memory-efficient attention: query block size (0: one-shot).")
    flags.DEFINE_enum("attention", "release", ["release", "slide"], "Attention variant.")
    flags.DEFINE_integer("iterations", 5,
                         "Timed iterations; 0: nothing runs, only parameters and the graph's "
                         "FLOPs are reported (e.g. for configurations too big for this machine).",
                         lower_bound=0)
    flags.DEFINE_integer("warmup", 2, "Untimed iterations first (tracing, compilation).",
                         lower_bound=1)
    flags.DEFINE_integer("threads", 0, "intra- and inter-op threads (0: TensorFlow's default).")
    flags.DEFINE_enum("mode", "train", ["train", "sample", "both"], "What to time.")
    flags.DEFINE_integer("sample_batch_size", 100,
                         "Batch of the sampling path (the release's eval batch: 100).")
    flags.DEFINE_boolean("flops", True, "Count the FLOPs of one iteration from the graph.")
    flags.DEFINE_integer("seed", 0, "Seed of weights, noise and the fixed real images.")
    flags.DEFINE_boolean(
        "compare_tf1_reference", False,
        "Also time the 2018 release's TF1 graph (tools/tf1_reference_benchmark.py) of the same "
        "configuration in this process, alternating iterations with the port's; reports "
        "tf1_reference and speedup_vs_tf1_reference. One replica, 128x128, test/baseline only.")


def main(argv):
    cli.quiet_tensorflow()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    devices = setup_devices(FLAGS.num_replicas, FLAGS.threads)
    result = run_benchmark(
        arch=FLAGS.arch, image_size=FLAGS.image_size, gf_dim=FLAGS.gf_dim,
        df_dim=FLAGS.df_dim, z_dim=FLAGS.z_dim, number_classes=FLAGS.number_classes,
        batch_size=FLAGS.batch_size, devices=devices, xla=FLAGS.xla,
        mixed_precision=FLAGS.mixed_precision,
        attention_query_block_size=FLAGS.attention_query_block_size,
        attention=FLAGS.attention, iterations=FLAGS.iterations, warmup=FLAGS.warmup,
        mode=FLAGS.mode, sample_batch_size=FLAGS.sample_batch_size, flops=FLAGS.flops,
        seed=FLAGS.seed, threads=FLAGS.threads,
        compare_tf1_reference=FLAGS.compare_tf1_reference)
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
