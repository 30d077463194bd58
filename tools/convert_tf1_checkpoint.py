#!/usr/bin/env python3
"""Converts a checkpoint of the original TF1 SAGAN release into a sagan_tf checkpoint.

Example:
  python tools/convert_tf1_checkpoint.py --tf1_checkpoint /path/model.ckpt-1000000 \
      --output_dir checkpoint/converted
The output directory gets a TF2 checkpoint (`generator`, `discriminator`,
`step`) and a `config.json`, and can be passed to eval_imagenet.py and the
tools like a training directory. The architecture flags must describe the
network the checkpoint was trained with; any missing, unexpected or
mis-shaped variable is reported, and nothing is written.
"""
from absl import flags

from sagan_tf import cli

flags.DEFINE_string("tf1_checkpoint", None,
                    "Checkpoint prefix (e.g. .../model.ckpt-1000000) or a directory with a "
                    "`checkpoint` file, written by the original release.")
flags.DEFINE_string("output_dir", None, "Directory to create with the converted checkpoint.")
flags.DEFINE_bool("overwrite", False, "Replace output_dir if it already exists.")
flags.DEFINE_enum("generator_type", "test", ["test", "baseline", "test_64"], "Generator architecture.")
flags.DEFINE_enum("discriminator_type", "test", ["test", "baseline", "test_64"],
                  "Discriminator architecture.")
flags.DEFINE_integer("image_size", 128, "Image size the checkpoint was trained at.")
flags.DEFINE_integer("z_dim", 128, "Dimension of the latent z.")
flags.DEFINE_integer("gf_dim", 64, "Generator base width.")
flags.DEFINE_integer("df_dim", 64, "Discriminator base width.")
flags.DEFINE_integer("number_classes", 1000, "Number of classes.")
flags.mark_flags_as_required(["tf1_checkpoint", "output_dir"])
FLAGS = flags.FLAGS


def main(argv):
    cli.start(argv)
    from sagan_tf.runs.legacy import convert_tf1_checkpoint
    path = convert_tf1_checkpoint(
        FLAGS.tf1_checkpoint, FLAGS.output_dir, generator_type=FLAGS.generator_type,
        discriminator_type=FLAGS.discriminator_type, image_size=FLAGS.image_size,
        z_dim=FLAGS.z_dim, gf_dim=FLAGS.gf_dim, df_dim=FLAGS.df_dim,
        number_classes=FLAGS.number_classes, overwrite=FLAGS.overwrite)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    cli.run(main)
