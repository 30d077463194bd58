"""tools/sample.py, tools/visualize_attention.py, tools/export_generator.py and sagan_tf.sampling.samples.

Everything runs on a checkpoint written by a few real optimisation steps of a
small G+D (module fixture). The tools' library functions run in-process; one
subprocess checks a tool's --help and one loads the exported SavedModel in a
fresh interpreter where `sagan_tf` cannot be imported.
"""
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import sagan_tf
from sagan_tf.sampling import attention_maps, export, samples as sampling
from sagan_tf.training import losses
from sagan_tf.runs import rundir
from sagan_tf.data.demo_data import make_demo_images

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, Z_DIM, CLASSES, WIDTH = 32, 16, 4, 8
CONFIG = {"generator_type": "test", "discriminator_type": "test", "image_size": SIZE,
          "z_dim": Z_DIM, "gf_dim": WIDTH, "df_dim": WIDTH, "number_classes": CLASSES,
          "batch_size": 8, "loss_type": "hinge_loss", "data_dir": None}


def _real_batches(n, seed=0):
    images, labels = make_demo_images(n, SIZE, CLASSES, seed=seed)
    images = images.astype(np.float32) * (2.0 / 255.0) - 1.0
    return images, labels.astype(np.int32)


def _save_run(logdir, G, D, step, config, **extra):
    """The training layout (docs/ARCHITECTURE.md); `extra`: optimizers etc."""
    ckpt = tf.train.Checkpoint(generator=G, discriminator=D,
                               step=tf.Variable(step, dtype=tf.int64), **extra)
    tf.train.CheckpointManager(ckpt, logdir, max_to_keep=3).save(checkpoint_number=step)
    with open(os.path.join(logdir, "config.json"), "w") as f:
        json.dump(config, f)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """`<checkpoint_dir>/imagenet_8` after 3 G/D iterations (NUMERICS §6 order, hinge, Adam)."""
    keras.utils.set_random_seed(0)
    G = sagan_tf.Generator("test", SIZE, z_dim=Z_DIM, gf_dim=WIDTH, num_classes=CLASSES)
    D = sagan_tf.Discriminator("test", SIZE, df_dim=WIDTH, num_classes=CLASSES)
    G.ensure_built(), D.ensure_built()
    g_opt = keras.optimizers.Adam(1e-4, beta_1=0.0, beta_2=0.999, epsilon=1e-8)
    d_opt = keras.optimizers.Adam(4e-4, beta_1=0.0, beta_2=0.999, epsilon=1e-8)
    images, labels = _real_batches(24)
    rng = np.random.default_rng(0)
    for step in range(3):
        z = rng.standard_normal((8, Z_DIM)).astype(np.float32)
        fake_labels = rng.integers(0, CLASSES, 8).astype(np.int32)
        with tf.GradientTape() as tape:
            g_loss = losses.generator_loss(
                "hinge_loss", D(G(z, fake_labels, training=True), fake_labels, update_sn=False))
        g_opt.apply_gradients(zip(tape.gradient(g_loss, G.trainable_variables),
                                  G.trainable_variables))
        real, real_labels = images[8 * step:8 * step + 8], labels[8 * step:8 * step + 8]
        with tf.GradientTape() as tape:
            fake = G(z, fake_labels, training=True)
            logits = D(tf.concat([real, fake], 0), tf.concat([real_labels, fake_labels], 0))
            d_loss, _, _ = losses.discriminator_loss("hinge_loss", logits[:8], logits[8:])
        d_opt.apply_gradients(zip(tape.gradient(d_loss, D.trainable_variables),
                                  D.trainable_variables))
    # 3 steps barely move sigma_ratio; make the attention visibly matter in the outputs.
    G.g_non_local.sigma_ratio.assign(0.5)
    D.d_non_local.sigma_ratio.assign(0.5)
    root = tmp_path_factory.mktemp("run")
    logdir = root / "imagenet_8"
    # With the optimizers, as the trainer saves: they reach the trainable variables
    # first, so those variables' checkpoint keys are `g_optimizer/...`, not `generator/...`.
    _save_run(str(logdir), G, D, 3, CONFIG, g_optimizer=g_opt, d_optimizer=d_opt,
              rng=tf.random.Generator.from_seed(0))
    return root


@pytest.fixture(scope="module")
def loaded(run_dir):
    return rundir.load_checkpoint(str(run_dir), discriminator=True)


def _png(path):
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _grid_size(rows, cols, size=SIZE, padding=2, zoom=1):
    return (rows * size * zoom + (rows + 1) * padding, cols * size * zoom + (cols + 1) * padding, 3)


# ----------------------------------------------------------------------------
# Loading.

def test_load_restores_the_trained_generator(run_dir, loaded):
    assert loaded.step == 3
    assert loaded.checkpoint_path.endswith("ckpt-3")
    # The logdir, its parent and an explicit checkpoint path give the same weights.
    same = rundir.load_checkpoint(checkpoint_path=loaded.checkpoint_path)
    for a, b in zip(loaded.generator.variables, same.generator.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert loaded.generator.g_non_local.sigma_ratio.numpy() == 0.5
    assert loaded.discriminator.d_non_local.sigma_ratio.numpy() == 0.5
    fresh = sagan_tf.Generator("test", SIZE, z_dim=Z_DIM, gf_dim=WIDTH,
                               num_classes=CLASSES).ensure_built()
    assert any(not np.array_equal(a.numpy(), b.numpy())
               for a, b in zip(fresh.trainable_variables, loaded.generator.trainable_variables))


def test_load_errors_name_the_culprit(run_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json or checkpoint"):
        rundir.load_checkpoint(str(tmp_path))
    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    (no_ckpt / "config.json").write_text(json.dumps(CONFIG))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        rundir.load_checkpoint(str(no_ckpt))
    # Checkpoint without config.json.
    no_config = tmp_path / "no_config"
    no_config.mkdir()
    logdir = run_dir / "imagenet_8"
    for name in os.listdir(logdir):
        if name != "config.json":
            (no_config / name).write_bytes((logdir / name).read_bytes())
    with pytest.raises(FileNotFoundError, match="no config.json"):
        rundir.load_checkpoint(str(no_config))
    # Wrong architecture in config.json: a clear mismatch error, not silent init values.
    for key, value in (("gf_dim", 16), ("generator_type", "baseline")):
        wrong = tmp_path / f"wrong_{key}"
        wrong.mkdir()
        for name in os.listdir(logdir):
            (wrong / name).write_bytes((logdir / name).read_bytes())
        (wrong / "config.json").write_text(json.dumps({**CONFIG, key: value}))
        with pytest.raises(rundir.CheckpointMismatchError, match="generator"):
            rundir.load_checkpoint(str(wrong))
    with pytest.raises(FileNotFoundError, match="checkpoint_path"):
        rundir.load_checkpoint(str(run_dir), checkpoint_path=str(logdir / "ckpt-99"))


# ----------------------------------------------------------------------------
# tools/sample.py

def test_sample_modes_write_expected_pngs_reproducibly(loaded, tmp_path):
    G = loaded.generator
    cases = [
        ("grid", dict(classes=[0, 1, 3], num_columns=5), _grid_size(3, 5)),
        ("grid", dict(num_rows=2, num_columns=3, zoom=2), _grid_size(2, 3, zoom=2)),
        ("interpolate_z", dict(classes=[1, 2], num_steps=6), _grid_size(2, 6)),
        ("interpolate_class", dict(classes=[0, 3], num_steps=5, num_rows=2), _grid_size(2, 5)),
    ]
    for k, (mode, kwargs, shape) in enumerate(cases):
        out = tmp_path / "a" / f"{k}_{mode}.png"  # parent dirs are created
        sampling.sample_to_file(G, mode, str(out), seed=7, **kwargs)
        image = _png(out)
        assert image.shape == shape, mode
        tiles = image[2:2 + SIZE, 2:2 + SIZE]
        assert tiles.std() > 0, f"{mode}: constant tile"
        # Same arguments -> byte-identical file; another seed -> another picture.
        again = tmp_path / "b" / out.name
        sampling.sample_to_file(G, mode, str(again), seed=7, **kwargs)
        assert out.read_bytes() == again.read_bytes(), mode
        if k == 0:
            other = tmp_path / "c" / out.name
            sampling.sample_to_file(G, mode, str(other), seed=8, **kwargs)
            assert out.read_bytes() != other.read_bytes(), mode
    assert not [p for p in tmp_path.rglob(".tmp*")], "temporary files left behind"


def test_grid_rows_are_the_requested_classes(loaded):
    G = loaded.generator
    z = sampling.sample_latents(np.random.default_rng(3), 4, Z_DIM)
    grid = sampling.class_grid(G, [2, 0], 2, seed=3, padding=0)
    expected = sampling.to_uint8(sampling.generate(G, z, np.array([2, 2, 0, 0], np.int32)))
    tiles = [grid[r * SIZE:(r + 1) * SIZE, c * SIZE:(c + 1) * SIZE] for r in (0, 1) for c in (0, 1)]
    np.testing.assert_array_equal(np.stack(tiles), expected)


def test_interpolation_endpoints(loaded):
    G = loaded.generator
    # Class interpolation: the ends are exactly the two classes for the same z.
    G2 = sampling.class_interpolation_generator(G, 1, 3, 4)
    z = sampling.sample_latents(np.random.default_rng(0), 1, Z_DIM).repeat(2, 0)
    ends = sampling.generate(G2, z, np.array([0, 3], np.int32))
    direct = sampling.generate(G, z, np.array([1, 3], np.int32))
    np.testing.assert_allclose(ends, direct, atol=1e-6)
    assert G.num_classes == CLASSES  # the original is untouched
    G3 = sampling.class_interpolation_generator(G, 2, 0, 3)  # midpoint differs from both ends
    mid = sampling.generate(G3, z[:1].repeat(3, 0), np.arange(3, dtype=np.int32))
    np.testing.assert_allclose(mid[[0, 2]], sampling.generate(G, z, np.array([2, 0], np.int32)),
                               atol=1e-6)
    assert np.abs(mid[1] - mid[0]).max() > 0 and np.abs(mid[1] - mid[2]).max() > 0
    # slerp ends at its endpoints.
    a, b = np.random.default_rng(1).standard_normal((2, Z_DIM))
    np.testing.assert_allclose(sampling.slerp(a, b, 0.0), a, atol=1e-12)
    np.testing.assert_allclose(sampling.slerp(a, b, 1.0), b, atol=1e-12)


def test_npz_dump_is_reproducible_and_consistent(loaded, tmp_path):
    G = loaded.generator
    path, arrays = sampling.sample_to_file(G, "npz", str(tmp_path / "x" / "s.npz"),
                                           num_samples=7, seed=5, batch_size=3)
    path2, _ = sampling.sample_to_file(G, "npz", str(tmp_path / "y.npz"), num_samples=7, seed=5,
                                       batch_size=3)
    assert open(path, "rb").read() == open(path2, "rb").read()
    with np.load(path) as data:
        assert sorted(data.files) == ["images", "labels", "z"]
        images, labels, z = data["images"], data["labels"], data["z"]
    assert images.shape == (7, SIZE, SIZE, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int32 and z.shape == (7, Z_DIM) and z.dtype == np.float32
    assert images.std() > 0 and labels.min() >= 0 and labels.max() < CLASSES
    # The stored (z, labels) regenerate the stored images; batching does not matter.
    np.testing.assert_array_equal(
        sampling.to_uint8(sampling.generate(G, z, labels, batch_size=7)), images)
    restricted = sampling.sample_arrays(G, 20, seed=1, classes=[2])
    assert set(restricted["labels"].tolist()) == {2}


def test_sampling_leaves_the_generator_state_untouched(loaded):
    G = loaded.generator
    before = [v.numpy().copy() for v in G.variables]
    sampling.random_grid(G, 1, 2, seed=0)
    attention_maps.attention_figure_rows(loaded, [1], seed=0, network="both")
    for b, v in zip(before, G.variables):
        np.testing.assert_array_equal(b, v.numpy())


# ----------------------------------------------------------------------------
# tools/visualize_attention.py

def test_generator_replay_matches_generator_call(loaded):
    G = loaded.generator
    z = sampling.sample_latents(np.random.default_rng(0), 3, Z_DIM)
    labels = np.array([0, 1, 3], np.int32)
    x, images = attention_maps.generator_replay(G, z, labels)
    np.testing.assert_array_equal(images.numpy(),
                                  G(z, labels, training=False, update_sn=False).numpy())
    assert x.shape == (3, 32, 32, 4 * WIDTH)  # test at 32 px: attention at the 32x32 map


def test_attention_maps_sum_to_one_and_figure_size(loaded, tmp_path):
    queries = [(0, 0), (16, 5), (31, 31)]
    figure, maps = attention_maps.attention_figure_rows(loaded, [1, 2], seed=4, query_points=queries,
                                                  network="both")
    for name, m in maps.items():
        assert m.shape == (2, 3, SIZE, SIZE), name
        assert (m >= 0).all()
        np.testing.assert_allclose(m.sum(axis=(2, 3)), 1.0, atol=1e-5)
    # Nearest upsampling of the release map: constant on 2x2 blocks of the 16x16 key grid.
    m = maps["generator"][0, 1]
    np.testing.assert_allclose(m[::2, ::2], m[1::2, 1::2])
    # Different queries attend differently (sigma_ratio != 0 does not matter here, but the
    # trained theta/phi do).
    assert np.abs(maps["generator"][0, 0] - maps["generator"][0, 2]).max() > 0
    # Layout: 4 rows (2 images x G, D), 1 + 3 panels of 32 * zoom (zoom = 128 // 32 = 4).
    panel = SIZE * 4
    assert figure.shape == (4 * panel + 5 * 2, 4 * panel + 5 * 2, 3)
    assert figure.std() > 0
    bilinear = attention_maps.attention_figure_rows(loaded, [1], seed=4, query_points=queries,
                                              upsample="bilinear")[1]["generator"]
    np.testing.assert_allclose(bilinear.sum(axis=(2, 3)), 1.0, atol=1e-5)
    # Same call -> byte-identical PNG.
    a = sampling.write_png(str(tmp_path / "a.png"), figure)
    b = sampling.write_png(str(tmp_path / "b.png"), attention_maps.attention_figure_rows(
        loaded, [1, 2], seed=4, query_points=queries, network="both")[0])
    assert open(a, "rb").read() == open(b, "rb").read()


def test_attention_maps_of_release_block_match_direct_computation(loaded):
    G = loaded.generator
    z = sampling.sample_latents(np.random.default_rng(2), 1, Z_DIM)
    x = attention_maps.generator_attention_input(G, z, np.array([0], np.int32))
    weights = G.g_non_local.attention_map(x).numpy()  # [1, 1024, 256]
    assert weights.shape == (1, 32 * 32, 16 * 16)
    maps = attention_maps.query_attention_maps(G.g_non_local, x, [(9, 20)], SIZE)
    expected = weights[0, 9 * 32 + 20].reshape(16, 16).repeat(2, 0).repeat(2, 1) / 4
    np.testing.assert_allclose(maps[0, 0], expected, rtol=1e-6)


def test_memory_efficient_path_gives_the_same_maps(run_dir, loaded):
    blocked = rundir.load_checkpoint(str(run_dir), discriminator=True,
                                       attention_query_block_size=100)
    assert blocked.generator.g_non_local.query_block_size == 100
    args = dict(labels=[3], seed=1, network="both")
    fig_a, maps_a = attention_maps.attention_figure_rows(loaded, **args)
    fig_b, maps_b = attention_maps.attention_figure_rows(blocked, **args)
    for name in maps_a:
        np.testing.assert_array_equal(maps_a[name], maps_b[name])
    z = sampling.sample_latents(np.random.default_rng(0), 2, Z_DIM)
    labels = np.array([0, 1], np.int32)
    np.testing.assert_allclose(sampling.generate(blocked.generator, z, labels),
                               sampling.generate(loaded.generator, z, labels), atol=1e-5)


def test_slide_variant_and_given_image(tmp_path, loaded):
    keras.utils.set_random_seed(1)
    G = sagan_tf.Generator("test", SIZE, z_dim=Z_DIM, gf_dim=WIDTH, num_classes=CLASSES,
                           attention="slide").ensure_built()
    D = sagan_tf.Discriminator("test", SIZE, df_dim=WIDTH, num_classes=CLASSES,
                               attention="slide").ensure_built()
    logdir = tmp_path / "slide"
    _save_run(str(logdir), G, D, 0, {**CONFIG, "attention": "slide"})
    slide = rundir.load_checkpoint(str(logdir), discriminator=True)
    assert isinstance(slide.generator.g_non_local, sagan_tf.SlideSelfAttention)
    figure, maps = attention_maps.attention_figure_rows(slide, [0], seed=0, network="both",
                                                  query_points=[(3, 3), (20, 9)], zoom=1)
    assert figure.shape == (2 * SIZE + 3 * 2, 3 * SIZE + 4 * 2, 3)
    for m in maps.values():
        np.testing.assert_allclose(m.sum(axis=(2, 3)), 1.0, atol=1e-5)
    # The release checkpoint does not restore into the slide architecture.
    wrong = tmp_path / "wrong"
    _save_run(str(wrong), loaded.generator, loaded.discriminator, 3,
              {**CONFIG, "attention": "slide"})
    with pytest.raises(rundir.CheckpointMismatchError):
        rundir.load_checkpoint(str(wrong))
    # The discriminator on a given image file.
    img = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "photo.png")
    image = sampling.read_image(str(tmp_path / "photo.png"), SIZE)
    assert image.shape == (1, SIZE, SIZE, 3)
    figure, maps = attention_maps.attention_figure_rows(loaded, None, image=image,
                                                  network="discriminator", zoom=2)
    assert list(maps) == ["discriminator"] and maps["discriminator"].shape == (1, 5, SIZE, SIZE)
    assert figure.shape == (2 * SIZE + 2 * 2, 6 * 2 * SIZE + 7 * 2, 3)
    with pytest.raises(ValueError, match="discriminator"):
        attention_maps.attention_figure_rows(loaded, None, image=image, network="generator")
    baseline = sagan_tf.Generator("baseline", SIZE, z_dim=Z_DIM, gf_dim=WIDTH,
                                  num_classes=CLASSES).ensure_built()
    with pytest.raises(ValueError, match="no attention"):
        attention_maps.generator_attention_input(baseline, np.zeros((1, Z_DIM), np.float32), [0])


def test_parse_query_points():
    assert attention_maps.parse_query_points(["1,2 3,4", "5,6"]) == [(1, 2), (3, 4), (5, 6)]
    assert attention_maps.parse_query_points(None) is None
    with pytest.raises(ValueError, match="row,col"):
        attention_maps.parse_query_points(["1;2"])


# ----------------------------------------------------------------------------
# tools/export_generator.py

_LOAD_IN_FRESH_PROCESS = textwrap.dedent("""
    import importlib.abc, json, sys
    # sagan_tf must not be importable here: not via sys.path (cwd and PYTHONPATH are
    # outside the repo) and not via an installed copy (blocked, for `pip install -e`).
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "sagan_tf" or name.startswith("sagan_tf."):
                raise ImportError("blocked: " + name)
    sys.meta_path.insert(0, Block())
    try:
        import sagan_tf
    except ImportError:
        pass
    else:
        raise SystemExit("sagan_tf is importable")
    import numpy as np
    import tensorflow as tf
    export_dir, inputs, output = sys.argv[1:4]
    data = np.load(inputs)
    m = tf.saved_model.load(export_dir)
    images = m.signatures["serving_default"](
        z=tf.constant(data["z"]), labels=tf.constant(data["labels"]))["images"]
    direct = m.serve(tf.constant(data["z"]), tf.constant(data["labels"]))["images"]
    assert images.dtype == tf.uint8, images.dtype
    np.savez(output, images=images.numpy(), direct=direct.numpy(),
             meta=np.array([int(m.z_dim), int(m.image_size), int(m.num_classes)]))
    print("modules:", sorted(k for k in sys.modules if k.startswith("sagan")))
""")


def test_export_loads_without_the_package_and_matches(loaded, tmp_path):
    export_dir = tmp_path / "exported" / "generator"
    path = export.export_generator(loaded, str(export_dir))
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))
    with open(os.path.join(path, "assets.extra", "sagan_config.json")) as f:
        assert json.load(f)["step"] == 3
    with pytest.raises(FileExistsError, match="overwrite"):
        export.export_generator(loaded, str(export_dir))

    G = loaded.generator
    rng = np.random.default_rng(11)
    z = sampling.sample_latents(rng, 5, Z_DIM)
    labels = rng.integers(0, CLASSES, 5).astype(np.int32)
    expected = sampling.to_uint8(sampling.generate(G, z, labels))
    np.savez(tmp_path / "inputs.npz", z=z, labels=labels)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    script = outside / "load.py"
    script.write_text(_LOAD_IN_FRESH_PROCESS)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(outside)
    assert REPO not in env["PYTHONPATH"]
    result = subprocess.run(
        [sys.executable, str(script), str(export_dir), str(tmp_path / "inputs.npz"),
         str(tmp_path / "outputs.npz")],
        cwd=str(outside), env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "modules: []" in result.stdout
    with np.load(tmp_path / "outputs.npz") as out:
        images, direct, meta = out["images"], out["direct"], out["meta"]
    assert images.shape == (5, SIZE, SIZE, 3) and images.dtype == np.uint8
    assert meta.tolist() == [Z_DIM, SIZE, CLASSES]
    np.testing.assert_array_equal(images, direct)
    diff = np.abs(images.astype(int) - expected.astype(int))
    assert diff.max() <= 1, diff.max()
    assert images.std() > 0


def test_truncation_in_sample_files_and_the_exported_sample_signature(loaded, tmp_path):
    """--truncation: file names say it, z stays inside, images are G's of that z; the
    SavedModel's `sample` signature draws truncated z reproducibly."""
    G = loaded.generator
    path, arrays = sampling.sample_to_file(G, "npz", str(tmp_path / "s.npz"), num_samples=6,
                                           seed=3, truncation=0.5)
    assert path.endswith("s_truncation0.5.npz") and os.path.exists(path)
    with np.load(path) as f:
        assert f["truncation"].item() == 0.5 and np.abs(f["z"]).max() <= 0.5
        np.testing.assert_array_equal(
            f["images"], sampling.to_uint8(sampling.generate(G, f["z"], f["labels"])))
    plain, _ = sampling.sample_to_file(G, "grid", str(tmp_path / "g.png"), num_rows=1,
                                       num_columns=2, seed=3)
    truncated, _ = sampling.sample_to_file(G, "grid", str(tmp_path / "g.png"), num_rows=1,
                                           num_columns=2, seed=3, truncation=0.25)
    assert os.path.basename(plain) == "g.png"
    assert os.path.basename(truncated) == "g_truncation0.25.png"
    assert not np.array_equal(_png(plain), _png(truncated))

    module = tf.saved_model.load(export.export_generator(loaded, str(tmp_path / "exported")))
    labels = tf.constant([0, 1, 2, 3, 1], tf.int32)
    seed = tf.constant([5, 6], tf.int32)
    out = module.sample(labels, tf.constant(0.3), seed)
    again = module.signatures["sample"](labels=labels, truncation=tf.constant(0.3), seed=seed)
    np.testing.assert_array_equal(out["z"], again["z"])
    np.testing.assert_array_equal(out["images"], again["images"])
    assert out["z"].shape == (5, Z_DIM) and np.abs(out["z"].numpy()).max() <= 0.3
    np.testing.assert_array_equal(out["images"], module.serve(out["z"], labels)["images"])
    untruncated = module.sample(labels, tf.constant(0.0), seed)["z"].numpy()
    assert np.abs(untruncated).max() > 0.3  # 80 standard normals: some beyond 0.3
    np.testing.assert_array_equal(untruncated, tf.random.stateless_normal(
        [5, Z_DIM], tf.random.experimental.stateless_fold_in(seed, 0)).numpy())


def test_help_explains_flags():
    """--help of each tool (absl only: the tools import TensorFlow inside main)."""
    expected = {"sample.py": ("--mode", "--classes", "--num_steps", "--num_samples", "--seed",
                              "--output", "interpolate_class", "--truncation"),
                "visualize_attention.py": ("--labels", "--queries", "--network", "--image",
                                           "--upsample", "--output"),
                "export_generator.py": ("--export_dir", "overwrite")}
    for tool, flags in expected.items():
        result = subprocess.run([sys.executable, os.path.join(REPO, "tools", tool), "--help"],
                                capture_output=True, text=True, timeout=60, cwd=REPO,
                                env=dict(os.environ, PYTHONPATH=REPO))
        assert result.returncode in (0, 1), result.stderr[-2000:]  # absl --help exits 1
        assert "Traceback" not in result.stderr, result.stderr[-2000:]
        for flag in ("--checkpoint_dir", "--checkpoint_path", "--attention_query_block_size",
                     *flags):
            assert flag in result.stdout, (tool, flag)
