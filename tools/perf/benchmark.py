r"""Times the SAGAN training iteration and the sampling path.

Train mode times exactly what the training loop runs per iteration (the
compiled G and D steps on fixed random real images, no input pipeline);
sample mode times ``G(z, y, training=False)``; ``--mode both`` times both
(``sagan_tf.perf.benchmark``). After ``--warmup`` iterations (tracing,
compilation) it times ``--iterations`` iterations and prints ONE JSON line
(the keys are listed in ``sagan_tf.perf.benchmark.run_benchmark``) on
stdout, and a short human-readable summary on stderr.

Every time is reported beside the machine's limit: unless ``--nopeak``, a
short matmul and 3x3-convolution micro-benchmark (``sagan_tf.perf.peaks``)
runs in the same process, on the same device and thread pools, in float32
and in the compute dtype of ``--mixed_precision``; the iteration's achieved
GFLOP/s (counted FLOPs / median time) is then given as a fraction of that
peak. ``machine`` records the CPU model, its bf16/fp16 units and the GPUs.

Examples (docs/PERFORMANCE.md lists the exact command of every figure):

  python tools/perf/benchmark.py --gf_dim 16 --df_dim 16 --number_classes 10 \
      --batch_size 8 --threads 2
  python tools/perf/benchmark.py --xla --mixed_precision mixed_bfloat16 --num_replicas 2
"""
import json
import sys

from absl import app, flags

from sagan_tf import cli
from sagan_tf.perf import benchmark
from sagan_tf.perf.benchmark import BenchmarkOptions, run_benchmark
from sagan_tf.perf.machine import setup_devices
from sagan_tf.perf.summary import summary_line

FLAGS = flags.FLAGS


def main(argv):
    cli.quiet_tensorflow()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    devices = setup_devices(FLAGS.num_replicas, FLAGS.threads)
    result = run_benchmark(BenchmarkOptions.from_flags(FLAGS), devices)
    print(json.dumps(result, sort_keys=True), flush=True)
    print(summary_line(result), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    benchmark.define_flags()
    flags.adopt_module_key_flags(benchmark)  # --help lists them
    cli.run(main)
