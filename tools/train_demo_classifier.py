"""Trains a small classifier on demo records and saves it with the Inception interface.

The offline demo cannot download the TF-GAN Inception: this trains the small
Keras CNN of ``sagan_tf.evaluation.demo_classifier`` on the demo records and exports it
as a SavedModel that ``eval_imagenet.py --inception_path`` loads exactly like
the Inception (``pool_3`` features and ``logits``, images resized to the
classifier's ``--input_size``). Prints what was trained and its final
training accuracy.

Usage::

    python tools/train_demo_classifier.py --data_dir data/demo \\
        --output_dir data/demo_classifier [--input_size 32 --steps 500]
    # other data: hold out 10%, up to 5000 steps, early stopping on held-out accuracy
    python tools/train_demo_classifier.py --data_dir data/mine --output_dir data/mine_classifier \\
        --holdout_fraction 0.1 --steps 5000
"""
from absl import flags

from sagan_tf import cli

flags.DEFINE_string("data_dir", None, "Directory of demo *.tfrecords.")
flags.DEFINE_string("output_dir", None, "Where to write the classifier SavedModel.")
flags.DEFINE_integer("image_size", None, "Stored image size (default: from the data).")
flags.DEFINE_integer("num_classes", None, "Number of classes (default: from the labels).")
flags.DEFINE_integer("input_size", 32, "The classifier's input size.")
flags.DEFINE_integer("steps", 500, "Training steps.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_float("holdout_fraction", 0.0,
                   "Share of the records held out (e.g. 0.1 on one's own data): training "
                   "runs in rounds of --eval_every steps up to --steps, keeps the weights "
                   "of the best held-out accuracy, stops after --patience rounds without "
                   "improvement, and prints the held-out accuracy. 0: train --steps on all "
                   "records (the demo's setting).")
flags.DEFINE_integer("eval_every", 250, "Steps between held-out evaluations.")
flags.DEFINE_integer("patience", 4, "Held-out evaluations without improvement before "
                     "stopping.")
flags.mark_flags_as_required(["data_dir", "output_dir"])
FLAGS = flags.FLAGS


def main(argv):
    cli.start(argv)
    from sagan_tf.evaluation.demo_classifier import \
        train_demo_classifier  # pylint: disable=import-outside-toplevel
    info = train_demo_classifier(FLAGS.data_dir, FLAGS.output_dir, FLAGS.image_size,
                                 FLAGS.num_classes, FLAGS.input_size, FLAGS.steps,
                                 FLAGS.batch_size, FLAGS.learning_rate, FLAGS.seed, verbose=2,
                                 holdout_fraction=FLAGS.holdout_fraction,
                                 eval_every=FLAGS.eval_every, patience=FLAGS.patience)
    if "heldout_accuracy" in info:
        print(f"held-out accuracy {info['heldout_accuracy']:.4f} on {info['num_heldout']} "
              f"records (best of {info['steps']} steps, at step {info['best_step']})")
    print(info)


if __name__ == "__main__":
    cli.run(main)
