"""The release's pixels: the per-image pipeline of the improved-GAN ImageNet
converter that wrote the records the release trained on (NUMERICS §7.1).

That converter ran, per image (Python 2, scipy 0.17/0.18 ``scipy.misc``, Pillow 3):

1. ``scipy.misc.imread(path)``: PIL decodes the file; a palette image (``P``)
   becomes RGB, or RGBA when it has a transparent colour; a bilevel image
   (``1``) becomes ``L``; every other mode is kept: ``L`` (and ``I;16``, ``I``,
   ``F``) give a 2-D array, ``RGB`` three channels, ``RGBA`` and ``CMYK`` four
   (CMYK *values*, not converted). Then ``astype(float64)``.
2. The largest centred square, side ``c = min(H, W)``, at offsets
   ``round((H - c) / 2.)`` and ``round((W - c) / 2.)`` with Python 2's
   rounding (half away from zero): an odd margin puts the extra pixel on top
   (left), not below (right).
3. ``scipy.misc.imresize(crop, [S, S])`` (bilinear): ``toimage`` byte-scales
   the float crop (``bytescale``: its own minimum..maximum over all channels
   stretched to 0..255, ``(x - min) * 255 / (max - min) + 0.4999``, clipped,
   truncated to uint8; a flat crop gives 0), makes an ``L``/``RGB``/``RGBA``
   PIL image of it and resizes it with ``Image.BILINEAR``: a triangle filter
   whose support grows with the shrink factor (antialiased), two separable
   passes each rounded to uint8; RGBA is resized with premultiplied alpha.
4. ``/ 127.5 - 1``, gray stacked to three channels and the fourth channel
   dropped (``colorize``), ``+ 1``, ``* 255 / 2``, ``astype('uint8')``: the
   float64 round trip comes back a hair below some integers, which the cast
   truncates (:data:`ROUND_TRIP_TABLE`).

Here the same steps run with today's Pillow and numpy. Byte-scaling an 8-bit
crop is a 256-entry table computed with the same float64 expression (so equal
to computing it per pixel); the resize is Pillow's. What cannot be reproduced
exactly (the JPEG decoder and Pillow release of 2016) is measured in
docs/DEVIATIONS.md. Free of TensorFlow: converter workers import only this,
PIL and numpy.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = [
    "ROUND_TRIP_TABLE",
    "read_like_imread",
    "release_crop_box",
    "bytescale_table",
    "bytescale",
    "release_pixels",
    "release_pixels_from_file",
]

_EIGHT_BIT_MODES = ("L", "RGB")
_IDENTITY = np.arange(256, dtype=np.uint8)


def _round_trip_table() -> np.ndarray:
    """uint8 ``[256]``: byte ``u`` -> ``uint8(((u / 127.5 - 1) + 1) * 127.5)`` in
    float64, the release's normalise-and-back, truncated by the cast."""
    x = np.arange(256, dtype=np.uint8) / 127.5 - 1.0
    x += 1.0
    x *= 255.0 / 2.0
    return x.astype(np.uint8)


#: The release's ``/127.5 - 1`` ... ``(+1) * 255/2`` ... ``astype('uint8')`` per byte.
ROUND_TRIP_TABLE = _round_trip_table()


def read_like_imread(image: Image.Image) -> np.ndarray:
    """What scipy 0.17/0.18's ``imread`` returned for an opened PIL image (before
    the release's ``astype(float)``): ``P`` -> RGB (RGBA with a transparent
    colour), ``1`` -> ``L``, then the array of the image in its own mode
    (``[H, W]``, ``[H, W, 3]`` or ``[H, W, 4]``, dtype of the mode)."""
    image = _imread_mode(image)
    return np.asarray(image)


def _imread_mode(image: Image.Image) -> Image.Image:
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode == "1":
        return image.convert("L")
    return image


def release_crop_box(height: int, width: int) -> tuple[int, int, int]:
    """``(top, left, side)`` of the release's centred square crop: ``side =
    min(H, W)``, offsets ``round(margin / 2.)`` rounded half away from zero
    (Python 2's ``round``), i.e. ``(margin + 1) // 2`` for a margin >= 0."""
    side = min(int(height), int(width))
    return (int(height) - side + 1) // 2, (int(width) - side + 1) // 2, side


def bytescale_table(cmin: float, cmax: float) -> np.ndarray:
    """uint8 ``[256]``: scipy 0.18's ``bytescale`` of the values 0..255 with the
    crop's ``cmin``/``cmax``: ``uint8(clip((v - cmin) * (255 / (cmax - cmin))
    + 0.4999, 0, 255))`` in float64 (``cmax == cmin``: scale 255, all 0)."""
    return bytescale(np.arange(256, dtype=np.float64), cmin, cmax)


def bytescale(data: np.ndarray, cmin: float | None = None,
              cmax: float | None = None) -> np.ndarray:
    """scipy 0.18's ``bytescale(data)`` (``low=0``, ``high=255``) of a float
    array, same shape, uint8. ``cmin``/``cmax`` default to the data's own."""
    data = np.asarray(data, dtype=np.float64)
    cmin = np.float64(data.min() if cmin is None else cmin)
    cmax = np.float64(data.max() if cmax is None else cmax)
    cscale = cmax - cmin
    if cscale == 0:
        cscale = 1
    scale = 255.0 / cscale
    scaled = (data * 1.0 - cmin) * scale + 0.4999
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _checked_array(image: np.ndarray) -> np.ndarray:
    """``[H, W]`` or ``[H, W, C]`` with C in {3, 4} (C = 1 -> 2-D), or a
    ``ValueError`` saying why the release's converter could not have taken it."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 2:
        raise ValueError(
            f"a 2-channel (gray + alpha) image of shape {image.shape}: the release's converter "
            "(scipy.misc.imresize) cannot take it")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(f"expected an image [H, W], [H, W, 3] or [H, W, 4], got shape "
                         f"{image.shape}")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"empty image of shape {image.shape}")
    if image.ndim == 3 and min(image.shape[:2]) in (3, 4):
        raise ValueError(
            f"image of {image.shape[0]}x{image.shape[1]} pixels: for a square crop of side 3 "
            "or 4 the release's converter (scipy.misc.toimage) took a spatial axis for the "
            "colour channels; not reproduced")
    return image


def release_pixels(image: np.ndarray, image_size: int) -> np.ndarray:
    """The release's record of an image array, as ``scipy.misc.imread`` gave it.

    Args:
      image: ``[H, W]`` (gray), ``[H, W, 1]``, ``[H, W, 3]`` or ``[H, W, 4]``
        (RGBA, or CMYK values: byte-scaled with the fourth channel, which is then
        the alpha of the premultiplied resize and dropped), any real dtype.
      image_size: ``S``.

    Returns:
      uint8 ``[S, S, 3]``.
    """
    image = _checked_array(image)
    top, left, side = release_crop_box(*image.shape[:2])
    crop = image[top:top + side, left:left + side]
    if crop.dtype == np.uint8:  # the usual case: a 256-entry table, same float64 expression
        scaled = bytescale_table(crop.min(), crop.max())[crop]
    else:
        scaled = bytescale(crop)
    # 2-D uint8 -> L, 3 channels -> RGB, 4 -> RGBA: toimage's modes.
    return _resize_and_round_trip(Image.fromarray(scaled), int(image_size))


def _resize_and_round_trip(scaled: Image.Image, image_size: int) -> np.ndarray:
    """Pillow's BILINEAR resize of the byte-scaled crop to ``S x S``, then the
    release's float round trip, gray -> 3 channels, 4th channel dropped."""
    resized = np.asarray(scaled.resize((image_size, image_size), Image.BILINEAR))
    out = ROUND_TRIP_TABLE[resized]
    if out.ndim == 2:
        return np.repeat(out[:, :, None], 3, axis=2)
    return np.ascontiguousarray(out[:, :, :3])


def release_pixels_from_file(path: str, image_size: int) -> np.ndarray:
    """Decodes ``path`` with PIL as ``scipy.misc.imread`` did and returns its
    release record, uint8 ``[S, S, 3]`` (:func:`release_pixels`).

    ``L`` and ``RGB`` images (nearly all of ImageNet) stay PIL images
    throughout: crop, byte-scaling table (``Image.point``; skipped when the crop
    spans 0..255, where it is the identity), resize -- the same numbers as
    :func:`release_pixels` on their array, in C.
    """
    with Image.open(path) as opened:
        opened.load()
        image = _imread_mode(opened)
        if image.mode not in _EIGHT_BIT_MODES or min(image.size) < 5:
            return release_pixels(np.asarray(image), image_size)
        width, height = image.size
        top, left, side = release_crop_box(height, width)
        crop = image.crop((left, top, left + side, top + side))
        pixels = np.asarray(crop)  # numpy's min/max: faster than PIL's getextrema
        table = bytescale_table(pixels.min(), pixels.max())
        if not np.array_equal(table, _IDENTITY):  # identity: the crop spans 0..255 already
            crop = crop.point(table.tolist() * len(crop.getbands()))
        return _resize_and_round_trip(crop, int(image_size))
