"""The training-iteration and sampling benchmark behind ``tools/perf/benchmark.py``.

Train mode times exactly what the training loop runs per iteration: the
compiled ``Trainer.train_iterations`` (noise drawn inside, G step + D step,
NUMERICS §6) on fixed random real images split over the replicas (no input
pipeline). Sample
mode times ``G(z, y, training=False)`` in a ``tf.function``. Each runs
``warmup`` untimed iterations (tracing, compilation), then ``iterations``
timed ones.

``run_benchmark`` goes in named steps: build the trainer (``_build``), time
the training iteration (``_time_training``, optionally alternating with the
release's TF1 graph), count its FLOPs (``_training_flops``), time sampling
(``_time_sampling``), then add the machine's figures: memory peaks, the
measured peak GFLOP/s and each time's fraction of it (``_add_machine_figures``).
"""
import dataclasses

import numpy as np

from sagan_tf.perf import memory, peaks
from sagan_tf.perf.flops import count_graph_flops
from sagan_tf.perf.machine import machine_info
from sagan_tf.perf.timing import timed, timing_figures

#: Keys every result has (tests check them).
RESULT_KEYS = ("median_seconds_per_iteration", "min_seconds_per_iteration",
               "max_seconds_per_iteration", "images_per_second", "peak_host_memory_bytes",
               "peak_device_memory_bytes", "parameters", "flops_per_iteration", "config")
#: Keys of the peak measurement; None where not measured.
PEAK_KEYS = ("peak_gflops", "peak_gflops_by_dtype", "achieved_gflops", "fraction_of_peak",
             "fraction_of_peak_by_kernel", "machine")
#: Options that choose what is measured but are not recorded in ``config``.
_NOT_IN_CONFIG = ("flops", "compare_tf1_reference", "flops_per_iteration")


@dataclasses.dataclass
class BenchmarkOptions:
    """What to time; the flags of ``tools/perf/benchmark.py`` (``define_flags``) say
    what each field means. The model fields are ``TrainConfig``'s (``arch`` is
    both ``generator_type`` and ``discriminator_type``)."""
    arch: str = "test"
    image_size: int = 128
    gf_dim: int = 64
    df_dim: int = 64
    z_dim: int = 128
    number_classes: int = 1000
    batch_size: int = 8
    xla: bool = False
    mixed_precision: str = "none"
    attention_query_block_size: int = 0
    attention: str = "release"
    sn_gradient: str = "release"
    graph_optimization: str = "auto"
    iterations: int = 5
    warmup: int = 2
    threads: int = 0
    mode: str = "train"
    sample_batch_size: int = 100
    seed: int = 0
    flops: bool = True
    flops_per_iteration: float = None
    compare_tf1_reference: bool = False
    peak: bool = True

    @classmethod
    def from_flags(cls, flag_values):
        """The options from parsed flags (``define_flags``)."""
        return cls(**{f.name: flag_values[f.name].value for f in dataclasses.fields(cls)})

    def train_config(self):
        """The ``TrainConfig`` of the timed model and step."""
        from sagan_tf.training.config import TrainConfig  # pylint: disable=import-outside-toplevel
        return TrainConfig(
            batch_size=self.batch_size, image_size=self.image_size, z_dim=self.z_dim,
            gf_dim=self.gf_dim, df_dim=self.df_dim, number_classes=self.number_classes,
            generator_type=self.arch, discriminator_type=self.arch, seed=self.seed,
            xla=self.xla, mixed_precision=self.mixed_precision, attention=self.attention,
            attention_query_block_size=self.attention_query_block_size,
            sn_gradient=self.sn_gradient, graph_optimization=self.graph_optimization)

    def check(self, devices):
        """A ValueError where the options cannot be measured together."""
        if self.compare_tf1_reference and (
                len(devices) != 1 or self.image_size != 128
                or self.arch not in ("test", "baseline") or self.mixed_precision != "none"
                or self.attention != "release" or self.attention_query_block_size):
            raise ValueError("--compare_tf1_reference needs the release's setting: one "
                             "replica, --image_size 128, --arch test|baseline, float32, "
                             "release attention without query blocks")


def _config_record(options, devices):
    """The result's ``config``: the options, the replicas and the TensorFlow version."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    config = {k: v for k, v in dataclasses.asdict(options).items() if k not in _NOT_IN_CONFIG}
    config.update(num_replicas=len(devices), devices=list(devices), tensorflow=tf.__version__)
    return config


def _build(options, strategy):
    """The trainer and the result's model keys (replicas, batch, parameters)."""
    from sagan_tf.models.networks import count_parameters  # pylint: disable=import-outside-toplevel
    from sagan_tf.training.trainer import Trainer  # pylint: disable=import-outside-toplevel
    trainer = Trainer(options.train_config(), strategy)
    result = {"num_replicas": trainer.num_replicas,
              "graph_optimization": trainer.graph_optimization,
              "global_batch_size": trainer.global_batch_size,
              "parameters_generator": count_parameters(trainer.generator),
              "parameters_discriminator": count_parameters(trainer.discriminator)}
    result["parameters"] = result["parameters_generator"] + result["parameters_discriminator"]
    return trainer, result


def _fixed_batch(trainer, options):
    """Random real images in [-1, 1] and labels of one global batch (constants)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    rs = np.random.default_rng(options.seed)
    n, size = trainer.global_batch_size, options.image_size
    images = tf.constant(rs.uniform(-1, 1, (n, size, size, 3)), tf.float32)
    labels = tf.constant(rs.integers(0, options.number_classes, n), tf.int32)
    return images, labels


def _tf1_reference(options):
    """The release's TF1 graph of the same configuration (one tower), or None."""
    if not (options.compare_tf1_reference and options.iterations):
        return None
    # pylint: disable-next=import-outside-toplevel
    from sagan_tf.parity.tf1_release_session import ReleaseGraphSession
    return ReleaseGraphSession(options.batch_size, options.gf_dim, options.df_dim,
                               options.z_dim, options.number_classes, options.arch,
                               options.threads)


def _timed_iterations(iteration, reference, options, result):
    """Warm-up, then ``options.iterations`` timed iterations of the port (and of
    the reference, alternating). Returns ``(times, reference_times, last loss)``
    and sets ``result["first_iteration_seconds"]``."""
    times, reference_times, loss = [], [], None
    if not options.iterations:
        return times, reference_times, loss
    first = []
    timed(iteration, first)
    result["first_iteration_seconds"] = first[0]
    for _ in range(options.warmup - 1):
        iteration()
    for _ in range(options.warmup if reference else 0):
        reference.iteration()
    for i in range(options.iterations):
        # Alternate, in ABBA order: both see the same machine state,
        # and neither always runs right after the other.
        if reference and i % 2 == 0:
            timed(reference.iteration, reference_times)
        loss = timed(iteration, times)
        if reference and i % 2 == 1:
            timed(reference.iteration, reference_times)
    return times, reference_times, loss


def _time_training(trainer, options, result):
    """Times the training iteration; returns its figures. Adds
    ``tf1_reference`` and ``speedup_vs_tf1_reference`` to ``result`` when
    the reference is compared, and ``step_traces``."""
    images, labels = _fixed_batch(trainer, options)
    real = list(trainer.distribute([(images, labels)] * trainer.config.d_step))

    def iteration():
        # What the loop does per iteration, minus reading records.
        [(out, _)], _, _ = trainer.train_iterations([real])
        return float(out["d_loss"])  # waits for the step

    reference = _tf1_reference(options)
    try:
        times, reference_times, loss = _timed_iterations(iteration, reference, options, result)
    finally:
        if reference:
            reference.close()
    n = trainer.global_batch_size
    figures = timing_figures(times, n)
    if reference:
        result["tf1_reference"] = {**timing_figures(reference_times, n),
                                   "parameters": reference.parameters}
        ref_med = result["tf1_reference"]["median_seconds_per_iteration"]
        med = figures["median_seconds_per_iteration"]
        result["speedup_vs_tf1_reference"] = ref_med / med if ref_med and med else None
    if times:
        figures["finite_loss"] = bool(np.isfinite(loss))
    result["step_traces"] = trainer.compiled_iterations().experimental_get_tracing_count()
    return figures


def _training_flops(trainer, options):
    """FLOPs of one iteration: ``options.flops_per_iteration`` if given, else
    the graph's count (``options.flops``), else None."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    if options.flops_per_iteration is not None:
        return int(options.flops_per_iteration)
    if not options.flops:
        return None
    # The same step traced once more without XLA (the profiler does not look
    # inside compiled clusters); tracing changes no state.
    real = list(trainer.distribute([_fixed_batch(trainer, options)] * trainer.config.d_step))
    iterations = trainer.compiled_iterations().function.python_function
    saved = trainer.config.xla
    trainer.config.xla = False
    try:
        fn = tf.function(iterations, autograph=False).get_concrete_function([real])
    finally:
        trainer.config.xla = saved
    return count_graph_flops(fn)


def _time_sampling(generator, options, device):
    """Times ``G(z, y, training=False)`` on batches of ``options.sample_batch_size``;
    returns its figures with ``batch_size`` and ``flops_per_batch``."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    rs = np.random.default_rng(options.seed + 1)
    n = options.sample_batch_size
    z = tf.constant(rs.standard_normal((n, options.z_dim)), tf.float32)
    y = tf.constant(rs.integers(0, options.number_classes, n), tf.int32)
    sample_fn = tf.function(lambda z, y: generator(z, y, training=False, update_sn=False),
                            autograph=False, jit_compile=bool(options.xla))
    times = []
    with tf.device(device):
        for _ in range(options.warmup):
            sample_fn(z, y).numpy()
        for _ in range(options.iterations):
            timed(lambda: sample_fn(z, y).numpy(), times)
    figures = timing_figures(times, n)
    figures["batch_size"] = n
    figures["flops_per_batch"] = (count_graph_flops(sample_fn.get_concrete_function(z, y))
                                  if options.flops else None)
    return figures


def _add_machine_figures(result, options, devices, peak_problem):
    """Memory peaks; with ``options.peak`` the measured peak GFLOP/s
    (``peaks.measure_peaks``); and beside every timing dict (the top level,
    ``sample``, ``tf1_reference``) its achieved GFLOP/s and fraction of peak.
    The TF1 reference is the same model, so it is given the port's FLOP count."""
    result["peak_host_memory_bytes"] = memory.peak_host_memory_bytes()
    result["peak_device_memory_bytes"] = memory.peak_device_memory_bytes(devices)
    result["peak_gflops"] = result["peak_gflops_by_dtype"] = None
    if options.peak:
        result["peak_gflops"], result["peak_gflops_by_dtype"] = peaks.measure_peaks(
            list(devices), options.mixed_precision, peak_problem)
    peaks.add_fraction_of_peak(result, result["flops_per_iteration"], result["peak_gflops"])
    if "tf1_reference" in result:
        peaks.add_fraction_of_peak(result["tf1_reference"], result["flops_per_iteration"],
                                   result["peak_gflops"])
    if result.get("sample"):
        peaks.add_fraction_of_peak(result["sample"], result["sample"]["flops_per_batch"],
                                   result["peak_gflops"])


def run_benchmark(options, devices=("/cpu:0",), strategy=None, peak_problem=None):
    """Builds a Trainer for ``options``, times it, returns the result dict.

    Keys: the ``RESULT_KEYS`` (train figures when ``options.mode`` includes
    train, else the sampling ones), ``num_replicas``, ``global_batch_size``,
    ``graph_optimization`` (what ``auto`` resolved to),
    ``parameters_generator``/``_discriminator``, ``first_iteration_seconds``,
    ``step_traces`` (how often the step function was traced: 1 = no
    retracing), ``finite_loss``, ``sample`` (sampling figures, when timed),
    ``config`` (the options, the replicas and the TensorFlow version),
    ``machine`` (``machine_info``, read before the run adds to the load) and
    the ``PEAK_KEYS``.

    ``devices``: the replicas (``machine.setup_devices``); ``strategy``: an
    existing strategy to use instead of a ``MirroredStrategy`` over
    ``devices`` (tests). ``peak_problem`` overrides the micro-benchmark
    sizes of ``peaks.PEAK_PROBLEMS``.

    ``options.compare_tf1_reference``: also time the release's TF1 graph
    (``sagan_tf.parity.tf1_release_graph``, same configuration, one tower) in
    the same process, its iterations alternating with the port's, so that
    both see the same machine state (on a shared or throttled machine, runs
    minutes apart differ by more than the two codes do). Adds
    ``tf1_reference`` (its timing keys and parameters) and
    ``speedup_vs_tf1_reference`` (reference median / port median; > 1: the
    port is faster).
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    if strategy is not None:
        devices = list(strategy.extended.worker_devices)
    options.check(devices)
    config = _config_record(options, devices)
    machine = machine_info(devices)  # load average before this run adds to it
    trainer, result = _build(options, strategy or tf.distribute.MirroredStrategy(list(devices)))
    train_figures = {}
    if options.mode in ("train", "both"):
        train_figures = _time_training(trainer, options, result)
        result["flops_per_iteration"] = _training_flops(trainer, options)
    sample_figures = None
    if options.mode in ("sample", "both") and options.iterations:
        sample_figures = result["sample"] = _time_sampling(trainer.generator, options,
                                                           devices[0])
    result.update(train_figures or {k: v for k, v in (sample_figures or {}).items()
                                    if k in RESULT_KEYS})
    result.setdefault("flops_per_iteration",
                      sample_figures["flops_per_batch"] if sample_figures else None)
    result["config"] = config
    result["machine"] = machine
    _add_machine_figures(result, options, devices, peak_problem)
    return result


def define_flags(flag_values=None):
    """Defines the flags of ``tools/perf/benchmark.py``: one per ``BenchmarkOptions``
    field, and ``--num_replicas`` (for ``machine.setup_devices``).
    ``flag_values``: where to define them (default: absl's global ``FLAGS``;
    tests parse command lines into a fresh ``flags.FlagValues``)."""
    from absl import flags  # pylint: disable=import-outside-toplevel
    flag_values = flags.FLAGS if flag_values is None else flag_values
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
        "Also time the 2018 release's TF1 graph (sagan_tf/parity/tf1_release_graph.py) of the "
        "same configuration in this process, alternating iterations with the port's; reports "
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
