"""Tests of the training loop (sagan_tf/training/loop.py, sagan_tf/training/distribute.py).

Tiny networks (32x32, gf = df = 4, 4 classes, 2 images per replica) on tiny
record files. Tracing the training step is the expensive part (several
seconds, more with 2 replicas), so the 2-replica end-to-end run is a module
fixture that the gradient-averaging test reuses.
"""
import dataclasses
import glob
import io
import json
import os
import time
import types

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sagan_tf.training import devices, distribute, losses
from sagan_tf.data import record_format
from sagan_tf.models.layers import spectral_normalize
from sagan_tf.models.networks import Discriminator, Generator
from sagan_tf.training.config import TrainConfig
from sagan_tf.training.run_config import load_config
from sagan_tf.training.trainer import Trainer
from sagan_tf.training.loop import SUMMARY_IMAGES, SUMMARY_SCALARS, open_loop, train

S, B, C = 32, 2, 4  # image size, per-replica batch, classes


def _tiny_config(**kw):
    base = dict(image_size=S, gf_dim=4, df_dim=4, z_dim=16, number_classes=C, batch_size=B,
                seed=0, shuffle=False, save_summaries_steps=0, log_every_steps=0,
                save_checkpoint_secs=0)
    base.update(kw)
    return TrainConfig(**base)


def _write_records(directory, num_files=2, per_file=12, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    for k in range(num_files):
        record_format.write_records(os.path.join(directory, f"part-{k}.tfrecords"),
                           rng.integers(0, 256, (per_file, S, S, 3), dtype=np.uint8),
                           rng.integers(0, C, per_file))
    return str(directory)


def _state(trainer):
    """name -> value of every variable a step may change (models and optimisers)."""
    out = {}
    for prefix, obj in (("G", trainer.generator), ("D", trainer.discriminator),
                        ("optG", trainer.g_optimizer), ("optD", trainer.d_optimizer)):
        for v in obj.variables:
            out[f"{prefix}:{v.path}"] = np.array(v.numpy())
    return out


def _copy_state(src, dst):
    """Copies models and optimiser variables (same config, same variable order)."""
    for a, b in ((src.generator, dst.generator), (src.discriminator, dst.discriminator),
                 (src.g_optimizer, dst.g_optimizer), (src.d_optimizer, dst.d_optimizer)):
        assert len(a.variables) == len(b.variables)
        for va, vb in zip(a.variables, b.variables):
            assert va.shape == vb.shape, (va.path, vb.path)
            vb.assign(va.numpy())


# Elements whose gradient is below this are compared through the gradient only.
_GRAD_NOISE = 1e-6


def _assert_same_after_adam(a, b, atol=1e-6, rtol=1e-5):
    """Asserts that two states (objects with generator, discriminator, g_optimizer,
    d_optimizer) are equal after an Adam step.

    Adam divides each gradient element by its own running RMS, so an element
    whose true gradient is 0 moves by about ``lr * noise / (|noise| + eps)``:
    rounding noise of ~1e-10 becomes an update of up to ``lr``. Such elements
    exist here by construction: the bias of every conv that feeds a batch norm
    (BN removes any constant shift). For them the gradients themselves (Adam's
    first moment, which *is* the last gradient with beta1 = 0) are compared;
    every other element's value must agree to ``atol``. Both Adam moments are
    compared to 1e-5 of the tensor's scale.
    """
    checked = masked = 0
    for model, opt in (("generator", "g_optimizer"), ("discriminator", "d_optimizer")):
        ma, mb = getattr(a, model), getattr(b, model)
        oa, ob = getattr(a, opt), getattr(b, opt)
        slots_a = {v.path: v for v in oa.variables}
        slots_b = {v.path: v for v in ob.variables}
        for va, vb in zip(ma.variables, mb.variables):
            name = va.path.split("/", 1)[1]
            assert name == vb.path.split("/", 1)[1]
            xa, xb = va.numpy(), vb.numpy()
            if va.trainable:
                moments = []
                for o, slots, v in ((oa, slots_a, va), (ob, slots_b, vb)):
                    prefix = f"{o.name}/{v.path.replace('/', '_')}"
                    moments.append([slots[f"{prefix}_{k}"].numpy()
                                    for k in ("momentum", "velocity")])
                for sa, sb in zip(*moments):
                    # Float32 gradients summed in another order (one D call on
                    # real+fake vs two calls) agree to ~1e-6 of their scale.
                    scale = max(float(np.abs(sb).max()), 1.0)
                    np.testing.assert_allclose(sa, sb, atol=1e-5 * scale, rtol=rtol,
                                               err_msg=name)
                live = np.abs(moments[0][0]) > _GRAD_NOISE
                masked += int(np.sum(~live))
                xa, xb = xa[live], xb[live]
            checked += xa.size
            np.testing.assert_allclose(xa, xb, atol=atol, rtol=rtol, err_msg=name)
    # The exemption stays small (conv biases before BN are a tiny share).
    assert masked < 0.05 * checked, (masked, checked)


def _dense(grads):
    """TF1's Adam semantics for gathered (class-indexed) variables: duplicate
    indices are summed first, i.e. the dense gradient (see test below)."""
    return [tf.convert_to_tensor(g) for g in grads]


def _read_events(logdir):
    """tag -> list of (step, summary value) from every event file in logdir."""
    tags = {}
    for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append((event.step, value))
    return tags


# ----------------------------------------------------------------------------
# End to end with 2 replicas.

@pytest.fixture(scope="module")
def trainer1():
    """A fresh 1-replica (default strategy) Trainer with run2's architecture and
    seed; tests copy in the state they need (its step is traced once)."""
    return Trainer(_tiny_config(data_dir="unused"), tf.distribute.get_strategy())


@pytest.fixture(scope="module")
def run2(strategy2, trainer1, tmp_path_factory):
    """A 3-step training run with 2 replicas; summaries at steps 1 and 2.

    Its initial state is trainer1's (same seed, so same initial weights)."""
    root = tmp_path_factory.mktemp("run2")
    config = _tiny_config(data_dir=_write_records(root / "data"),
                          checkpoint_dir=str(root / "ckpt"), max_steps=3,
                          save_summaries_steps=2, log_every_steps=1)
    assert int(trainer1.step.numpy()) == 0
    initial = _state(trainer1)
    lines = []
    result = train(config, strategy=strategy2, log=lines.append)
    return config, initial, result, lines


def test_end_to_end_two_replicas(run2):
    config, initial, result, lines = run2
    trainer = result["trainer"]
    assert result["num_replicas"] == 2 and result["global_batch_size"] == 2 * B
    assert result["step"] == 3 and int(trainer.step.numpy()) == 3
    assert lines[0] == "Starting from scratch"
    assert lines[1].startswith("Replicas: 2 on /cpu:0, /cpu:1; global batch = "
                               f"{B} per replica x 2 = {2 * B}; TF32 off")
    assert lines[1].endswith("graph optimisation: light (--graph_optimization auto)")
    assert any(line.startswith("step 3/3") for line in lines)
    assert {k for k in result["metrics"] if not k.startswith("collapse/")} == {
        "d_loss", "d_loss_real", "d_loss_fake", "g_loss", "logit_real", "logit_fake"}
    assert all(np.isfinite(v) for v in result["metrics"].values())
    # hinge: d_loss = d_loss_real + d_loss_fake
    m = result["metrics"]
    assert m["d_loss"] == pytest.approx(m["d_loss_real"] + m["d_loss_fake"], abs=1e-5)

    final = _state(trainer)
    for name in ("G", "D"):
        trainable = {v.path for v in getattr(trainer, {"G": "generator", "D": "discriminator"}[name]).trainable_variables}
        changed = [k for k in initial if k.startswith(name + ":") and k[2:] in trainable
                   and not np.array_equal(initial[k], final[k])]
        assert len(changed) >= 0.9 * len(trainable), f"only {len(changed)} {name} weights moved"
        assert all(np.all(np.isfinite(final[k])) for k in final if k.startswith(name + ":"))

    logdir = config.logdir
    assert logdir.endswith(f"imagenet_{B}")
    assert tf.train.latest_checkpoint(logdir) == os.path.join(logdir, "ckpt-3")
    assert load_config(logdir) == config
    with open(os.path.join(logdir, "config.json")) as f:
        stored = json.load(f)
    assert stored["generator_type"] == "test"
    assert stored["devices"] == {"replica_devices": ["/cpu:0", "/cpu:1"], "num_replicas": 2,
                                 "global_batch_size": 2 * B, "tf32": False, "why": None}
    assert stored["allow_tf32"] is False and stored["num_towers"] == 4
    samples = Image.open(result["samples"])
    assert samples.size == (8 * S, C * S)  # one row per class, 8 columns

    events = _read_events(logdir)
    sigma_tags = {f"sigma_ratio/{v.path}" for v in trainer.sigma_ratio_variables}
    assert len(sigma_tags) == 2  # attention in G and in D ("test" architectures)
    expected = set(SUMMARY_SCALARS) | set(SUMMARY_IMAGES) | sigma_tags
    assert expected <= set(events), f"missing tags {sorted(expected - set(events))}"
    for tag in expected:
        assert [s for s, _ in events[tag]] == [1, 2], tag
    for tag in set(SUMMARY_SCALARS) | sigma_tags:
        value = events[tag][-1][1]
        assert value.metadata.plugin_data.plugin_name == "scalars"
        assert np.isfinite(tf.make_ndarray(value.tensor))
    # The collapse/ group (sagan_tf.training.collapse_summaries): one sigma per spectral-norm layer.
    collapse = {t for t in events if t.startswith("collapse/")}
    sn_layers = [l for m in (trainer.generator, trainer.discriminator)
                 for l in m._flatten_layers(include_self=False)  # pylint: disable=protected-access
                 if getattr(l, "u", None) is not None]
    assert collapse == {"collapse/g_grad_norm", "collapse/d_grad_norm",
                        "collapse/real_positive_share"} | {
                            f"collapse/sigma/{l.path}" for l in sn_layers}
    for tag in collapse:
        assert [s for s, _ in events[tag]] == [1, 2], tag
        assert np.isfinite(tf.make_ndarray(events[tag][-1][1].tensor)) and tag
    assert tf.make_ndarray(events["d_learning_rate"][0][1].tensor) == pytest.approx(4e-4)
    assert tf.make_ndarray(events["g_learning_rate"][0][1].tensor) == pytest.approx(1e-4)
    for tag in SUMMARY_IMAGES:
        value = events[tag][-1][1]
        assert value.metadata.plugin_data.plugin_name == "images"
        width, height, png = tf.make_ndarray(value.tensor)
        grid = np.asarray(Image.open(io.BytesIO(png)))
        assert grid.shape == (S, B * S, 3) and (int(width), int(height)) == (B * S, S)


# ----------------------------------------------------------------------------
# Gradient averaging across replicas.

def _inputs(rng, z_dim):
    x = rng.uniform(-1, 1, (B, S, S, 3)).astype(np.float32)
    y = rng.integers(0, C, B).astype(np.int32)
    noise = {k: [(rng.standard_normal((B, z_dim)).astype(np.float32),
                  rng.integers(0, C, B).astype(np.int32))] for k in ("g", "d")}
    return x, y, noise


def test_two_replicas_average_gradients(run2, trainer1):
    """2 replicas, each given the same batch and noise, make the 1-replica update.

    Adam's update is nearly invariant to the gradient scale, so the optimiser
    slots are compared too: with beta1 = 0 the first moment *is* the last
    gradient, so a sum instead of an average would show up there.
    """
    config, _, result, _ = run2
    two, one = result["trainer"], trainer1
    assert (two.num_replicas, one.num_replicas) == (2, 1)
    _copy_state(two, one)
    x, y, noise = _inputs(np.random.default_rng(7), config.z_dim)
    twice = lambda t: np.concatenate([t, t])  # noqa: E731 -- global batch: 2 copies
    noise2 = {k: [(twice(z), twice(yf))] for k, [(z, yf)] in noise.items()}

    before = _state(one)
    m1, _, _ = one.parity_iteration(one.make_inputs_from_global(x, y, noise))
    m2, _, _ = two.parity_iteration(two.make_inputs_from_global(twice(x), twice(y), noise2))
    _assert_same_after_adam(one, two)
    for k in m1:
        assert float(m1[k]) == pytest.approx(float(m2[k]), abs=1e-5), k
    # The step did something, so the comparison is not vacuous.
    after = _state(one)
    assert sum(not np.array_equal(before[k], after[k]) for k in after) > 0.9 * len(after)


# ----------------------------------------------------------------------------
# One iteration, built by hand from the networks.

def test_iteration_matches_hand_built_step(trainer1):
    """G step then D step; G's BN stats and u move twice, D's u once (NUMERICS §6)."""
    import keras
    trainer, config = trainer1, trainer1.config
    hand = types.SimpleNamespace(
        generator=Generator(arch="test", image_size=S, z_dim=config.z_dim,
                            gf_dim=config.gf_dim, num_classes=C,
                            name="hand_generator").ensure_built(),
        discriminator=Discriminator(arch="test", image_size=S, df_dim=config.df_dim,
                                    num_classes=C, name="hand_discriminator").ensure_built(),
        g_optimizer=keras.optimizers.Adam(1e-4, beta_1=0.0, beta_2=0.999, epsilon=1e-8,
                                          name="hand_g_adam"),
        d_optimizer=keras.optimizers.Adam(4e-4, beta_1=0.0, beta_2=0.999, epsilon=1e-8,
                                          name="hand_d_adam"))
    G, D = hand.generator, hand.discriminator
    hand.g_optimizer.build(G.trainable_variables)
    hand.d_optimizer.build(D.trainable_variables)
    _copy_state(trainer, hand)  # whatever state the trainer is in, optimisers included

    x, y, noise = _inputs(np.random.default_rng(3), config.z_dim)
    [(z_g, y_g)], [(z_d, y_d)] = noise["g"], noise["d"]

    def var(model, suffix):
        return next(v for v in model.variables if v.path.endswith(suffix))
    g_u, g_w, g_mean = "g_block1/snconv1/u", "g_block1/snconv1/w", "g_block1/cbn_0/mean"
    d_u, d_w = "d_block2/sn_conv1/u", "d_block2/sn_conv1/w"
    g_u0, g_w0 = var(G, g_u).numpy(), var(G, g_w).numpy()
    d_u0, d_w0 = var(D, d_u).numpy(), var(D, d_w).numpy()

    # The release's iteration, written out. G step:
    with tf.GradientTape() as tape:
        fake = G(z_g, y_g, training=True)
        g_loss = losses.generator_loss("hinge_loss", D(fake, y_g, update_sn=False))
    hand.g_optimizer.apply_gradients(zip(_dense(tape.gradient(g_loss, G.trainable_variables)),
                                         G.trainable_variables))
    g_mean_after_g_step = var(G, g_mean).numpy()
    # D step: G again in training mode, D on reals (updating u) and, in a
    # separate call, on fakes with the same normalised weights, i.e. with the
    # u from before the real pass (NUMERICS §6 and "Where a port may differ"). The
    # fakes' backward, like the reals', sees the u the reals' pass wrote
    # (NUMERICS §1.2): the fake call is made as an updating call from the old
    # u, which writes the same u_new again.
    fake = G(z_d, y_d, training=True)
    d_us = [v for v in D.variables if v.path.endswith("/u")]
    u_before = [v.numpy() for v in d_us]
    with tf.GradientTape() as tape:
        logits_real = D(x, y, update_sn=True)
        u_after = [v.numpy() for v in d_us]
        for v, value in zip(d_us, u_before):
            v.assign(value)
        logits_fake = D(fake, y_d, update_sn=True)
        for v, value in zip(d_us, u_after):
            np.testing.assert_array_equal(v.numpy(), value)
        d_loss, _, _ = losses.discriminator_loss("hinge_loss", logits_real, logits_fake)
    hand.d_optimizer.apply_gradients(zip(_dense(tape.gradient(d_loss, D.trainable_variables)),
                                         D.trainable_variables))

    step0 = int(trainer.step.numpy())
    metrics, _, _ = trainer.parity_iteration(trainer.make_inputs_from_global(x, y, noise))
    assert int(trainer.step.numpy()) == step0 + 1
    assert float(metrics["g_loss"]) == pytest.approx(float(g_loss), abs=1e-5)
    assert float(metrics["d_loss"]) == pytest.approx(float(d_loss), abs=1e-5)
    assert float(metrics["logit_real"]) == pytest.approx(float(tf.reduce_mean(logits_real)),
                                                         abs=1e-5)
    assert float(metrics["logit_fake"]) == pytest.approx(float(tf.reduce_mean(logits_fake)),
                                                         abs=1e-5)
    _assert_same_after_adam(trainer, hand)

    # The update rules themselves, beyond "equal to the hand-built step":
    # G's BN moving mean moved again in the D step (second G pass) ...
    assert not np.allclose(var(trainer.generator, g_mean).numpy(), g_mean_after_g_step,
                           atol=1e-7)
    # ... G's u took two power iterations, the second with the updated weights ...
    _, u1, _ = spectral_normalize(g_w0, g_u0)
    _, u2, _ = spectral_normalize(var(trainer.generator, g_w).numpy(), u1)
    np.testing.assert_allclose(var(trainer.generator, g_u).numpy(), u2, atol=1e-6)
    assert not np.allclose(u1, u2, atol=1e-6)
    # ... and D's u exactly one (the G step's D pass leaves it alone).
    _, du1, _ = spectral_normalize(d_w0, d_u0)
    _, du2, _ = spectral_normalize(d_w0, du1)
    np.testing.assert_allclose(var(trainer.discriminator, d_u).numpy(), du1, atol=1e-6)
    assert not np.allclose(du1, du2, atol=1e-6)


def test_dense_gradients_give_tf1_adam_update():
    """Why the step densifies IndexedSlices gradients (passes.dense_gradients).

    A class-indexed gather with a repeated label (labels 1, 1) must update
    Adam's second moment with the square of the summed gradient, as TF1's
    Adam did; Keras 3's Adam fed the IndexedSlices sums the squares instead.
    """
    import keras
    from sagan_tf.training.passes import dense_gradients as train_dense
    rows = tf.constant([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])

    def velocity(densify):
        table = keras.Variable(np.ones((4, 3), np.float32))
        opt = keras.optimizers.Adam(0.1, beta_1=0.0, beta_2=0.999, epsilon=1e-8)
        opt.build([table])
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.gather(table, [1, 1]) * rows)
        grads = [tape.gradient(loss, table)]
        assert isinstance(grads[0], tf.IndexedSlices)
        opt.apply_gradients(zip(train_dense(grads) if densify else grads, [table]))
        return next(v for v in opt.variables if "velocity" in v.path).numpy()[1]

    tf1 = 0.001 * np.array([5.0, 7.0, 9.0]) ** 2  # (1 - beta2) * (sum of the two rows)^2
    np.testing.assert_allclose(velocity(True), tf1, rtol=1e-6)
    assert not np.allclose(velocity(False), tf1, rtol=1e-3)  # the Keras sparse path


# ----------------------------------------------------------------------------
# Resume.

@pytest.fixture
def eager_functions():
    """Runs tf.functions eagerly for one test (restored afterwards)."""
    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(False)


def test_resume_equals_uninterrupted_run(tmp_path, eager_functions):
    """N steps, stop, restart, M steps == N + M steps in one run (to 1e-6).

    The runs execute the step eagerly, which saves four ~10 s traces;
    what resuming depends on (restored models, optimiser slots, step and
    random generator, the data position) is the same in both modes, and the
    compiled step is covered by the tests above.
    """
    data_dir = _write_records(tmp_path / "data")
    with open(os.path.join(data_dir, "manifest.json"), "w") as f:  # as the converter writes it
        json.dump({"pixel_pipeline": "tf_half_pixel_bilinear"}, f)
    one_strategy = tf.distribute.get_strategy()
    straight = _tiny_config(data_dir=data_dir, checkpoint_dir=str(tmp_path / "a"), max_steps=4)
    split = dataclasses.replace(straight, checkpoint_dir=str(tmp_path / "b"), max_steps=2)

    ra = train(straight, one_strategy, log=lambda s: None)
    lines = []
    rb1 = train(split, one_strategy, log=lines.append)
    rb2 = train(dataclasses.replace(split, max_steps=4), one_strategy, log=lines.append)
    assert rb1["step"] == 2 and rb2["step"] == 4 and rb2["steps_run"] == 2
    assert rb2["resumed_from"] == os.path.join(split.logdir, "ckpt-2")
    assert f"Resumed from {rb2['resumed_from']} at step 2" in lines
    # The records' pixel pipeline: named after the start lines, warned about, in config.json.
    manifest = os.path.join(data_dir, "manifest.json")
    assert lines.count(f"Records: {data_dir} written by pixel pipeline "
                       f"'tf_half_pixel_bilinear' ({manifest})") == 2
    assert sum(line.startswith("WARNING: these are not the release's pixels")
               for line in lines) == 2
    with open(os.path.join(split.logdir, "config.json")) as f:
        assert json.load(f)["records_pixel_pipeline"] == "tf_half_pixel_bilinear"
    assert load_config(split.logdir) == dataclasses.replace(split, max_steps=4)
    # The opened loop run in pieces (tools/perf/benchmark_loop.py) is the same run.
    with open_loop(dataclasses.replace(straight, checkpoint_dir=str(tmp_path / "c")),
                   one_strategy, log=lambda s: None) as loop:
        for until, reached in ((1, 1), (3, 3), (10, 4)):  # never past max_steps
            loop.run(until=until)
            assert loop.step == reached
        rc = loop.finish(time.time())
    assert rc["step"] == 4 and rc["steps_run"] == 4

    a = tf.train.load_checkpoint(ra["checkpoint"])
    for b in (tf.train.load_checkpoint(rb2["checkpoint"]),
              tf.train.load_checkpoint(rc["checkpoint"])):
        _assert_same_checkpoint(a, b)
    assert ra["metrics"] == pytest.approx(rb2["metrics"], abs=1e-5)
    assert ra["metrics"] == pytest.approx(rc["metrics"], abs=1e-5)


def _assert_same_checkpoint(a, b):
    """Checkpoint readers ``a`` and ``b`` hold the same complete training state (to 1e-6)."""
    keys = set(a.get_variable_to_shape_map())
    assert keys == set(b.get_variable_to_shape_map())
    keys = {k for k in keys if not k.startswith("save_counter") and k != "_CHECKPOINTABLE_OBJECT_GRAPH"}
    # Everything is there: both models, Adam slots, step and generator state.
    for part in ("generator/", "discriminator/", "g_optimizer/", "d_optimizer/", "step/", "rng/"):
        assert any(k.startswith(part) for k in keys), part
    assert sum("g_optimizer/" in k for k in keys) > 2 * sum(
        k.startswith("generator/") for k in keys) // 3
    bad = [k for k in keys if not np.allclose(a.get_tensor(k), b.get_tensor(k),
                                              atol=1e-6, rtol=1e-6)]
    assert not bad, f"resumed run differs in {bad[:5]}"
    assert int(a.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == 4


# ----------------------------------------------------------------------------
# Configuration and errors.

def test_bad_data_dir(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="--data_dir.*no files matching"):
        train(_tiny_config(data_dir=str(empty), checkpoint_dir=str(tmp_path / "c")))
    with pytest.raises(ValueError, match="--data_dir"):
        train(_tiny_config(data_dir=None, checkpoint_dir=str(tmp_path / "c")))
    records = _write_records(tmp_path / "data", num_files=1, per_file=2)
    with pytest.raises(ValueError, match="--image_size is 64"):
        train(_tiny_config(data_dir=records, image_size=64, checkpoint_dir=str(tmp_path / "c")))
    assert not os.path.exists(tmp_path / "c")  # nothing written before the checks


def test_distribute_errors():
    with pytest.raises(ValueError, match="strategy must be one of"):
        distribute.make_strategy("horovod")
    with pytest.raises(ValueError, match="only applies to strategy='mirrored'"):
        distribute.make_strategy("multiworker", num_cpu_replicas=2)
    with pytest.raises(RuntimeError, match="only 2 logical CPU"):
        distribute.make_strategy("mirrored", num_cpu_replicas=3)
    devices.configure_cpu_replicas(2)  # what conftest did: a no-op
    with pytest.raises(RuntimeError, match="before any TensorFlow op"):
        devices.configure_cpu_replicas(3)


def test_train_iterations_draws_the_same_noise_and_checks_in_the_step(strategy2):
    """The loop's iteration (noise drawn inside the compiled call, the
    non-finite check after the updates) equals parity_iteration on noise drawn
    and split outside, bit for bit, with 2 replicas."""
    outside, fused = (Trainer(_tiny_config(data_dir="unused"), strategy2) for _ in range(2))
    rng = np.random.default_rng(3)
    seen = []

    def check(metrics):
        seen.append(sorted(metrics))
        return tf.reduce_all(tf.math.is_finite(metrics["d_loss"]))
    for _ in range(2):
        images = rng.uniform(-1, 1, (2 * B, S, S, 3)).astype(np.float32)
        labels = rng.integers(0, C, 2 * B).astype(np.int32)
        real_a = list(outside.distribute([(tf.constant(images), tf.constant(labels))]))
        real_b = list(fused.distribute([(tf.constant(images), tf.constant(labels))]))
        out_a = outside.parity_iteration(outside.make_inputs(
            real_a, outside.distribute(outside.sample_noise())))
        [(metrics_b, finite)], *images_b = fused.train_iterations([real_b], check)
        out_b = (metrics_b, *images_b)
        assert bool(finite)
        for k in out_a[0]:
            assert float(out_a[0][k]) == float(out_b[0][k]), k
        np.testing.assert_array_equal(out_a[2].numpy(), out_b[2].numpy())
    assert seen == [sorted(out_a[0])]  # traced once
    a, b = _state(outside), _state(fused)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    np.testing.assert_array_equal(outside.rng.state.numpy(), fused.rng.state.numpy())
