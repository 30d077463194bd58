"""The converter's label space and crash safety: folders that are not classes, the
expected class list, the validation split (a flat folder and its label file), one
split per directory, fsync before rename, stale temporary files, a killed worker."""
import json
import os
import signal

import numpy as np
import pytest
from PIL import Image

import improved_gan_reference as ref
from sagan_tf.data import image_folders, imagenet_records as ir, record_format, shard_writer

S = 16


def _jpeg(path, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (21, 27, 3), dtype=np.uint8)).save(path, "JPEG")


def _class_tree(root, classes=("n01000000", "n02000000", "n03000000"), per_class=2):
    for c, name in enumerate(classes):
        os.makedirs(root / name, exist_ok=True)
        for i in range(per_class):
            _jpeg(str(root / name / f"{name}_{i}.JPEG"), seed=10 * c + i)
    return root


def _records(directory):
    out = []
    for path in record_format.list_record_files(str(directory)):
        for serialized in record_format.iter_serialized_records(path):
            out.append(record_format.decode_example_numpy(serialized))
    return out


@pytest.mark.parametrize("debris", [".git", "lost+found", "__MACOSX", "n09999999 (empty)"])
def test_folders_that_are_not_classes_are_refused_or_skipped(tmp_path, debris):
    """Each kind is named in a one-line error; --skip_non_class_folders leaves it out
    and the labels are those of the class folders alone."""
    root = _class_tree(tmp_path / "train")
    name = debris.split(" ")[0]
    os.makedirs(root / name)
    if not debris.endswith("(empty)"):
        _jpeg(str(root / name / "stray.JPEG"), seed=99)  # images do not make it a class
    else:
        (root / name / ".DS_Store").write_bytes(b"x")  # hidden files do not either
    with pytest.raises(image_folders.LabelSpaceError) as e:
        ir.convert_image_folder(str(root), str(tmp_path / "out"), image_size=S, num_shards=1)
    message = str(e.value)
    named = f"{name} (no image files)" if debris.endswith("(empty)") else name
    assert "\n" not in message and repr(named) in message
    assert "--skip_non_class_folders" in message
    assert not (tmp_path / "out").exists()  # nothing written
    logs = []
    manifest = ir.convert_image_folder(str(root), str(tmp_path / "out"), image_size=S,
                                       num_shards=1, skip_non_class_folders=True,
                                       log=logs.append)
    assert manifest["synsets"] == ["n01000000", "n02000000", "n03000000"]
    assert sorted(label for _, label in _records(tmp_path / "out")) == [0, 0, 1, 1, 2, 2]
    assert any(named in line for line in logs)


def test_expected_classes(tmp_path):
    """'imagenet': 1,000 distinct n######## synsets; a list: exactly those, in order."""
    synsets = [f"n{10000000 + i:08d}" for i in range(1000)]
    image_folders.check_expected_classes(synsets, image_folders.IMAGENET, "x")
    for bad, match in ((synsets[:999], "999 classes"),
                       (synsets[:999] + ["lost+found"], "not synsets: \\['lost\\+found'\\]")):
        with pytest.raises(image_folders.LabelSpaceError, match=match):
            image_folders.check_expected_classes(bad, image_folders.IMAGENET, "x")
    root = _class_tree(tmp_path / "train")
    with pytest.raises(image_folders.LabelSpaceError, match="3 classes, ImageNet has 1000"):
        ir.convert_image_folder(str(root), str(tmp_path / "o"), image_size=S, num_shards=1,
                                expected_classes="imagenet")
    listed = tmp_path / "classes.txt"
    listed.write_text("n01000000\nn02000000\nn04000000\n")
    with pytest.raises(image_folders.LabelSpaceError,
                       match="missing \\['n04000000'\\], unexpected \\['n03000000'\\]"):
        ir.convert_image_folder(str(root), str(tmp_path / "o"), image_size=S, num_shards=1,
                                expected_classes=image_folders.read_expected_classes(
                                    str(listed)))
    assert not (tmp_path / "o").exists()


def test_validation_split_round_trip(tmp_path):
    """A flat folder + '<file> <synset>' labels (CSV with header, names without
    extension) -> validation-* records with the train records' label space, the same
    pixels as the release pipeline, a manifest naming the split; splits do not mix."""
    train = _class_tree(tmp_path / "train")
    train_out = tmp_path / "records"
    train_manifest = ir.convert_image_folder(str(train), str(train_out), image_size=S,
                                             num_shards=2)
    val = tmp_path / "val"
    val.mkdir()
    truth = {"ILSVRC2012_val_00000001": "n03000000", "ILSVRC2012_val_00000002": "n01000000",
             "ILSVRC2012_val_00000003": "n03000000"}
    for i, name in enumerate(truth):
        _jpeg(str(val / f"{name}.JPEG"), seed=100 + i)
    labels = tmp_path / "LOC_val_solution.csv"
    labels.write_text("ImageId,PredictionString\n" + "".join(
        f"{k},{v} 1 2 3 4\n" for k, v in truth.items()))
    out = tmp_path / "val_records"
    manifest = ir.convert_flat_folder(
        str(val), str(labels), str(out), classes=image_folders.classes_from_records(
            str(train_out)), image_size=S, num_shards=2, shuffle=False)
    assert sorted(f for f in os.listdir(out) if f.endswith(".tfrecords")) == [
        "validation-00000-of-00002.tfrecords", "validation-00001-of-00002.tfrecords"]
    assert manifest["split"] == "validation" and train_manifest["split"] == "train"
    assert manifest["synsets"] == train_manifest["synsets"]
    assert manifest["images_per_class"] == {"n01000000": 1, "n02000000": 0, "n03000000": 2}
    assert json.load(open(out / "manifest.json")) == manifest
    for (image, label), name in zip(_records(out), sorted(truth)):
        assert label == train_manifest["synsets"].index(truth[name])
        np.testing.assert_array_equal(image, ref.record_from_file(str(val / f"{name}.JPEG"), S))
    with pytest.raises(FileExistsError, match="records of the split\\(s\\) \\['validation'\\]"):
        ir.convert_image_folder(str(train), str(out), image_size=S, num_shards=2)
    (val / "unlabelled.JPEG").write_bytes(b"")
    with pytest.raises(image_folders.LabelSpaceError, match="unlabelled.JPEG has no label"):
        ir.convert_flat_folder(str(val), str(labels), str(tmp_path / "o"), image_size=S)
    ground_truth_ids = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    ground_truth_ids.write_text("490\n361\n")
    with pytest.raises(ValueError, match="not '<image file> <class>'"):
        image_folders.read_label_file(str(ground_truth_ids))


def test_shards_are_fsynced_before_rename_and_stale_temporaries_removed(tmp_path, monkeypatch):
    root = _class_tree(tmp_path / "train")
    out = tmp_path / "out"
    (out / shard_writer.STATE_DIR).mkdir(parents=True)
    stale = [out / "train-00000-of-00002.tfrecords.tmp-999999999",
             out / shard_writer.STATE_DIR / "train-00000-of-00002.tfrecords.json.tmp-999999999"]
    for path in stale:
        path.write_bytes(b"half a shard")
    events = []
    fsync, rename = os.fsync, record_format.tf.io.gfile.rename

    def spy_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return fsync(fd)

    def spy_rename(src, dst, overwrite=False):
        events.append(("rename", src))
        return rename(src, dst, overwrite=overwrite)
    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(record_format.tf.io.gfile, "rename", spy_rename)
    logs = []
    ir.convert_image_folder(str(root), str(out), image_size=S, num_shards=2, log=logs.append)
    assert not any(p.exists() for p in stale)
    assert sum("left by an interrupted run" in line for line in logs) == 2
    renames = [i for i, (kind, _) in enumerate(events) if kind == "rename"]
    assert len(renames) == 2
    for i in renames:  # the shard's own data reached the disk before its rename
        assert ("fsync", events[i][1]) in events[:i]


_PROCESS_TASK = shard_writer.process_task


def _killing_task(task):
    """A worker that dies (as by the OOM killer) on the second class's first image."""
    if os.path.basename(str(task[0])) == "n02000000_0.JPEG":
        os.kill(os.getpid(), signal.SIGKILL)
    return _PROCESS_TASK(task)


def test_a_killed_worker_fails_the_run_with_one_line_and_the_rerun_resumes(tmp_path,
                                                                            monkeypatch):
    root = _class_tree(tmp_path / "train")
    out = tmp_path / "out"
    monkeypatch.setattr(shard_writer, "process_task", _killing_task)
    with pytest.raises(shard_writer.ConversionWorkerDied) as e:
        ir.convert_image_folder(str(root), str(out), image_size=S, num_shards=3,
                                num_workers=2, shuffle=False, log=lambda m: None)
    message = str(e.value)
    assert "\n" not in message and "train-00001-of-00003.tfrecords" in message
    assert "rerun the same command to resume" in message
    assert os.listdir(out).count("train-00000-of-00003.tfrecords") == 1  # kept
    assert not [f for f in os.listdir(out) if ".tmp-" in f]
    monkeypatch.setattr(shard_writer, "process_task", _PROCESS_TASK)
    logs = []
    manifest = ir.convert_image_folder(str(root), str(out), image_size=S, num_shards=3,
                                       num_workers=2, shuffle=False, log=logs.append)
    assert sum("already finished" in line for line in logs) == 1
    assert manifest["num_images"] == 6
    assert sorted(label for _, label in _records(out)) == [0, 0, 1, 1, 2, 2]


def test_workers_default_to_the_cpus_this_process_may_use(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5})
    assert shard_writer.available_cpus() == 3


def test_trainer_refuses_unfinished_conversions_unless_allowed(tmp_path):
    """No manifest.json, or a shard it lists missing: the trainer's data check fails
    naming --allow_incomplete_records; with it (or for records named otherwise) it runs."""
    from sagan_tf.training import loop
    from sagan_tf.training.config import ConfigError, TrainConfig
    root = _class_tree(tmp_path / "train")
    out = tmp_path / "records"
    ir.convert_image_folder(str(root), str(out), image_size=S, num_shards=3)
    files = record_format.list_record_files(str(out))
    assert record_format.incomplete_records_problem(str(out), files) is None
    config = TrainConfig(data_dir=str(out), image_size=S, number_classes=3)
    loop._check_data_dir(config)
    os.remove(out / "train-00001-of-00003.tfrecords")
    problem = record_format.incomplete_records_problem(
        str(out), record_format.list_record_files(str(out)))
    assert "lists 3 shards, 1 of them are missing (e.g. train-00001-of-00003" in problem
    os.remove(out / "manifest.json")
    with pytest.raises(ConfigError, match="2 converter shard\\(s\\) but no manifest.json.*"
                                          "--allow_incomplete_records"):
        loop._check_data_dir(config)
    loop._check_data_dir(TrainConfig(data_dir=str(out), image_size=S, number_classes=3,
                                      allow_incomplete_records=True))
    own = tmp_path / "own"
    own.mkdir()
    os.rename(out / "train-00000-of-00003.tfrecords", own / "my_images.tfrecords")
    assert record_format.incomplete_records_problem(
        str(own), record_format.list_record_files(str(own))) is None


def test_tfds_validation_split_is_named_for_its_split_and_classes_checked(tmp_path):
    import tensorflow_datasets as tfds

    rng = np.random.default_rng(3)

    class SaganTfTestTinySplits(tfds.core.GeneratorBasedBuilder):
        """4 train and 3 validation images, 2 classes named as synsets."""
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(names=["n01000000", "n02000000"])}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(4),
                    "validation": self._generate_examples(3)}

        def _generate_examples(self, n):
            for i in range(n):
                yield i, {"image": rng.integers(0, 256, (12, 14, 3), dtype=np.uint8),
                          "label": i % 2}

    tfds_dir = str(tmp_path / "tfds")
    SaganTfTestTinySplits(data_dir=tfds_dir).download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    out = tmp_path / "val"
    manifest = ir.convert_tfds("sagan_tf_test_tiny_splits", str(out), data_dir=tfds_dir,
                               split="validation", image_size=S, num_shards=1,
                               expected_classes=["n01000000", "n02000000"], log=lambda m: None)
    assert os.listdir(out).count("validation-00000-of-00001.tfrecords") == 1
    assert manifest["split"] == "validation" and manifest["num_images"] == 3
    assert sorted(label for _, label in _records(out)) == [0, 0, 1]
    with pytest.raises(image_folders.LabelSpaceError, match="2 classes, ImageNet has 1000"):
        ir.convert_tfds("sagan_tf_test_tiny_splits", str(tmp_path / "t"), data_dir=tfds_dir,
                        image_size=S, num_shards=1, expected_classes="imagenet")
