"""sagan_tf.runs.rundir: finding a run directory, config.json (save / load / read)."""
import os

import pytest

from sagan_tf.runs import rundir
from sagan_tf.training.config import TrainConfig
from sagan_tf.training.run_config import load_config, save_config


def test_find_run_dir(tmp_path):
    root = tmp_path / "ck"
    (root / "imagenet_32").mkdir(parents=True)
    assert rundir.find_run_dir(str(root)) == str(root / "imagenet_32")
    assert rundir.find_run_dir(str(root), 32) == str(root / "imagenet_32")
    with pytest.raises(FileNotFoundError, match="pass --batch_size 32"):
        rundir.find_run_dir(str(root), 64)
    (root / "imagenet_16").mkdir()
    with pytest.raises(ValueError, match=r"several runs \(imagenet_16, imagenet_32\); pass "
                                         r"--batch_size 16 or 32"):
        rundir.find_run_dir(str(root))
    assert rundir.find_run_dir(str(root), 16) == str(root / "imagenet_16")
    # The run directory itself (or a converted checkpoint directory).
    (root / "imagenet_16" / "config.json").write_text("{}")
    assert rundir.find_run_dir(str(root / "imagenet_16"), 64) == str(root / "imagenet_16")
    with pytest.raises(FileNotFoundError, match="holds no training run"):
        rundir.find_run_dir(str(tmp_path))


def test_config_roundtrip(tmp_path):
    config = TrainConfig(data_dir="d", checkpoint_dir=str(tmp_path), batch_size=8, seed=5)
    assert config.logdir == os.path.join(str(tmp_path), "imagenet_8")
    save_config(config, config.logdir)
    assert os.listdir(config.logdir) == ["config.json"]  # no temp file left behind
    assert load_config(config.logdir) == config
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_config(str(tmp_path))


def test_config_readers_differ_only_on_a_missing_file(tmp_path):
    # The evaluator may start before the trainer wrote config.json; sampling
    # needs the architecture and says where it comes from.
    config, path = rundir.read_config(str(tmp_path), required=False)
    assert config is None and path.endswith("config.json")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        rundir.read_config(str(tmp_path))
    (tmp_path / "config.json").write_text('{"z_dim": 16}')
    assert rundir.read_config(str(tmp_path), required=False)[0] == rundir.read_config(
        str(tmp_path))[0] \
        == {"z_dim": 16}
    (tmp_path / "config.json").write_text("nope")
    for required in (False, True):
        with pytest.raises(ValueError, match="is not valid JSON"):
            rundir.read_config(str(tmp_path), required=required)
