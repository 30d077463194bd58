r"""Writes the procedural class-conditional demo data set (sagan_tf/data/demo_data.py).

Ten classes whose identity needs global consistency (mirrored wings, concentric
rings, the same shape at opposite corners, stripes continuing behind a disc, ...),
written as NUMERICS §7 TFRecords plus manifest.json. Deterministic: the same flags give
byte-identical files.

  python tools/make_demo_data.py --output_dir data/demo --num_images 4000 \
      --image_size 32 --num_classes 10 --seed 0 --num_shards 4
"""
import sys
import time

from absl import flags

from sagan_tf import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "data/demo", "Directory for the shards and manifest.json.")
flags.DEFINE_integer("num_images", 4000, "Number of images.")
flags.DEFINE_integer("image_size", 32, "Image side S (even, >= 8).")
flags.DEFINE_integer("num_classes", 10, "Number of classes (1..10).")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer("num_shards", 4, "Number of .tfrecords files.")


def main(argv):
    cli.quiet_tensorflow()
    del argv
    from sagan_tf.data import demo_data

    start = time.time()
    files = demo_data.write_demo_dataset(FLAGS.output_dir, num_images=FLAGS.num_images,
                                         image_size=FLAGS.image_size,
                                         num_classes=FLAGS.num_classes, seed=FLAGS.seed,
                                         num_shards=FLAGS.num_shards)
    print(f"wrote {FLAGS.num_images} {FLAGS.image_size}x{FLAGS.image_size} images of "
          f"{FLAGS.num_classes} classes to {len(files)} files in {FLAGS.output_dir} "
          f"({time.time() - start:.1f} s); manifest.json beside them", file=sys.stderr)


if __name__ == "__main__":
    cli.run(main)
