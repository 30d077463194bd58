"""Evaluates SAGAN checkpoints: Inception score, FID, KID; class accuracy, intra-FID,
precision/recall/density/coverage.

NUMERICS §8, flags §9, plus this port's class accuracy (when the classifier's classes
are the data's), intra-FID (--intra_fid_samples_per_class) and standing batch-norm
statistics (--standing_stats_batches).

By default it watches ``<checkpoint_dir>/imagenet_<batch_size>`` (without
``--batch_size``: the only ``imagenet_*`` run there) and evaluates
every new checkpoint once (the release's ``evaluate_repeatedly``);
``--checkpoint_path`` evaluates one checkpoint and exits. Each evaluation
prints one JSON line and writes TensorBoard summaries under ``--eval_dir``
(default ``<checkpoint_dir>/eval``).

Examples::

    python eval_imagenet.py --checkpoint_dir checkpoint --data_dir /data/imagenet128
    python eval_imagenet.py --checkpoint_dir runs/demo --data_dir data/demo \\
        --inception_path data/demo_classifier --eval_sample_size 2000 --max_evals 1
"""
from absl import app, flags, logging

from sagan_tf import cli

FLAGS = flags.FLAGS

flags.DEFINE_string("checkpoint_dir", None, "Training checkpoint root (the --checkpoint_dir of "
                    "train_imagenet.py; the run is <checkpoint_dir>/imagenet_<batch_size>).")
flags.DEFINE_string("eval_dir", None, "Where summaries, evaluated.json and the cached real "
                    "activations go (default <checkpoint_dir>/eval).")
flags.DEFINE_integer("eval_sample_size", 50000, "Number of generated samples per evaluation.")
flags.DEFINE_integer("dcgan_generator_batch_size", 100, "Generation batch size.")
flags.DEFINE_integer("eval_interval_secs", 300, "Minimum seconds between evaluation rounds.")
flags.DEFINE_integer("num_classes", None, "Number of classes (default: from config.json).")
flags.DEFINE_string("generator_type", None, "test | baseline | test_64 (default: config.json).")
flags.DEFINE_integer("z_dim", None, "Noise dimension (default: from config.json).")
flags.DEFINE_integer("gf_dim", None, "Generator width (default: from config.json).")
flags.DEFINE_integer("image_size", None, "Image size (default: from config.json).")
flags.DEFINE_string("data_dir", None, "Training records for the real statistics "
                    "(default: data_dir of config.json).")
flags.DEFINE_integer("batch_size", None, "Training per-replica batch size: picks the run "
                     "<checkpoint_dir>/imagenet_<batch_size>. Default: the only imagenet_* run "
                     "in --checkpoint_dir.")
flags.DEFINE_string("inception_path", None, "Local SavedModel / TF-Hub module directory of "
                    "the classifier (default: the TF-GAN Inception on TF-Hub).")
flags.DEFINE_string("checkpoint_path", None, "Evaluate this one checkpoint and exit.")
flags.DEFINE_float("timeout", None, "Stop after this many seconds without a new checkpoint "
                   "(default: wait forever).")
flags.DEFINE_integer("max_evals", None, "Stop after this many evaluations.")
flags.DEFINE_integer("num_real_samples", None, "Real records for the statistics "
                     "(default: --eval_sample_size).")
flags.DEFINE_integer("seed", None, "Seed of the noise, labels and real-data shuffle.")
flags.DEFINE_integer("intra_fid_samples_per_class", 0,
                     "Intra-FID (the paper's Table 2): the mean over classes of the FID between "
                     "this many samples generated for a class and as many real records of that "
                     "class (per-class real statistics cached under --eval_dir). 0: off (the "
                     "default: on ImageNet it costs one 2048-d FID per class, 1000 in all). "
                     "The paper does not state its count; e.g. 50 on ImageNet.", lower_bound=0)
flags.DEFINE_integer("standing_stats_batches", 0,
                     "0: G samples with its moving batch-norm statistics (the release). N > 0: "
                     "standing statistics: after each restore, every batch norm's statistics "
                     "are recomputed as the average over N batches of G in training mode "
                     "(BigGAN/compare_gan; a deviation, docs/DEVIATIONS.md). The JSON line's "
                     "bn_statistics says which.", lower_bound=0)
flags.DEFINE_integer("standing_stats_batch_size", None,
                     "Batch size of the standing-statistics batches (default: the training "
                     "batch_size of config.json).", lower_bound=1)
flags.DEFINE_boolean("manifold_metrics", True,
                     "Report precision and recall (Kynkaanniemi et al. 2019, k=3) and density "
                     "and coverage (Naeem et al. 2020, k=5) of the generated against the real "
                     "pool_3 features, in the JSON line and under eval/ (not the paper's "
                     "protocol; --nomanifold_metrics turns them off).")
flags.DEFINE_integer("manifold_num_samples", 10000,
                     "Samples of each set for the manifold metrics (0: as many as FID); the "
                     "JSON line's manifold_num_samples states the count used.", lower_bound=0)
flags.DEFINE_float("truncation", None,
                   "Truncation trick (BigGAN; not the paper's protocol, which samples z ~ "
                   "N(0, 1)): every z component with |z| > this is redrawn until inside. The "
                   "JSON line's truncation names it; summaries and evaluated.json go to "
                   "<eval_dir>/truncation_<value>. Default: off.", lower_bound=0.0)

cli.define_generator_weights_flag()


def options_from_flags():
    """Builds :class:`sagan_tf.evaluation.EvalOptions` from the flags."""
    from sagan_tf import evaluation
    return evaluation.EvalOptions(
        checkpoint_dir=FLAGS.checkpoint_dir, batch_size=FLAGS.batch_size,
        eval_dir=FLAGS.eval_dir, eval_sample_size=FLAGS.eval_sample_size,
        dcgan_generator_batch_size=FLAGS.dcgan_generator_batch_size,
        num_real_samples=FLAGS.num_real_samples, data_dir=FLAGS.data_dir,
        inception_path=FLAGS.inception_path, checkpoint_path=FLAGS.checkpoint_path,
        eval_interval_secs=FLAGS.eval_interval_secs, timeout=FLAGS.timeout,
        max_evals=FLAGS.max_evals, generator_type=FLAGS.generator_type,
        image_size=FLAGS.image_size, z_dim=FLAGS.z_dim, gf_dim=FLAGS.gf_dim,
        num_classes=FLAGS.num_classes, seed=FLAGS.seed,
        intra_fid_samples_per_class=FLAGS.intra_fid_samples_per_class,
        standing_stats_batches=FLAGS.standing_stats_batches,
        standing_stats_batch_size=FLAGS.standing_stats_batch_size,
        generator_weights=FLAGS.generator_weights,
        manifold_metrics=FLAGS.manifold_metrics,
        manifold_num_samples=FLAGS.manifold_num_samples,
        truncation=FLAGS.truncation)


def main(argv):
    """Runs one evaluation (``--checkpoint_path``) or the watching loop."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.checkpoint_dir and not FLAGS.checkpoint_path:
        raise app.UsageError("--checkpoint_dir or --checkpoint_path is required")
    cli.quiet_tensorflow()
    from sagan_tf import evaluation_loop
    logging.set_verbosity(logging.INFO)
    options = options_from_flags()
    if options.checkpoint_path:
        evaluation_loop.evaluate_checkpoint(options)
    else:
        evaluation_loop.evaluate_repeatedly(options)


if __name__ == "__main__":
    cli.run(main)
