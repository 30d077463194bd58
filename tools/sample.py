#!/usr/bin/env python3
"""Samples from a trained generator: PNG grids, latent/class interpolations, .npz dumps.

Examples:
  # one row per class (classes 0..3), 8 samples each
  python tools/sample.py --checkpoint_dir checkpoint --mode grid --classes 0,1,2,3 \\
      --output samples/grid.png
  # random classes, 4x8
  python tools/sample.py --checkpoint_dir checkpoint --output samples/random.png
  # z interpolations (one row per class), class interpolations (one row per z)
  python tools/sample.py --checkpoint_dir checkpoint --mode interpolate_z --classes 0,3 \\
      --num_steps 8 --output samples/interp_z.png
  python tools/sample.py --checkpoint_dir checkpoint --mode interpolate_class --classes 0,3 \\
      --num_rows 4 --output samples/interp_class.png
  # 50,000 samples for external metrics (images uint8, labels int32, z float32)
  python tools/sample.py --checkpoint_dir checkpoint --mode npz --num_samples 50000 \\
      --output samples/samples.npz

--checkpoint_dir is a training run (<checkpoint_dir> or <checkpoint_dir>/imagenet_<batch_size>,
with config.json and ckpt-N files) or a directory written by tools/convert_tf1_checkpoint.py;
the newest checkpoint is used unless --checkpoint_path names one. The generator runs in eval
mode without spectral-norm updates, so nothing is modified. All randomness comes from --seed:
the same command writes byte-identical files. --truncation psi (off by default; not the
paper's protocol) draws z with every component redrawn until |z| <= psi and names the
output <name>_truncation<psi>.<ext>.
"""
from absl import flags

from sagan_tf import cli

cli.define_checkpoint_flags()
flags.DEFINE_enum("mode", "grid", ["grid", "interpolate_z", "interpolate_class", "npz"],
                  "grid: one row per --classes (or random classes); interpolate_z: z "
                  "interpolation per class; interpolate_class: class interpolation per z "
                  "(--classes from,to); npz: --num_samples samples in a .npz file.")
flags.DEFINE_string("output", None, "Output file (.png, or .npz for --mode npz).")
flags.DEFINE_list("classes", None, "Class labels, comma separated (see --mode).")
flags.DEFINE_integer("num_rows", 4, "Rows of a random-class grid, of interpolate_z without "
                     "--classes, and of interpolate_class.")
flags.DEFINE_integer("num_columns", 8, "Samples per row of a grid.")
flags.DEFINE_integer("num_steps", 8, "Images per interpolation (including both ends).")
flags.DEFINE_enum("interpolation", "slerp", ["slerp", "linear"], "z interpolation.")
flags.DEFINE_integer("num_samples", 10000, "Samples in the .npz (--mode npz).")
flags.DEFINE_integer("seed", 0, "Seed of every random draw (z and random classes).")
flags.DEFINE_integer("sample_batch_size", 100, "Generator batch size.")
flags.DEFINE_integer("zoom", 1, "Nearest-neighbour magnification of each grid tile.")
flags.DEFINE_integer("padding", 2, "Pixels between grid tiles.")
flags.DEFINE_float("truncation", None,
                   "Truncation trick (BigGAN; not the paper's protocol, which samples z ~ "
                   "N(0, 1)): every z component with |z| > this is redrawn until inside. The "
                   "output's file name gets _truncation<value> before its extension. Default: "
                   "off.", lower_bound=0.0)
flags.mark_flags_as_required(["output"])
FLAGS = flags.FLAGS


def main(argv):
    cli.start(argv, FLAGS)  # also --device: one device, memory growth
    from sagan_tf.sampling import samples as sampling, truncation
    classes = cli.int_list(FLAGS.classes, "--classes")
    loaded = cli.load_from_flags(FLAGS, seed=FLAGS.seed)
    path, _ = sampling.sample_to_file(
        loaded.generator, FLAGS.mode, FLAGS.output, classes=classes, num_rows=FLAGS.num_rows,
        num_columns=FLAGS.num_columns, num_steps=FLAGS.num_steps,
        interpolation=FLAGS.interpolation, num_samples=FLAGS.num_samples, seed=FLAGS.seed,
        batch_size=FLAGS.sample_batch_size, zoom=FLAGS.zoom, padding=FLAGS.padding,
        truncation=FLAGS.truncation)
    print(f"wrote {path} ({cli.loaded_description(loaded)}; "
          f"G's batch norms: {loaded.bn_statistics}; {truncation.describe(FLAGS.truncation)})")
    return 0


if __name__ == "__main__":
    cli.run(main)
