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

It runs on one device (``--device``; default ``auto``: the last visible GPU
with no memory in use, i.e. the spare one when the trainer has the first
four), with memory growth, and leaves the other GPUs untouched.

Examples::

    python eval_imagenet.py --checkpoint_dir checkpoint --data_dir /data/imagenet128
    python eval_imagenet.py --checkpoint_dir checkpoint --data_dir /data/imagenet128 \\
        --device gpu:4
    python eval_imagenet.py --checkpoint_dir runs/demo --data_dir data/demo \\
        --inception_path data/demo_classifier --eval_sample_size 2000 --max_evals 1
"""
from absl import app, flags, logging

from sagan_tf import cli
from sagan_tf.evaluation import eval_flags

eval_flags.define_eval_flags()
FLAGS = flags.FLAGS


def main(argv):
    """Runs one evaluation (``--checkpoint_path``) or the watching loop."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.checkpoint_dir and not FLAGS.checkpoint_path:
        raise app.UsageError("--checkpoint_dir or --checkpoint_path is required")
    cli.quiet_tensorflow()
    device = cli.configure_device(FLAGS)  # before anything runs: one device, memory growth
    from sagan_tf.evaluation import evaluation_loop, evaluator as evaluation
    logging.set_verbosity(logging.INFO)
    options = eval_flags.options_from_flags()
    evaluator = evaluation.Evaluator(options)  # a bad flag or directory fails here, quietly
    logging.info("Evaluating on %s; TF32 %s", device, "on" if FLAGS.allow_tf32 else "off")
    if options.checkpoint_path:
        evaluation_loop.evaluate_checkpoint(options, evaluator=evaluator)
    else:
        evaluation_loop.evaluate_repeatedly(options, evaluator=evaluator)


if __name__ == "__main__":
    cli.run(main)
