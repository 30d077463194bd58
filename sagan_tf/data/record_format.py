"""The SAGAN / improved-GAN ImageNet record format (NUMERICS §7): encode, write, read, parse.

TFRecord files (``*.tfrecords``); every record is a serialized ``tf.train.Example``::

    image_raw : bytes  S*S*3 uint8, HWC, RGB
    label     : int64  class index in [0, num_classes) (ImageNet: index of the synset
                       folder in sorted order)
    height, width, depth : int64  (S, S, 3)

Files are written atomically (a temporary file renamed to its final name when
complete), so a file with the final name is always complete. A record of
another image size or with a label outside ``[0, num_classes)`` fails to
parse with a ``tf.errors.InvalidArgumentError`` naming the file
(:func:`parse_examples` for a batch of records, :func:`parse_example` for
one). The ``tf.data`` input pipeline that reads these files is
:mod:`sagan_tf.data.pipeline`.
"""
from __future__ import annotations

import os
import struct
from typing import Iterable, Sequence

import numpy as np
import tensorflow as tf

__all__ = [
    "FEATURE_KEYS",
    "RECORD_OVERHEAD",
    "encode_example",
    "decode_example_numpy",
    "RecordWriter",
    "write_records",
    "list_record_files",
    "iter_serialized_records",
    "count_records",
    "count_complete_records",
    "incomplete_records_problem",
    "peek_image_size",
    "assert_lazily",
    "parse_example",
    "parse_examples",
    "to_unit_range",
]

FEATURE_KEYS = ("image_raw", "label", "height", "width", "depth")
RECORD_OVERHEAD = 16  # uint64 length + uint32 crc(length) + uint32 crc(data)


# ----------------------------------------------------------------------------------
# Encoding / writing
# ----------------------------------------------------------------------------------
def _int64_feature(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def encode_example(image: np.ndarray, label: int) -> bytes:
    """Serializes one image and label as a ``tf.train.Example`` (NUMERICS §7).

    Args:
      image: uint8 array ``[S, S, 3]`` (HWC, RGB). Non-square ``[H, W, 3]`` is encoded
        as well (``height``/``width`` say so) but the reader only accepts ``S x S``.
      label: int class index ``>= 0``.

    Returns:
      The serialized ``tf.train.Example`` bytes.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"encode_example: image must be uint8, got {image.dtype} "
                        "(convert explicitly; float images are not rescaled here)")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"encode_example: image must be [H, W, 3] RGB, got shape {image.shape}")
    label = int(label)
    if label < 0:
        raise ValueError(f"encode_example: label must be >= 0, got {label}")
    height, width, depth = image.shape
    example = tf.train.Example(features=tf.train.Features(feature={
        "image_raw": tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[np.ascontiguousarray(image).tobytes()])),
        "label": _int64_feature(label),
        "height": _int64_feature(height),
        "width": _int64_feature(width),
        "depth": _int64_feature(depth),
    }))
    return example.SerializeToString()


def decode_example_numpy(serialized: bytes) -> tuple[np.ndarray, int]:
    """Inverse of `encode_example` in numpy: ``(uint8 [H, W, D], int label)``."""
    ex = tf.train.Example.FromString(serialized)
    f = ex.features.feature
    h, w, d = (f[k].int64_list.value[0] for k in ("height", "width", "depth"))
    raw = f["image_raw"].bytes_list.value[0]
    if len(raw) != h * w * d:
        raise ValueError(f"record has {len(raw)} image bytes but height*width*depth = {h * w * d}")
    image = np.frombuffer(raw, np.uint8).reshape(h, w, d)
    return image, int(f["label"].int64_list.value[0])


def _fsync(path: str) -> None:
    """Flushes a local file's (or directory's) data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RecordWriter:
    """Writes a TFRecord file atomically: into ``<path>.tmp-<pid>``, fsynced and renamed
    on `close` (a local file: the data, then the directory entry, reach the disk).

    Use as a context manager; on an exception the temporary file is deleted and
    nothing appears under ``path``::

        with RecordWriter(path) as w:
            w.write(image_uint8_SxSx3, label)

    The temporary name does not end in ``.tfrecords``, so readers never see it.
    """

    def __init__(self, path: str):
        self.path = str(path)
        parent = os.path.dirname(self.path)
        if parent:
            tf.io.gfile.makedirs(parent)
        self.tmp_path = f"{self.path}.tmp-{os.getpid()}"
        self._writer = tf.io.TFRecordWriter(self.tmp_path)
        self.num_records = 0
        self._closed = False

    def write(self, image: np.ndarray, label: int) -> None:
        """Appends one ``uint8 [S, S, 3]`` image with its label."""
        self.write_serialized(encode_example(image, label))

    def write_serialized(self, serialized: bytes) -> None:
        """Appends one already serialized ``tf.train.Example``."""
        self._writer.write(serialized)
        self.num_records += 1

    def close(self) -> str:
        """Finishes the file and renames it to its final name; returns the path."""
        if not self._closed:
            self._writer.close()
            local = "://" not in self.path
            if local:  # on disk before the name says complete (a power loss)
                _fsync(self.tmp_path)
            tf.io.gfile.rename(self.tmp_path, self.path, overwrite=True)
            if local:
                _fsync(os.path.dirname(os.path.abspath(self.path)))
            self._closed = True
        return self.path

    def abort(self) -> None:
        """Discards the temporary file; nothing is written under the final name."""
        if not self._closed:
            self._closed = True
            try:
                self._writer.close()
            finally:
                if tf.io.gfile.exists(self.tmp_path):
                    tf.io.gfile.remove(self.tmp_path)

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_records(path: str, images: Iterable[np.ndarray], labels: Iterable[int]) -> int:
    """Writes ``images`` (each uint8 ``[S, S, 3]``, or one array ``[N, S, S, 3]``) and
    ``labels`` (``[N]`` ints) to ``path`` atomically. Returns the number of records."""
    images = list(images) if not isinstance(images, np.ndarray) else images
    labels = list(np.asarray(labels).reshape(-1))
    if len(images) != len(labels):
        raise ValueError(f"write_records: {len(images)} images but {len(labels)} labels")
    with RecordWriter(path) as writer:
        for image, label in zip(images, labels):
            writer.write(image, int(label))
    return writer.num_records


# ----------------------------------------------------------------------------------
# File helpers (pure Python, no graph: usable anywhere, fast)
# ----------------------------------------------------------------------------------
def list_record_files(data_dir: str, pattern: str = "*.tfrecords") -> list[str]:
    """Sorted list of the files in ``data_dir`` matching the glob ``pattern``.

    Raises:
      FileNotFoundError: naming ``data_dir`` and ``pattern`` when the directory does
        not exist or nothing matches.
    """
    if data_dir is None or str(data_dir) == "":
        raise FileNotFoundError("no data directory given (--data_dir is empty)")
    data_dir = str(data_dir)
    if not tf.io.gfile.isdir(data_dir):
        raise FileNotFoundError(
            f"data directory {data_dir!r} does not exist (looking for files matching "
            f"{pattern!r}; see --data_dir)")
    files = sorted(tf.io.gfile.glob(os.path.join(data_dir, pattern)))
    files = [f for f in files if not tf.io.gfile.isdir(f)]
    if not files:
        raise FileNotFoundError(
            f"no files matching {pattern!r} in data directory {data_dir!r} "
            "(expected TFRecord files written by tools/convert_imagenet_to_records.py "
            "or tools/make_demo_data.py)")
    return files


def iter_serialized_records(path: str):
    """Yields the serialized records of one TFRecord file (pure Python; lengths and
    framing are checked, CRCs are not). Raises ``ValueError`` naming the file when the
    file is truncated."""
    with tf.io.gfile.GFile(path, "rb") as f:
        offset = 0
        while True:
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise ValueError(f"TFRecord file {path} is truncated at byte {offset} "
                                 "(incomplete record header)")
            (length,) = struct.unpack("<Q", header[:8])
            data = f.read(length)
            footer = f.read(4)
            if len(data) < length or len(footer) < 4:
                raise ValueError(f"TFRecord file {path} is truncated at byte {offset} "
                                 f"(record of {length} bytes incomplete; not a TFRecord "
                                 "file, or an interrupted write?)")
            offset += RECORD_OVERHEAD + length
            yield data


def count_records(files: str | Sequence[str]) -> int:
    """Total number of records in ``files`` (one path or a list), by reading only the
    record headers. Raises ``ValueError`` naming a truncated file."""
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    total = 0
    for path in files:
        size = tf.io.gfile.stat(path).length
        with tf.io.gfile.GFile(path, "rb") as f:
            offset = 0
            while offset < size:
                f.seek(offset)
                header = f.read(8)
                if len(header) < 8:
                    raise ValueError(f"TFRecord file {path} is truncated at byte {offset}")
                (length,) = struct.unpack("<Q", header)
                offset += RECORD_OVERHEAD + length
                if offset > size:
                    raise ValueError(f"TFRecord file {path} is truncated: record at byte "
                                     f"{offset - RECORD_OVERHEAD - length} needs "
                                     f"{RECORD_OVERHEAD + length} bytes, file has {size}")
                total += 1
    return total


def count_complete_records(path: str) -> int:
    """Records of one file whose bytes are all present (read from the record
    headers only; a truncated last record is not counted). This is what the
    reader yields before it stops at a truncated file."""
    size = tf.io.gfile.stat(path).length
    count = offset = 0
    if "://" not in str(path):  # local file: one 8-byte pread per record
        fd = os.open(path, os.O_RDONLY)
        try:
            while offset + 8 <= size:
                (length,) = struct.unpack("<Q", os.pread(fd, 8, offset))
                offset += RECORD_OVERHEAD + length
                if offset > size:
                    break
                count += 1
        finally:
            os.close(fd)
        return count
    with tf.io.gfile.GFile(path, "rb") as f:
        while offset + 8 <= size:
            f.seek(offset)
            (length,) = struct.unpack("<Q", f.read(8))
            offset += RECORD_OVERHEAD + length
            if offset > size:
                break
            count += 1
    return count


def peek_image_size(files: str | Sequence[str]) -> int:
    """Image size ``S`` stored in the first record of the first non-empty file.

    Reads the ``height`` (and checks ``width``) of that record, falling back to the
    size of ``image_raw`` when the record has no ``height``. Raises ``ValueError``
    naming the file when there is no record or the record is not ``S x S x 3``.
    """
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    for path in files:
        for serialized in iter_serialized_records(path):
            try:
                feature = tf.train.Example.FromString(serialized).features.feature
            except Exception as e:  # noqa: BLE001 -- protobuf DecodeError
                raise ValueError(f"first record of {path} is not a tf.train.Example: {e}") from e
            if "image_raw" not in feature:
                raise ValueError(f"first record of {path} has no 'image_raw' feature; "
                                 f"features: {sorted(feature)} (not the NUMERICS §7 format)")
            nbytes = len(feature["image_raw"].bytes_list.value[0])
            if "height" in feature and "width" in feature:
                h = feature["height"].int64_list.value[0]
                w = feature["width"].int64_list.value[0]
                if h != w:
                    raise ValueError(f"records in {path} hold {h}x{w} images; only square "
                                     "images are supported")
                return int(h)
            side = int(round((nbytes / 3) ** 0.5))
            if side * side * 3 != nbytes:
                raise ValueError(f"first record of {path} has {nbytes} image bytes, which is "
                                 "not S*S*3 for any S")
            return side
    raise ValueError(f"no records in any of the {len(files)} file(s) starting with {files[0]}")


# ----------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------
_FEATURES = {
    "image_raw": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
}


def assert_lazily(ok, make_message):
    """An op that fails with ``InvalidArgumentError: make_message()`` when ``ok`` is false.

    Unlike ``tf.debugging.Assert(ok, [message])``, whose data inputs are computed
    even when it passes, the message (string formatting) is built only on the
    failing branch of a ``tf.cond``. Returns ``ok`` (a bool scalar tensor) for
    use in ``tf.control_dependencies``.
    """
    def fail():
        with tf.control_dependencies([tf.debugging.Assert(ok, [make_message()])]):
            return tf.identity(ok)
    return tf.cond(ok, lambda: tf.identity(ok), fail)


def to_unit_range(images):
    """uint8 images -> float32 ``uint8 * (2/255) - 1`` in [-1, 1] (NUMERICS §7)."""
    return tf.cast(images, tf.float32) * (2.0 / 255.0) - 1.0


def parse_examples(serialized, image_size: int, num_classes: int | None = None,
                   filenames=None, uint8_images: bool = False):
    """Decodes a vector of serialized records at once (graph-compatible).

    Args:
      serialized: string tensor ``[B]`` of `encode_example` records.
      image_size: ``S``; every record must hold exactly ``S*S*3`` image bytes
        (checked on the byte strings before they are decoded, so records of
        mixed sizes get this message, not ``decode_raw``'s).
      num_classes: when given, every label must lie in ``[0, num_classes)``.
      filenames: string tensor ``[B]`` (or a scalar for all), the record's file
        named in the error messages.
      uint8_images: return the images as stored (uint8), for
        :func:`to_unit_range` on the device (a quarter of the bytes to copy).

    Returns:
      ``(images, labels)``: float32 ``[B, S, S, 3]`` equal to ``uint8 * (2/255) - 1``
      (:func:`to_unit_range`; uint8 with ``uint8_images``), and int32 ``[B]``.

    Raises (when the dataset is iterated):
      tf.errors.InvalidArgumentError naming the file of the first record in the
      batch with a wrong image byte size or an out-of-range label.
    """
    serialized = tf.convert_to_tensor(serialized, tf.string)
    filenames = tf.broadcast_to(tf.convert_to_tensor(
        "<unknown file>" if filenames is None else filenames, tf.string), tf.shape(serialized))
    size = int(image_size)
    expected = size * size * 3
    features = tf.io.parse_example(serialized, _FEATURES)
    nbytes = tf.strings.length(features["image_raw"])
    label64 = features["label"]
    size_ok = tf.equal(nbytes, expected)
    if num_classes is None:
        label_ok = tf.ones_like(size_ok)
    else:
        num_classes = int(num_classes)
        label_ok = tf.logical_and(label64 >= 0, label64 < num_classes)

    def message():  # of the batch's first bad record (its size before its label)
        i = tf.where(tf.logical_not(tf.logical_and(size_ok, label_ok)))[0, 0]
        return tf.where(size_ok[i], tf.strings.join([
            "label ", tf.strings.as_string(label64[i]), " in ", filenames[i],
            f" outside [0, {num_classes}) (--number_classes)"]), tf.strings.join([
                "record in ", filenames[i], " has ", tf.strings.as_string(nbytes[i]),
                f" image bytes, expected {expected} for --image_size {size} "
                "(records of another image size?)"]))

    ok = assert_lazily(tf.reduce_all(tf.logical_and(size_ok, label_ok)), message)
    with tf.control_dependencies([ok]):
        raw = tf.io.decode_raw(features["image_raw"], tf.uint8)
        labels = tf.cast(label64, tf.int32)
    images = tf.reshape(raw, [-1, size, size, 3])
    images.set_shape(serialized.shape.concatenate([size, size, 3]))
    return (images if uint8_images else to_unit_range(images)), labels


def parse_example(serialized, image_size: int, num_classes: int | None = None,
                  filename=None):
    """Decodes one serialized record (graph-compatible): :func:`parse_examples` of
    a batch of one.

    Args:
      serialized: scalar string tensor, a `encode_example` record.
      image_size: ``S``; the record must hold exactly ``S*S*3`` image bytes.
      num_classes: when given, the label must lie in ``[0, num_classes)``.
      filename: scalar string (tensor) used in the error messages.

    Returns:
      ``(image, label)``: float32 ``[S, S, 3]`` equal to ``uint8 * (2/255) - 1``, and
      int32 scalar.

    Raises (when the dataset is iterated):
      tf.errors.InvalidArgumentError naming ``filename`` for a wrong image byte size
      or an out-of-range label.
    """
    images, labels = parse_examples(
        tf.reshape(serialized, [1]), image_size, num_classes,
        None if filename is None else tf.reshape(filename, [1]))
    return images[0], labels[0]


def manifest_num_classes(data_dir):
    """``num_classes`` of ``<data_dir>/manifest.json`` (written by the converter and the
    demo data), or None when there is no manifest or it does not state it.

    Raises:
      ValueError: the manifest is not JSON or its ``num_classes`` is not an integer >= 1.
    """
    import json  # pylint: disable=import-outside-toplevel
    path = os.path.join(data_dir, "manifest.json")
    if not tf.io.gfile.exists(path):
        return None
    try:
        with tf.io.gfile.GFile(path) as f:
            value = json.load(f).get("num_classes")
    except (ValueError, AttributeError) as e:
        raise ValueError(f"{path} is not a JSON object ({e}); give --number_classes") from e
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{path}: num_classes must be an integer >= 1, got {value!r}; "
                         "give --number_classes")
    return value



_SHARD_NAME = r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.tfrecords$"


def incomplete_records_problem(data_dir, files):
    """Why the converted records ``files`` of ``data_dir`` are incomplete, or None.

    Converter shards (``<split>-NNNNN-of-MMMMM.tfrecords``) are incomplete when
    ``manifest.json`` (written last) is missing, or when the shards present are
    not the ``shards`` the manifest lists (or not the ``MMMMM`` their names
    announce). Records named otherwise (own data) are not judged.
    """
    import json  # pylint: disable=import-outside-toplevel
    import re  # pylint: disable=import-outside-toplevel
    names = sorted(os.path.basename(f) for f in files)
    shards = [m for m in (re.match(_SHARD_NAME, n) for n in names) if m]
    if not shards:
        return None
    path = os.path.join(data_dir, "manifest.json")
    if not tf.io.gfile.exists(path):
        return (f"{data_dir} holds {len(shards)} converter shard(s) but no manifest.json (the "
                "converter writes it last: the conversion did not finish)")
    with tf.io.gfile.GFile(path) as f:
        listed = json.load(f).get("shards")
    announced = {int(m.group("total")) for m in shards}
    if listed is not None:
        missing = sorted(set(listed) - set(names))
        if missing:
            return (f"{path} lists {len(listed)} shards, {len(missing)} of them are missing "
                    f"(e.g. {missing[0]})")
    elif len(announced) != 1 or len(shards) != announced.pop():
        return f"{data_dir} holds {len(shards)} shards, their names announce {sorted(announced)}"
    return None
