r"""Measures the training loop's overhead over the bare compiled step.

One run, one trainer, one process. The loop is opened as ``train()`` opens
it (``sagan_tf.training.loop.open_loop``: records from --data_dir, summaries and
progress every 100 steps and a checkpoint every 500, as ``train_imagenet.py
--demo`` does), then, alternately, --block steps of each:

* **loop**: ``loop.run`` on to the next block's end (input batches, the
  compiled iteration with its noise and non-finite check, summaries,
  progress lines, checkpoints at their cadence);
* **bare**: the same trainer's compiled ``train_iterations`` on one fixed
  batch (noise drawn inside, no check), nothing else: the floor the loop is
  held to.

The host's speed drifts by several percent over tens of seconds on a shared
machine; blocks of a few seconds that alternate (ABBA) see the same drift,
so the ratio of the sums is what is reported (with the per-block ratios'
median and quartiles). The first --warmup steps of each (tracing, the first
summaries and checkpoint, filling the input pipeline) are not timed.

  python tools/perf/benchmark_loop.py --data_dir data/demo --threads 2

Prints one JSON line per 10 block pairs and a final line with the totals,
the overhead ``loop / bare - 1`` and the machine (CPU model, bf16 units).
"""
import json
import os
import statistics
import tempfile
import time

from absl import flags

from sagan_tf import cli
from sagan_tf.perf.machine import machine_info, setup_devices

flags.DEFINE_string("data_dir", "data/demo", "Records to train on (e.g. the demo data).")
flags.DEFINE_integer("image_size", 32, "Image size of the records and networks.")
flags.DEFINE_integer("number_classes", 10, "Classes of the records.")
flags.DEFINE_integer("gf_dim", 8, "G width (the demo's).")
flags.DEFINE_integer("df_dim", 8, "D width (the demo's).")
flags.DEFINE_integer("batch_size", 32, "Batch size (the demo's).")
flags.DEFINE_integer("steps", 1500, "Timed loop steps (and as many bare steps).", lower_bound=2)
flags.DEFINE_integer("block", 25, "Steps per alternating block.", lower_bound=1)
flags.DEFINE_integer("warmup", 30, "Untimed steps of each first.", lower_bound=1)
flags.DEFINE_integer("threads", 0, "Intra- and inter-op threads (0: TensorFlow's default).",
                     lower_bound=0)
FLAGS = flags.FLAGS


def bare_step(trainer):
    """A function running one compiled step on fixed inputs (and waiting for it)."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    cfg = trainer.config
    rng = np.random.default_rng(0)
    n = trainer.global_batch_size
    images = rng.uniform(-1, 1, (n, cfg.image_size, cfg.image_size, 3)).astype(np.float32)
    labels = rng.integers(0, cfg.number_classes, n).astype(np.int32)
    real = list(trainer.distribute([(tf.constant(images), tf.constant(labels))] * cfg.d_step))

    def step(count):
        for _ in range(count):
            [(metrics, _)], _, _ = trainer.train_iterations([real])
        float(metrics["d_loss"])
    return step


def main(argv):
    cli.start(argv)
    setup_devices(1, FLAGS.threads)
    from sagan_tf.training.config import TrainConfig  # pylint: disable=import-outside-toplevel
    from sagan_tf.training.loop import open_loop  # pylint: disable=import-outside-toplevel
    if not os.path.isdir(FLAGS.data_dir):
        raise FileNotFoundError(f"--data_dir {FLAGS.data_dir} does not exist (make it with "
                                "tools/make_demo_data.py or train_imagenet.py --demo)")
    machine = machine_info()  # load average before this run adds to it
    blocks = -(-FLAGS.steps // FLAGS.block)
    with tempfile.TemporaryDirectory(prefix="benchmark_loop_") as scratch:
        config = TrainConfig(
            data_dir=FLAGS.data_dir, checkpoint_dir=scratch, image_size=FLAGS.image_size,
            number_classes=FLAGS.number_classes, gf_dim=FLAGS.gf_dim, df_dim=FLAGS.df_dim,
            batch_size=FLAGS.batch_size, seed=0,
            max_steps=FLAGS.warmup + blocks * FLAGS.block,
            save_summaries_steps=100, log_every_steps=100, save_checkpoint_steps=500,
            save_checkpoint_secs=0, keep_checkpoint_max=2)
        with open_loop(config, log=lambda *a: None) as loop:
            bare = bare_step(loop.trainer)
            loop.run(until=FLAGS.warmup)
            bare(FLAGS.warmup)
            totals, pairs = {"loop": 0.0, "bare": 0.0}, []
            for b in range(blocks):
                # ABBA: the order flips every block, so a drift hits both alike.
                order = ("loop", "bare") if b % 2 == 0 else ("bare", "loop")
                times = {}
                for what in order:
                    t0 = time.perf_counter()
                    if what == "loop":
                        loop.run(until=loop.step + FLAGS.block)
                    else:
                        bare(FLAGS.block)
                    times[what] = time.perf_counter() - t0
                    totals[what] += times[what]
                pairs.append(times["loop"] / times["bare"] - 1.0)
                if (b + 1) % 10 == 0 or b + 1 == blocks:
                    steps = (b + 1) * FLAGS.block
                    print(json.dumps({
                        "steps": steps, "loop_seconds_per_step": round(totals["loop"] / steps, 5),
                        "bare_seconds_per_step": round(totals["bare"] / steps, 5),
                        "overhead": round(totals["loop"] / totals["bare"] - 1.0, 4)}),
                        flush=True)
    steps = blocks * FLAGS.block
    quartiles = statistics.quantiles(pairs, n=4) if len(pairs) > 1 else pairs * 3
    print(json.dumps({
        "loop_seconds_per_step": totals["loop"] / steps,
        "bare_seconds_per_step": totals["bare"] / steps,
        "overhead": round(totals["loop"] / totals["bare"] - 1.0, 4),
        "block_overhead_median": round(statistics.median(pairs), 4),
        "block_overhead_quartiles": [round(quartiles[0], 4), round(quartiles[2], 4)],
        "load_average_end": os.getloadavg(), "machine": machine,
        "config": {k: FLAGS[k].value for k in ("image_size", "number_classes", "gf_dim",
                                               "df_dim", "batch_size", "steps", "block",
                                               "warmup", "threads")}}),
        flush=True)


if __name__ == "__main__":
    cli.run(main)
