r"""Converts ImageNet into the TFRecord format SAGAN trains on (NUMERICS §7).

Every image goes through a pixel pipeline (--pixel_pipeline) to S x S x 3 uint8:
  release (default)       the release's records, as the improved-GAN converter
                          wrote them: decoded as scipy's imread did (grayscale,
                          CMYK, RGBA, palette and PNG-named-.JPEG files as it took
                          them), largest centred square crop (Python 2 rounded
                          offsets), contrast stretch of the crop to 0..255
                          (bytescale), Pillow's bilinear resize (antialiased when
                          shrinking), truncation to uint8 (NUMERICS §7.1).
  tf_half_pixel_bilinear  NOT the release's pixels: RGB, centred square crop,
                          TF2's tf.image.resize 'bilinear' (half-pixel centres, no
                          antialias), rounded; this port's earlier converter.
Each record is a tf.train.Example with image_raw (S*S*3 bytes, HWC RGB), label
(int64), height, width, depth. Labels are the index of the synset folder in sorted
order.

Sources (exactly one):
  --imagenet_dir   the ImageNet train folder, one subfolder of images per synset
                   (n01440764/, n01443537/, ...).
  --tfds_name      an already prepared TensorFlow Datasets dataset, e.g. imagenet2012
                   or imagenet_resized/64x64, in --tfds_data_dir (never downloads),
                   split --tfds_split.

Output: --output_dir/train-00000-of-0NNNN.tfrecords ... and manifest.json (the pixel
pipeline, images per class, synsets, skipped unreadable files). Shards are written
atomically; rerunning the same command skips the finished shards (resume after an
interruption); resuming with another --pixel_pipeline is refused.

Example:
  python tools/convert_imagenet_to_records.py --imagenet_dir /data/imagenet/train \
      --output_dir /data/imagenet_128 --image_size 128 --num_shards 1024 --num_workers 16
"""
import os

from absl import app, flags

from sagan_tf import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("imagenet_dir", None,
                    "ImageNet train folder: one subfolder of images per synset; label = index "
                    "of the subfolder in sorted order.")
flags.DEFINE_string("tfds_name", None,
                    "Instead of --imagenet_dir: a prepared TFDS dataset name, e.g. "
                    "imagenet2012 or imagenet_resized/64x64 (read with download=False).")
flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir holding the prepared --tfds_name.")
flags.DEFINE_string("tfds_split", "train", "TFDS split to convert.")
flags.DEFINE_string("tfds_image_key", "image", "TFDS feature holding the image.")
flags.DEFINE_string("tfds_label_key", "label", "TFDS feature holding the class label.")
flags.DEFINE_string("output_dir", None, "Directory for the .tfrecords shards and manifest.json.")
flags.DEFINE_integer("image_size", 128, "Side S of the stored S x S images (release: 128).")
flags.DEFINE_integer("num_shards", 1024, "Number of output shards (files).")
flags.DEFINE_integer("num_workers", os.cpu_count() or 1,
                     "Decode/resize worker processes (1: no worker processes).")
flags.DEFINE_boolean("shuffle", True,
                     "--imagenet_dir: spread images over the shards in a seeded random order "
                     "(each shard mixes all classes); false keeps folder order.")
flags.DEFINE_integer("seed", 0, "Seed of the --shuffle order.")
flags.DEFINE_float("progress_interval", 10.0, "Seconds between progress lines on stderr.")
flags.DEFINE_enum("pixel_pipeline", "release", ["release", "tf_half_pixel_bilinear"],
                  "release: the release's records (the improved-GAN converter's crop, "
                  "contrast stretch, antialiased Pillow bilinear resize and truncation); "
                  "tf_half_pixel_bilinear: TF2 half-pixel bilinear resize without "
                  "antialiasing, not the release's pixels.")


def main(argv):
    cli.quiet_tensorflow()
    del argv
    from sagan_tf.data import imagenet_records

    if bool(FLAGS.imagenet_dir) == bool(FLAGS.tfds_name):
        raise app.UsageError("give exactly one of --imagenet_dir and --tfds_name")
    if not FLAGS.output_dir:
        raise app.UsageError("--output_dir is required")
    common = dict(image_size=FLAGS.image_size, num_shards=FLAGS.num_shards,
                  num_workers=FLAGS.num_workers, progress_interval=FLAGS.progress_interval,
                  pixel_pipeline=FLAGS.pixel_pipeline)
    if FLAGS.imagenet_dir:
        imagenet_records.convert_image_folder(FLAGS.imagenet_dir, FLAGS.output_dir,
                                              shuffle=FLAGS.shuffle, seed=FLAGS.seed, **common)
    else:
        imagenet_records.convert_tfds(FLAGS.tfds_name, FLAGS.output_dir,
                                      data_dir=FLAGS.tfds_data_dir, split=FLAGS.tfds_split,
                                      image_key=FLAGS.tfds_image_key,
                                      label_key=FLAGS.tfds_label_key, **common)


if __name__ == "__main__":
    cli.run(main)
