"""Training on one's own records: --number_classes from manifest.json, labels checked."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from sagan_tf.data import record_format

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
S = 32


def _records(data_dir, labels, manifest):
    os.makedirs(data_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    record_format.write_records(os.path.join(data_dir, "train-00000-of-00001.tfrecords"),
                                rng.integers(0, 256, (len(labels), S, S, 3), dtype=np.uint8),
                                np.asarray(labels))
    if manifest is not None:
        with open(os.path.join(data_dir, "manifest.json"), "w") as f:
            f.write(manifest if isinstance(manifest, str) else json.dumps(manifest))
    return str(data_dir)


def test_manifest_num_classes(tmp_path):
    assert record_format.manifest_num_classes(_records(tmp_path / "a", [0], None)) is None
    assert record_format.manifest_num_classes(
        _records(tmp_path / "b", [0], {"num_classes": 3})) == 3
    assert record_format.manifest_num_classes(_records(tmp_path / "c", [0], {"x": 1})) is None
    with pytest.raises(ValueError, match=r"manifest.json: num_classes must be an integer >= 1"):
        record_format.manifest_num_classes(_records(tmp_path / "d", [0], {"num_classes": 0}))
    with pytest.raises(ValueError, match="is not a JSON object"):
        record_format.manifest_num_classes(_records(tmp_path / "e", [0], "not json"))


def test_train_reads_number_classes_and_stops_on_a_label_outside(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    base = [sys.executable, os.path.join(REPO, "train_imagenet.py"), f"--image_size={S}",
            "--gf_dim=4", "--df_dim=4", "--z_dim=8", "--batch_size=2", "--seed=1",
            "--max_steps=1", "--save_summaries_steps=0", "--log_every_steps=0",
            "--shuffle_buffer_size=8", "--noshuffle"]
    good_dir = _records(tmp_path / "good_data", [0, 1, 2, 1, 0, 2, 1, 0], {"num_classes": 3})
    # The manifest says 2 classes but a record has label 2.
    bad_dir = _records(tmp_path / "bad_data", [1, 2, 0, 1, 0, 1, 1, 0], {"num_classes": 2})
    good = subprocess.Popen(base + [f"--data_dir={good_dir}",
                                    f"--checkpoint_dir={tmp_path / 'good'}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    bad = subprocess.run(base + [f"--data_dir={bad_dir}", f"--checkpoint_dir={tmp_path / 'bad'}"],
                         env=env, capture_output=True, text=True, timeout=300)
    out, _ = good.communicate(timeout=300)
    assert good.returncode == 0, out
    assert f"--number_classes=3 (from {good_dir}/manifest.json)" in out
    assert json.load(open(tmp_path / "good" / "imagenet_2" / "config.json"))["number_classes"] == 3
    assert bad.returncode != 0
    assert (f"label 2 in {os.path.join(bad_dir, 'train-00000-of-00001.tfrecords')} outside [0, 2) "
            "(--number_classes)") in bad.stdout + bad.stderr
