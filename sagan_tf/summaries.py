"""TensorBoard summaries without the ``tensorboard`` package.

TensorBoard's summary ops (``tf.summary.scalar`` / ``text`` / ``image``) live
in the ``tensorboard`` package, which TF 2.21 does not install. These write
the very same events (TensorBoard's v2 formats, identified by the plugin name
and data class in the metadata) with TensorFlow's own low-level
``tf.summary.write``, so training and evaluation need no extra package;
``tensorboard --logdir`` shows them as usual. Each writes to the default
writer (``with writer.as_default(step=...)``).
"""
import math

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

__all__ = ["plugin_metadata", "write_scalar", "write_text", "write_image", "image_grid"]


def plugin_metadata(plugin_name, data_class):
    """``SummaryMetadata`` as TensorBoard's own scalar/text/image summaries write it."""
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = plugin_name
    metadata.plugin_data.content = b""  # the plugins' (version 0) data protos: empty
    metadata.data_class = data_class
    return metadata


def write_scalar(name, value, step=None):
    """Writes a TensorBoard scalar (as ``tf.summary.scalar``, plugin ``scalars``)."""
    return tf.summary.write(name, tf.cast(value, tf.float32), step=step,
                            metadata=plugin_metadata("scalars", summary_pb2.DATA_CLASS_SCALAR))


def write_text(name, text, step=None):
    """Writes ``text`` as a TensorBoard text summary (plugin ``text``)."""
    return tf.summary.write(name, tf.constant(str(text)), step=step,
                            metadata=plugin_metadata("text", summary_pb2.DATA_CLASS_TENSOR))


def write_image(name, images, step=None, value_range=(0, 1)):
    """Writes TensorBoard images (as ``tf.summary.image``, plugin ``images``).

    ``images``: float ``[k, H, W, C]``. ``value_range`` (0, 1): pixels
    ``convert_image_dtype`` to uint8 (saturating; the training summaries);
    (-1, 1): ``round((x + 1) * 127.5)`` clipped to [0, 255] (the evaluation
    grids, the generator's own mapping).
    """
    images = tf.convert_to_tensor(images, tf.float32)
    if tuple(value_range) == (-1, 1):
        images = tf.cast(tf.round(tf.clip_by_value((images + 1.0) * 127.5, 0.0, 255.0)),
                         tf.uint8)
    elif tuple(value_range) == (0, 1):
        images = tf.image.convert_image_dtype(images, tf.uint8, saturate=True)
    else:
        raise ValueError(f"value_range must be (0, 1) or (-1, 1), got {value_range}")
    encoded = tf.map_fn(tf.image.encode_png, images, fn_output_signature=tf.string)
    shape = tf.shape(images)
    # TensorBoard's image format: [width, height, png_0, png_1, ...] as strings.
    tensor = tf.concat([tf.stack([tf.as_string(shape[2]), tf.as_string(shape[1])]), encoded], 0)
    return tf.summary.write(name, tensor, step=step,
                            metadata=plugin_metadata("images",
                                                     summary_pb2.DATA_CLASS_BLOB_SEQUENCE))


def _grid_shape(n):
    """(rows, cols) with rows*cols == n, as square as possible."""
    rows = int(math.isqrt(n))
    while n % rows:
        rows -= 1
    return rows, n // rows


def image_grid(images, image_size, grid_shape=None, max_images=16):
    """TF-GAN ``image_grid`` of images in [-1, 1] -> ``[1, H, W, 3]``, still in [-1, 1].

    ``grid_shape`` (rows, cols) takes the first rows*cols images; default: up
    to ``max_images``, as square as possible.
    """
    from sagan_tf import \
        tfgan  # pylint: disable=import-outside-toplevel  # loads TF-GAN's eval module
    if grid_shape is None:
        grid_shape = _grid_shape(min(max_images, int(images.shape[0])))
    n = grid_shape[0] * grid_shape[1]
    return tfgan.image_grid(tf.cast(images[:n], tf.float32), grid_shape=grid_shape,
                            image_shape=(image_size, image_size), num_channels=3)
