r"""Measures the training loop's overhead over the bare compiled step.

Two processes on the same flags, the same trainer configuration, alternating:

* **loop** (this process): the loop opened as ``train()`` opens it
  (``sagan_tf.training.loop.open_loop``: records from --data_dir, summaries and
  progress every 100 steps and a checkpoint every 500, as ``train_imagenet.py
  --demo`` does), run on by --block steps (input batches, the compiled
  iteration with its noise and non-finite check, summaries, progress lines,
  checkpoints at their cadence);
* **bare** (a worker process started with ``--bare_worker``): the same
  configuration's compiled ``train_iterations`` on one fixed batch (noise drawn inside),
  in a process without the loop (no input pipeline, no writers): the floor the
  loop is held to. Whatever the open loop costs every step -- its input
  pipeline's threads included -- shows as overhead.

Each process waits while the other runs its block. The host's speed drifts by
several percent over tens of seconds on a shared machine; blocks of a few
seconds that alternate (ABBA) see the same drift, so the ratio of the sums is
what is reported (with the per-block ratios' median and quartiles). The first
--warmup steps of each (tracing, the first summaries and checkpoint, filling
the input pipeline) are not timed.

  python tools/perf/benchmark_loop.py --data_dir data/demo --steps 200 --block 20

Prints one JSON line per 10 block pairs and a final line with the totals,
the overhead ``loop / bare - 1``, the CPU kernels (oneDNN or Eigen) and the
machine (CPU model, bf16 units).
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import flags

from sagan_tf import cli, kernels
from sagan_tf.perf.machine import machine_info, setup_devices

flags.DEFINE_string("data_dir", "data/demo", "Records to train on (e.g. the demo data).")
flags.DEFINE_integer("image_size", 32, "Image size of the records and networks.")
flags.DEFINE_integer("number_classes", 10, "Classes of the records.")
flags.DEFINE_integer("gf_dim", 8, "G width (the demo's).")
flags.DEFINE_integer("df_dim", 8, "D width (the demo's).")
flags.DEFINE_integer("batch_size", 32, "Batch size (the demo's).")
flags.DEFINE_integer("steps", 200, "Timed loop steps (and as many bare steps).", lower_bound=2)
flags.DEFINE_integer("block", 20, "Steps per alternating block.", lower_bound=1)
flags.DEFINE_integer("warmup", 30, "Untimed steps of each first.", lower_bound=1)
flags.DEFINE_integer("threads", 0, "Intra- and inter-op threads (0: TensorFlow's default).",
                     lower_bound=0)
flags.DEFINE_boolean("bare_worker", False, "Internal: run as the bare-step worker process "
                     "(reads a step count per line on stdin, answers the seconds taken).")
FLAGS = flags.FLAGS
_SIZE_FLAGS = ("data_dir", "image_size", "number_classes", "gf_dim", "df_dim", "batch_size",
               "warmup", "threads")


def train_config(checkpoint_dir, max_steps):
    """The demo-like :class:`TrainConfig` both processes build their trainer from."""
    from sagan_tf.training.config import TrainConfig  # pylint: disable=import-outside-toplevel
    return TrainConfig(
        data_dir=FLAGS.data_dir, checkpoint_dir=checkpoint_dir, image_size=FLAGS.image_size,
        number_classes=FLAGS.number_classes, gf_dim=FLAGS.gf_dim, df_dim=FLAGS.df_dim,
        batch_size=FLAGS.batch_size, seed=0, max_steps=max_steps,
        save_summaries_steps=100, log_every_steps=100, save_checkpoint_steps=500,
        save_checkpoint_secs=0, keep_checkpoint_max=2)


def bare_step(trainer):
    """A function running ``count`` compiled steps on fixed inputs (and waiting for them)."""
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


def run_bare_worker():
    """The worker: a trainer without the loop; ``ready`` after the warm-up, then
    for each step count read from stdin, the seconds those bare steps took."""
    from sagan_tf.training.trainer import Trainer  # pylint: disable=import-outside-toplevel
    with tempfile.TemporaryDirectory(prefix="benchmark_loop_bare_") as scratch:
        bare = bare_step(Trainer(train_config(scratch, 1)))
        bare(FLAGS.warmup)
        print("ready", flush=True)
        for line in sys.stdin:
            t0 = time.perf_counter()
            bare(int(line))
            print(time.perf_counter() - t0, flush=True)


class BareWorker:
    """The bare-step worker process (this script with ``--bare_worker``)."""

    def __init__(self):
        argv = [sys.executable, os.path.abspath(__file__), "--bare_worker"] + [
            f"--{k}={FLAGS[k].value}" for k in _SIZE_FLAGS]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the bare-step worker failed (exit {self.proc.wait()})")

    def time(self, steps):
        """Seconds the worker took for ``steps`` bare steps."""
        self.proc.stdin.write(f"{steps}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def alternate_blocks(loop, worker, blocks):
    """``blocks`` ABBA pairs of a loop block and a bare block; prints a JSON
    line every 10 pairs. Returns ``(totals, per-pair overheads)``."""
    totals, pairs = {"loop": 0.0, "bare": 0.0}, []
    for b in range(blocks):
        # ABBA: the order flips every block, so a drift hits both alike.
        times = {}
        for what in (("loop", "bare") if b % 2 == 0 else ("bare", "loop")):
            if what == "loop":
                t0 = time.perf_counter()
                loop.run(until=loop.step + FLAGS.block)
                times[what] = time.perf_counter() - t0
            else:
                times[what] = worker.time(FLAGS.block)
            totals[what] += times[what]
        pairs.append(times["loop"] / times["bare"] - 1.0)
        if (b + 1) % 10 == 0 or b + 1 == blocks:
            steps = (b + 1) * FLAGS.block
            print(json.dumps({
                "steps": steps, "loop_seconds_per_step": round(totals["loop"] / steps, 5),
                "bare_seconds_per_step": round(totals["bare"] / steps, 5),
                "overhead": round(totals["loop"] / totals["bare"] - 1.0, 4)}), flush=True)
    return totals, pairs


def main(argv):
    cli.start(argv)
    setup_devices(1, FLAGS.threads)
    if FLAGS.bare_worker:
        run_bare_worker()
        return
    from sagan_tf.training.loop import open_loop  # pylint: disable=import-outside-toplevel
    if not os.path.isdir(FLAGS.data_dir):
        raise FileNotFoundError(f"--data_dir {FLAGS.data_dir} does not exist (make it with "
                                "tools/make_demo_data.py or train_imagenet.py --demo)")
    machine = machine_info()  # load average before this run adds to it
    blocks = -(-FLAGS.steps // FLAGS.block)
    worker = BareWorker()
    try:
        with tempfile.TemporaryDirectory(prefix="benchmark_loop_") as scratch, \
                open_loop(train_config(scratch, FLAGS.warmup + blocks * FLAGS.block),
                          log=lambda *a: None) as loop:
            loop.run(until=FLAGS.warmup)
            totals, pairs = alternate_blocks(loop, worker, blocks)
    finally:
        worker.close()
    steps = blocks * FLAGS.block
    quartiles = statistics.quantiles(pairs, n=4) if len(pairs) > 1 else pairs * 3
    print(json.dumps({
        "loop_seconds_per_step": totals["loop"] / steps,
        "bare_seconds_per_step": totals["bare"] / steps,
        "overhead": round(totals["loop"] / totals["bare"] - 1.0, 4),
        "block_overhead_median": round(statistics.median(pairs), 4),
        "block_overhead_quartiles": [round(quartiles[0], 4), round(quartiles[2], 4)],
        "bare_worker_pid": worker.proc.pid, "loop_pid": os.getpid(),
        "kernels": kernels.run_record(), "load_average_end": os.getloadavg(), "machine": machine,
        "config": {k: FLAGS[k].value for k in ("image_size", "number_classes", "gf_dim",
                                               "df_dim", "batch_size", "steps", "block",
                                               "warmup", "threads")}}),
        flush=True)


if __name__ == "__main__":
    cli.run(main)
