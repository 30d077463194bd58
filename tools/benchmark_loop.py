r"""Measures the training loop's overhead over the bare compiled step (issue #15).

In one process, alternating for --rounds rounds:

* **loop**: ``sagan_tf.training.train`` runs --steps more iterations of a run
  in a scratch directory (records from --data_dir, summaries and progress
  every 100 steps and a checkpoint every 500 as ``train_imagenet.py --demo``
  does); its steady-state seconds per iteration (the first, traced,
  iteration excluded) is the loop's figure;
* **bare**: the same trainer's compiled ``train_step`` on one fixed batch and
  fixed noise, --steps times, nothing else: the floor the loop is held to.

Prints one JSON line per round and a final line with the medians, the
overhead ``loop / bare - 1`` and the machine (CPU model, bf16 units).

  python tools/benchmark_loop.py --data_dir data/demo --threads 2
"""
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from sagan_tf import cli  # noqa: E402

flags.DEFINE_string("data_dir", "data/demo", "Records to train on (e.g. the demo data).")
flags.DEFINE_integer("image_size", 32, "Image size of the records and networks.")
flags.DEFINE_integer("number_classes", 10, "Classes of the records.")
flags.DEFINE_integer("gf_dim", 8, "G width (the demo's).")
flags.DEFINE_integer("df_dim", 8, "D width (the demo's).")
flags.DEFINE_integer("batch_size", 32, "Batch size (the demo's).")
flags.DEFINE_integer("steps", 300, "Iterations per measurement.", lower_bound=2)
flags.DEFINE_integer("rounds", 3, "Alternating loop/bare rounds.", lower_bound=1)
flags.DEFINE_integer("threads", 0, "Intra- and inter-op threads (0: TensorFlow's default).",
                     lower_bound=0)
FLAGS = flags.FLAGS


def bare_seconds_per_step(trainer, steps):
    """Median-free mean time of ``steps`` compiled steps on fixed inputs."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    cfg = trainer.config
    rng = np.random.default_rng(0)
    n = trainer.global_batch_size
    inputs = trainer.make_inputs_from_global(
        rng.uniform(-1, 1, (n, cfg.image_size, cfg.image_size, 3)).astype(np.float32),
        rng.integers(0, cfg.number_classes, n).astype(np.int32))
    float(trainer.train_step(inputs)[0]["d_loss"])  # traced and warm
    t0 = time.perf_counter()
    for _ in range(steps):
        out = trainer.train_step(inputs)
    float(out[0]["d_loss"])
    return (time.perf_counter() - t0) / steps


def main(argv):
    cli.start(argv)
    benchmark = cli.load_tool("benchmark", "sagan_benchmark_tool")  # devices, machine
    benchmark.setup_devices(1, FLAGS.threads)
    from sagan_tf.config import TrainConfig  # pylint: disable=import-outside-toplevel
    from sagan_tf.training import train  # pylint: disable=import-outside-toplevel
    if not os.path.isdir(FLAGS.data_dir):
        raise FileNotFoundError(f"--data_dir {FLAGS.data_dir} does not exist (make it with "
                                "tools/make_demo_data.py or train_imagenet.py --demo)")
    rounds = []
    with tempfile.TemporaryDirectory(prefix="benchmark_loop_") as scratch:
        for r in range(FLAGS.rounds):
            config = TrainConfig(
                data_dir=FLAGS.data_dir, checkpoint_dir=scratch, image_size=FLAGS.image_size,
                number_classes=FLAGS.number_classes, gf_dim=FLAGS.gf_dim, df_dim=FLAGS.df_dim,
                batch_size=FLAGS.batch_size, seed=0, max_steps=(r + 1) * FLAGS.steps,
                save_summaries_steps=100, log_every_steps=100, save_checkpoint_steps=500,
                save_checkpoint_secs=0, keep_checkpoint_max=2)
            result = train(config, log=lambda *a: None)
            loop = 1.0 / result["steps_per_second"]
            bare = bare_seconds_per_step(result["trainer"], FLAGS.steps)
            line = {"round": r, "loop_seconds_per_step": round(loop, 5),
                    "bare_seconds_per_step": round(bare, 5),
                    "overhead": round(loop / bare - 1.0, 4)}
            rounds.append(line)
            print(json.dumps(line), flush=True)
    loop = statistics.median(x["loop_seconds_per_step"] for x in rounds)
    bare = statistics.median(x["bare_seconds_per_step"] for x in rounds)
    print(json.dumps({
        "median_loop_seconds_per_step": loop, "median_bare_seconds_per_step": bare,
        "median_overhead": round(statistics.median(x["overhead"] for x in rounds), 4),
        "overhead_of_medians": round(loop / bare - 1.0, 4),
        "load_average": os.getloadavg(), "machine": benchmark.machine_info(),
        "config": {k: FLAGS[k].value for k in ("image_size", "number_classes", "gf_dim",
                                               "df_dim", "batch_size", "steps", "threads")}}),
        flush=True)


if __name__ == "__main__":
    cli.run(main)
