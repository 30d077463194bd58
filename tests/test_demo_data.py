"""The procedural demo data set: sagan_tf/data/demo_data.py and tools/make_demo_data.py."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from sagan_tf.data import demo_data, record_format

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The exact invariance each class is designed to have (written out here, not read
# from the module, so a change on either side shows up).
TRANSFORMS = {
    "lr": lambda x: x[:, ::-1],
    "tb": lambda x: x[::-1, :],
    "rot90": lambda x: np.rot90(x, 1, axes=(0, 1)),
    "rot180": lambda x: x[::-1, ::-1],
    "transpose": lambda x: x.transpose(1, 0, 2),
    "half_shift": lambda x: np.roll(x, x.shape[1] // 2, axis=1),
}
DESIGNED = {0: "lr", 1: "tb", 2: "rot90", 3: "rot180", 5: "transpose", 6: "rot180",
            7: "rot90", 8: "rot90", 9: "half_shift"}
TOLERANCE = {7: 1}  # the star goes through arctan2/cos: +-1 from rounding


@pytest.fixture(scope="module")
def demo():
    return demo_data.make_demo_images(2000, 32, 10, seed=0)


def _max_violation(image, kind):
    return int(np.abs(image.astype(int) - TRANSFORMS[kind](image).astype(int)).max())


def test_shapes_balance_and_determinism(demo):
    images, labels = demo
    assert images.shape == (2000, 32, 32, 3) and images.dtype == np.uint8
    assert labels.shape == (2000,) and np.bincount(labels).tolist() == [200] * 10
    again = demo_data.make_demo_images(2000, 32, 10, seed=0)
    np.testing.assert_array_equal(again[0], images)
    np.testing.assert_array_equal(again[1], labels)
    other = demo_data.make_demo_images(2000, 32, 10, seed=1)
    assert not np.array_equal(other[1], labels)
    assert np.mean(other[0] != images) > 0.5
    assert len(demo_data.CLASS_NAMES) == 10
    small, small_labels = demo_data.make_demo_images(25, 16, 3, seed=0)
    assert small.shape == (25, 16, 16, 3) and set(small_labels.tolist()) == {0, 1, 2}


def test_designed_invariances_hold(demo):
    images, labels = demo
    for c, kind in DESIGNED.items():
        assert demo_data.CLASS_INVARIANCE[demo_data.CLASS_NAMES[c]] == kind
        worst = max(_max_violation(im, kind) for im in images[labels == c])
        assert worst <= TOLERANCE.get(c, 0), (demo_data.CLASS_NAMES[c], kind, worst)
    # the checks are not vacuous: the stripes class (no invariance) breaks all of them,
    # and so does a class designed with another invariance
    stripes = images[labels == 4]
    for kind in TRANSFORMS:
        assert np.mean([_max_violation(im, kind) > 8 for im in stripes]) > 0.9, kind
    for c, kind in [(0, "tb"), (1, "lr"), (3, "lr"), (5, "lr"), (9, "lr"), (0, "half_shift")]:
        assert np.mean([_max_violation(im, kind) > 8 for im in images[labels == c]]) > 0.9


def test_samples_vary_within_a_class(demo):
    images, labels = demo
    for c in range(10):
        cls = images[labels == c].reshape(200, -1).astype(float)
        assert len({im.tobytes() for im in images[labels == c]}) == 200
        assert cls.std(axis=0).mean() > 20  # position/colour/scale jitter


def test_classes_are_distinct(demo):
    images, labels = demo
    means = np.stack([images[labels == c].astype(float).mean(0) for c in range(10)])
    rms = np.sqrt(((means[:, None] - means[None]) ** 2).mean(axis=(2, 3, 4)))
    assert rms[~np.eye(10, dtype=bool)].min() > 8  # every pair of class means differs

    # colour-independent structure identifies the class: nearest class mean of the
    # normalised gradient-magnitude map, trained on seed 0, tested on seed 1
    def features(x):
        g = x.astype(float).sum(-1)
        mag = np.abs(np.diff(g, axis=1))[:, :, :-1] + np.abs(np.diff(g, axis=2))[:, :-1, :]
        mag /= mag.mean(axis=(1, 2), keepdims=True) + 1e-6
        return mag.reshape(len(x), -1)

    train = features(images)
    centroids = np.stack([train[labels == c].mean(0) for c in range(10)])
    test_images, test_labels = demo_data.make_demo_images(500, 32, 10, seed=1)
    test = features(test_images)
    predicted = np.argmin(((test[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert np.mean(predicted == test_labels) > 0.6  # chance: 0.1


def test_write_demo_dataset_records_manifest_and_bytes(tmp_path):
    files = demo_data.write_demo_dataset(str(tmp_path / "a"), num_images=50, image_size=16,
                                         num_classes=10, seed=0, num_shards=3)
    assert [os.path.basename(f) for f in files] == [
        f"train-0000{k}-of-00003.tfrecords" for k in range(3)]
    assert record_format.list_record_files(str(tmp_path / "a")) == files
    images, labels = demo_data.make_demo_images(50, 16, 10, seed=0)
    decoded = [record_format.decode_example_numpy(r) for f in files for r in record_format.iter_serialized_records(f)]
    np.testing.assert_array_equal(np.stack([d[0] for d in decoded]), images)
    assert [d[1] for d in decoded] == labels.tolist()

    manifest = json.load(open(tmp_path / "a" / "manifest.json"))
    assert manifest["num_images"] == 50 and manifest["image_size"] == 16
    assert manifest["num_classes"] == 10
    assert manifest["class_names"] == list(demo_data.CLASS_NAMES)
    assert sum(manifest["images_per_class"].values()) == 50
    assert [manifest["images_per_class"][n] for n in demo_data.CLASS_NAMES] == \
        np.bincount(labels, minlength=10).tolist()

    same = demo_data.write_demo_dataset(str(tmp_path / "b"), num_images=50, image_size=16,
                                        num_classes=10, seed=0, num_shards=3)
    other = demo_data.write_demo_dataset(str(tmp_path / "c"), num_images=50, image_size=16,
                                         num_classes=10, seed=1, num_shards=3)
    for x, y, z in zip(files, same, other):
        assert open(x, "rb").read() == open(y, "rb").read()
        assert open(x, "rb").read() != open(z, "rb").read()
    assert (tmp_path / "a" / "manifest.json").read_bytes() == \
        (tmp_path / "b" / "manifest.json").read_bytes()

    # a directory holding other record files is refused, not mixed
    with pytest.raises(FileExistsError, match="other record files"):
        demo_data.write_demo_dataset(str(tmp_path / "a"), num_images=50, image_size=16,
                                     num_shards=2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        demo_data.make_demo_images(10, 16, 11)
    with pytest.raises(ValueError, match="even"):
        demo_data.make_demo_images(10, 15, 10)


def test_make_demo_data_tool(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "make_demo_data.py"),
         "--output_dir", str(out), "--num_images", "40", "--image_size", "16",
         "--num_classes", "5", "--seed", "2", "--num_shards", "2"],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.load(open(out / "manifest.json"))
    assert manifest["num_images"] == 40 and manifest["num_classes"] == 5
    assert sorted(os.listdir(out)) == ["manifest.json", "train-00000-of-00002.tfrecords",
                                       "train-00001-of-00002.tfrecords"]
    files = record_format.list_record_files(str(out))
    assert record_format.count_records(files) == 40
    images, labels = demo_data.make_demo_images(40, 16, 5, seed=2)
    first_image, first_label = record_format.decode_example_numpy(
        next(record_format.iter_serialized_records(files[0])))
    np.testing.assert_array_equal(first_image, images[0])
    assert first_label == labels[0]
