r"""The host's share of a training iteration: kernels, reductions, host work.

Counts, per replica, the ops of the traced iteration and the kernels of the
optimised graph and of the profiler, the cross-replica reductions, and times
the iteration at minimal compute (``test`` networks, 128x128, gf=df=8,
batch 2 per replica) with 1, 2 and 4 replicas against the release's TF1
graph, alternated in one process (:mod:`sagan_tf.perf.host_cost`). With as
many GPUs as replicas the replicas are GPUs, else logical CPUs.

  python tools/perf/host_cost.py --replicas 1,2,4 --release --rounds 10
  python tools/perf/host_cost.py --replicas 1 --loop

Prints one JSON line on stdout (with ``machine``: CPU model, load average)
and a table on stderr.
"""
import json
import os
import sys

from absl import app, flags

from sagan_tf import cli

FLAGS = flags.FLAGS


def define_flags():
    """The command line (defined only when run as a script)."""
    flags.DEFINE_list("replicas", ["1", "2", "4"], "Logical CPU replica counts of the port.")
    flags.DEFINE_bool("release", True, "Also time the release's TF1 graph (one tower).")
    flags.DEFINE_integer("gf_dim", 8, "G width.")
    flags.DEFINE_integer("df_dim", 8, "D width.")
    flags.DEFINE_integer("batch_size", 2, "Images per replica.")
    flags.DEFINE_integer("number_classes", 10, "Classes.")
    flags.DEFINE_integer("rounds", 10, "Timed rounds (each runs every variant --steps times).")
    flags.DEFINE_integer("steps", 2, "Iterations per variant and round.")
    flags.DEFINE_integer("warmup", 2, "Untimed iterations of each variant first.")
    flags.DEFINE_integer("profile_steps", 2, "Iterations under the TF profiler (0: none).")
    flags.DEFINE_integer("threads", 2, "Intra- and inter-op threads (0: TensorFlow's default).")
    flags.DEFINE_bool("loop", False, "Measure the training loop's per-step host work instead.")
    flags.DEFINE_integer("loop_steps", 40, "Timed loop steps with --loop.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    tf = cli.quiet_tensorflow()
    from sagan_tf.perf import host_cost
    from sagan_tf.perf.machine import machine_info, setup_devices
    replica_counts = sorted({int(r) for r in FLAGS.replicas})
    # GPUs when there are enough, else logical CPUs (before any TensorFlow op runs).
    devices = setup_devices(max(replica_counts), FLAGS.threads, cpu_if_too_few_gpus=True)
    result = {"machine": machine_info(devices)}
    size = {k: FLAGS[k].value for k in ("gf_dim", "df_dim", "batch_size", "number_classes")}
    if FLAGS.loop:
        result["loop"] = host_cost.measure_loop(size, FLAGS.loop_steps)
    else:
        result.update(host_cost.measure_iterations(
            replica_counts, size, release=FLAGS.release, threads=FLAGS.threads,
            profile_steps=FLAGS.profile_steps, rounds=FLAGS.rounds, steps=FLAGS.steps,
            warmup=FLAGS.warmup))
        print(host_cost.format_table(result), file=sys.stderr)
    result["config"] = dict(size, image_size=128, arch="test", threads=FLAGS.threads,
                            rounds=FLAGS.rounds, steps=FLAGS.steps, warmup=FLAGS.warmup,
                            tensorflow=tf.__version__)
    result["machine"]["load_average_end"] = list(os.getloadavg())
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
