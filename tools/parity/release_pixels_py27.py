# -*- coding: utf-8 -*-
"""Records of image files as the release's converter made them, for comparison.

Runs under Python 2.7 with the libraries of 2016 -- not with this project's
environment. It makes, per file, the calls of the improved-GAN ImageNet converter
(docs/NUMERICS.md §7.1): scipy.misc.imread, float64, centred square crop at Python
2 rounded offsets, scipy.misc.imresize(..., [S, S]), / 127.5 - 1, gray to three
channels / fourth channel dropped, + 1, * 255 / 2, astype('uint8'). The .npz it
writes (one uint8 [S, S, 3] array per file, keyed by file name) is what
tools/parity/compare_pixel_pipelines.py --golden compares the port's records with
(docs/DEVIATIONS.md §17 was measured this way).

Usage (a Python 2.7 with numpy 1.11.3, scipy 0.18.1 and a Pillow 3.x on its path):
  python2.7 tools/parity/release_pixels_py27.py OUT.npz SIZE FILE...
"""
from __future__ import print_function

import os
import sys

import numpy as np
import scipy.misc


def release_record(path, size):
    """uint8 [size, size, 3]: the converter's record of the image file ``path``."""
    image = scipy.misc.imread(path)
    if len(image.shape) == 0:
        raise ValueError(path + " was read as a dimensionless array")
    image = image.astype(np.float64)
    height, width = image.shape[:2]
    side = min(height, width)
    top = int(round((height - side) / 2.))  # Python 2: halves away from zero
    left = int(round((width - side) / 2.))
    resized = scipy.misc.imresize(image[top:top + side, left:left + side], [size, size])
    x = np.array(resized) / 127.5 - 1.
    if x.ndim == 2:
        x = np.concatenate([x[:, :, None]] * 3, axis=2)
    if x.shape[2] == 4:
        x = x[:, :, :3]
    x += 1.
    x *= 255. / 2.
    return x.astype('uint8')


def main(argv):
    if len(argv) < 4:
        print(__doc__)
        return 2
    out, size = argv[1], int(argv[2])
    records = {}
    for path in argv[3:]:
        try:
            records[os.path.basename(path)] = release_record(path, size)
        except Exception as e:  # noqa: BLE001 -- reported, the others still written
            print("skipped %s: %s: %s" % (path, type(e).__name__, e))
    np.savez(out, **records)
    import PIL
    print("wrote %d records to %s (numpy %s, scipy %s, Pillow %s)" % (
        len(records), out, np.__version__, scipy.__version__,
        getattr(PIL, "PILLOW_VERSION", getattr(PIL, "__version__", "?"))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
