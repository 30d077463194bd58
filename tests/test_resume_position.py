"""An unshuffled run resumes at any step in time independent of the step.

Reference: the pipeline read from its beginning and advanced with
``Dataset.skip`` (what resuming did before), on files of uneven record counts
and uneven record sizes (labels above 127 take two varint bytes), with and
without input pipeline sharding. Far positions are checked against the
reference at the same position modulo the epoch (the stream is periodic).
The bit-exact end-to-end resume is tests/test_training.py::
test_resume_equals_uninterrupted_run, which now goes through this path.
"""
import os
import time

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.data import pipeline as data, record_format
from sagan_tf.data.pipeline import training_iterator
from sagan_tf.training.config import TrainConfig

S = 8
COUNTS = (5, 0, 7, 4)  # records per file, one file empty


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    directory = tmp_path_factory.mktemp("uneven")
    rng = np.random.default_rng(0)
    serial = 0
    for k, n in enumerate(COUNTS):
        labels = (np.arange(serial, serial + n) * 37) % 300  # record sizes vary
        record_format.write_records(os.path.join(directory, f"train-{k}.tfrecords"),
                           rng.integers(0, 256, (n, S, S, 3), dtype=np.uint8), labels)
        serial += n
    return str(directory)


def _labels(ds, n):
    return [int(y[0]) for _, y in ds.take(n).as_numpy_iterator()]


def _records(records, ctx=None, **kw):
    return data.make_dataset(records, S, 1, 300, shuffle=False, input_context=ctx, **kw)


# No sharding; sharding by file (this pipeline's files: the empty one and a
# 4-record one); sharding by record (5 pipelines > 4 files).
@pytest.mark.parametrize("pipelines", [(1, 0), (2, 1), (5, 4)])
def test_start_record_equals_skip(records, pipelines):
    num, pid = pipelines
    ctx = tf.distribute.InputContext(num, pid, num) if num > 1 else None
    one_epoch = _labels(_records(records, ctx, repeat=False), 100)
    epoch = len(one_epoch)
    reference = _labels(_records(records, ctx), 3 * epoch + 5)
    assert epoch > 0 and reference[:epoch] == one_epoch
    for start in (1, epoch - 1, 2 * epoch + 2):
        got = _labels(_records(records, ctx, start_record=start), epoch + 2)
        assert got == reference[start:start + epoch + 2], (pipelines, start)
    once = _labels(_records(records, ctx, repeat=False, start_record=epoch - 2), 100)
    assert once == one_epoch[epoch - 2:], pipelines
    assert _labels(_records(records, ctx, repeat=False, start_record=epoch), 100) == []


def test_start_record_images_and_far_positions(records):
    reference = list(_records(records).take(40).as_numpy_iterator())
    epoch = sum(COUNTS)
    for start in (3, 10 ** 9 * epoch + 5):
        got = list(_records(records, start_record=start).take(10).as_numpy_iterator())
        for (xa, ya), (xb, yb) in zip(got, reference[start % epoch:]):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    with pytest.raises(ValueError, match="start_record=3 needs shuffle=False"):
        data.make_dataset(records, S, 1, 300, shuffle=True, start_record=3)


def _first_batches(config, strategy, start_step, n):
    t0 = time.perf_counter()
    it = training_iterator(config, strategy, start_step)
    out = []
    for _ in range(n):
        batch = next(it)
        out.append(np.concatenate([np.asarray(y) for y in
                                   strategy.experimental_local_results(batch[1])]))
    return out, time.perf_counter() - t0


def test_trainer_resumes_at_step_one_million_at_once(records, strategy2):
    """The trainer's input at step 1,000,000 equals the naive skip's at the same
    position modulo the epoch, and is ready about as fast as at step 0 (the
    naive skip would read 4 * 10**6 records)."""
    config = TrainConfig(data_dir=records, image_size=S, number_classes=300, batch_size=2,
                         seed=1, shuffle=False)
    epoch = sum(COUNTS)
    # Reference: the whole record stream (2 replicas x 2 images per step).
    stream = _labels(_records(records), 200)
    _first_batches(config, strategy2, 0, 1)  # warm-up (first tf.data use in this process)
    at0, t0 = _first_batches(config, strategy2, 0, 3)
    assert [list(b) for b in at0] == [stream[4 * i:4 * i + 4] for i in range(3)]
    step = 10 ** 6
    far, t_far = _first_batches(config, strategy2, step, 3)
    start = (step * 4) % epoch
    assert [list(b) for b in far] == [stream[start + 4 * i:start + 4 * i + 4] for i in range(3)]
    # A small resume agrees with the naive skip too (both replicas, two D steps).
    config2 = TrainConfig(data_dir=records, image_size=S, number_classes=300, batch_size=2,
                          seed=1, shuffle=False, d_step=2)
    small, _ = _first_batches(config2, strategy2, 3, 2)
    assert [list(b) for b in small] == [stream[24 + 4 * i:24 + 4 * i + 4] for i in range(2)]
    assert t_far < 3 * t0 + 2.0, (t0, t_far)
