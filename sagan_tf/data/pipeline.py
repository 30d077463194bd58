"""The `tf.data` input pipeline of NUMERICS §7 over the record files of :mod:`sagan_tf.data.record_format`.

Reader (as the release)
-----------------------
sorted file list -> (shard per input pipeline) -> shuffle the file list -> parallel
interleave of the files -> shuffle buffer (100,000) -> repeat -> batch per replica
(drop remainder) -> parallel decode ``uint8 * (2/255) - 1`` (float32 in [-1, 1]) ->
prefetch.

The release decodes each record before batching; decoding the batch of
serialized records at once (:func:`sagan_tf.data.record_format.parse_examples`)
gives the same elements and leaves to each record only its reading, which
matters on few CPU cores shared with the training step. Each file's records
are read in chunks of 64 to count their bytes (the truncated-file check
below), and the checks build their error messages only when they fail.

Errors name their culprit: a record of another image size or with a label outside
``[0, num_classes)`` raises ``tf.errors.InvalidArgumentError`` whose message names the
file; a truncated or corrupt TFRecord file raises ``tf.errors.InvalidArgumentError``
naming the file (TensorFlow's own ``DataLossError`` message does not name it), unless
``skip_corrupt_records=True``, which drops the unreadable rest of such a file with a
warning on stderr and goes on.
"""
from __future__ import annotations

import struct
import sys
import threading

import numpy as np
import tensorflow as tf

from sagan_tf.data import malloc_thresholds
from sagan_tf.data.record_format import (RECORD_OVERHEAD, assert_lazily, count_complete_records,
                                         list_record_files, parse_examples, peek_image_size)

__all__ = [
    "SkippedRecordCounter",
    "make_dataset",
    "distributed_dataset",
    "training_iterator",
]

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
                offset += RECORD_OVERHEAD + length
        return max(count, 1 if offset < size else 0)

    def add(self, path, offset, size):
        """Counts the dropped rest of ``path`` from byte ``offset``; returns the
        running total of records."""
        n = self.records_after(path, int(offset), int(size))
        with self._lock:
            self.records += n
            self.files += 1
            return self.records


_CHUNK = 64  # records counted per call of the byte-counting function


def _records_of_file(filename, file_size, skip_corrupt_records: bool,
                     skipped_counter: SkippedRecordCounter | None = None):
    """Dataset of ``(filename, serialized)`` for one file, in file order.

    Reading stops at the first unreadable record (TensorFlow moves to the next file
    after a DataLoss error); the bytes read are then counted against the file size
    so a truncated/corrupt file is reported *with its name* (TF's DataLossError
    message does not name the file), or, with ``skip_corrupt_records``, reported on
    stderr, skipped and counted in ``skipped_counter`` (if given). The bytes are
    counted in chunks of ``_CHUNK`` records, and the check's message is built
    only when it fails, so that the per-record work is the reading alone.
    """
    chunks = tf.data.TFRecordDataset(filename).ignore_errors(
        log_warning=skip_corrupt_records).batch(_CHUNK)
    # An empty chunk marks the end of what could be read; the check runs on it.
    chunks = chunks.map(lambda recs: (recs, False)).concatenate(
        tf.data.Dataset.from_tensors((tf.zeros([0], tf.string), tf.constant(True))))

    def count_and_check(consumed, chunk):
        recs, is_end = chunk
        consumed += tf.reduce_sum(tf.cast(tf.strings.length(recs), tf.int64) + RECORD_OVERHEAD)
        ok = tf.logical_or(tf.logical_not(is_end), tf.equal(consumed, file_size))

        def message():
            return tf.strings.join([
                "TFRecord file ", filename, " is truncated or corrupt (or unreadable): the "
                "records read up to the first bad one span ", tf.strings.as_string(consumed),
                " of its ", tf.strings.as_string(file_size), " bytes (skip_corrupt_records / "
                "--skip_corrupt_records reads past such files)"])

        if skip_corrupt_records:
            def warn():
                ops = [tf.print("WARNING:", message(), "-- skipped the rest of this file "
                                "(skip_corrupt_records=True)", output_stream=sys.stderr)]
                if skipped_counter is not None:
                    ops.append(tf.py_function(
                        lambda f, c, n: skipped_counter.add(f.numpy().decode(), c, n),
                        [filename, consumed, file_size], tf.int64))
                with tf.control_dependencies(ops):
                    return tf.identity(ok)
            checked = tf.cond(ok, lambda: tf.identity(ok), warn)
        else:
            checked = assert_lazily(ok, message)
        with tf.control_dependencies([checked]):
            return consumed, (tf.fill(tf.shape(recs), filename), tf.identity(recs))

    return chunks.scan(tf.constant(0, tf.int64), count_and_check).unbatch()


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
                 skipped_counter: SkippedRecordCounter | None = None,
                 uint8_images: bool = False, drop_remainder: bool = True) -> tf.data.Dataset:
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
        The position comes from the files' record counts (their record
        headers), whole epochs are dropped by a modulo, and only the records
        before the start inside its file are read again. (The one inexactness:
        a file with a bad checksum in its middle counts all its records, while
        the reader, with ``skip_corrupt_records``, drops its rest.)
      skipped_counter: a :class:`SkippedRecordCounter` that counts the records
        ``skip_corrupt_records`` drops (this process's pipelines only).
      uint8_images: the images as stored (uint8), for ``to_unit_range`` on the device.
      drop_remainder: False keeps a last, smaller batch (every record of an epoch).

    Returns:
      ``tf.data.Dataset`` of ``(images float32 [B, S, S, 3] in [-1, 1] (or
      uint8), labels int32 [B])``, ``B = batch_size``, incomplete batches
      dropped unless ``drop_remainder`` is False. Batches of serialized records are decoded in one map each
      (what decoding each record, then batching, gives; a bad record in the
      dropped incomplete batch raises nothing).
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
        _check_image_size(data_dir, files, image_size,
                          f"; convert the data at --image_size {int(image_size)} or train at "
                          "--image_size {stored}")
    records = _record_stream(files, shuffle, seed, input_context, cycle_length,
                             skip_corrupt_records, skipped_counter, int(start_record), repeat)
    if shuffle:
        records = records.shuffle(int(shuffle_buffer_size), seed=seed,
                                  reshuffle_each_iteration=True)
    if repeat and not start_record:  # with start_record, _record_stream repeats
        records = records.repeat()

    def decode(filenames, serialized):
        return parse_examples(serialized, image_size, num_classes, filenames, uint8_images)

    # Decoding whole batches keeps the per-record work to reading and counting.
    ds = records.batch(int(batch_size), drop_remainder=drop_remainder)
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _check_image_size(data_dir, files, image_size, hint=""):
    """``ValueError`` when the first record of ``files`` is not ``image_size``
    (``hint``, formatted with ``stored``, is appended to the message)."""
    stored = peek_image_size(files)
    if stored != int(image_size):
        raise ValueError(
            f"records in {data_dir} hold {stored}x{stored} images (first record of "
            f"{files[0]}), but --image_size is {int(image_size)}" + hint.format(stored=stored))


def _record_stream(files, shuffle, seed, input_context, cycle_length, skip_corrupt_records,
                   skipped_counter, start_record, repeat):
    """``(filename, serialized)`` records of this input pipeline's share of
    ``files``, before the shuffle buffer (see :func:`make_dataset`); with
    ``start_record`` started that far in, repeated when ``repeat``."""
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
        records = _records_from(records, local, start_record, read_file, repeat,
                                *((num_pipelines, pipeline_id) if shard_by_record else (1, 0)))
    return records


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
        _check_image_size(data_dir, files, image_size)
    kwargs["check_image_size"] = False

    def dataset_fn(input_context):
        return make_dataset(data_dir, image_size,
                            input_context.get_per_replica_batch_size(global_batch),
                            num_classes, input_context=input_context, **kwargs)

    return strategy.distribute_datasets_from_function(dataset_fn)


def training_iterator(config, strategy, start_step, skipped_counter=None):
    """The trainer's iterator over per-replica ``(images, labels)`` batches of
    ``config`` (a :class:`~sagan_tf.training.config.TrainConfig`), positioned for
    ``start_step``.

    With ``shuffle=False`` the stream is deterministic, so a resumed run starts
    past the batches already consumed (``start_step * d_step`` per replica) and
    sees exactly what an uninterrupted run would have seen. The start is
    computed from the files' record counts (:func:`make_dataset`'s
    ``start_record``), so resuming at step 1M costs what resuming at step 1
    does.
    With shuffling, a resumed run reseeds the shuffles from ``(seed, step)``:
    it gets a fresh order rather than replaying the first one (a shuffle
    buffer of 100,000 images is not checkpointed).
    ``skipped_counter``: a :class:`SkippedRecordCounter` counting
    what ``skip_corrupt_records`` drops.
    Creating the iterator pins glibc's mmap threshold (TensorFlow's generator
    dataset); the thresholds are restored after it
    (:mod:`sagan_tf.data.malloc_thresholds`).
    """
    seed = int(config.seed)
    if start_step and config.shuffle:
        seed = int((seed * 1_000_003 + start_step) % (2 ** 31 - 1))
    kwargs = dict(shuffle=config.shuffle, shuffle_buffer_size=config.shuffle_buffer_size,
                  seed=seed, skip_corrupt_records=config.skip_corrupt_records,
                  skipped_counter=skipped_counter, uint8_images=True)  # scaled on the device
    if config.shuffle or start_step == 0:
        dataset = distributed_dataset(strategy, config.data_dir, config.image_size,
                                      config.batch_size, config.number_classes, **kwargs)
    else:
        # Resumed unshuffled run: the same pipeline as distributed_dataset,
        # advanced past the consumed batches. Each input pipeline feeds its local
        # replicas round-robin, one batch each per D step.
        def dataset_fn(ctx):
            local_replicas = ctx.num_replicas_in_sync // ctx.num_input_pipelines
            batches = start_step * config.d_step * local_replicas
            return make_dataset(config.data_dir, config.image_size, config.batch_size,
                                config.number_classes, input_context=ctx,
                                check_image_size=False,
                                start_record=batches * config.batch_size, **kwargs)
        dataset = strategy.distribute_datasets_from_function(dataset_fn)
    iterator = iter(dataset)
    malloc_thresholds.restore()  # iter() pinned glibc's mmap threshold at 128 KiB
    return iterator
