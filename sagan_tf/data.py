"""The SAGAN / improved-GAN ImageNet record format and its `tf.data` input pipeline (NUMERICS §7).

Record format
-------------
TFRecord files (``*.tfrecords``); every record is a serialized ``tf.train.Example``::

    image_raw : bytes  S*S*3 uint8, HWC, RGB
    label     : int64  class index in [0, num_classes) (ImageNet: index of the synset
                       folder in sorted order)
    height, width, depth : int64  (S, S, 3)

Reader (as the release)
-----------------------
sorted file list -> (shard per input pipeline) -> shuffle the file list -> parallel
interleave of the files -> shuffle buffer (100,000) -> repeat -> parallel decode
``uint8 * (2/255) - 1`` (float32 in [-1, 1]) -> batch per replica (drop remainder)
-> prefetch.

Errors name their culprit: a record of another image size or with a label outside
``[0, num_classes)`` raises ``tf.errors.InvalidArgumentError`` whose message names the
file; a truncated or corrupt TFRecord file raises ``tf.errors.InvalidArgumentError``
naming the file (TensorFlow's own ``DataLossError`` message does not name it), unless
``skip_corrupt_records=True``, which drops the unreadable rest of such a file with a
warning on stderr and goes on.

Files are written atomically (a temporary file renamed to its final name when
complete), so a file with the final name is always complete.
"""
from __future__ import annotations

import os
import struct
import sys
import threading
from typing import Iterable, Sequence

import numpy as np
import tensorflow as tf

__all__ = [
    "FEATURE_KEYS",
    "encode_example",
    "decode_example_numpy",
    "RecordWriter",
    "write_records",
    "list_record_files",
    "iter_serialized_records",
    "count_records",
    "count_complete_records",
    "SkippedRecordCounter",
    "peek_image_size",
    "parse_example",
    "make_dataset",
    "distributed_dataset",
]

FEATURE_KEYS = ("image_raw", "label", "height", "width", "depth")
_RECORD_OVERHEAD = 16  # uint64 length + uint32 crc(length) + uint32 crc(data)


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


class RecordWriter:
    """Writes a TFRecord file atomically: into ``<path>.tmp-<pid>``, renamed on `close`.

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
            tf.io.gfile.rename(self.tmp_path, self.path, overwrite=True)
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
            offset += _RECORD_OVERHEAD + length
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
                offset += _RECORD_OVERHEAD + length
                if offset > size:
                    raise ValueError(f"TFRecord file {path} is truncated: record at byte "
                                     f"{offset - _RECORD_OVERHEAD - length} needs "
                                     f"{_RECORD_OVERHEAD + length} bytes, file has {size}")
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
                offset += _RECORD_OVERHEAD + length
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
            offset += _RECORD_OVERHEAD + length
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


def parse_example(serialized, image_size: int, num_classes: int | None = None,
                  filename=None):
    """Decodes one serialized record (graph-compatible).

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
    if filename is None:
        filename = "<unknown file>"
    filename = tf.convert_to_tensor(filename, tf.string)
    features = tf.io.parse_single_example(serialized, _FEATURES)
    raw = tf.io.decode_raw(features["image_raw"], tf.uint8)
    expected = int(image_size) * int(image_size) * 3
    nbytes = tf.size(raw)
    size_ok = tf.debugging.Assert(tf.equal(nbytes, expected), [tf.strings.join([
        "record in ", filename, " has ", tf.strings.as_string(nbytes),
        f" image bytes, expected {expected} for --image_size {int(image_size)} "
        "(records of another image size?)"])])
    label64 = features["label"]
    checks = [size_ok]
    if num_classes is not None:
        in_range = tf.logical_and(label64 >= 0, label64 < int(num_classes))
        checks.append(tf.debugging.Assert(in_range, [tf.strings.join([
            "label ", tf.strings.as_string(label64), " in ", filename,
            f" outside [0, {int(num_classes)}) (--number_classes)"])]))
    with tf.control_dependencies(checks):
        image = tf.reshape(raw, [int(image_size), int(image_size), 3])
        label = tf.cast(label64, tf.int32)
    image = tf.cast(image, tf.float32) * (2.0 / 255.0) - 1.0
    return image, label


# ----------------------------------------------------------------------------------
# Pipeline
# ----------------------------------------------------------------------------------
class SkippedRecordCounter:
    """Running count of the records ``skip_corrupt_records`` dropped.

    The reader stops at a file's first unreadable record and drops the rest of
    the file; :meth:`add` (called from the input pipeline) counts the records
    of that rest by walking its record headers (a truncated tail counts as
    one). ``records`` and ``files`` (skip events) are read by the training loop
    for its progress line and the ``skipped_corrupt_records`` summary.
    Thread-safe (tf.data calls it from its own threads).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.records = 0
        self.files = 0

    @staticmethod
    def records_after(path, offset, size):
        """Records (by their headers) from byte ``offset`` to ``size`` of ``path``;
        at least 1 when anything is left (the unreadable record itself)."""
        count = 0
        with tf.io.gfile.GFile(path, "rb") as f:
            while offset + 8 <= size:
                f.seek(offset)
                (length,) = struct.unpack("<Q", f.read(8))
                count += 1
                offset += _RECORD_OVERHEAD + length
        return max(count, 1 if offset < size else 0)

    def add(self, path, offset, size):
        """Counts the dropped rest of ``path`` from byte ``offset``; returns the
        running total of records."""
        n = self.records_after(path, int(offset), int(size))
        with self._lock:
            self.records += n
            self.files += 1
            return self.records


def _records_of_file(filename, file_size, skip_corrupt_records: bool,
                     skipped_counter: SkippedRecordCounter | None = None):
    """Dataset of ``(filename, serialized)`` for one file, in file order.

    Reading stops at the first unreadable record (TensorFlow moves to the next file
    after a DataLoss error); the bytes read are then counted against the file size
    so a truncated/corrupt file is reported *with its name* (TF's DataLossError
    message does not name the file), or, with ``skip_corrupt_records``, reported on
    stderr, skipped and counted in ``skipped_counter`` (if given).
    """
    records = tf.data.TFRecordDataset(filename).ignore_errors(
        log_warning=skip_corrupt_records)
    records = records.map(lambda r: (r, False))
    records = records.concatenate(
        tf.data.Dataset.from_tensors((tf.constant(b""), tf.constant(True))))

    def count(consumed, elem):
        rec, is_end = elem
        consumed = consumed + tf.where(
            is_end, tf.constant(0, tf.int64),
            tf.cast(tf.strings.length(rec), tf.int64) + _RECORD_OVERHEAD)
        return consumed, (rec, is_end, consumed)

    records = records.scan(tf.constant(0, tf.int64), count)

    def check(rec, is_end, consumed):
        ok = tf.logical_or(tf.logical_not(is_end), tf.equal(consumed, file_size))
        message = tf.strings.join([
            "TFRecord file ", filename, " is truncated or corrupt (or unreadable): the "
            "records read up to the first bad one span ", tf.strings.as_string(consumed),
            " of its ",
            tf.strings.as_string(file_size), " bytes (skip_corrupt_records / "
            "--skip_corrupt_records reads past such files)"])
        if skip_corrupt_records:
            def warn():
                ops = [tf.print("WARNING:", message, "-- skipped the rest of this file "
                                "(skip_corrupt_records=True)", output_stream=sys.stderr)]
                if skipped_counter is not None:
                    ops.append(tf.py_function(
                        lambda f, c, n: skipped_counter.add(f.numpy().decode(), c, n),
                        [filename, consumed, file_size], tf.int64))
                with tf.control_dependencies(ops):
                    return tf.identity(is_end)
            flag = tf.cond(ok, lambda: tf.identity(is_end), warn)
            return rec, flag
        assert_op = tf.debugging.Assert(ok, [message])
        with tf.control_dependencies([assert_op]):
            return tf.identity(rec), tf.identity(is_end)

    records = records.map(check)
    records = records.filter(lambda rec, is_end: tf.logical_not(is_end))
    return records.map(lambda rec, is_end: (filename, rec))


def _records_from(epoch_records, files_and_sizes, start_record, read_file, repeat,
                  num_shards, shard_id):
    """The sequential record stream started ``start_record`` records in.

    ``epoch_records`` is one epoch of this pipeline (the records of
    ``files_and_sizes`` in order, then ``shard(num_shards, shard_id)``); the
    result equals ``epoch_records.repeat().skip(start_record)`` (or without
    ``repeat``) but reads only the start's own file again.
    """
    counts = [count_complete_records(f) for f, _ in files_and_sizes]
    total = sum(counts)
    epoch = len(range(shard_id, total, num_shards))  # this shard's records per epoch
    if epoch == 0:
        return epoch_records.repeat() if repeat else epoch_records
    if start_record >= epoch and not repeat:
        return epoch_records.take(0)
    # The shard's i-th record is record i * num_shards + shard_id of the epoch,
    # so starting the unsharded stream at i * num_shards keeps the shard aligned.
    first = (start_record % epoch) * num_shards
    k, before = 0, 0
    while before + counts[k] <= first:
        before += counts[k]
        k += 1
    rest = files_and_sizes[k + 1:]
    head = read_file(tf.constant(files_and_sizes[k][0]),
                     tf.constant(files_and_sizes[k][1], tf.int64)).skip(first - before)
    if rest:
        head = head.concatenate(tf.data.Dataset.from_tensor_slices(
            (tf.constant([f for f, _ in rest], tf.string),
             tf.constant([n for _, n in rest], tf.int64))).interleave(
                read_file, cycle_length=1, block_length=1))
    if num_shards > 1:
        head = head.shard(num_shards, shard_id)
    return head.concatenate(epoch_records.repeat()) if repeat else head


def make_dataset(data_dir: str, image_size: int, batch_size: int, num_classes: int,
                 shuffle: bool = True, shuffle_buffer_size: int = 100000,
                 repeat: bool = True, seed: int | None = None,
                 input_context: tf.distribute.InputContext | None = None,
                 skip_corrupt_records: bool = False, pattern: str = "*.tfrecords",
                 cycle_length: int = 16, check_image_size: bool = True,
                 start_record: int = 0,
                 skipped_counter: SkippedRecordCounter | None = None) -> tf.data.Dataset:
    """The training input pipeline of NUMERICS §7 for one input pipeline.

    Args:
      data_dir: directory of ``pattern`` TFRecord files (NUMERICS §7 records).
      image_size: ``S``. The first record is checked up front (clear ``ValueError``
        when the files hold another size); every record is checked while decoding.
      batch_size: batch size of *this* pipeline (per replica), ``>= 1``.
      num_classes: labels must lie in ``[0, num_classes)``.
      shuffle: shuffle the file list and use a shuffle buffer. ``False`` gives a
        deterministic order: the records of the sorted files one file after the
        other, each file in record order (of this pipeline's shard).
      shuffle_buffer_size: records in the shuffle buffer (release: 100,000).
      repeat: repeat forever (the release); ``False`` gives one epoch.
      seed: seed of the file and buffer shuffles; with a seed the interleave is
        deterministic too, so the whole order is reproducible.
      input_context: from `distributed_dataset`; the data are sharded by file when
        there are at least as many files as input pipelines, else by record.
      skip_corrupt_records: drop the unreadable rest of a corrupt/truncated file with
        a warning instead of failing. (Records of a wrong image size or label are
        configuration errors and always fail.)
      pattern: glob of the record files inside ``data_dir``.
      cycle_length: files read concurrently by the interleave (shuffle=True).
      check_image_size: read the first record up front to check ``image_size``.
      start_record: with ``shuffle=False``, start this many records into this
        pipeline's record stream: the same elements as ``.skip(start_record)``
        on the unbatched records, at a cost independent of ``start_record``.
        The position is computed from the record counts of the files (read
        from their record headers), whole epochs are dropped by a modulo, and
        only the records before the start inside its one file are read again.
        (A resumed unshuffled run thus starts where it stopped; the one
        inexactness: a file whose middle holds a record with a bad checksum
        counts all its records, while the reader, with
        ``skip_corrupt_records``, drops its rest.)
      skipped_counter: a :class:`SkippedRecordCounter` that counts the records
        ``skip_corrupt_records`` drops (this process's pipelines only).

    Returns:
      ``tf.data.Dataset`` of ``(images float32 [B, S, S, 3] in [-1, 1],
      labels int32 [B])``, ``B = batch_size``, incomplete batches dropped.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if int(image_size) < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if int(start_record) < 0 or (start_record and shuffle):
        raise ValueError(f"start_record={start_record} needs shuffle=False and must be >= 0")
    files = list_record_files(data_dir, pattern)
    if check_image_size:
        stored = peek_image_size(files)
        if stored != int(image_size):
            raise ValueError(
                f"records in {data_dir} hold {stored}x{stored} images (first record of "
                f"{files[0]}), but --image_size is {int(image_size)}; convert the data at "
                f"--image_size {int(image_size)} or train at --image_size {stored}")
    sizes = [tf.io.gfile.stat(f).length for f in files]

    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    shard_by_file = num_pipelines > 1 and len(files) >= num_pipelines
    shard_by_record = num_pipelines > 1 and not shard_by_file

    file_ds = tf.data.Dataset.from_tensor_slices(
        (tf.constant(files, tf.string), tf.constant(sizes, tf.int64)))
    if shard_by_file:
        file_ds = file_ds.shard(num_pipelines, pipeline_id)
    # With record sharding all pipelines must see the records in the same order.
    sequential = (not shuffle) or shard_by_record
    if not sequential:
        num_local = (len(files) - pipeline_id + num_pipelines - 1) // num_pipelines \
            if shard_by_file else len(files)
        file_ds = file_ds.shuffle(max(num_local, 1), seed=seed, reshuffle_each_iteration=True)

    def read_file(filename, size):
        return _records_of_file(filename, size, skip_corrupt_records, skipped_counter)

    if sequential:
        records = file_ds.interleave(read_file, cycle_length=1, block_length=1)
    else:
        records = file_ds.interleave(
            read_file, cycle_length=max(1, min(int(cycle_length), len(files))),
            block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=seed is not None)
    if shard_by_record:
        records = records.shard(num_pipelines, pipeline_id)
    if start_record:
        local = list(zip(files, sizes))
        if shard_by_file:
            local = local[pipeline_id::num_pipelines]
        records = _records_from(records, local, int(start_record), read_file, repeat,
                                *((num_pipelines, pipeline_id) if shard_by_record else (1, 0)))
        repeat = False  # done inside _records_from
    if shuffle:
        records = records.shuffle(int(shuffle_buffer_size), seed=seed,
                                  reshuffle_each_iteration=True)
    if repeat:
        records = records.repeat()

    def decode(filename, serialized):
        return parse_example(serialized, image_size, num_classes, filename)

    ds = records.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(int(batch_size), drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def distributed_dataset(strategy: tf.distribute.Strategy, data_dir: str, image_size: int,
                        per_replica_batch_size: int, num_classes: int, **kwargs):
    """`make_dataset` for every input pipeline of ``strategy``.

    Uses ``strategy.distribute_datasets_from_function``; each pipeline builds
    ``make_dataset(..., batch_size=input_context.get_per_replica_batch_size(global))``
    with ``global = per_replica_batch_size * num_replicas_in_sync`` (release: 64 per
    GPU, 4 GPUs). Every replica gets its own batches ``(images [B, S, S, 3] float32,
    labels [B] int32)``, ``B = per_replica_batch_size``. ``kwargs`` go to
    `make_dataset` (shuffle, seed, shuffle_buffer_size, skip_corrupt_records, ...).

    Returns:
      A ``tf.distribute.DistributedDataset``.
    """
    if not isinstance(per_replica_batch_size, (int, np.integer)) or per_replica_batch_size < 1:
        raise ValueError(f"per-replica batch size (--batch_size) must be an integer >= 1, "
                         f"got {per_replica_batch_size!r}")
    global_batch = int(per_replica_batch_size) * strategy.num_replicas_in_sync
    # Fail early, outside the dataset function, on a missing directory or wrong size.
    files = list_record_files(data_dir, kwargs.get("pattern", "*.tfrecords"))
    if kwargs.get("check_image_size", True):
        stored = peek_image_size(files)
        if stored != int(image_size):
            raise ValueError(
                f"records in {data_dir} hold {stored}x{stored} images (first record of "
                f"{files[0]}), but --image_size is {int(image_size)}")
    kwargs["check_image_size"] = False

    def dataset_fn(input_context):
        return make_dataset(data_dir, image_size,
                            input_context.get_per_replica_batch_size(global_batch),
                            num_classes, input_context=input_context, **kwargs)

    return strategy.distribute_datasets_from_function(dataset_fn)
