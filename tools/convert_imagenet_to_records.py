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
                   (n01440764/, n01443537/, ...). Folders that are not classes
                   (hidden, lost+found, __MACOSX, without images) are refused
                   unless --skip_non_class_folders.
  --validation_dir ILSVRC's flat validation folder, labelled by --validation_labels
                   ('<file> <synset>' lines, e.g. LOC_val_solution.csv); labels index
                   the classes of --classes_from (the train records' manifest).
  --tfds_name      an already prepared TensorFlow Datasets dataset, e.g. imagenet2012
                   or imagenet_resized/64x64, in --tfds_data_dir (never downloads),
                   split --tfds_split.
--expected_classes imagenet checks 1,000 synsets n######## (or give a file of names).

Output: --output_dir/<split>-00000-of-0NNNN.tfrecords ... (train-, validation-; one
split per directory) and manifest.json (the split, the pixel pipeline, the class
names, images per class, skipped unreadable files). Shards are written atomically
and fsynced; rerunning the same command skips the finished shards (resume after an
interruption, also after a killed worker); resuming with another --pixel_pipeline
is refused.

Example:
  python tools/convert_imagenet_to_records.py --imagenet_dir /data/imagenet/train \
      --output_dir /data/imagenet_128 --image_size 128 --num_shards 1024 \
      --expected_classes imagenet
  python tools/convert_imagenet_to_records.py --validation_dir /data/imagenet/val \
      --validation_labels /data/imagenet/LOC_val_solution.csv \
      --classes_from /data/imagenet_128 --output_dir /data/imagenet_128_val \
      --num_shards 64 --expected_classes imagenet
"""
from absl import app, flags

from sagan_tf import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("imagenet_dir", None,
                    "ImageNet train folder: one subfolder of images per synset; label = index "
                    "of the subfolder in sorted order.")
flags.DEFINE_string("validation_dir", None,
                    "Instead of --imagenet_dir: one folder of images (ILSVRC's validation "
                    "folder) labelled by --validation_labels; written as validation-* shards.")
flags.DEFINE_string("validation_labels", None,
                    "Label file of --validation_dir: '<image file> <synset>' lines "
                    "(whitespace or comma separated, e.g. LOC_val_solution.csv).")
flags.DEFINE_string("classes_from", None,
                    "--validation_dir: records directory whose manifest.json gives the class "
                    "list the labels index (the train records: one label space). Default: "
                    "the sorted classes of --validation_labels.")
flags.DEFINE_boolean("skip_non_class_folders", False,
                     "--imagenet_dir: leave out folders that are not classes (hidden, "
                     "lost+found, __MACOSX, without image files) instead of refusing them.")
flags.DEFINE_string("expected_classes", None,
                    "Check the class names: 'imagenet' (1,000 distinct synsets n########) "
                    "or a file of class names, one a line, in label order.")
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
flags.DEFINE_integer("num_workers", None,
                     "Decode/resize worker processes (1: no worker processes). Default: the "
                     "CPUs this process may use (os.sched_getaffinity).")
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
    from sagan_tf.data import image_folders, imagenet_records, shard_writer

    sources = [FLAGS.imagenet_dir, FLAGS.validation_dir, FLAGS.tfds_name]
    if sum(bool(s) for s in sources) != 1:
        raise app.UsageError("give exactly one of --imagenet_dir, --validation_dir and "
                             "--tfds_name")
    if not FLAGS.output_dir:
        raise app.UsageError("--output_dir is required")
    if FLAGS.validation_dir and not FLAGS.validation_labels:
        raise app.UsageError("--validation_dir needs --validation_labels")
    common = dict(image_size=FLAGS.image_size, num_shards=FLAGS.num_shards,
                  num_workers=FLAGS.num_workers or shard_writer.available_cpus(),
                  progress_interval=FLAGS.progress_interval,
                  pixel_pipeline=FLAGS.pixel_pipeline,
                  expected_classes=image_folders.read_expected_classes(FLAGS.expected_classes))
    if FLAGS.imagenet_dir:
        imagenet_records.convert_image_folder(
            FLAGS.imagenet_dir, FLAGS.output_dir, shuffle=FLAGS.shuffle, seed=FLAGS.seed,
            skip_non_class_folders=FLAGS.skip_non_class_folders, **common)
    elif FLAGS.validation_dir:
        classes = (image_folders.classes_from_records(FLAGS.classes_from)
                   if FLAGS.classes_from else None)
        imagenet_records.convert_flat_folder(
            FLAGS.validation_dir, FLAGS.validation_labels, FLAGS.output_dir, classes=classes,
            shuffle=FLAGS.shuffle, seed=FLAGS.seed, **common)
    else:
        imagenet_records.convert_tfds(FLAGS.tfds_name, FLAGS.output_dir,
                                      data_dir=FLAGS.tfds_data_dir, split=FLAGS.tfds_split,
                                      image_key=FLAGS.tfds_image_key,
                                      label_key=FLAGS.tfds_label_key, **common)


if __name__ == "__main__":
    cli.run(main)
