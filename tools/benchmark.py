r"""Times the SAGAN training iteration and the sampling path (issue #5).

Train mode times exactly what the training loop runs per iteration: noise
drawn from the trainer's generator, ``Trainer.make_inputs_from_global``
(split over replicas) and the compiled ``Trainer.train_step`` (G step + D
step, NUMERICS §6), on fixed random real images (no input pipeline). Sample mode
times ``G(z, y, training=False)`` in a ``tf.function``. After ``--warmup``
iterations (tracing / compilation) it times ``--iterations`` iterations and
prints ONE JSON line (see ``run_benchmark``) on stdout, and a short
human-readable summary on stderr.

Every time is reported beside the machine's limit: unless ``--nopeak``, a
short matmul and 3x3-convolution micro-benchmark (``measure_peak_gflops``)
runs in the same process, on the same device and thread pools, in float32
and in the compute dtype of ``--mixed_precision``; the iteration's achieved
GFLOP/s (counted FLOPs / median time) is then given as a fraction of that
peak. ``machine`` records the CPU model, its bf16/fp16 units and the GPUs.

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
#: Keys added by the peak measurement (issue #15); None where not measured.
PEAK_KEYS = ("peak_gflops", "peak_gflops_by_dtype", "achieved_gflops", "fraction_of_peak",
             "fraction_of_peak_by_kernel", "machine")
#: Micro-benchmark problems (``measure_peak_gflops``). CPU: a 2048^2 matmul and
#: a 3x3 convolution of [8, 64, 64, 128] -> 128 channels (the sizes of the
#: mid-network convolutions at batch 8). GPU: larger, and ``chain`` of them
#: per call, so that launch overhead does not count.
PEAK_PROBLEMS = {
    "cpu": dict(matmul_n=2048, conv_shape=(8, 64, 64, 128), chain=1, repeats=3),
    "gpu": dict(matmul_n=8192, conv_shape=(64, 64, 64, 256), chain=10, repeats=5),
}
#: /proc/cpuinfo flags of half-precision arithmetic units (x86).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
FP16_FLAGS = ("avx512_fp16", "amx_fp16")


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


def parse_cpuinfo(text):
    """CPU model and half-precision units from the text of ``/proc/cpuinfo``.

    Returns ``{"cpu_model", "cpu_family", "cpu_model_number", "bf16_units",
    "fp16_units", "avx512_bf16", "amx"}``: ``bf16_units``/``fp16_units`` list
    the flags of arithmetic units present (empty: none, half precision is
    emulated in float32), ``amx`` is whether AMX tiles exist. Fields missing
    from the text are None (non-x86 machines); only the first processor's
    entry is read (all are the same on the machines this runs on).
    """
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # end of the first processor's entry
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags_ = set(fields.get("flags", "").split())
    return {"cpu_model": fields.get("model name"),
            "cpu_family": fields.get("cpu family"),
            "cpu_model_number": fields.get("model"),
            "bf16_units": [f for f in BF16_FLAGS if f in flags_],
            "fp16_units": [f for f in FP16_FLAGS if f in flags_],
            "avx512_bf16": "avx512_bf16" in flags_,
            "amx": "amx_tile" in flags_}


def machine_info(devices=()):
    """What the figures of this run can be judged against (the ``machine`` key).

    CPU model and half-precision units (``parse_cpuinfo``), the CPUs this
    process may use, the 1-minute load average when the run started (a shared
    machine's figures are only comparable at similar load), and for each GPU
    replica its name and compute capability
    (``tf.config.experimental.get_device_details``).
    """
    import tensorflow as tf
    try:
        with open("/proc/cpuinfo") as f:
            info = parse_cpuinfo(f.read())
    except OSError:
        info = parse_cpuinfo("")
    import platform
    info["cpu_model"] = info["cpu_model"] or platform.processor() or None
    info["logical_cpus"] = os.cpu_count()
    try:
        info["cpus_available"] = len(os.sched_getaffinity(0))
    except AttributeError:
        info["cpus_available"] = os.cpu_count()
    try:
        info["load_average_1min"] = os.getloadavg()[0]
    except OSError:
        info["load_average_1min"] = None
    gpus = []
    physical = tf.config.list_physical_devices("GPU")
    for d in devices:
        if "gpu" not in d.lower():
            continue
        index = int(d.split(":")[-1])
        details = tf.config.experimental.get_device_details(physical[index]) \
            if index < len(physical) else {}
        capability = details.get("compute_capability")
        gpus.append({"device": d, "name": details.get("device_name"),
                     "compute_capability": ".".join(map(str, capability))
                     if capability else None})
    info["gpus"] = gpus
    info["tensor_float_32"] = bool(
        tf.config.experimental.tensor_float_32_execution_enabled()) if gpus else None
    return info


def peak_problem_flops(matmul_n, conv_shape):
    """FLOPs of one micro-benchmark op: ``2 n^3`` for the n x n matmul and
    ``2 B H W C^2 9`` for the SAME 3x3 convolution of [B, H, W, C] to C channels
    (a multiply-add counts 2, the convention of the graph count)."""
    b, h, w, c = conv_shape
    return {"matmul": 2 * matmul_n ** 3, "conv": 2 * b * h * w * c * c * 9}


def measure_peak_gflops(dtype="float32", device="/cpu:0", matmul_n=2048,
                        conv_shape=(8, 64, 64, 128), chain=1, repeats=3, return_details=False):
    """Best achieved GFLOP/s of a matmul and a 3x3 convolution in ``dtype``.

    One ``tf.function`` per kernel runs ``chain`` dependent ops (each one's
    output is the next one's input, so none can be skipped; the weights are
    scaled so that values stay O(1) in any dtype) and returns one element,
    whose ``numpy()`` waits for the device. The function is called once
    untimed (tracing, autotuning), then ``repeats`` times; the best time
    counts, the usual convention for a peak. Returns ``{"matmul": GFLOP/s,
    "conv": GFLOP/s}``; with ``return_details`` also the FLOPs per call,
    the best seconds and the functions (tests).
    """
    import numpy as np
    import tensorflow as tf
    rs = np.random.default_rng(0)
    b, h, w, c = conv_shape
    def normal(shape, scale=1.0):
        return tf.cast(rs.standard_normal(shape, dtype=np.float32) * np.float32(scale), dtype)

    with tf.device(device):
        a = normal((matmul_n, matmul_n))
        m = normal((matmul_n, matmul_n), 1 / np.sqrt(matmul_n))
        x = normal(conv_shape)
        k = normal((3, 3, c, c), 1 / np.sqrt(9 * c))

    def matmuls(y, m):
        for _ in range(chain):
            y = tf.linalg.matmul(y, m)
        return y[0, 0]

    def convs(y, k):
        for _ in range(chain):
            y = tf.nn.conv2d(y, k, strides=1, padding="SAME")
        return y[0, 0, 0, 0]

    per_op = peak_problem_flops(matmul_n, conv_shape)
    out, details = {}, {}
    for name, body, args in (("matmul", matmuls, (a, m)), ("conv", convs, (x, k))):
        fn = tf.function(body, autograph=False)
        with tf.device(device):
            fn(*args).numpy()
            best = float("inf")
            for _ in range(max(1, repeats)):
                t0 = time.perf_counter()
                fn(*args).numpy()
                best = min(best, time.perf_counter() - t0)
        flops_per_call = chain * per_op[name]
        out[name] = flops_per_call / best / 1e9
        details[name] = {"flops_per_call": flops_per_call, "best_seconds": best,
                         "function": fn, "args": args}
    return (out, details) if return_details else out


def measure_peaks(devices, mixed_precision="none", problem=None):
    """``peak_gflops`` and ``peak_gflops_by_dtype`` of a run (see ``run_benchmark``).

    Measures float32 and, under mixed precision, its compute dtype on the
    first replica's device. On GPUs each replica is its own device, so the
    peak of the run is the per-device figure times the number of GPU
    replicas; logical CPU replicas share the same cores, so it is not
    multiplied.
    """
    kind = "gpu" if "gpu" in devices[0].lower() else "cpu"
    problem = dict(PEAK_PROBLEMS[kind], **(problem or {}))
    compute = {"none": "float32", "mixed_bfloat16": "bfloat16",
               "mixed_float16": "float16"}[mixed_precision]
    by_dtype = {}
    for dtype in dict.fromkeys(("float32", compute)):
        by_dtype[dtype] = measure_peak_gflops(dtype, devices[0], **problem)
    scale = len(devices) if kind == "gpu" else 1
    peak = {"dtype": compute, "devices_counted": scale,
            **{k: v * scale for k, v in by_dtype[compute].items()}}
    return peak, {"per_device": by_dtype, "problem": dict(problem, device=devices[0])}


def add_fraction_of_peak(figures, flops, peak):
    """Adds ``achieved_gflops`` (FLOPs / median seconds), ``fraction_of_peak``
    (achieved / the better of the matmul and conv peaks: the best this machine
    did in the dtype) and ``fraction_of_peak_by_kernel`` to a timing dict;
    None where the FLOPs, the time or the peak is unknown."""
    med = figures.get("median_seconds_per_iteration")
    achieved = flops / med / 1e9 if flops and med else None
    figures["achieved_gflops"] = achieved
    if achieved is None or not peak:
        figures["fraction_of_peak"] = figures["fraction_of_peak_by_kernel"] = None
    else:
        figures["fraction_of_peak"] = achieved / max(peak["matmul"], peak["conv"])
        figures["fraction_of_peak_by_kernel"] = {k: achieved / peak[k]
                                                 for k in ("matmul", "conv")}
    return figures


def summary_line(result):
    """One human-readable line: each time beside its achieved GFLOP/s and fraction of peak."""
    def part(name, fig, unit="iteration"):
        med = fig.get("median_seconds_per_iteration")
        if med is None:
            return f"{name}: not timed"
        text = f"{name}: {med:.4g} s/{unit} (min {fig['min_seconds_per_iteration']:.4g})"
        if fig.get("achieved_gflops"):
            text += f", {fig['achieved_gflops']:.1f} GFLOP/s"
            if fig.get("fraction_of_peak") is not None:
                text += f" = {100 * fig['fraction_of_peak']:.0f}% of peak"
        return text

    sampling_only = result["config"]["mode"] == "sample"
    parts = [part("sampling" if sampling_only else "iteration", result,
                  "batch" if sampling_only else "iteration")]
    if "tf1_reference" in result:
        parts.append(part("TF1 reference", result["tf1_reference"]))
    if result.get("sample") and result["config"]["mode"] == "both":
        parts.append(part("sampling", result["sample"], "batch"))
    peak = result.get("peak_gflops")
    if peak:
        parts.append(f"peak {peak['dtype']}: matmul {peak['matmul']:.1f}, "
                     f"conv {peak['conv']:.1f} GFLOP/s")
    m = result.get("machine") or {}
    gpus = ", ".join(g["name"] or g["device"] for g in m.get("gpus") or [])
    load = m.get("load_average_1min")
    parts.append(f"machine: {gpus or m.get('cpu_model')} "
                 f"(bf16 units: {', '.join(m.get('bf16_units') or []) or 'none'}; "
                 f"load {'?' if load is None else f'{load:.1f}'})")
    return "; ".join(parts)


def _reference_module():
    """tools/tf1_reference_benchmark.py, loaded by path (works however this file was loaded)."""
    return cli.load_tool("tf1_reference_benchmark", "sagan_tf1_reference_benchmark")


def run_benchmark(arch="test", image_size=128, gf_dim=64, df_dim=64, z_dim=128,
                  number_classes=1000, batch_size=8, devices=("/cpu:0",), xla=False,
                  mixed_precision="none", attention_query_block_size=0, attention="release",
                  iterations=5, warmup=2, mode="train", sample_batch_size=100, flops=True,
                  seed=0, threads=0, strategy=None, compare_tf1_reference=False,
                  sn_gradient="release", peak=True, peak_problem=None,
                  flops_per_iteration=None, graph_optimization="auto"):
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

    ``peak``: measure the machine's peak after the timing, in the same
    process (``measure_peaks``; ``peak_problem`` overrides the sizes of
    ``PEAK_PROBLEMS``) and add ``peak_gflops`` ({"dtype", "matmul", "conv",
    "devices_counted"}: GFLOP/s of the compute dtype), ``peak_gflops_by_dtype``
    (float32 and the compute dtype, per device, and the problem sizes), and to
    every timing dict (the top level, ``sample``, ``tf1_reference``)
    ``achieved_gflops``, ``fraction_of_peak`` and ``fraction_of_peak_by_kernel``
    (``add_fraction_of_peak``). The TF1 reference is the same model, so it is
    given the port's FLOP count. ``machine`` (``machine_info``) is always
    added. ``flops_per_iteration``: use this count instead of counting the
    graph (e.g. the same configuration counted by an earlier run).

    ``graph_optimization``: ``TrainConfig.graph_optimization`` (``auto``,
    ``full``: TensorFlow's Grappler, ``light``: ``sagan_tf.compilation``'s);
    the result's ``graph_optimization`` is what ``auto`` resolved to.
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
                  sn_gradient=sn_gradient, iterations=iterations, warmup=warmup,
                  threads=threads, mode=mode,
                  sample_batch_size=sample_batch_size, seed=seed,
                  graph_optimization=graph_optimization,
                  devices=list(devices), tensorflow=tf.__version__)
    cfg = TrainConfig(batch_size=batch_size, image_size=image_size, z_dim=z_dim, gf_dim=gf_dim,
                      df_dim=df_dim, number_classes=number_classes, generator_type=arch,
                      discriminator_type=arch, seed=seed, xla=xla,
                      mixed_precision=mixed_precision, attention=attention,
                      attention_query_block_size=attention_query_block_size,
                      sn_gradient=sn_gradient, graph_optimization=graph_optimization)
    machine = machine_info(devices)  # load average before this run adds to it
    strategy = strategy or tf.distribute.MirroredStrategy(list(devices))
    trainer = Trainer(cfg, strategy)
    G, D = trainer.generator, trainer.discriminator
    result = {"num_replicas": trainer.num_replicas,
              "graph_optimization": trainer.graph_optimization,
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
        result["flops_per_iteration"] = (None if flops_per_iteration is None
                                         else int(flops_per_iteration))
        if flops and flops_per_iteration is None:
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
    config["peak"] = peak
    result["config"] = config
    result["machine"] = machine
    result["peak_gflops"] = result["peak_gflops_by_dtype"] = None
    if peak:
        result["peak_gflops"], result["peak_gflops_by_dtype"] = measure_peaks(
            list(devices), mixed_precision, peak_problem)
    add_fraction_of_peak(result, result["flops_per_iteration"], result["peak_gflops"])
    if "tf1_reference" in result:
        add_fraction_of_peak(result["tf1_reference"], result["flops_per_iteration"],
                             result["peak_gflops"])
    if sample_figures:
        add_fraction_of_peak(sample_figures, sample_figures["flops_per_batch"],
                             result["peak_gflops"])
    return result


def define_flags(flag_values=None):
    """Defines the command-line flags (only when run as a script, so that importing
    this module next to other absl programs, e.g. in tests, defines nothing).
    ``flag_values``: where to define them (default: absl's global ``FLAGS``;
    tests parse command lines into a fresh ``flags.FlagValues``)."""
    flag_values = FLAGS if flag_values is None else flag_values
    flags.DEFINE_enum("arch", "test", ["test", "baseline", "test_64"],
                      "Generator and discriminator type.", flag_values=flag_values)
    flags.DEFINE_integer("image_size", 128, "Image side.", flag_values=flag_values)
    flags.DEFINE_integer("gf_dim", 64, "Generator base channels.", flag_values=flag_values)
    flags.DEFINE_integer("df_dim", 64, "Discriminator base channels.", flag_values=flag_values)
    flags.DEFINE_integer("z_dim", 128, "Latent dimension.", flag_values=flag_values)
    flags.DEFINE_integer("number_classes", 1000, "Classes.", flag_values=flag_values)
    flags.DEFINE_integer("batch_size", 8, "Images per replica.", flag_values=flag_values)
    flags.DEFINE_integer("num_replicas", 1,
                         "Replicas: the first N GPUs if there are GPUs, else N logical CPU devices.",
                         flag_values=flag_values)
    flags.DEFINE_boolean("xla", False, "TrainConfig.xla: XLA-compile the forward/backward passes.",
                         flag_values=flag_values)
    flags.DEFINE_enum("mixed_precision", "none", ["none", "mixed_bfloat16", "mixed_float16"],
                      "TrainConfig.mixed_precision.", flag_values=flag_values)
    flags.DEFINE_integer("attention_query_block_size", 0,
                         "Memory-efficient attention: query block size (0: one-shot).",
                         flag_values=flag_values)
    flags.DEFINE_enum("attention", "release", ["release", "slide"], "Attention variant.",
                      flag_values=flag_values)
    flags.DEFINE_enum("sn_gradient", "release", ["release", "exact"],
                      "TrainConfig.sn_gradient: spectral-norm backward (docs/NUMERICS.md §1.2).",
                      flag_values=flag_values)
    flags.DEFINE_integer("iterations", 5,
                         "Timed iterations; 0: nothing runs, only parameters and the graph's "
                         "FLOPs are reported (e.g. for configurations too big for this machine).",
                         lower_bound=0, flag_values=flag_values)
    flags.DEFINE_integer("warmup", 2, "Untimed iterations first (tracing, compilation).",
                         lower_bound=1, flag_values=flag_values)
    flags.DEFINE_integer("threads", 0, "intra- and inter-op threads (0: TensorFlow's default).",
                         flag_values=flag_values)
    flags.DEFINE_enum("mode", "train", ["train", "sample", "both"], "What to time.",
                      flag_values=flag_values)
    flags.DEFINE_integer("sample_batch_size", 100,
                         "Batch of the sampling path (the release's eval batch: 100).",
                         flag_values=flag_values)
    flags.DEFINE_boolean("flops", True, "Count the FLOPs of one iteration from the graph.",
                         flag_values=flag_values)
    flags.DEFINE_integer("seed", 0, "Seed of weights, noise and the fixed real images.",
                         flag_values=flag_values)
    flags.DEFINE_boolean(
        "compare_tf1_reference", False,
        "Also time the 2018 release's TF1 graph (tools/tf1_reference_benchmark.py) of the same "
        "configuration in this process, alternating iterations with the port's; reports "
        "tf1_reference and speedup_vs_tf1_reference. One replica, 128x128, test/baseline only.",
        flag_values=flag_values)
    flags.DEFINE_boolean(
        "peak", True,
        "Measure this machine's peak GFLOP/s (a short matmul and 3x3-conv micro-benchmark in "
        "this process, float32 and the --mixed_precision compute dtype; a few seconds on CPU) "
        "and report achieved GFLOP/s and fraction of peak beside every time. --nopeak: skip.",
        flag_values=flag_values)
    flags.DEFINE_enum(
        "graph_optimization", "auto", ["auto", "full", "light"],
        "Grappler settings of the step, as train_imagenet.py's flag: light (one round; memory, "
        "layout, loop and implementation-selector passes off: a shorter first iteration, "
        "docs/PERFORMANCE.md §6.1), full (TensorFlow's default), auto (light on CPUs).",
        flag_values=flag_values)
    flags.DEFINE_float(
        "flops_per_iteration", None,
        "Use this FLOP count of one iteration instead of counting the graph (saves the extra "
        "trace; e.g. the count of an earlier run of the same configuration).",
        lower_bound=0, flag_values=flag_values)


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
        compare_tf1_reference=FLAGS.compare_tf1_reference, sn_gradient=FLAGS.sn_gradient,
        peak=FLAGS.peak, flops_per_iteration=FLAGS.flops_per_iteration,
        graph_optimization=FLAGS.graph_optimization)
    print(json.dumps(result, sort_keys=True), flush=True)
    print(summary_line(result), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
