"""The two ways the converter turns an image into a record's pixels, and which one
wrote a given set of records (NUMERICS §7.1).

* ``release`` (the default): the improved-GAN converter's pipeline, which wrote
  the records the release trained on -- scipy's ``imread``, Python 2 rounded
  crop offsets, byte-scaling (contrast stretch), Pillow's antialiased bilinear
  resize, truncating round trip (:mod:`sagan_tf.data.release_pixels`).
* ``tf_half_pixel_bilinear``: the port's earlier converter -- decode to RGB,
  centred crop at floor offsets, TF2's ``tf.image.resize(..., "bilinear")``
  (half-pixel centres, no antialiasing) in numpy, rounded to nearest. Kept for
  records written with it; not the release's pixels.

``manifest.json`` beside the records names the pipeline (``pixel_pipeline``);
:func:`records_pixel_pipeline` reads it back for the trainer. Everything but
that function is free of TensorFlow, so that converter workers stay light.
"""
from __future__ import annotations

import io
import json
import os

import numpy as np
from PIL import Image

from sagan_tf.data import release_pixels

__all__ = [
    "RELEASE",
    "TF_HALF_PIXEL_BILINEAR",
    "PIPELINES",
    "pixels_from_file",
    "pixels_from_array",
    "load_image_rgb",
    "center_crop",
    "resize_bilinear",
    "center_crop_resize",
    "records_pixel_pipeline",
    "log_records",
]

RELEASE = "release"
TF_HALF_PIXEL_BILINEAR = "tf_half_pixel_bilinear"
#: Pipeline name -> what it does (written to manifest.json).
PIPELINES = {
    RELEASE: "the release's records (improved-GAN converter): scipy imread modes, centred square "
             "crop at Python-2-rounded offsets, bytescale of the crop's min..max to 0..255 "
             "(+0.4999, truncated), Pillow BILINEAR resize (antialiased), /127.5-1 and back, "
             "truncated to uint8",
    TF_HALF_PIXEL_BILINEAR: "this port's earlier converter, not the release's records: RGB, "
                            "centred square crop at floor offsets, tf.image.resize bilinear "
                            "(half-pixel centres, no antialias), rounded to nearest",
}


def pixels_from_file(source, pipeline: str, image_size: int) -> np.ndarray:
    """uint8 ``[S, S, 3]`` record pixels of an encoded image (a path, or the
    file's bytes), decoded with PIL (the content decides the format)."""
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    if pipeline == RELEASE:
        return release_pixels.release_pixels_from_file(source, image_size)
    _check_pipeline(pipeline)
    return center_crop_resize(load_image_rgb(source), image_size)


def pixels_from_array(image: np.ndarray, pipeline: str, image_size: int) -> np.ndarray:
    """uint8 ``[S, S, 3]`` record pixels of a decoded image ``[H, W]`` or
    ``[H, W, C]`` (C = 1, 3 or 4; uint8 for ``tf_half_pixel_bilinear``)."""
    if pipeline == RELEASE:
        return release_pixels.release_pixels(image, image_size)
    _check_pipeline(pipeline)
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.dtype != np.uint8:
        raise ValueError(f"image dtype {image.dtype}, expected uint8")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"empty image of shape {image.shape}")
    return center_crop_resize(image, image_size)


def _check_pipeline(pipeline: str) -> None:
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown pixel pipeline {pipeline!r}; one of {sorted(PIPELINES)}")


# ----------------------------------------------------------------------------------
# tf_half_pixel_bilinear
# ----------------------------------------------------------------------------------
def load_image_rgb(source) -> np.ndarray:
    """Decodes an image (path or file object) of any format/mode PIL reads into RGB
    uint8 ``[H, W, 3]``: grayscale ``L``/``1``/``I;16``, ``CMYK`` (converted),
    ``RGBA``/``LA`` (alpha dropped), palette ``P``. EXIF orientation is ignored."""
    with Image.open(source) as img:
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            arr = np.asarray(img, dtype=np.float64)
            scale = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
            arr = np.rint(np.clip(arr / scale, 0, 1) * 255).astype(np.uint8)
            return np.repeat(arr[:, :, None], 3, axis=2)
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        rgb = img.convert("RGB")
        return np.asarray(rgb, dtype=np.uint8).copy()


def center_crop(image: np.ndarray) -> np.ndarray:
    """Largest centred square crop of ``[H, W, C]``: side ``min(H, W)``, offsets
    ``(H - side) // 2`` and ``(W - side) // 2``."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[top:top + side, left:left + side]


def _bilinear_axis(in_size: int, out_size: int):
    """Indices and weights of TF's half-pixel-centre bilinear resize along one axis."""
    scale = np.float32(in_size) / np.float32(out_size)
    pos = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(pos)
    lower = np.maximum(floor, 0).astype(np.int64)
    upper = np.minimum(np.ceil(pos), in_size - 1).astype(np.int64)
    return lower, upper, (pos - floor).astype(np.float32)


def resize_bilinear(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """``tf.image.resize(image, size, "bilinear", antialias=False)`` in numpy.

    Args:
      image: ``[H, W, C]`` (any real dtype; computed in float32).
      size: ``S`` or ``(out_h, out_w)``.

    Returns:
      float32 ``[out_h, out_w, C]``, not rounded.
    """
    out_h, out_w = (size, size) if np.isscalar(size) else size
    img = np.asarray(image, dtype=np.float32)
    y0, y1, wy = _bilinear_axis(img.shape[0], int(out_h))
    x0, x1, wx = _bilinear_axis(img.shape[1], int(out_w))
    wx = wx[None, :, None]
    top_left, top_right = img[y0][:, x0], img[y0][:, x1]
    bottom_left, bottom_right = img[y1][:, x0], img[y1][:, x1]
    top = top_left + (top_right - top_left) * wx
    bottom = bottom_left + (bottom_right - bottom_left) * wx
    return top + (bottom - top) * wy[:, None, None]


def center_crop_resize(image: np.ndarray, image_size: int) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` -> uint8 ``[S, S, 3]``: largest centred square crop,
    bilinear resize (TF half-pixel centres, no antialias), rounded to nearest."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
    resized = resize_bilinear(center_crop(image), int(image_size))
    return np.rint(np.clip(resized, 0.0, 255.0)).astype(np.uint8)


# ----------------------------------------------------------------------------------
# Which pipeline wrote a set of records
# ----------------------------------------------------------------------------------
def records_pixel_pipeline(data_dir: str) -> tuple[str | None, str]:
    """``(name, how it is known)`` of the pipeline that wrote the records in
    ``data_dir``, from its ``manifest.json`` (local or ``gs://``).

    ``name`` is a key of :data:`PIPELINES`; ``"demo"`` for the generated demo
    data set; None when unknown (no manifest: e.g. records from elsewhere). A
    converter manifest without ``pixel_pipeline`` predates the release pipeline
    and was written by ``tf_half_pixel_bilinear``.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    path = os.path.join(data_dir, "manifest.json")
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            manifest = json.load(f)
    except (tf.errors.NotFoundError, FileNotFoundError):
        return None, "no manifest.json beside the records"
    except (tf.errors.OpError, OSError, ValueError) as e:
        return None, f"unreadable {path}: {type(e).__name__}: {e}"
    if not isinstance(manifest, dict):
        return None, f"{path} is not a JSON object"
    if manifest.get("pixel_pipeline") in PIPELINES:
        return manifest["pixel_pipeline"], f"{path}"
    if "pixel_pipeline" in manifest:
        return None, f"{path} names an unknown pixel pipeline {manifest['pixel_pipeline']!r}"
    if str(manifest.get("dataset", "")).startswith("sagan_tf demo"):
        return "demo", f"{path} (generated demo images)"
    if "tf.image.resize" in str(manifest.get("resize", "")):
        return TF_HALF_PIXEL_BILINEAR, f"{path} (written before the release pipeline existed)"
    return None, f"{path} does not name a pixel pipeline"


def log_records(data_dir: str, name: str | None, source: str, log) -> None:
    """Logs which pixel pipeline wrote the records in ``data_dir`` (``name`` and
    ``source`` from :func:`records_pixel_pipeline`): one ``Records: ...`` line,
    and a ``WARNING: ...`` line for a known pipeline other than the release's."""
    if name == "demo":
        log(f"Records: {data_dir} hold the generated demo data set ({source})")
    elif name is None:
        log(f"Records: {data_dir}: pixel pipeline unknown ({source})")
    else:
        log(f"Records: {data_dir} written by pixel pipeline {name!r} ({source})")
    if name == TF_HALF_PIXEL_BILINEAR:
        log("WARNING: these are not the release's pixels (TF2 half-pixel bilinear resize, "
            "no antialiasing, no contrast stretch): the networks learn, and FID compares "
            "against, other images than the paper's run; tools/convert_imagenet_to_records.py "
            "with its default --pixel_pipeline release writes the release's records")
