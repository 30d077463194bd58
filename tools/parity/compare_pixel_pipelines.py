r"""Compares the converter's pixel pipelines on image files (docs/NUMERICS.md §7.1).

For every file and --image_size: the release pipeline's record (the converter's
default) against the tf_half_pixel_bilinear one (this port's earlier converter),
and, with --golden, against records that tools/parity/release_pixels_py27.py made with
the libraries of 2016. Prints, per pair, the mean absolute difference in grey
levels, the share of values more than 2 levels apart and the largest difference.

Example:
  python tools/parity/compare_pixel_pipelines.py --image_size 128 --golden gold_128.npz \
      tests/data/photo_china_231x300.jpg tests/data/photo_flower_300x203.jpg
"""
import os

import numpy as np
from absl import app, flags

from sagan_tf import cli
from sagan_tf.data import pixel_pipelines

FLAGS = flags.FLAGS
flags.DEFINE_integer("image_size", 128, "Side S of the records compared.", lower_bound=1)
flags.DEFINE_string("golden", None,
                    "An .npz of tools/parity/release_pixels_py27.py (records keyed by file name) "
                    "made with the same --image_size.")


def differences(a, b):
    """``mean |a - b|``, share of values more than 2 apart, largest difference."""
    diff = np.abs(a.astype(np.int64) - b.astype(np.int64))
    return f"mean {diff.mean():6.3f}, >2 {100 * (diff > 2).mean():6.2f}%, max {diff.max():3d}"


def main(argv):
    cli.quiet_tensorflow()
    files = argv[1:]
    if not files:
        raise app.UsageError("give the image files to compare")
    golden = np.load(FLAGS.golden) if FLAGS.golden else None
    size = FLAGS.image_size
    for path in files:
        release = pixel_pipelines.pixels_from_file(path, pixel_pipelines.RELEASE, size)
        old = pixel_pipelines.pixels_from_file(path, pixel_pipelines.TF_HALF_PIXEL_BILINEAR,
                                               size)
        line = f"{os.path.basename(path)} {size}x{size}: tf_half_pixel_bilinear vs release: " \
               f"{differences(old, release)}"
        name = os.path.basename(path)
        if golden is not None:
            line += (f"; release vs golden: {differences(release, golden[name])}"
                     if name in golden else "; not in --golden")
        print(line)


if __name__ == "__main__":
    app.run(main)
