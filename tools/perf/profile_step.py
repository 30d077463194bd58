r"""Where the training iteration's time goes: op-level profile, A/B ratios, first-iteration phases.

Three measurements of ``Trainer.train_iterations`` (one iteration per call),
all in ONE process so that variants see the same machine state (on a shared
machine, runs minutes apart differ by more than the variants do):

``--what ratios``: builds one trainer per ``--variants`` entry (``fp32``,
``bf16``) and, with ``--tf1_reference``, the release's TF1 graph
(``sagan_tf/parity/tf1_release_graph.py``); after warm-up, times ``--rounds`` rounds,
each running every variant ``--steps`` times, the order reversed every other
round (ABBA); prints each variant's median and minimum seconds per
iteration and the ratios of medians and of minima to the first variant and
to the TF1 reference.

``--what ops``: the same variants, each profiled over ``--steps`` iterations
with ``tf.profiler.experimental`` (after warm-up, ``sagan_tf.perf.op_profile``):
the time of every TensorFlow op is summed per op type (the host-side
duration of the op's kernel, as the TF profiler's "TensorFlow Op" stats show
it; ops on the two inter-op threads can overlap, so the column sums to more
than the wall time on a busy graph). Prints the top ``--top`` op types per
variant in ms per iteration, with counts; ``--flops`` adds the
convolutions' achieved GFLOP/s beside the measured conv peak.

``--what first``: the first iteration of a fresh process split into its
phases: tracing the Python step (``get_concrete_function``), the first call
(graph optimisation by Grappler, kernel creation, execution), and a second
call (steady state), with the number of ops in the traced graph. Run it
once per variant, each in a new process; ``--grappler`` sets Grappler
``RewriterConfig`` fields for every call (e.g. ``--grappler
layout_optimizer=OFF``) to see what a pass costs. The plain variants run the
trainer's default Grappler settings (``--graph_optimization auto``: light on
a CPU, ``sagan_tf/training/compilation.py``); the ``_full`` variants TensorFlow's.

  python tools/perf/profile_step.py --what ratios --variants fp32,bf16 --tf1_reference
  python tools/perf/profile_step.py --what ops --variants fp32,bf16 --steps 3
  python tools/perf/profile_step.py --what first --variants fp32

Sizes default to the small reference configuration (gf=df=16, batch 8, 10
classes, 128x128, 2 threads); ``--gf_dim 64 --df_dim 64 --number_classes
1000`` is the paper width. Prints one JSON line on stdout, tables on stderr.
"""
import collections
import json
import os
import sys
import time

from absl import app, flags

from sagan_tf import cli
from sagan_tf.perf import op_profile, peaks
from sagan_tf.perf.flops import CONV_KERNELS, conv_flops
from sagan_tf.perf.machine import machine_info, setup_devices
from sagan_tf.perf.timing import alternate

FLAGS = flags.FLAGS
#: ``--variants`` names -> ``TrainConfig.mixed_precision``. ``bf16_unfused_bn``
#: is ``bf16`` with the batch norms traced on their float32 (unfused) path,
#: as before the fused half-precision kernel (an A/B in one process).
VARIANTS = {"fp32": "none", "bf16": "mixed_bfloat16", "bf16_unfused_bn": "mixed_bfloat16"}
#: ``<variant>_full``: the same, its step optimised by TensorFlow's default
#: Grappler (``graph_optimization="full"``) instead of the trainer's ``auto``.
VARIANTS.update({k + "_full": v for k, v in list(VARIANTS.items())})


def make_trainer(variant, size):
    """A ``Trainer`` of the size dict in the variant's precision, and its fixed inputs."""
    import numpy as np
    import tensorflow as tf

    from sagan_tf.training.config import TrainConfig
    from sagan_tf.training.trainer import Trainer
    cfg = TrainConfig(batch_size=size["batch_size"], image_size=128, gf_dim=size["gf_dim"],
                      df_dim=size["df_dim"], number_classes=size["number_classes"],
                      generator_type="test", discriminator_type="test", seed=0,
                      mixed_precision=VARIANTS[variant],
                      graph_optimization="full" if variant.endswith("_full") else "auto")
    trainer = Trainer(cfg, tf.distribute.MirroredStrategy(["/cpu:0"]))
    rs = np.random.default_rng(0)
    n = size["batch_size"]
    images = tf.constant(rs.uniform(-1, 1, (n, 128, 128, 3)), tf.float32)
    labels = tf.constant(rs.integers(0, size["number_classes"], n), tf.int32)
    real = list(trainer.distribute([(images, labels)]))

    def iteration():
        [(out, _)], _, _ = trainer.train_iterations([real])
        return float(out["d_loss"])

    if variant.startswith("bf16_unfused_bn"):
        from sagan_tf.models import layers
        fused, layers._uses_fused_kernel = layers._uses_fused_kernel, lambda x, training: False
        try:
            iteration()  # traces now, with the patch
        finally:
            layers._uses_fused_kernel = fused
    return trainer, iteration


def _size():
    return dict(gf_dim=FLAGS.gf_dim, df_dim=FLAGS.df_dim, number_classes=FLAGS.number_classes,
                batch_size=FLAGS.batch_size)


def run_ratios(variants, size, rounds, steps, warmup, tf1_reference):
    """ABBA-alternated timing of the variants (and the TF1 release graph)."""
    runners = {}
    for v in variants:
        runners[v] = make_trainer(v, size)[1]
    if tf1_reference:
        from sagan_tf.parity.tf1_release_session import ReleaseGraphSession
        ref = ReleaseGraphSession(size["batch_size"], size["gf_dim"], size["df_dim"], 128,
                                  size["number_classes"], "test", FLAGS.threads)
        runners["tf1_release_fp32"] = ref.iteration
    out, load = alternate(runners, rounds, steps, warmup)
    names = list(runners)
    base = names[0]
    for k in names:
        out[k]["median_vs_" + base] = out[k]["median"] / out[base]["median"]
        out[k]["min_vs_" + base] = out[k]["min"] / out[base]["min"]
        if tf1_reference:
            ref = out["tf1_release_fp32"]
            out[k]["median_vs_tf1_release_fp32"] = out[k]["median"] / ref["median"]
            out[k]["min_vs_tf1_release_fp32"] = out[k]["min"] / ref["min"]
    return {"ratios": out, "load_1min_during": load}


def _conv_rates(trainer, per_name, per_iter):
    """``{graph op type: {"gflop", "ms", "gflops_per_s"}}`` of the step's
    convolutions that ran (``per_name``: the profile by op name)."""
    executed = {k.rsplit(":", 1)[0] for k in per_name}
    # The step's one traced graph (op names as in the profile).
    graph = trainer.compiled_iterations().function._list_all_concrete_functions()[0].graph  # pylint: disable=protected-access
    flops = conv_flops(graph, executed)
    rates = {}
    for graph_type, kernels in CONV_KERNELS.items():
        ms = sum(per_iter.get(k, {"ms": 0.0})["ms"] for k in kernels)
        if flops.get(graph_type) and ms:
            rates[graph_type] = {"gflop": flops[graph_type] / 1e9, "ms": ms,
                                 "gflops_per_s": flops[graph_type] / 1e9 / (ms / 1e3)}
    return rates


def profile_variant(variant, size, steps, warmup, by_name=False, with_flops=False):
    """One variant's op table: ``{"wall_ms_per_iteration", "ops": {op: {"ms",
    "count"}} per iteration, "op_ms_total"}``, and ``conv_rates`` with ``with_flops``."""
    trainer, fn = make_trainer(variant, size)
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    wall = (time.perf_counter() - t0) / steps
    table = op_profile.profile_ops(fn, steps, by_name=by_name or with_flops)
    per_name = None
    if with_flops and not by_name:
        per_name, table = table, op_profile.by_op_type(table)
    per_iter = {k: {"ms": x["us"] / 1e3 / steps, "count": x["count"] / steps}
                for k, x in table.items()}
    out = {"wall_ms_per_iteration": wall * 1e3, "ops": per_iter,
           "op_ms_total": sum(x["ms"] for x in per_iter.values())}
    if per_name is not None:
        out["conv_rates"] = _conv_rates(trainer, per_name, per_iter)
    return out


def add_conv_peak_fractions(tables):
    """Measures the CPU's float32 and bfloat16 conv peaks (``sagan_tf.perf.peaks``)
    and adds each conv rate's ``fraction_of_conv_peak``; returns the peaks."""
    measured = {dtype: peaks.measure_peak_gflops(dtype, "/cpu:0", **peaks.PEAK_PROBLEMS["cpu"])
                for dtype in ("float32", "bfloat16")}
    for v, t in tables.items():
        dtype = "float32" if VARIANTS[v] == "none" else "bfloat16"
        for graph_type, r in t.get("conv_rates", {}).items():
            r["fraction_of_conv_peak"] = r["gflops_per_s"] / measured[dtype]["conv"]
            print(f"{v}: {graph_type} {r['gflop']:.1f} GFLOP in {r['ms']:.1f} ms = "
                  f"{r['gflops_per_s']:.0f} GFLOP/s = {100 * r['fraction_of_conv_peak']:.0f}% "
                  f"of the {dtype} conv peak ({measured[dtype]['conv']:.0f})", file=sys.stderr)
    return measured


def run_ops(variants, size, steps, warmup, top, with_flops=False):
    """Op tables of the variants (printed as one markdown table), and with
    ``with_flops`` the convolutions' fractions of the conv peak."""
    tables = {v: profile_variant(v, size, steps, warmup, FLAGS.by_name, with_flops)
              for v in variants}
    print(op_profile.format_op_tables(tables, top), file=sys.stderr)
    if with_flops:
        return {"op_tables": tables, "peak_gflops": add_conv_peak_fractions(tables)}
    return {"op_tables": tables}


def run_first(variant, size):
    """Phases of the first iteration in this (fresh) process."""
    import tensorflow as tf
    t_start = time.perf_counter()
    trainer, _ = make_trainer(variant, size)
    import numpy as np
    rs = np.random.default_rng(0)
    n = size["batch_size"]
    images = tf.constant(rs.uniform(-1, 1, (n, 128, 128, 3)), tf.float32)
    labels = tf.constant(rs.integers(0, size["number_classes"], n), tf.int32)
    t_built = time.perf_counter()
    batches = [list(trainer.distribute([(images, labels)]))]
    t0 = time.perf_counter()
    concrete = trainer.compiled_iterations().get_concrete_function(batches)
    t_trace = time.perf_counter() - t0
    graph_ops = len(concrete.graph.get_operations())
    op_types = collections.Counter(op.type for op in concrete.graph.get_operations())
    t0 = time.perf_counter()
    [(out, _)], _, _ = trainer.train_iterations(batches)
    float(out["d_loss"])
    t_first_call = time.perf_counter() - t0
    batches = [list(trainer.distribute([(images, labels)]))]
    t0 = time.perf_counter()
    [(out, _)], _, _ = trainer.train_iterations(batches)
    float(out["d_loss"])
    t_second = time.perf_counter() - t0
    return {"first": {
        "variant": variant, "build_seconds": t_built - t_start, "trace_seconds": t_trace,
        "first_call_seconds": t_first_call,
        "first_iteration_seconds": t_trace + t_first_call,
        "second_iteration_seconds": t_second, "graph_ops": graph_ops,
        "traces": trainer.compiled_iterations().experimental_get_tracing_count(),
        "top_graph_op_types": op_types.most_common(15),
        "grappler": FLAGS.grappler}}


def define_flags():
    flags.DEFINE_enum("what", "ratios", ["ratios", "ops", "first"], "What to measure.")
    flags.DEFINE_list("variants", ["fp32", "bf16"],
                      "Variants, from: fp32, bf16, bf16_unfused_bn, each also with the suffix "
                      "_full (TensorFlow's default Grappler instead of the trainer's).")
    flags.DEFINE_integer("gf_dim", 16, "Generator base channels.")
    flags.DEFINE_integer("df_dim", 16, "Discriminator base channels.")
    flags.DEFINE_integer("number_classes", 10, "Classes.")
    flags.DEFINE_integer("batch_size", 8, "Batch size.")
    flags.DEFINE_integer("threads", 2, "intra- and inter-op threads.")
    flags.DEFINE_integer("rounds", 6, "ratios: rounds (order reversed every other round).")
    flags.DEFINE_integer("steps", 3, "Iterations per variant per round (ratios) / profiled (ops).")
    flags.DEFINE_integer("warmup", 2, "Untimed iterations per variant first.")
    flags.DEFINE_integer("top", 14, "ops: op types listed.")
    flags.DEFINE_boolean("by_name", False, "ops: one row per graph op instead of per op type.")
    flags.DEFINE_boolean("flops", False, "ops: also the convolutions' executed FLOPs, GFLOP/s "
                         "and fraction of the conv peak (measured after, in this process).")
    flags.DEFINE_boolean("tf1_reference", False, "ratios: also time the release's TF1 graph.")
    flags.DEFINE_list("grappler", [], "Grappler RewriterConfig fields for every variant "
                      "(on top of --graph_optimization's), e.g. meta_optimizer_iterations=ONE,"
                      "memory_optimization=NO_MEM_OPT,layout_optimizer=OFF.")


def main(argv):
    cli.quiet_tensorflow()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    for v in FLAGS.variants:
        if v not in VARIANTS:
            raise app.UsageError(f"unknown variant {v!r}; expected one of {sorted(VARIANTS)}")
    setup_devices(1, FLAGS.threads)
    if FLAGS.grappler:
        from tensorflow.python.eager import context

        from sagan_tf.training import compilation
        context.context().function_call_options.config_proto_serialized = (
            compilation.rewrite_options(dict(item.split("=", 1) for item in FLAGS.grappler)))
    result = {"machine": machine_info(), "size": _size(), "what": FLAGS.what}
    if FLAGS.what == "ratios":
        result.update(run_ratios(FLAGS.variants, _size(), FLAGS.rounds, FLAGS.steps,
                                 FLAGS.warmup, FLAGS.tf1_reference))
    elif FLAGS.what == "ops":
        result.update(run_ops(FLAGS.variants, _size(), FLAGS.steps, FLAGS.warmup, FLAGS.top,
                              FLAGS.flops))
    else:
        result.update(run_first(FLAGS.variants[0], _size()))
    result["machine"]["load_average_end"] = list(os.getloadavg())
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
