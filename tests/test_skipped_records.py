"""Records dropped by skip_corrupt_records are counted.

Oracle: the files are written here, so which records the reader must drop is
known: a record whose data fails its checksum ends the file's reading (all
later records of the file are dropped), a truncated last record is one
record. The end-to-end check (progress line and TensorBoard scalar of
train_imagenet.py) is in tests/test_faults.py::
test_bad_input_is_refused_with_a_clear_message.
"""
import os

import numpy as np

from sagan_tf.data import pipeline as data, record_format

S, PER_FILE = 8, 16


def _write(directory, name, seed):
    rng = np.random.default_rng(seed)
    path = os.path.join(directory, name)
    record_format.write_records(path, rng.integers(0, 256, (PER_FILE, S, S, 3), dtype=np.uint8),
                       np.arange(PER_FILE) % 3)
    return path


def _record_offsets(path):
    offsets, offset = [], 0
    for serialized in record_format.iter_serialized_records(path):
        offsets.append(offset)
        offset += len(serialized) + 16
    return offsets


def test_skipped_records_are_counted(tmp_path):
    good = _write(tmp_path, "a-good.tfrecords", 0)
    crc = _write(tmp_path, "b-crc.tfrecords", 1)
    trunc = _write(tmp_path, "c-trunc.tfrecords", 2)
    # Record 5 of b: flip a byte of its data (its checksum fails).
    offset = _record_offsets(crc)[5] + 12 + 40
    with open(crc, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    # c: its last record cut short.
    with open(trunc, "r+b") as f:
        f.truncate(os.path.getsize(trunc) - 10)
    assert record_format.count_records(good) == PER_FILE

    counter = data.SkippedRecordCounter()
    ds = data.make_dataset(str(tmp_path), S, 1, 3, shuffle=False, repeat=False,
                           skip_corrupt_records=True, skipped_counter=counter)
    read = sum(1 for _ in ds)
    assert read == PER_FILE + 5 + (PER_FILE - 1)  # a, b up to record 5, c but its last
    assert counter.records == (PER_FILE - 5) + 1 and counter.files == 2
    # The count is a running one: a second pass adds as much again.
    ds2 = data.make_dataset(str(tmp_path), S, 1, 3, shuffle=False, repeat=False,
                            skip_corrupt_records=True, skipped_counter=counter)
    assert sum(1 for _ in ds2) == read
    assert counter.records == 2 * ((PER_FILE - 5) + 1) and counter.files == 4
