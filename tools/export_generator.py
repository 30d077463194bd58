#!/usr/bin/env python3
"""Exports a trained generator as a SavedModel for serving.

Example:
  python tools/export_generator.py --checkpoint_dir checkpoint --export_dir exported/generator

The SavedModel's `serving_default` signature (also the `serve` function) is
  (z: float32 [B, z_dim], labels: int32 [B]) -> {"images": uint8 [B, S, S, 3]}
with the generator in eval mode and without spectral-norm updates. It needs only
TensorFlow to load, not this package:
  m = tf.saved_model.load("exported/generator")
  images = m.serve(z, labels)["images"]     # or m.signatures["serving_default"](z=z, labels=labels)
  m.z_dim.numpy(), m.image_size.numpy(), m.num_classes.numpy()
A second signature, `sample` (also a function), draws z in the graph, with the truncation
trick as an input (BigGAN's; not the paper's protocol: 0 gives z ~ N(0, 1)):
  out = m.sample(labels, truncation=tf.constant(0.5), seed=tf.constant([1, 2]))
  out["images"], out["z"]                   # every |z| <= 0.5; the same seed, the same images
The run's config.json is copied to <export_dir>/assets.extra/sagan_config.json.
"""
from absl import flags

from sagan_tf import cli

cli.define_checkpoint_flags()
flags.DEFINE_string("export_dir", None, "Directory to write the SavedModel to.")
flags.DEFINE_bool("overwrite", False, "Replace --export_dir if it exists.")
flags.mark_flags_as_required(["export_dir"])
FLAGS = flags.FLAGS


def main(argv):
    cli.start(argv, FLAGS)  # also --device: one device, memory growth
    from sagan_tf.sampling import export
    loaded = cli.load_from_flags(FLAGS, seed=0)
    path = export.export_generator(loaded, FLAGS.export_dir, overwrite=FLAGS.overwrite)
    G = loaded.generator
    print(f"wrote {path} ({cli.loaded_description(loaded)}): "
          f"serve(z float32 [B, {G.z_dim}], labels int32 [B] in [0, {G.num_classes})) -> "
          f"images uint8 [B, {G.image_size}, {G.image_size}, 3]; sample(labels, truncation "
          f"(0: off), seed int32 [2]) -> images, z; G's batch norms: "
          f"{loaded.bn_statistics}")
    return 0


if __name__ == "__main__":
    cli.run(main)
