"""An independent reference of the release's record pixels, for the tests.

Written from the code that wrote the release's records -- the improved-GAN ImageNet
converter (its ``convert_imagenet_to_records.py`` loop body and its ``utils.py``:
``get_image``, ``imread``, ``center_crop``, ``transform``, ``colorize``) and
scipy 0.18's ``scipy/misc/pilutil.py`` (``imread``/``fromimage``, ``toimage``,
``bytescale``, ``imresize``) -- one function per function there, float64 arrays
per pixel as there, PIL only where they called PIL (decoding, ``Image.resize``).
It does not use ``sagan_tf``: it is what the port is compared against.

:func:`pillow_bilinear_resize` is a second, numpy-only model of what Pillow's
``Image.resize(..., BILINEAR)`` computes on 8-bit images (support-scaled triangle
filter, two separable passes, fixed-point coefficients, uint8 after each pass),
to check that description (docs/NUMERICS.md §7.1) against Pillow itself.
"""
import math

import numpy as np
from PIL import Image


# ------------------------------------------------------------------ scipy 0.18 pilutil
def scipy_fromimage(im):
    """``fromimage(im)``: palette -> RGB (RGBA if it has a transparent colour),
    bilevel -> L, then ``array(im)``."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "1":
        im = im.convert("L")
    return np.array(im)


def scipy_imread(path):
    """``imread(path)``."""
    with Image.open(path) as im:
        im.load()
        return scipy_fromimage(im)


def scipy_bytescale(data, cmin=None, cmax=None, high=255, low=0):
    """``bytescale``: uint8 data untouched; otherwise ``(data - cmin) * scale +
    0.4999`` with ``scale = (high - low) / (cmax - cmin)`` (1 for a flat array),
    values above ``high`` set to ``high``, below 0 to 0, cast to uint8, ``+ low``."""
    if data.dtype == np.uint8:
        return data
    if cmin is None:
        cmin = data.min()
    if cmax is None:
        cmax = data.max()
    cscale = cmax - cmin
    if cscale == 0:
        cscale = 1
    scale = float(high - low) / cscale
    out = (data * 1.0 - cmin) * scale + 0.4999
    out[out > high] = high
    out[out < 0] = 0
    return out.astype(np.uint8) + np.uint8(low)


def scipy_toimage(arr):
    """``toimage(arr)`` with the defaults: 2-D -> byte-scaled ``L``; 3-D -> the
    first axis of length 3 (else 4) holds the channels, byte-scaled, ``RGB`` or
    ``RGBA``."""
    data = np.asarray(arr)
    shape = list(data.shape)
    if len(shape) == 2:
        return Image.frombytes("L", (shape[1], shape[0]), scipy_bytescale(data).tobytes())
    axis = shape.index(3) if 3 in shape else shape.index(4)
    channels = shape[axis]
    scaled = scipy_bytescale(data)
    order = {2: (0, 1, 2), 1: (0, 2, 1), 0: (1, 2, 0)}[axis]
    scaled = np.transpose(scaled, order)
    size = (scaled.shape[1], scaled.shape[0])
    return Image.frombytes("RGB" if channels == 3 else "RGBA", size, scaled.tobytes())


def scipy_imresize(arr, size):
    """``imresize(arr, [h, w])`` with ``interp='bilinear'``."""
    im = scipy_toimage(arr)
    resized = im.resize((size[1], size[0]), resample=Image.BILINEAR)
    return scipy_fromimage(resized)


# ------------------------------------------------------------------ improved-GAN utils
def python2_round(x):
    """Python 2's ``round(x)`` (half away from zero), as a float."""
    return math.copysign(math.floor(abs(x) + 0.5), x)


def utils_center_crop(x, resize_w):
    """``center_crop``: the largest centred square (offsets ``round(margin / 2.)``),
    ``imresize``d to ``resize_w``."""
    h, w = x.shape[:2]
    crop = min(h, w)
    j = int(python2_round((h - crop) / 2.0))
    i = int(python2_round((w - crop) / 2.0))
    return scipy_imresize(x[j:j + crop, i:i + crop], [resize_w, resize_w])


def utils_transform(image, resize_w):
    """``transform``: ``center_crop``, then ``/ 127.5 - 1``."""
    return np.array(utils_center_crop(image, resize_w)) / 127.5 - 1.0


def utils_colorize(img):
    """``colorize``: 2-D -> three equal channels; four channels -> the first three."""
    if img.ndim == 2:
        img = img.reshape(img.shape[0], img.shape[1], 1)
        img = np.concatenate([img, img, img], axis=2)
    if img.shape[2] == 4:
        img = img[:, :, 0:3]
    return img


def record_from_array(decoded, image_size):
    """The converter's loop body after ``imread``: ``get_image`` (float64, crop,
    resize, normalise), ``colorize``, ``+= 1``, ``*= 255 / 2``, ``astype('uint8')``."""
    image = utils_transform(np.asarray(decoded).astype(np.float64), image_size)
    image = utils_colorize(image)
    image += 1.0
    image *= 255.0 / 2.0
    return image.astype("uint8")


def record_from_file(path, image_size):
    """uint8 ``[S, S, 3]``: what the release's converter stored for ``path``."""
    return record_from_array(scipy_imread(path), image_size)


# ------------------------------------------------------------------ Pillow's BILINEAR, numpy
_PRECISION_BITS = 32 - 8 - 2


def _pillow_coefficients(in_size, out_size):
    """``[out_size, in_size]`` int64 fixed-point weights of one pass: triangle of
    half-width ``max(in/out, 1)`` centred on ``(i + 0.5) * in/out``, normalised,
    times 2**22 rounded half away from zero."""
    scale = in_size / out_size
    inverse_filterscale = 1.0 / max(scale, 1.0)  # a reciprocal, then products, as Pillow
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        centre = (i + 0.5) * scale
        x = np.arange(in_size)
        w = np.clip(1.0 - np.abs((x - centre + 0.5) * inverse_filterscale), 0.0, None)
        weights[i] = w / sum(w.tolist())  # summed left to right, as Pillow
    fixed = np.floor(np.abs(weights) * (1 << _PRECISION_BITS) + 0.5) * np.sign(weights)
    return fixed.astype(np.int64)


def _pillow_pass(image, coefficients):
    """One pass along axis 0 of ``[N, M, C]`` uint8 -> ``[out, M, C]`` uint8."""
    acc = np.einsum("oi,imc->omc", coefficients, image.astype(np.int64))
    acc = (acc + (1 << (_PRECISION_BITS - 1))) >> _PRECISION_BITS
    return np.clip(acc, 0, 255).astype(np.uint8)


def pillow_bilinear_resize(image, size):
    """uint8 square ``[N, N]`` or ``[N, N, C]`` (the crops the converter resizes)
    -> ``[size, size(, C)]``: horizontal pass, then vertical, each rounded to
    uint8 (none where the size is kept). For other shapes today's Pillow may run
    the vertical pass first; not modelled."""
    arr = np.asarray(image)
    assert arr.shape[0] == arr.shape[1], arr.shape
    flat = arr.ndim == 2
    if flat:
        arr = arr[:, :, None]
    if arr.shape[1] != size:
        arr = _pillow_pass(arr.transpose(1, 0, 2), _pillow_coefficients(arr.shape[1], size))
        arr = arr.transpose(1, 0, 2)
    if arr.shape[0] != size:
        arr = _pillow_pass(arr, _pillow_coefficients(arr.shape[0], size))
    return arr[:, :, 0] if flat else arr
