"""Record format and input pipeline (NUMERICS §7): sagan_tf/data/record_format.py, sagan_tf/data/pipeline.py."""
import os

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.data import pipeline as data, record_format

S = 8


def _oracle(images_uint8):
    """NUMERICS §7 decode in numpy: uint8 * (2/255) - 1 in float32."""
    return images_uint8.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)


def _write_dir(directory, num_files, per_file, size=S, label_offset=0, seed=0):
    """Files f0.tfrecords ... with labels label_offset + running index (unique)."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    all_images, all_labels = [], []
    for k in range(num_files):
        images = rng.integers(0, 256, (per_file, size, size, 3), dtype=np.uint8)
        labels = label_offset + k * per_file + np.arange(per_file)
        record_format.write_records(os.path.join(directory, f"f{k}.tfrecords"), images, labels)
        all_images.append(images)
        all_labels.append(labels)
    return np.concatenate(all_images), np.concatenate(all_labels)


def _labels(ds):
    return np.concatenate([lab.numpy() for _, lab in ds])


# --------------------------------------------------------------------------- format
def test_encode_parse_round_trip_and_exact_scaling():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)
    image[0, 0] = [0, 255, 128]
    serialized = record_format.encode_example(image, 7)

    ex = tf.train.Example.FromString(serialized).features.feature
    assert ex["image_raw"].bytes_list.value[0] == image.tobytes()  # HWC RGB bytes
    assert [ex[k].int64_list.value[0] for k in ("label", "height", "width", "depth")] == \
        [7, S, S, 3]

    back, label = record_format.decode_example_numpy(serialized)
    np.testing.assert_array_equal(back, image)
    assert label == 7

    parsed, plabel = record_format.parse_example(tf.constant(serialized), S, num_classes=10)
    assert parsed.dtype == tf.float32 and parsed.shape == (S, S, 3)
    assert plabel.dtype == tf.int32 and int(plabel) == 7
    np.testing.assert_array_equal(parsed.numpy(), _oracle(image))  # bit-exact
    assert parsed.numpy()[0, 0, 0] == -1.0 and parsed.numpy()[0, 0, 1] == 1.0


def test_encode_rejects_non_uint8_and_bad_shapes():
    with pytest.raises(TypeError, match="uint8"):
        record_format.encode_example(np.zeros((S, S, 3), np.float32), 0)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        record_format.encode_example(np.zeros((S, S), np.uint8), 0)
    with pytest.raises(ValueError, match="label"):
        record_format.encode_example(np.zeros((S, S, 3), np.uint8), -1)


def test_write_records_is_atomic(tmp_path):
    path = str(tmp_path / "x.tfrecords")
    good = np.zeros((2, S, S, 3), np.uint8)
    bad = [good[0], np.zeros((S, S, 3), np.float32)]  # second image fails mid-write
    with pytest.raises(TypeError):
        record_format.write_records(path, bad, [0, 1])
    assert os.listdir(tmp_path) == []  # neither the final file nor a temporary one
    assert record_format.write_records(path, good, [0, 1]) == 2
    assert os.listdir(tmp_path) == ["x.tfrecords"]
    assert record_format.count_records([path]) == 2


# --------------------------------------------------------------------------- files
def test_list_count_peek(tmp_path):
    _write_dir(tmp_path, 3, 4)
    (tmp_path / "notes.txt").write_text("not a record file")
    files = record_format.list_record_files(str(tmp_path))
    assert [os.path.basename(f) for f in files] == ["f0.tfrecords", "f1.tfrecords",
                                                    "f2.tfrecords"]
    assert record_format.count_records(files) == 12
    assert record_format.count_records(files[0]) == 4
    assert record_format.peek_image_size(files) == S
    assert [os.path.basename(f) for f in record_format.list_record_files(str(tmp_path), "f1*")] == \
        ["f1.tfrecords"]


def test_missing_dir_and_no_matching_files(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError) as e:
        record_format.list_record_files(missing)
    assert missing in str(e.value) and "*.tfrecords" in str(e.value)
    (tmp_path / "a.tfrecord").write_bytes(b"")  # near miss: other extension
    with pytest.raises(FileNotFoundError) as e:
        data.make_dataset(str(tmp_path), S, 2, 10)
    assert "*.tfrecords" in str(e.value) and str(tmp_path) in str(e.value)
    with pytest.raises(FileNotFoundError, match=r"train-\*"):
        record_format.list_record_files(str(tmp_path), "train-*")


def test_count_records_names_truncated_file(tmp_path):
    _write_dir(tmp_path, 1, 3)
    path = str(tmp_path / "f0.tfrecords")
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[:-10])
    with pytest.raises(ValueError, match="f0.tfrecords is truncated"):
        record_format.count_records([path])


# --------------------------------------------------------------------------- pipeline
def test_shapes_drop_remainder_and_sequential_order(tmp_path):
    images, labels = _write_dir(tmp_path, 3, 5)  # 15 records
    ds = data.make_dataset(str(tmp_path), S, 4, 100, shuffle=False, repeat=False)
    assert ds.element_spec[0].shape.as_list() == [4, S, S, 3]
    assert ds.element_spec[1].shape.as_list() == [4]
    assert ds.element_spec[0].dtype == tf.float32 and ds.element_spec[1].dtype == tf.int32
    batches = list(ds)
    assert len(batches) == 3  # 15 // 4, the remainder of 3 is dropped
    got_images = np.concatenate([b[0].numpy() for b in batches])
    got_labels = np.concatenate([b[1].numpy() for b in batches])
    np.testing.assert_array_equal(got_labels, labels[:12])  # sorted files, record order
    np.testing.assert_array_equal(got_images, _oracle(images[:12]))


def test_unshuffled_order_is_deterministic_and_repeats(tmp_path):
    _, labels = _write_dir(tmp_path, 2, 6)
    first = data.make_dataset(str(tmp_path), S, 4, 100, shuffle=False, repeat=True)
    second = data.make_dataset(str(tmp_path), S, 4, 100, shuffle=False, repeat=True)
    a = _labels(first.take(6))
    np.testing.assert_array_equal(a, _labels(second.take(6)))
    np.testing.assert_array_equal(a, np.concatenate([labels, labels]))  # 2 epochs in order


def test_shuffle_shuffles(tmp_path):
    _, labels = _write_dir(tmp_path, 4, 15)  # 60 records
    got = _labels(data.make_dataset(str(tmp_path), S, 5, 100, shuffle=True, repeat=False,
                                    shuffle_buffer_size=100))
    assert sorted(got.tolist()) == sorted(labels.tolist())  # one epoch, every record once
    assert not np.array_equal(got, labels)
    # records are mixed across files, not just files permuted
    assert not all(np.all(np.diff(got[i:i + 15]) == 1) for i in range(0, 60, 15))
    seeded = [_labels(data.make_dataset(str(tmp_path), S, 5, 100, shuffle=True, repeat=False,
                                        seed=3)) for _ in range(2)]
    np.testing.assert_array_equal(seeded[0], seeded[1])
    # every epoch is reshuffled
    two = _labels(data.make_dataset(str(tmp_path), S, 60, 100, shuffle=True, seed=3).take(2))
    assert not np.array_equal(two[:60], two[60:])
    assert sorted(two[:60].tolist()) == sorted(two[60:].tolist())


def test_distributed_dataset_per_replica_batches(tmp_path, strategy2):
    _write_dir(tmp_path, 4, 6)
    dist = data.distributed_dataset(strategy2, str(tmp_path), S, 3, 100, shuffle=False)
    seen = []
    for step, (images, labels) in enumerate(dist):
        imgs = strategy2.experimental_local_results(images)
        labs = strategy2.experimental_local_results(labels)
        assert len(imgs) == 2 and len(labs) == 2
        for im, lab in zip(imgs, labs):
            assert im.shape == (3, S, S, 3) and lab.shape == (3,)
        a, b = (set(x.numpy().tolist()) for x in labs)
        assert not a & b  # different data on the two replicas
        seen += list(a) + list(b)
        if step == 2:
            break
    assert len(set(seen)) == 18


@pytest.mark.parametrize("num_files", [4, 1])  # shard by file / by record
@pytest.mark.parametrize("shuffle", [False, True])
def test_input_pipelines_get_disjoint_shards(tmp_path, num_files, shuffle):
    _, labels = _write_dir(tmp_path, num_files, 24 // num_files)
    parts = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                             num_replicas_in_sync=2)
        parts.append(_labels(data.make_dataset(str(tmp_path), S, 1, 100, shuffle=shuffle,
                                               repeat=False, input_context=context)).tolist())
    assert len(parts[0]) == len(parts[1]) == 12
    assert sorted(parts[0] + parts[1]) == labels.tolist()


def test_batch_size_validation(tmp_path, strategy2):
    _write_dir(tmp_path, 1, 4)
    with pytest.raises(ValueError, match="batch size.*>= 1, got 0"):
        data.distributed_dataset(strategy2, str(tmp_path), S, 0, 10)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        data.make_dataset(str(tmp_path), S, 0, 10)


# --------------------------------------------------------------------------- bad data
def test_other_image_size_is_caught_early_and_per_record(tmp_path):
    _write_dir(tmp_path / "big", 1, 4, size=16)
    with pytest.raises(ValueError) as e:
        data.make_dataset(str(tmp_path / "big"), S, 2, 100)
    assert "16x16" in str(e.value) and "--image_size is 8" in str(e.value)

    # a directory whose first file is right but a later one is not
    _write_dir(tmp_path / "mixed", 1, 4, size=S)
    record_format.write_records(str(tmp_path / "mixed" / "f9.tfrecords"),
                       np.zeros((4, 16, 16, 3), np.uint8), [0, 1, 2, 3])
    ds = data.make_dataset(str(tmp_path / "mixed"), S, 2, 100, shuffle=False, repeat=False)
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        _labels(ds)
    msg = str(e.value)
    assert str(tmp_path / "mixed" / "f9.tfrecords") in msg
    assert "768 image bytes, expected 192 for --image_size 8" in msg


def test_label_out_of_range_names_file(tmp_path):
    _write_dir(tmp_path, 2, 4)  # labels 0..7
    ds = data.make_dataset(str(tmp_path), S, 2, 6, shuffle=False, repeat=False)
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        _labels(ds)
    assert f"label 6 in {tmp_path / 'f1.tfrecords'} outside [0, 6) (--number_classes)" \
        in str(e.value)
    assert len(_labels(data.make_dataset(str(tmp_path), S, 2, 8, shuffle=False,
                                         repeat=False))) == 8


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_file_named_or_skipped(tmp_path, damage):
    _write_dir(tmp_path, 3, 4)  # labels 0..11
    bad = tmp_path / "f1.tfrecords"
    if damage == "truncate":
        bad.write_bytes(bad.read_bytes()[:-20])  # last record of f1 (label 7) is lost
        survivors = [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11]
    else:
        bad.write_bytes(b"this is not a TFRecord file" * 20)
        survivors = [0, 1, 2, 3, 8, 9, 10, 11]
    ds = data.make_dataset(str(tmp_path), S, 1, 100, shuffle=False, repeat=False)
    with pytest.raises(tf.errors.OpError) as e:
        _labels(ds)
    assert str(bad) in str(e.value) and "truncated or corrupt" in str(e.value)

    ds = data.make_dataset(str(tmp_path), S, 1, 100, shuffle=False, repeat=False,
                           skip_corrupt_records=True)
    assert _labels(ds).tolist() == survivors
    ds = data.make_dataset(str(tmp_path), S, 1, 100, shuffle=True, repeat=True,
                           skip_corrupt_records=True, shuffle_buffer_size=50)
    assert set(_labels(ds.take(40)).tolist()) == set(survivors)


# --------------------------------------------------------------------------- batch decode
def _reference_stream(directory):
    """The unshuffled record stream decoded independently of tf.data:
    pure-Python framing + protobuf + numpy, sorted files, record order."""
    images, labels = [], []
    for path in record_format.list_record_files(str(directory)):
        for serialized in record_format.iter_serialized_records(path):
            image, label = record_format.decode_example_numpy(serialized)
            images.append(image)
            labels.append(label)
    return _oracle(np.stack(images)), np.array(labels, np.int32)


def _assert_batches_equal(ds, images, labels, batch):
    """``ds`` holds exactly the full batches of ``(images, labels)``, bit for bit."""
    got = list(ds.as_numpy_iterator())
    assert len(got) == len(labels) // batch
    for k, (gi, gl) in enumerate(got):
        assert gi.dtype == np.float32 and gl.dtype == np.int32 and gi.shape == (batch, S, S, 3)
        np.testing.assert_array_equal(gi.view(np.uint32),
                                      images[k * batch:(k + 1) * batch].view(np.uint32))
        np.testing.assert_array_equal(gl, labels[k * batch:(k + 1) * batch])


def test_batch_decoded_pipeline_equals_independent_reference(tmp_path):
    # uneven files (one longer than data._CHUNK, one empty), batches across files,
    # a remainder to drop; labels > 127 make the record sizes vary
    rng = np.random.default_rng(1)
    for k, n in enumerate((70, 0, 9, 5)):
        record_format.write_records(str(tmp_path / f"f{k}.tfrecords"),
                                    rng.integers(0, 256, (n, S, S, 3), dtype=np.uint8),
                                    rng.integers(0, 300, n))
    images, labels = _reference_stream(tmp_path)
    assert len(labels) == 84 and len(set(len(r) for r in record_format.iter_serialized_records(
        str(tmp_path / "f0.tfrecords")))) > 1

    def make(batch, **kw):
        return data.make_dataset(str(tmp_path), S, batch, 300, shuffle=False, **kw)

    _assert_batches_equal(make(5, repeat=False), images, labels, 5)  # 16 batches, 4 dropped
    two_epochs = (np.concatenate([images, images]), np.concatenate([labels, labels]))
    _assert_batches_equal(make(8).take(21), *two_epochs, 8)  # a batch spans the epochs
    _assert_batches_equal(make(3, repeat=False, start_record=67), images[67:], labels[67:], 3)
    for num, pid in ((2, 1), (8, 3)):  # sharded by file; by record
        ctx = tf.distribute.InputContext(num, pid, num)
        files = record_format.list_record_files(str(tmp_path))
        if num <= len(files):
            mine = [i for i, f in enumerate(np.repeat(files, [70, 0, 9, 5]))
                    if files.index(f) % num == pid]
        else:
            mine = list(range(pid, len(labels), num))
        _assert_batches_equal(make(2, repeat=False, input_context=ctx),
                              images[mine], labels[mine], 2)


def _serialized(sizes, labels):
    """Records ``i`` of an ``s x s`` image of value ``i`` (protobuf by hand: encode_example
    refuses negative labels)."""
    def example(i, s, label):
        return tf.train.Example(features=tf.train.Features(feature={
            "image_raw": tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[np.full((s, s, 3), i, np.uint8).tobytes()])),
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}))
    return [example(i, s, label).SerializeToString()
            for i, (s, label) in enumerate(zip(sizes, labels))]


@pytest.mark.parametrize("graph", [False, True])
def test_parse_examples_checks_name_the_first_bad_record(graph):
    names = tf.constant(["a.tfrecords", "b.tfrecords", "c.tfrecords", "d.tfrecords"])

    def parse(serialized, num_classes=10):
        fn = lambda s: record_format.parse_examples(s, S, num_classes, names)  # noqa: E731
        return (tf.function(fn) if graph else fn)(tf.constant(serialized))

    images, labels = parse(_serialized([S] * 4, [3, 0, 9, 1]))
    assert images.shape == (4, S, S, 3) and labels.dtype == tf.int32
    np.testing.assert_array_equal(images.numpy(), _oracle(
        np.arange(4, dtype=np.uint8)[:, None, None, None] + np.zeros((S, S, 3), np.uint8)))
    np.testing.assert_array_equal(labels.numpy(), [3, 0, 9, 1])
    cases = [  # (sizes, labels, message): the first bad record is the one named
        ([S, S, 16, S], [0, 1, 99, 2],  # mixed lengths: the size message, not decode_raw's
         "record in c.tfrecords has 768 image bytes, expected 192 for --image_size 8"),
        ([S, S, 16, S], [0, 10, 1, 2], "label 10 in b.tfrecords outside [0, 10)"),
        ([4, S, S, S], [0, 1, 2, 3], "record in a.tfrecords has 48 image bytes"),
        ([S, S, S, S], [0, 1, 2, -1], "label -1 in d.tfrecords outside [0, 10) (--number_classes)"),
    ]
    for sizes, labs, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError) as e:
            parse(_serialized(sizes, labs))
        assert message in str(e.value) and "DecodeRaw" not in str(e.value)
    # without num_classes any label >= 0 passes
    assert parse(_serialized([S] * 4, [0, 1, 2, 99]), None)[1].numpy()[3] == 99


def test_checks_build_their_messages_only_when_they_fail():
    graph = tf.function(lambda s, f: record_format.parse_examples(s, S, 10, f)) \
        .get_concrete_function(tf.TensorSpec([4], tf.string), tf.TensorSpec([4], tf.string)).graph
    types = {op.type for op in graph.get_operations()}
    assert not types & {"StringJoin", "AsString", "Assert"}, types  # all in the cond's branch
    assert types & {"If", "StatelessIf"}


def test_single_record_parse_names_its_file():
    (bad,) = _serialized([16], [0])
    with pytest.raises(tf.errors.InvalidArgumentError, match="record in x.tfrecords has 768"):
        record_format.parse_example(tf.constant(bad), S, 10, "x.tfrecords")
    with pytest.raises(tf.errors.InvalidArgumentError, match="label 12 in <unknown file>"):
        record_format.parse_example(_serialized([S], [12])[0], S, 10)


def test_batch_of_mixed_image_sizes_names_the_culprit_file(tmp_path):
    _write_dir(tmp_path, 1, 3)  # f0: 3 records of 8x8
    record_format.write_records(str(tmp_path / "f1.tfrecords"),
                                np.zeros((3, 16, 16, 3), np.uint8), [0, 1, 2])
    ds = data.make_dataset(str(tmp_path), S, 4, 100, shuffle=False, repeat=False)
    with pytest.raises(tf.errors.InvalidArgumentError) as e:  # batch 1: 3 of f0, 1 of f1
        _labels(ds)
    assert f"record in {tmp_path / 'f1.tfrecords'} has 768 image bytes, expected 192" \
        in str(e.value) and "DecodeRaw" not in str(e.value)
