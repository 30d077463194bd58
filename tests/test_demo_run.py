"""The trainer's end-of-run standing-statistics grid, and ``train_imagenet.py --demo``'s
defaults (a flag given on the command line overrides them)."""
import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf
from PIL import Image

from sagan_tf.models import standing_statistics
from sagan_tf.models.networks import Generator
from sagan_tf.training.loop import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_standing_stats_grid_leaves_the_trained_state_as_checkpointed(tmp_path):
    from test_training import _tiny_config, _write_records
    data_dir = _write_records(tmp_path / "data")
    lines = []
    config = _tiny_config(data_dir=data_dir, checkpoint_dir=str(tmp_path / "run"),
                          max_steps=1, standing_stats_batches=2)
    result = train(config, log=lines.append)
    moving_path, standing_path = result["samples"], result["samples_standing_stats"]
    assert os.path.basename(moving_path) == "samples_1.png"
    assert os.path.basename(standing_path) == "samples_1_standing_stats.png"
    assert f"Wrote {moving_path} (G's batch norms: moving averages (the release))" in lines
    assert (f"Wrote {standing_path} (G's batch norms: standing statistics over 2 batches "
            f"of {config.batch_size})") in lines
    moving, standing = (np.asarray(Image.open(p)) for p in (moving_path, standing_path))
    assert moving.shape == standing.shape and not np.array_equal(moving, standing)
    # The in-memory G (the returned trainer's) equals the checkpoint on disk: the
    # standing statistics were undone, the checkpoint holds the moving averages.
    G = result["trainer"].generator
    on_disk = Generator(arch=config.generator_type, image_size=config.image_size,
                        z_dim=config.z_dim, gf_dim=config.gf_dim,
                        num_classes=config.number_classes).ensure_built()
    tf.train.Checkpoint(generator=on_disk).read(result["checkpoint"]).expect_partial()
    for a, b in zip(on_disk.variables, G.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=b.path)
    before = [v.numpy() for v in standing_statistics.moving_statistics_variables(on_disk)]
    standing_statistics.accumulate_standing_statistics(on_disk, 2, config.batch_size)
    after = [v.numpy() for v in standing_statistics.moving_statistics_variables(on_disk)]
    assert all(not np.allclose(a, b) for a, b in zip(before, after))


def test_demo_defaults_and_override(tmp_path):
    """--demo alone gives the demo settings; a flag given explicitly wins. --max_steps 0
    trains nothing: the run only builds, checkpoints and writes both grids."""
    env = dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="")
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "train_imagenet.py"), "--demo", "--max_steps=0",
         f"--data_dir={tmp_path / 'demo'}", f"--checkpoint_dir={runs}"],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [line] = [ln for ln in proc.stdout.splitlines() if ln.startswith("--demo settings:")]
    settings = dict(item[2:].split("=", 1) for item in line.split()[2:])
    assert "max_steps" not in settings and "checkpoint_dir" not in settings
    assert {"image_size", "number_classes", "gf_dim", "df_dim", "batch_size",
            "standing_stats_batches"} <= set(settings)
    logdir = runs / f"imagenet_{settings['batch_size']}"
    config = json.loads((logdir / "config.json").read_text())
    assert config["max_steps"] == 0
    for key, value in settings.items():
        assert str(config[key]) == value, key
    assert config["image_size"] == 32 and config["number_classes"] == 10
    assert int(settings["standing_stats_batches"]) > 0
    assert (logdir / "samples_0.png").exists() and (logdir / "samples_0_standing_stats.png").exists()
    assert os.listdir(tmp_path / "demo")  # the demo data set was written
