"""Import of original TF1 release checkpoints (NUMERICS §10)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import numpy_reference as ref
import sagan_tf
from sagan_tf.runs.legacy import CheckpointMismatchError, convert_tf1_checkpoint, spec_variable_map
from test_networks import spec_names

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCH = dict(image_size=128, z_dim=8, gf_dim=2, df_dim=4, number_classes=5)


def _shapes():
    G = sagan_tf.Generator("test", 128, ARCH["z_dim"], ARCH["gf_dim"], 5).ensure_built()
    D = sagan_tf.Discriminator("test", 128, ARCH["df_dim"], 5).ensure_built()
    return {n: tuple(v.shape) for n, v in spec_variable_map(G, D).items()}


def write_tf1_checkpoint(path, params, global_step=1234, with_adam=True):
    """A checkpoint as the release's tf.compat.v1 graph wrote it: model variables
    named per NUMERICS §10, plus Adam slots, power accumulators and global_step."""
    graph = tf.Graph()
    with graph.as_default():
        variables = []
        with tf.compat.v1.variable_scope("model"):
            pass
        for name, value in params.items():
            trainable = name.rsplit("/", 1)[1] not in ("u", "mean", "var", "moving_mean",
                                                         "moving_variance")
            variables.append(tf.compat.v1.get_variable(
                name, initializer=tf.constant(np.asarray(value, np.float32)),
                trainable=trainable, use_resource=False))
            if with_adam and trainable:
                for slot in ("Adam", "Adam_1"):
                    variables.append(tf.compat.v1.get_variable(
                        f"{name}/{slot}", initializer=tf.zeros_like(np.asarray(value, np.float32)),
                        trainable=False, use_resource=False))
        for extra in ("global_step", "d_step", "g_step"):
            variables.append(tf.compat.v1.get_variable(
                extra, initializer=tf.constant(global_step, tf.int64), trainable=False,
                use_resource=False))
        for extra in ("beta1_power", "beta2_power", "beta1_power_1", "beta2_power_1"):
            variables.append(tf.compat.v1.get_variable(extra, initializer=0.5, use_resource=False))
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return saver.save(sess, path, global_step=global_step)


@pytest.fixture(scope="module")
def release_checkpoint(tmp_path_factory):
    rng = np.random.default_rng(5)
    shapes = _shapes()
    assert sorted(shapes) == sorted(spec_names("test"))
    params = ref.random_params(shapes, rng)
    params = {k: np.asarray(v, np.float32).astype(np.float64) for k, v in params.items()}
    path = write_tf1_checkpoint(str(tmp_path_factory.mktemp("tf1") / "model.ckpt"), params)
    return path, params


def test_round_trip_outputs_equal_numpy_forward(release_checkpoint, tmp_path):
    path, params = release_checkpoint
    out_dir = tmp_path / "converted"
    written = convert_tf1_checkpoint(path, str(out_dir), **ARCH)
    assert written.endswith("ckpt-1234")
    config = json.loads((out_dir / "config.json").read_text())
    assert config["generator_type"] == "test" and config["gf_dim"] == 2 and config["step"] == 1234

    G = sagan_tf.Generator("test", 128, 8, 2, 5).ensure_built()
    D = sagan_tf.Discriminator("test", 128, 4, 5).ensure_built()
    step = tf.Variable(0, dtype=tf.int64)
    status = tf.train.Checkpoint(generator=G, discriminator=D, step=step).restore(
        tf.train.latest_checkpoint(str(out_dir)))
    status.assert_existing_objects_matched()
    assert int(step.numpy()) == 1234

    rng = np.random.default_rng(0)
    z = rng.normal(size=(2, 8)).astype(np.float32)
    y = np.array([4, 1])
    images = G(z, y, training=False).numpy()
    expected_images, _ = ref.generator_forward(params, z, y, 2, [16, 8, 4, 2, 1], 3, training=False)
    np.testing.assert_allclose(images, expected_images, rtol=2e-3, atol=2e-4)
    x = rng.uniform(-1, 1, size=(2, 128, 128, 3)).astype(np.float32)
    logits = D(x, y).numpy()
    expected_logits, _ = ref.discriminator_forward(params, x, y, 4, [1, 2, 4, 8, 16], 2)
    np.testing.assert_allclose(logits, expected_logits, rtol=2e-3,
                               atol=2e-3 * np.abs(expected_logits).max())


def test_missing_and_misshaped_variables_are_refused_by_name(release_checkpoint, tmp_path):
    _, params = release_checkpoint
    broken = dict(params)
    del broken["model/g_block2/cbn_1/beta"]
    broken["model/d_sn_linear/Matrix"] = np.zeros((7, 1))
    broken["model/d_block9/sn_conv1/w"] = np.zeros((1,))
    path = write_tf1_checkpoint(str(tmp_path / "bad" / "model.ckpt"), broken, with_adam=False)
    out_dir = tmp_path / "out"
    with pytest.raises(CheckpointMismatchError) as err:
        convert_tf1_checkpoint(path, str(out_dir), **ARCH)
    message = str(err.value)
    assert "missing (1): model/g_block2/cbn_1/beta" in message
    assert "unexpected (1): model/d_block9/sn_conv1/w" in message
    assert "model/d_sn_linear/Matrix expected [64, 1] found [7, 1]" in message
    assert not out_dir.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".convert_tmp_")]


def test_wrong_architecture_flags_are_refused(release_checkpoint, tmp_path):
    path, _ = release_checkpoint
    with pytest.raises(CheckpointMismatchError, match="missing .*g_non_local|unexpected .*non_local"):
        convert_tf1_checkpoint(path, str(tmp_path / "o"), generator_type="baseline",
                               discriminator_type="baseline", **ARCH)


def test_existing_output_is_not_overwritten(release_checkpoint, tmp_path):
    path, _ = release_checkpoint
    out_dir = tmp_path / "keep"
    out_dir.mkdir()
    (out_dir / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="keep"):
        convert_tf1_checkpoint(path, str(out_dir), **ARCH)
    assert (out_dir / "precious.txt").read_text() == "keep me"


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere"):
        convert_tf1_checkpoint(str(tmp_path / "nothere"), str(tmp_path / "o"))


def test_command_line_tool_reports_mismatch(release_checkpoint, tmp_path):
    path, _ = release_checkpoint
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "convert_tf1_checkpoint.py"),
         "--tf1_checkpoint", path, "--output_dir", str(tmp_path / "o"), "--image_size", "128",
         "--z_dim", "8", "--gf_dim", "2", "--df_dim", "4", "--number_classes", "6"],
        capture_output=True, text=True, timeout=300)
    # Expected errors of every tool exit with status 2 (sagan_tf.cli), no traceback.
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "convert_tf1_checkpoint.py: error: " in proc.stderr
    assert "model/g_block1/cbn_0/gamma expected [6, 32] found [5, 32]" in proc.stderr
    assert not (tmp_path / "o").exists()
