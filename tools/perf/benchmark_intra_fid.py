r"""Times intra-FID's metric computation (not the sampling) at ImageNet's size.

Random float32 features stand in for pool_3: --num_classes classes, --per_class
real and --per_class generated rows of each, --dim features. "after" is
sagan_tf.evaluation.metrics.intra_fid over every class (the low-rank trace term
when per_class <= dim). "before" is the per-class computation it replaced,
TF-GAN's frechet_classifier_distance_from_activations (a dim x dim matrix square
root per class), timed on --before_classes classes and extrapolated linearly to
--num_classes. Prints one JSON line with both, the FIDs of the timed classes by
each way, and the machine (CPU model, load).

  python tools/perf/benchmark_intra_fid.py --num_classes 1000 --per_class 50 \
      --dim 2048 --before_classes 3
"""
import json
import time

from absl import flags

from sagan_tf import cli

flags.DEFINE_integer("num_classes", 1000, "Classes.")
flags.DEFINE_integer("per_class", 50, "Real and generated rows per class.")
flags.DEFINE_integer("dim", 2048, "Feature size (pool_3: 2048).")
flags.DEFINE_integer("before_classes", 3, "Classes timed with the d x d computation.")
flags.DEFINE_integer("seed", 0, "Seed of the random features.")
FLAGS = flags.FLAGS


def main(argv):
    """Prints ``{"after_seconds", "before_seconds_extrapolated", ...}``."""
    del argv
    cli.quiet_tensorflow()
    import numpy as np  # pylint: disable=import-outside-toplevel
    from sagan_tf import tfgan  # pylint: disable=import-outside-toplevel
    from sagan_tf.evaluation import metrics  # pylint: disable=import-outside-toplevel
    from sagan_tf.perf import machine  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(FLAGS.seed)
    n = FLAGS.num_classes * FLAGS.per_class
    labels = np.repeat(np.arange(FLAGS.num_classes), FLAGS.per_class)
    real = rng.random((n, FLAGS.dim), dtype=np.float32)
    generated = rng.random((n, FLAGS.dim), dtype=np.float32) * 1.1
    start = time.perf_counter()
    mean, per_class, _ = metrics.intra_fid(real, labels, generated, labels, FLAGS.num_classes)
    after = time.perf_counter() - start

    before_fids = []
    start = time.perf_counter()
    for c in range(FLAGS.before_classes):
        before_fids.append(float(tfgan.frechet_classifier_distance_from_activations(
            real[labels == c], generated[labels == c])))
    before = time.perf_counter() - start
    print(json.dumps({
        "num_classes": FLAGS.num_classes, "per_class": FLAGS.per_class, "dim": FLAGS.dim,
        "after_seconds": round(after, 3), "intra_fid": mean,
        "before_classes_timed": FLAGS.before_classes,
        "before_seconds_per_class": round(before / FLAGS.before_classes, 3),
        "before_seconds_extrapolated": round(before / FLAGS.before_classes
                                             * FLAGS.num_classes, 1),
        "speedup": round(before / FLAGS.before_classes * FLAGS.num_classes / after, 1),
        "timed_classes_fid_after": [per_class[c] for c in range(FLAGS.before_classes)],
        "timed_classes_fid_before": before_fids,
        "machine": machine.machine_info()}), flush=True)


if __name__ == "__main__":
    cli.run(main)
