#!/usr/bin/env python3
"""Draws the paper's attention figure: where chosen query points attend.

For a generated image (class --labels, z from --seed) and query points (default: the centre
and the centres of the four quadrants), each query's attention map from the generator's
attention block (and/or the discriminator's, --network) is upsampled to the image size,
coloured and overlaid. One PNG: per image and network one row = the image with all query
points marked, then one panel per query.

Examples:
  python tools/visualize_attention.py --checkpoint_dir checkpoint --labels 3 \\
      --output attention.png
  python tools/visualize_attention.py --checkpoint_dir checkpoint --network both \\
      --labels 0,7 --queries 8,8 16,24 --output attention_gd.png
  python tools/visualize_attention.py --checkpoint_dir checkpoint --network discriminator \\
      --image photo.png --output attention_d.png

Query points are (row, col) pixels of the generated image. The release attention block
attends over the 2x2-max-pooled (H/2 x W/2) key grid, the slide variant over the full grid;
each map sums to 1 over the image before colouring. Works with --attention_query_block_size
(memory-efficient path; identical maps).
"""
from absl import app, flags

from sagan_tf import cli

cli.define_checkpoint_flags()
flags.DEFINE_string("output", None, "Output PNG.")
flags.DEFINE_list("labels", None, "Class of each generated image (one figure row each); "
                  "default: one random class drawn from --seed.")
flags.DEFINE_integer("seed", 0, "Seed of z (and of the default label).")
flags.DEFINE_multi_string("queries", None, "Query point 'row,col' in image pixels; repeat or "
                          "separate by spaces. Default: centre and the four quadrant centres.")
flags.DEFINE_enum("network", "generator", ["generator", "discriminator", "both"],
                  "Whose attention block to show.")
flags.DEFINE_string("image", None, "An image file for the discriminator (--network "
                    "discriminator), resized to the model's size; default: generated.")
flags.DEFINE_enum("upsample", "nearest", ["nearest", "bilinear"],
                  "Upsampling of a map from the key grid to the image.")
flags.DEFINE_integer("zoom", None, "Panel magnification (default: max(1, 128 // image_size)).")
flags.DEFINE_float("alpha", 0.6, "Opacity of the coloured map over the image.")
flags.mark_flags_as_required(["output"])
FLAGS = flags.FLAGS


def main(argv):
    cli.start(argv, FLAGS)  # also --device: one device, memory growth
    import numpy as np

    from sagan_tf.sampling import attention_maps, samples as sampling
    try:
        queries = attention_maps.parse_query_points(FLAGS.queries)
    except ValueError as e:
        raise app.UsageError(str(e))
    labels = cli.int_list(FLAGS.labels, "--labels")
    loaded = cli.load_from_flags(FLAGS, discriminator=FLAGS.network != "generator",
                                 seed=FLAGS.seed)
    if labels is None:
        labels = [int(np.random.default_rng([FLAGS.seed, 1]).integers(loaded.num_classes))]
    image = (sampling.read_image(FLAGS.image, loaded.image_size) if FLAGS.image else None)
    figure, _ = attention_maps.attention_figure_rows(
        loaded, labels, seed=FLAGS.seed, query_points=queries, network=FLAGS.network,
        image=image, zoom=FLAGS.zoom, alpha=FLAGS.alpha, upsample=FLAGS.upsample)
    path = sampling.write_png(FLAGS.output, figure)
    print(f"wrote {path} ({cli.loaded_description(loaded)}; "
          f"G's batch norms: {loaded.bn_statistics})")
    return 0


if __name__ == "__main__":
    cli.run(main)
