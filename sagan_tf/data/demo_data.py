"""A deterministic, procedurally generated class-conditional demo data set.

Ten classes of small RGB images whose identity depends on *long-range* structure
(the kind self-attention is meant to help with): a part on one side of the image
must match a part on the other side. Every image has its own random colours
(bright shapes on a dark background, random hue), position, scale and phase, so
samples vary; the class is carried by the structure, not the colour.

label  name              what                                          exact invariance
0      mirror_wings      two tilted wings mirrored about the vertical  left-right flip
1      hourglass         trapezoids mirrored about the horizontal      top-bottom flip
2      concentric_rings  rings about the centre, random period/phase   rotation by 90 degrees
3      opposite_corners  the same square/disc at p and at -p           rotation by 180 degrees
4      oriented_stripes  stripes of one angle continuing behind a disc (none: 1-D pattern)
5      diagonal_mirror   two discs mirrored about the diagonal + band  transpose
6      quadrant_checker  a rotated 2x2 checkerboard inside a disc      rotation by 180 degrees
7      fourfold_star     a four-armed star at a random angle           rotation by 90 (+-1)
8      nested_squares    concentric square frames                      rotation by 90 degrees
9      tiled_motif       one random motif in the left and right half   shift by half the width

The invariances hold exactly on the uint8 pixels (the star up to +-1 from rounding of
``arctan2``/``cos``), because every class is rendered from coordinates of pixel
centres that are exactly symmetric about the image centre. Pure numpy; 4,000 32x32
images take about a second. The same seed gives byte-identical files.
"""
from __future__ import annotations

import json
import os

import numpy as np

from sagan_tf.fileio import atomic_write

__all__ = [
    "CLASS_NAMES",
    "CLASS_INVARIANCE",
    "make_demo_images",
    "write_demo_dataset",
]

CLASS_NAMES = (
    "mirror_wings", "hourglass", "concentric_rings", "opposite_corners",
    "oriented_stripes", "diagonal_mirror", "quadrant_checker", "fourfold_star",
    "nested_squares", "tiled_motif",
)
# The exact invariance of each class ("lr", "tb", "rot90", "rot180", "transpose",
# "half_shift") or None.
CLASS_INVARIANCE = {
    "mirror_wings": "lr", "hourglass": "tb", "concentric_rings": "rot90",
    "opposite_corners": "rot180", "oriented_stripes": None, "diagonal_mirror": "transpose",
    "quadrant_checker": "rot180", "fourfold_star": "rot90", "nested_squares": "rot90",
    "tiled_motif": "half_shift",
}


# ----------------------------------------------------------------------------------
# Rendering helpers. Shapes: params [n, 1, 1]; fields [n, S, S]; masks in [0, 1].
# ----------------------------------------------------------------------------------
def _grid(size: int):
    """Pixel-centre coordinates in (-1, 1): X [1, S, S] (columns), Y [1, S, S] (rows);
    exactly antisymmetric about the centre (u[S-1-i] == -u[i])."""
    u = (np.arange(size, dtype=np.float64) + 0.5) * (2.0 / size) - 1.0
    u = 0.5 * (u - u[::-1])  # exact antisymmetry regardless of rounding
    return u[None, None, :].repeat(size, axis=1), u[None, :, None].repeat(size, axis=2)


def _coverage(signed_distance, size):
    """Anti-aliased coverage of {d < 0}; d in the normalised units of `_grid`."""
    return np.clip(0.5 - signed_distance * (size / 2.0), 0.0, 1.0)


def _u(rng, lo, hi, n):
    return rng.uniform(lo, hi, (n, 1, 1))


def _colours(rng, n):
    """Dark background, bright foreground, mid second colour: [n, 1, 1, 3] each."""
    bg = rng.uniform(0.0, 0.4, (n, 1, 1, 3))
    fg = rng.uniform(0.55, 1.0, (n, 1, 1, 3))
    fg2 = rng.uniform(0.3, 0.85, (n, 1, 1, 3))
    return bg, fg, fg2


def _blend(base, colour, mask):
    return base * (1.0 - mask[..., None]) + colour * mask[..., None]


def _rotate(dx, dy, angle):
    c, s = np.cos(angle), np.sin(angle)
    return dx * c + dy * s, -dx * s + dy * c


def _ellipse_sd(p, q, a, b):
    """Approximate signed distance to the ellipse (p/a)^2 + (q/b)^2 = 1."""
    return (np.sqrt((p / a) ** 2 + (q / b) ** 2) - 1.0) * np.minimum(a, b)


def _mirror_wings(rng, n, S, X, Y):
    bg, fg, fg2 = _colours(rng, n)
    cx, cy = _u(rng, 0.3, 0.55, n), _u(rng, -0.3, 0.3, n)
    a, b, tilt = _u(rng, 0.15, 0.28, n), _u(rng, 0.28, 0.5, n), _u(rng, -0.8, 0.8, n)
    p, q = _rotate(np.abs(X) - cx, Y - cy, tilt)
    wings = _coverage(_ellipse_sd(p, q, a, b), S)
    half_len = _u(rng, 0.3, 0.6, n)
    body = _coverage(np.maximum(np.abs(X) - 0.07, np.abs(Y - cy) - half_len), S)
    return _blend(_blend(bg, fg, wings), fg2, body)


def _hourglass(rng, n, S, X, Y):
    bg, fg, fg2 = _colours(rng, n)
    cx, h = _u(rng, -0.3, 0.3, n), _u(rng, 0.5, 0.85, n)
    w0, k = _u(rng, 0.04, 0.12, n), _u(rng, 0.35, 0.75, n)
    ay = np.abs(Y)
    shape = _coverage(np.maximum(ay - h, np.abs(X - cx) - (w0 + k * ay)), S)
    caps = _coverage(np.maximum(np.abs(ay - h) - 0.06, np.abs(X - cx) - (w0 + k * h) - 0.1), S)
    return _blend(_blend(bg, fg, shape), fg2, caps)


def _concentric_rings(rng, n, S, X, Y):
    bg, fg, _ = _colours(rng, n)
    period, phase = _u(rng, 0.25, 0.5, n), _u(rng, 0.0, 2 * np.pi, n)
    radius = _u(rng, 0.7, 1.0, n)
    r = np.sqrt(X * X + Y * Y)
    rings = np.clip((0.5 + 0.5 * np.cos(2 * np.pi * r / period + phase) - 0.5) * 2.5 + 0.5,
                    0.0, 1.0)
    return _blend(bg, fg, rings * _coverage(r - radius, S))


def _opposite_corners(rng, n, S, X, Y):
    bg, fg, _ = _colours(rng, n)
    px = _u(rng, 0.35, 0.65, n) * rng.choice([-1.0, 1.0], (n, 1, 1))
    py = _u(rng, 0.35, 0.65, n) * rng.choice([-1.0, 1.0], (n, 1, 1))
    half = _u(rng, 0.14, 0.28, n)
    disc = rng.random((n, 1, 1)) < 0.5

    def sd(dx, dy):
        return np.where(disc, np.sqrt(dx * dx + dy * dy) - half,
                        np.maximum(np.abs(dx), np.abs(dy)) - half)

    mask = np.maximum(_coverage(sd(X - px, Y - py), S), _coverage(sd(-X - px, -Y - py), S))
    return _blend(bg, fg, mask)


def _oriented_stripes(rng, n, S, X, Y):
    bg, fg, fg2 = _colours(rng, n)
    theta, period = _u(rng, 0.0, np.pi, n), _u(rng, 0.3, 0.6, n)
    phase = _u(rng, 0.0, 2 * np.pi, n)
    t = X * np.cos(theta) + Y * np.sin(theta)
    stripes = np.clip(np.cos(2 * np.pi * t / period + phase) * 2.0 + 0.5, 0.0, 1.0)
    cx, cy, rad = _u(rng, -0.2, 0.2, n), _u(rng, -0.2, 0.2, n), _u(rng, 0.25, 0.45, n)
    occluder = _coverage(np.sqrt((X - cx) ** 2 + (Y - cy) ** 2) - rad, S)
    return _blend(_blend(bg, fg, stripes), fg2, occluder)


def _diagonal_mirror(rng, n, S, X, Y):
    bg, fg, fg2 = _colours(rng, n)
    a, b = _u(rng, -0.7, -0.15, n), _u(rng, 0.15, 0.7, n)
    r, w = _u(rng, 0.15, 0.3, n), _u(rng, 0.04, 0.1, n)
    d1 = np.sqrt((X - a) ** 2 + (Y - b) ** 2) - r
    d2 = np.sqrt((Y - a) ** 2 + (X - b) ** 2) - r
    band = _coverage(np.abs(X - Y) - w, S)
    return _blend(_blend(bg, fg2, band), fg, np.maximum(_coverage(d1, S), _coverage(d2, S)))


def _quadrant_checker(rng, n, S, X, Y):
    bg, fg, fg2 = _colours(rng, n)
    p, q = _rotate(X, Y, _u(rng, 0.0, np.pi / 2, n))
    checker = 0.5 + 0.5 * np.clip(p * (S / 2.0), -1, 1) * np.clip(q * (S / 2.0), -1, 1)
    inside = _coverage(np.sqrt(X * X + Y * Y) - _u(rng, 0.6, 0.95, n), S)
    return _blend(bg, _blend(fg2, fg, checker), inside)


def _fourfold_star(rng, n, S, X, Y):
    bg, fg, fg2 = _colours(rng, n)
    phi, r0, k = _u(rng, 0.0, np.pi / 2, n), _u(rng, 0.45, 0.7, n), _u(rng, 0.3, 0.55, n)
    r = np.sqrt(X * X + Y * Y)
    star = _coverage(r - r0 * (1.0 + k * np.cos(4.0 * (np.arctan2(Y, X) - phi))), S)
    dot = _coverage(r - _u(rng, 0.1, 0.2, n), S)
    return _blend(_blend(bg, fg, star), fg2, dot)


def _nested_squares(rng, n, S, X, Y):
    bg, fg, _ = _colours(rng, n)
    period, phase = _u(rng, 0.3, 0.55, n), _u(rng, 0.0, 2 * np.pi, n)
    c = np.maximum(np.abs(X), np.abs(Y))
    frames = np.clip(np.cos(2 * np.pi * c / period + phase) * 2.0 + 0.5, 0.0, 1.0)
    return _blend(bg, fg, frames * _coverage(c - _u(rng, 0.6, 0.95, n), S))


def _tiled_motif(rng, n, S, X, Y):
    bg, fg, fg2 = _colours(rng, n)
    cols = np.arange(S) % (S // 2)
    xl = ((cols + 0.5) * (2.0 / S) - 0.5)[None, None, :]  # x within each half, (-0.5, 0.5)
    mx, my = _u(rng, -0.15, 0.15, n), _u(rng, -0.45, 0.45, n)
    a, b, tilt = _u(rng, 0.15, 0.3, n), _u(rng, 0.08, 0.16, n), _u(rng, 0.0, np.pi, n)
    p, q = _rotate(xl - mx, Y - my, tilt)
    motif = _coverage(_ellipse_sd(p, q, a, b), S)
    dy = _u(rng, 0.3, 0.5, n) * np.where(my > 0, -1.0, 1.0)
    dot = _coverage(np.sqrt((xl + mx) ** 2 + (Y - my - dy) ** 2) - _u(rng, 0.08, 0.14, n), S)
    return _blend(_blend(bg, fg, motif), fg2, dot)


_RENDERERS = (
    _mirror_wings, _hourglass, _concentric_rings, _opposite_corners, _oriented_stripes,
    _diagonal_mirror, _quadrant_checker, _fourfold_star, _nested_squares, _tiled_motif,
)


def make_demo_images(num_images: int = 4000, image_size: int = 32, num_classes: int = 10,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Generates the demo data in memory.

    Args:
      num_images: ``N``.
      image_size: ``S``, even and ``>= 8``.
      num_classes: ``C`` in ``[1, 10]``; the first ``C`` classes of `CLASS_NAMES`.
      seed: the same seed gives identical arrays.

    Returns:
      ``(images uint8 [N, S, S, 3], labels int64 [N])``; labels are balanced
      (``N // C`` or one more per class) and in shuffled order.
    """
    num_images, image_size, num_classes = int(num_images), int(image_size), int(num_classes)
    if not 1 <= num_classes <= len(_RENDERERS):
        raise ValueError(f"demo data has {len(_RENDERERS)} classes; num_classes must be in "
                         f"[1, {len(_RENDERERS)}], got {num_classes}")
    if image_size < 8 or image_size % 2:
        raise ValueError(f"demo image_size must be even and >= 8, got {image_size}")
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    labels = np.random.default_rng([int(seed), 1_000_003]).permutation(
        np.arange(num_images) % num_classes).astype(np.int64)
    images = np.zeros((num_images, image_size, image_size, 3), np.uint8)
    X, Y = _grid(image_size)
    for c in range(num_classes):
        index = np.flatnonzero(labels == c)
        if index.size == 0:
            continue
        rng = np.random.default_rng([int(seed), c])
        rendered = _RENDERERS[c](rng, index.size, image_size, X, Y)
        images[index] = np.rint(np.clip(rendered, 0.0, 1.0) * 255.0).astype(np.uint8)
    return images, labels


def write_demo_dataset(output_dir: str, num_images: int = 4000, image_size: int = 32,
                       num_classes: int = 10, seed: int = 0, num_shards: int = 4) -> list[str]:
    """Writes the demo data as NUMERICS §7 records: ``train-0000k-of-0000N.tfrecords`` plus
    ``manifest.json`` in ``output_dir`` (files written atomically).

    Refuses (``FileExistsError``) an ``output_dir`` that holds other ``*.tfrecords``
    files, which a reader would mix in. Returns the sorted list of record files.
    """
    from sagan_tf.data import record_format  # TensorFlow only when writing

    if int(num_shards) < 1 or int(num_shards) > max(int(num_images), 1):
        raise ValueError(f"num_shards must be in [1, num_images={num_images}], got {num_shards}")
    images, labels = make_demo_images(num_images, image_size, num_classes, seed)
    os.makedirs(output_dir, exist_ok=True)
    names = [f"train-{k:05d}-of-{int(num_shards):05d}.tfrecords" for k in range(num_shards)]
    others = sorted(set(f for f in os.listdir(output_dir) if f.endswith(".tfrecords"))
                    - set(names))
    if others:
        raise FileExistsError(
            f"{output_dir} already holds other record files ({', '.join(others[:3])}"
            f"{', ...' if len(others) > 3 else ''}) that a reader would mix in; use an empty "
            "--output_dir")
    files = []
    for k, name in enumerate(names):
        lo, hi = k * len(labels) // num_shards, (k + 1) * len(labels) // num_shards
        path = os.path.join(output_dir, name)
        record_format.write_records(path, images[lo:hi], labels[lo:hi])
        files.append(path)
    counts = np.bincount(labels, minlength=num_classes)
    manifest = {
        "dataset": "sagan_tf demo (sagan_tf/data/demo_data.py)",
        "num_images": int(num_images),
        "image_size": int(image_size),
        "num_classes": int(num_classes),
        "seed": int(seed),
        "num_shards": int(num_shards),
        "class_names": list(CLASS_NAMES[:num_classes]),
        "class_invariance": {n: CLASS_INVARIANCE[n] for n in CLASS_NAMES[:num_classes]},
        "images_per_class": {CLASS_NAMES[c]: int(counts[c]) for c in range(num_classes)},
        "files": names,
    }
    atomic_write(os.path.join(output_dir, "manifest.json"),
                       json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return files
