"""Performance options (issue #5): XLA, mixed precision, the benchmark tool.

All on the session's 2-replica MirroredStrategy over logical CPUs (conftest).
"""
import importlib.util
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf import layers
from sagan_tf.training import ConfigError, TrainConfig, Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(image_size=32, gf_dim=8, df_dim=8, z_dim=16, number_classes=5, batch_size=2,
            seed=7)


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(
        f"sagan_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_benchmark():
    return _load_tool("benchmark")


def _fixed_inputs(trainer, seed=0):
    rs = np.random.default_rng(seed)
    cfg, n = trainer.config, trainer.global_batch_size
    images = rs.uniform(-1, 1, (n, cfg.image_size, cfg.image_size, 3)).astype(np.float32)
    labels = rs.integers(0, cfg.number_classes, n).astype(np.int32)
    noise = {k: [(tf.constant(rs.standard_normal((n, cfg.z_dim)), tf.float32),
                  tf.constant(rs.integers(0, cfg.number_classes, n), tf.int32))]
             for k in ("g", "d")}
    return images, labels, noise


def _state(trainer):
    return {v.path: np.asarray(v) for m in (trainer.generator, trainer.discriminator)
            for v in m.variables}


def test_record_state_updates_defers_and_restores():
    v = tf.Variable(1.0)
    with layers.record_state_updates() as updates:
        layers.assign_state(v, 5.0)
    assert float(v.numpy()) == 1.0 and len(updates) == 1 and updates[0][0] is v
    layers.assign_state(v, 3.0)
    assert float(v.numpy()) == 3.0


def test_config_validates_performance_flags():
    with pytest.raises(ConfigError, match="mixed_precision"):
        TrainConfig(mixed_precision="fp8").validate()
    with pytest.raises(ConfigError, match="attention_query_block_size"):
        TrainConfig(attention_query_block_size=-1).validate()
    with pytest.raises(ConfigError, match="attention"):
        TrainConfig(attention="linear").validate()


def test_xla_step_equals_default_step(strategy2):
    """Two iterations with and without XLA: same losses, same weights and state.

    Tolerances: losses and the SN/BN state to 1e-4. Weights: Adam with beta1 = 0
    moves every weight by about +-lr whatever the gradient's size, so where a
    gradient is ~0 rounding can flip its sign (a difference of up to 2 lr =
    8e-4 for D); 99% of the entries must agree to 1e-4 and all to 1e-3.
    """
    results = []
    for xla in (False, True):
        trainer = Trainer(TrainConfig(**TINY, xla=xla), strategy2)
        losses = []
        for it in range(2):
            images, labels, noise = _fixed_inputs(trainer, seed=it)
            out, _, _ = trainer.train_step(trainer.make_inputs_from_global(images, labels, noise))
            losses.append([float(out[k]) for k in ("d_loss", "g_loss")])
        assert trainer._compiled_step.experimental_get_tracing_count() == 1
        assert bool(trainer._jit_passes) == xla
        results.append((np.array(losses), _state(trainer)))
    (l0, s0), (l1, s1) = results
    np.testing.assert_allclose(l1, l0, rtol=1e-4, atol=1e-4)
    assert s0.keys() == s1.keys()
    trainable = {v.path for m in (trainer.generator, trainer.discriminator)
                 for v in m.trainable_variables}
    close, total = 0, 0
    for k in s0:
        if k in trainable:
            np.testing.assert_allclose(s1[k], s0[k], rtol=0, atol=1e-3, err_msg=k)
            close += int(np.sum(np.abs(s1[k] - s0[k]) <= 1e-4 + 1e-4 * np.abs(s0[k])))
            total += s0[k].size
        else:  # u, BN moving statistics
            np.testing.assert_allclose(s1[k], s0[k], rtol=1e-4, atol=1e-4, err_msg=k)
    assert close >= 0.99 * total, (close, total)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_dtypes_and_finite_steps(strategy2, policy):
    before = keras.config.dtype_policy().name
    trainer = Trainer(TrainConfig(**TINY, mixed_precision=policy), strategy2)
    assert keras.config.dtype_policy().name == before  # global policy restored
    G, D = trainer.generator, trainer.discriminator
    compute = policy.split("_")[1]
    for model in (G, D):
        assert all(v.dtype == "float32" for v in model.variables), model.name
    conv = G.g_block1.snconv1
    assert conv.compute_dtype == compute and conv.w.dtype == "float32"
    assert conv.sigma().dtype == tf.float32
    assert D.d_optimized_block1.sn_conv1.compute_dtype == compute
    # sigma inside a call is float32 even when the conv computes in low precision.
    x = tf.cast(tf.random.normal([1, 8, 8, conv.w.shape[2]]), compute)
    w_bar, _, sigma = layers.spectral_normalize(tf.convert_to_tensor(conv.w),
                                                tf.convert_to_tensor(conv.u))
    assert w_bar.dtype == tf.float32 and sigma.dtype == tf.float32
    assert conv(x, update_sn=False).dtype == compute
    z = tf.random.normal([2, TINY["z_dim"]])
    y = tf.constant([0, 1])
    images = G(z, y, training=False, update_sn=False)
    logits = D(images, y, update_sn=False)
    assert images.dtype == tf.float32 and logits.dtype == tf.float32
    if policy == "mixed_float16":
        assert isinstance(trainer.g_optimizer, keras.optimizers.LossScaleOptimizer)
    for it in range(1):  # one step: low precision is emulated (slow) on CPU
        imgs, labels, noise = _fixed_inputs(trainer, seed=it)
        out, _, fake = trainer.train_step(trainer.make_inputs_from_global(imgs, labels, noise))
        assert all(v.dtype == tf.float32 for v in out.values())
        assert all(np.isfinite(float(v)) for v in out.values()), out
        assert fake.dtype == tf.float32
    for model in (G, D):
        assert all(np.all(np.isfinite(np.asarray(v))) for v in model.variables)


def test_benchmark_tiny_config_prints_valid_json(strategy2, capsys):
    bench = _load_benchmark()
    result = bench.run_benchmark(arch="test", image_size=32, gf_dim=8, df_dim=8, z_dim=16,
                                 number_classes=5, batch_size=2, iterations=1, warmup=1,
                                 mode="both", sample_batch_size=2, strategy=strategy2)
    line = json.dumps(result, sort_keys=True)
    parsed = json.loads(line)
    for key in bench.RESULT_KEYS:
        assert key in parsed, key
    assert parsed["peak_device_memory_bytes"] is None  # CPU
    assert parsed["num_replicas"] == 2 and parsed["global_batch_size"] == 4
    assert parsed["step_traces"] == 1
    assert parsed["flops_per_iteration"] and parsed["flops_per_iteration"] > 0
    assert parsed["parameters"] == (parsed["parameters_generator"]
                                    + parsed["parameters_discriminator"])
    assert 0 < parsed["min_seconds_per_iteration"] <= parsed["median_seconds_per_iteration"] \
        <= parsed["max_seconds_per_iteration"]
    assert parsed["sample"]["images_per_second"] > 0
    assert parsed["peak_host_memory_bytes"] > 0


@pytest.mark.parametrize("arch", ["test", "baseline"])
def test_tf1_reference_builds_the_ports_model(arch):
    """The TF1-graph baseline of PERFORMANCE.md times the same model as the
    port: exactly the port's variables (SPEC §10 names) with the same shapes,
    so the same parameters; an iteration runs with a finite loss, and eager
    mode stays on in this process."""
    from sagan_tf.legacy import spec_variable_map
    from sagan_tf.networks import Discriminator, Generator, count_parameters
    reference = _load_tool("tf1_reference_benchmark").ReleaseGraphSession(
        batch_size=2, gf_dim=8, df_dim=8, z_dim=16, number_classes=5, arch=arch)
    try:
        assert tf.executing_eagerly()
        G = Generator(arch=arch, image_size=128, z_dim=16, gf_dim=8,
                      num_classes=5).ensure_built()
        D = Discriminator(arch=arch, image_size=128, df_dim=8, num_classes=5).ensure_built()
        port = {name: list(v.shape) for name, v in spec_variable_map(G, D).items()}
        assert reference.model_variables == port
        assert len(port) == {"test": 169, "baseline": 151}[arch]
        assert reference.parameters == count_parameters(G) + count_parameters(D)
        if arch == "test":
            assert np.isfinite(reference.iteration())
    finally:
        reference.close()


def test_benchmark_compares_with_tf1_reference():
    """--compare_tf1_reference: both timed in one process, same parameters."""
    bench = _load_benchmark()
    one_device = tf.distribute.OneDeviceStrategy("/cpu:0")
    kw = dict(arch="test", gf_dim=8, df_dim=8, z_dim=16, number_classes=5, batch_size=2,
              iterations=2, warmup=1, flops=False, strategy=one_device,
              compare_tf1_reference=True)
    with pytest.raises(ValueError, match="compare_tf1_reference needs"):
        bench.run_benchmark(image_size=32, **kw)
    result = json.loads(json.dumps(bench.run_benchmark(image_size=128, **kw)))
    reference = result["tf1_reference"]
    assert reference["parameters"] == result["parameters"]
    assert 0 < reference["min_seconds_per_iteration"] <= reference["median_seconds_per_iteration"]
    assert result["speedup_vs_tf1_reference"] == pytest.approx(
        reference["median_seconds_per_iteration"] / result["median_seconds_per_iteration"])
