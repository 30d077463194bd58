r"""Times the 2018 release's training iteration as a TF1 graph (the speed baseline).

The graph is ``sagan_tf/parity/tf1_release_graph.py``: the release's model
and iteration rebuilt with ``tf.compat.v1`` on TF1 ref variables, as TF 1.5
ran it (the same graph the parity tests compare the port with). This tool
times what TF-GAN's sequential train hooks ran per iteration:
``sess.run(g_train_op)`` then ``sess.run(d_train_op)``, with z and the fake
labels drawn in the graph and fixed random real images (no input pipeline,
like ``tools/perf/benchmark.py``). It prints one JSON line with the same
timing keys as ``tools/perf/benchmark.py``, so both can be run back to back
on one machine:

  python tools/perf/tf1_reference_benchmark.py --gf_dim 16 --df_dim 16 \
      --number_classes 10 --batch_size 8 --threads 2
  python tools/perf/benchmark.py --gf_dim 16 --df_dim 16 --number_classes 10 \
      --batch_size 8 --threads 2

``--trace_file`` writes the per-op timings of one iteration (Chrome trace
format, from ``RunMetadata.step_stats``) for op-by-op comparisons.

Only the 128x128 ``test``/``baseline`` layout is built (the release
hard-wires 128x128). ``tools/perf/benchmark.py --compare_tf1_reference``
times the same graph alternating with the port, in one process.
"""
import json

from absl import app, flags

from sagan_tf import cli
from sagan_tf.perf.timing import timed, timing_figures

FLAGS = flags.FLAGS


def run_reference(batch_size=8, gf_dim=16, df_dim=16, z_dim=128, number_classes=10,
                  arch="test", threads=0, iterations=5, warmup=2, trace_file=None):
    """Builds the graph in a fresh v1 session, times it, returns the result dict.

    Keys: the timing keys of ``sagan_tf.perf.timing``, ``first_iteration_seconds``,
    ``finite_loss``, ``parameters``, ``model_variables`` (``{release name:
    shape}``, NUMERICS §10) and ``config``.
    """
    import numpy as np
    import tensorflow as tf

    from sagan_tf.parity.tf1_release_session import ReleaseGraphSession
    ref = ReleaseGraphSession(batch_size, gf_dim, df_dim, z_dim, number_classes, arch, threads)
    result = {"model_variables": ref.model_variables, "parameters": ref.parameters}
    first, times = [], []
    try:
        loss = timed(ref.iteration, first)
        result["first_iteration_seconds"] = first[0]
        for _ in range(warmup - 1):
            ref.iteration()
        for _ in range(iterations):
            loss = timed(ref.iteration, times)
        if trace_file:
            ref.write_trace(trace_file)
    finally:
        ref.close()
    result.update(timing_figures(times, batch_size))
    result.update({
        "finite_loss": bool(np.isfinite(loss)),
        "config": dict(arch=arch, batch_size=batch_size, gf_dim=gf_dim, df_dim=df_dim,
                       z_dim=z_dim, number_classes=number_classes, threads=threads,
                       iterations=iterations, warmup=warmup, tensorflow=tf.__version__),
    })
    return result


def define_flags():
    flags.DEFINE_enum("arch", "test", ["test", "baseline"], "Generator and discriminator type.")
    flags.DEFINE_integer("gf_dim", 64, "Generator base channels.")
    flags.DEFINE_integer("df_dim", 64, "Discriminator base channels.")
    flags.DEFINE_integer("z_dim", 128, "Latent dimension.")
    flags.DEFINE_integer("number_classes", 1000, "Classes.")
    flags.DEFINE_integer("batch_size", 8, "Images per iteration (one tower).", lower_bound=1)
    flags.DEFINE_integer("threads", 0, "intra- and inter-op threads (0: TensorFlow's default).")
    flags.DEFINE_integer("iterations", 5, "Timed iterations.", lower_bound=0)
    flags.DEFINE_integer("warmup", 2, "Untimed iterations first.", lower_bound=1)
    flags.DEFINE_string("trace_file", None, "Write one iteration's per-op trace (JSON) here.")


def main(argv):
    cli.quiet_tensorflow()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    result = run_reference(FLAGS.batch_size, FLAGS.gf_dim, FLAGS.df_dim, FLAGS.z_dim,
                           FLAGS.number_classes, FLAGS.arch, FLAGS.threads, FLAGS.iterations,
                           FLAGS.warmup, FLAGS.trace_file)
    result["model_variables"] = len(result["model_variables"])
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
