"""Performance options: XLA, mixed precision; the speed measurement (sagan_tf.perf) and its tools.

All on the session's 2-replica MirroredStrategy over logical CPUs (conftest).
"""
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.models import layers
from sagan_tf.training.config import ConfigError, TrainConfig
from sagan_tf.perf import benchmark, machine, op_profile, peaks
from sagan_tf.perf.benchmark import BenchmarkOptions
from sagan_tf.perf.flops import count_graph_flops
from sagan_tf.perf.summary import summary_line
from sagan_tf.training.trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(image_size=32, gf_dim=8, df_dim=8, z_dim=16, number_classes=5, batch_size=2,
            seed=7)
#: Micro-benchmark sizes small enough for a test (sagan_tf.perf.peaks.PEAK_PROBLEMS).
TINY_PEAK = dict(matmul_n=32, conv_shape=(2, 6, 6, 4), chain=3, repeats=1)
#: The environment of a tool run in a subprocess: this checkout's sagan_tf.
TOOL_ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


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


def test_config_validates_performance_flags():
    with pytest.raises(ConfigError, match="mixed_precision"):
        TrainConfig(mixed_precision="fp8").validate()
    with pytest.raises(ConfigError, match="attention_query_block_size"):
        TrainConfig(attention_query_block_size=-1).validate()
    with pytest.raises(ConfigError, match="attention"):
        TrainConfig(attention="linear").validate()
    with pytest.raises(ConfigError, match="graph_optimization"):
        TrainConfig(graph_optimization="none").validate()


_STEPS_CACHE = {}


def _two_compiled_steps(strategy, options):
    """Losses of two compiled steps from TINY's initial state with ``options``,
    and the state after them (``trainable:<path>`` for the trainable weights);
    computed once per process for each ``options`` (the default-Grappler run is
    the reference of both variants)."""
    key = tuple(sorted(options.items()))
    if key not in _STEPS_CACHE:
        trainer = Trainer(TrainConfig(**TINY, **options), strategy)
        assert trainer.graph_optimization == options.get("graph_optimization", "light")
        losses = []
        for it in range(2):
            images, labels, noise = _fixed_inputs(trainer, seed=it)
            out, _, _ = trainer.parity_iteration(
                trainer.make_inputs_from_global(images, labels, noise))
            losses.append([float(out[k]) for k in ("d_loss", "g_loss")])
        assert trainer.compiled_parity_iteration.experimental_get_tracing_count() == 1
        assert bool(trainer._jit_passes) == bool(options.get("xla"))
        trainable = {v.path for m in (trainer.generator, trainer.discriminator)
                     for v in m.trainable_variables}
        state = {("trainable:" if k in trainable else "") + k: v
                 for k, v in _state(trainer).items()}
        _STEPS_CACHE[key] = (np.array(losses), state)
    return _STEPS_CACHE[key]


@pytest.mark.parametrize("variant", [dict(xla=True), dict(graph_optimization="light")],
                         ids=["xla", "light_grappler"])
def test_compiled_variants_equal_the_default_step(strategy2, variant):
    """Two iterations with XLA, or with the light Grappler settings (the CPU
    default, sagan_tf/training/compilation.py), against TensorFlow's default Grappler
    without XLA: same losses, same weights and state.

    Tolerances: losses and the SN/BN state to 1e-4. Weights: Adam with beta1 = 0
    moves every weight by about +-lr whatever the gradient's size, so where a
    gradient is ~0 rounding can flip its sign (a difference of up to 2 lr =
    8e-4 for D); 99% of the entries must agree to 1e-4 and all to 1e-3.
    """
    (l0, s0), (l1, s1) = [_two_compiled_steps(strategy2, options)
                          for options in (dict(graph_optimization="full"), variant)]
    np.testing.assert_allclose(l1, l0, rtol=1e-4, atol=1e-4)
    assert s0.keys() == s1.keys()
    trainable = {k for k in s0 if k.startswith("trainable:")}
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
    def scales():
        return [float(np.asarray(opt.dynamic_scale)) if opt.built else float(opt.initial_scale)
                for opt in (trainer.g_optimizer, trainer.d_optimizer)
                if isinstance(opt, keras.optimizers.LossScaleOptimizer)]

    for it in range(1):  # one step: low precision is emulated (slow) on CPU
        imgs, labels, noise = _fixed_inputs(trainer, seed=it)
        before = scales()
        out, _, fake = trainer.parity_iteration(
            trainer.make_inputs_from_global(imgs, labels, noise))
        assert all(v.dtype == tf.float32 for v in out.values())
        norms = {"collapse/g_grad_norm", "collapse/d_grad_norm"}
        assert all(np.isfinite(float(v)) for k, v in out.items() if k not in norms), out
        # A gradient norm is inf exactly when the loss-scale optimiser skipped
        # that step for an overflow (and halved its scale); otherwise it is the
        # unscaled norm, far below the float16 range.
        skipped = [a < b for a, b in zip(scales(), before)] or [False, False]
        for key, was_skipped in zip(("collapse/g_grad_norm", "collapse/d_grad_norm"), skipped):
            assert np.isfinite(float(out[key])) != was_skipped, (key, out[key], before, scales())
            if not was_skipped:
                assert 0 < float(out[key]) < 1e4, (key, out[key])
        assert fake.dtype == tf.float32
    for model in (G, D):
        assert all(np.all(np.isfinite(np.asarray(v))) for v in model.variables)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_discriminator_head_computes_in_float32_under_mixed_precision(policy):
    """On D's traced graph under a mixed policy: the blocks compute in the low
    precision (their last residual add), and the head -- relu, the pooled sum
    over H x W, the linear layer, the class embedding, the projection's product
    and sum and the final add -- in float32, from one cast of the features."""
    from sagan_tf.models.networks import Discriminator
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        D = Discriminator("test", 32, df_dim=4, num_classes=5).ensure_built()
    finally:
        keras.config.set_dtype_policy(previous)
    fn = tf.function(lambda x, y: D(x, y, update_sn=False), autograph=False)
    graph = fn.get_concrete_function(tf.TensorSpec([2, 32, 32, 3]),
                                     tf.TensorSpec([2], tf.int32)).graph
    low = policy.split("_")[1]
    ops = [op for op in graph.get_operations() if op.name.startswith("discriminator")]
    last_block_add = [op for op in ops if op.name.split("/")[1].startswith("d_block4")
                      and op.type == "AddV2"][-1]
    assert last_block_add.outputs[0].dtype.name == low
    head = [op for op in ops if op.name.count("/") == 1 and op.type in ("Relu", "Sum", "Mul",
                                                                         "AddV2", "Cast")]
    head += [op for op in ops if op.name.split("/")[1].startswith(("d_sn_linear",
                                                                    "d_embedding"))
             and op.type in ("MatMul", "GatherV2", "AddV2", "Sum")]
    assert {op.type for op in head} >= {"Relu", "Sum", "Mul", "AddV2", "Cast", "MatMul",
                                        "GatherV2"}
    for op in head:
        assert all(t.dtype == tf.float32 for t in op.outputs), (op.name, op.outputs)
    pooled = [op for op in head if op.type == "Sum" and op.name.count("/") == 1][0]
    assert pooled.inputs[0].op.type == "Relu"
    assert pooled.inputs[0].op.inputs[0].op.type == "Cast"  # the low-precision features
    assert pooled.inputs[0].op.inputs[0].op.inputs[0].dtype.name == low


def test_mixed_float16_overflow_in_one_replica_skips_the_d_step_everywhere(strategy2):
    """The trainer's mixed_float16 iteration on 2 replicas with replica 1's
    real batch overflowing float16 (1e5 -> inf): its D gradients are
    non-finite, replica 0's are not. The D step is skipped on every replica --
    D's weights, Adam slots and iterations unchanged on both copies -- and D's
    loss scale halves; the G step before it (no real batch) is applied.
    Both loss scales start at 4 (not Keras' 2^15, with which these tiny
    networks' float16 gradients overflow on every replica at the first step)."""
    trainer = Trainer(TrainConfig(**TINY, mixed_precision="mixed_float16"), strategy2)
    for optimizer in (trainer.g_optimizer, trainer.d_optimizer):
        optimizer.dynamic_scale.assign(4.0)
    images, labels, noise = _fixed_inputs(trainer)
    images[TINY["batch_size"]:] = 1e5  # replica 1's rows of the global batch
    local = strategy2.experimental_local_results

    def copies(variables):
        return [[c.numpy() for c in local(v)] for v in variables]
    D, G = trainer.discriminator, trainer.generator
    d_opt, g_opt = trainer.d_optimizer, trainer.g_optimizer
    d_before = copies(D.trainable_variables + d_opt.inner_optimizer.variables)
    g_before = copies(G.trainable_variables)
    d_scale, g_scale = float(d_opt.dynamic_scale.numpy()), float(g_opt.dynamic_scale.numpy())
    trainer.parity_iteration(trainer.make_inputs_from_global(images, labels, noise))
    for before, after in zip(d_before, copies(D.trainable_variables +
                                              d_opt.inner_optimizer.variables)):
        for b, a in zip(before, after):
            np.testing.assert_array_equal(a, b)
    assert float(d_opt.dynamic_scale.numpy()) == d_scale / 2
    assert int(d_opt.iterations.numpy()) == 0 and int(g_opt.iterations.numpy()) == 1
    assert float(g_opt.dynamic_scale.numpy()) == g_scale
    g_after = copies(G.trainable_variables)
    assert any(not np.array_equal(b[0], a[0]) for b, a in zip(g_before, g_after))
    assert all(np.all(np.isfinite(c)) for v in g_after for c in v)
    assert all(np.all(np.isfinite(np.asarray(v))) for v in D.variables)


def test_benchmark_tiny_config_prints_valid_json(strategy2, capsys):
    options = BenchmarkOptions(arch="test", image_size=32, gf_dim=8, df_dim=8, z_dim=16,
                               number_classes=5, batch_size=2, iterations=1, warmup=1,
                               mode="both", sample_batch_size=2)
    result = benchmark.run_benchmark(options, strategy=strategy2, peak_problem=TINY_PEAK)
    line = json.dumps(result, sort_keys=True)
    parsed = json.loads(line)
    for key in benchmark.RESULT_KEYS + benchmark.PEAK_KEYS:
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
    # Beside every time: achieved = counted FLOPs / median time, as a
    # fraction of the float32 peak measured in this process (2 logical CPU
    # replicas share the same cores: the peak is not doubled).
    peak = parsed["peak_gflops"]
    assert peak["dtype"] == "float32" and peak["devices_counted"] == 1
    assert list(parsed["peak_gflops_by_dtype"]["per_device"]) == ["float32"]
    assert parsed["peak_gflops_by_dtype"]["per_device"]["float32"] == {
        k: peak[k] for k in ("matmul", "conv")}
    for fig, flops in ((parsed, parsed["flops_per_iteration"]),
                       (parsed["sample"], parsed["sample"]["flops_per_batch"])):
        assert fig["achieved_gflops"] == pytest.approx(
            flops / fig["median_seconds_per_iteration"] / 1e9)
        assert fig["fraction_of_peak"] == pytest.approx(
            fig["achieved_gflops"] / max(peak["matmul"], peak["conv"]))
        assert fig["fraction_of_peak_by_kernel"]["conv"] == pytest.approx(
            fig["achieved_gflops"] / peak["conv"])
    assert parsed["machine"]["logical_cpus"] == os.cpu_count()
    assert parsed["machine"]["gpus"] == []
    summary = summary_line(parsed)
    assert f"{parsed['achieved_gflops']:.1f} GFLOP/s" in summary and "% of peak" in summary


@pytest.mark.parametrize("arch", ["test", "baseline"])
def test_tf1_reference_builds_the_ports_model(arch):
    """The TF1-graph baseline of PERFORMANCE.md times the same model as the
    port: exactly the port's variables (NUMERICS §10 names) with the same shapes,
    so the same parameters; an iteration runs with a finite loss, and eager
    mode stays on in this process."""
    from sagan_tf.runs.legacy import spec_variable_map
    from sagan_tf.models.networks import Discriminator, Generator, count_parameters
    from sagan_tf.parity.tf1_release_session import ReleaseGraphSession
    reference = ReleaseGraphSession(
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
    one_device = tf.distribute.OneDeviceStrategy("/cpu:0")
    kw = dict(arch="test", gf_dim=8, df_dim=8, z_dim=16, number_classes=5, batch_size=2,
              iterations=2, warmup=1, flops=False, compare_tf1_reference=True, peak=False)
    with pytest.raises(ValueError, match="compare_tf1_reference needs"):
        benchmark.run_benchmark(BenchmarkOptions(image_size=32, **kw), strategy=one_device)
    result = json.loads(json.dumps(benchmark.run_benchmark(
        BenchmarkOptions(image_size=128, **kw), strategy=one_device)))
    reference = result["tf1_reference"]
    assert reference["parameters"] == result["parameters"]
    assert 0 < reference["min_seconds_per_iteration"] <= reference["median_seconds_per_iteration"]
    assert result["speedup_vs_tf1_reference"] == pytest.approx(
        reference["median_seconds_per_iteration"] / result["median_seconds_per_iteration"])
    # peak=False (--nopeak) and no FLOP count: the new keys are there, empty.
    assert result["peak_gflops"] is None and result["peak_gflops_by_dtype"] is None
    for fig in (result, reference):
        assert fig["achieved_gflops"] is None and fig["fraction_of_peak"] is None
    assert result["machine"]["cpu_model"]


def _conv3x3_same(x, k):
    """numpy oracle: SAME 3x3 convolution, stride 1, NHWC x HWIO."""
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, w = x.shape[1:3]
    return sum(np.einsum("bhwc,co->bhwo", xp[:, i:i + h, j:j + w], k[i, j])
               for i in range(3) for j in range(3))


def test_peak_microbenchmark_counts_flops_and_computes_the_chain():
    """The micro-benchmark's analytic FLOPs equal the TF profiler's count of
    its own graph (the count the iteration's FLOPs come from), GFLOP/s =
    FLOPs / best time, and the chained ops really run (numpy oracle)."""
    peak, details = peaks.measure_peak_gflops("float32", "/cpu:0", return_details=True,
                                              **TINY_PEAK)
    for name in ("matmul", "conv"):
        d = details[name]
        assert d["flops_per_call"] == count_graph_flops(
            d["function"].get_concrete_function(*d["args"])), name
        assert peak[name] == pytest.approx(d["flops_per_call"] / d["best_seconds"] / 1e9)
    assert details["matmul"]["flops_per_call"] == 3 * 2 * 32 ** 3
    a, m = (np.asarray(t, np.float64) for t in details["matmul"]["args"])
    got = float(details["matmul"]["function"](*details["matmul"]["args"]))
    assert got == pytest.approx((a @ m @ m @ m)[0, 0], rel=1e-4, abs=1e-5)
    x, k = (np.asarray(t, np.float64) for t in details["conv"]["args"])
    want = _conv3x3_same(_conv3x3_same(_conv3x3_same(x, k), k), k)[0, 0, 0, 0]
    got = float(details["conv"]["function"](*details["conv"]["args"]))
    assert got == pytest.approx(want, rel=1e-4, abs=1e-5)


def test_peak_in_mixed_bfloat16_measures_both_dtypes():
    peak, by_dtype = peaks.measure_peaks(["/cpu:0"], "mixed_bfloat16", TINY_PEAK)
    assert set(by_dtype["per_device"]) == {"float32", "bfloat16"}
    assert peak["dtype"] == "bfloat16"
    assert {k: peak[k] for k in ("matmul", "conv")} == by_dtype["per_device"]["bfloat16"]
    assert all(v > 0 for d in by_dtype["per_device"].values() for v in d.values())
    assert by_dtype["problem"]["matmul_n"] == 32


AMD_ZEN5 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni

processor\t: 1
model name\t: something else
flags\t\t: amx_tile amx_bf16
"""
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: avx512f avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
"""
OLD_XEON = """processor\t: 0
model name\t: Intel(R) Xeon(R) CPU @ 2.50GHz
flags\t\t: avx2 avx512f avx512bw avx512_vnni
"""


def test_parse_cpuinfo_reads_model_and_half_precision_units():
    parse = machine.parse_cpuinfo
    amd = parse(AMD_ZEN5)  # only the first processor's entry counts
    assert amd["cpu_model"] == "AMD EPYC" and amd["cpu_family"] == "26"
    assert amd["cpu_model_number"] == "2"
    assert amd["bf16_units"] == ["avx512_bf16"] and amd["avx512_bf16"] and not amd["amx"]
    assert amd["fp16_units"] == []
    spr = parse(SAPPHIRE_RAPIDS)
    assert spr["bf16_units"] == ["avx512_bf16", "amx_bf16"] and spr["amx"]
    assert spr["fp16_units"] == ["avx512_fp16"]
    old = parse(OLD_XEON)
    assert old["bf16_units"] == [] and not old["avx512_bf16"] and not old["amx"]
    empty = parse("")
    assert empty["cpu_model"] is None and empty["bf16_units"] == []


@pytest.mark.skipif(not shutil.which("lscpu") or not os.path.exists("/proc/cpuinfo"),
                    reason="needs lscpu and /proc/cpuinfo")
def test_machine_info_agrees_with_lscpu():
    info = machine.machine_info(["/cpu:0"])
    out = subprocess.run(["lscpu"], capture_output=True, text=True,
                         env=dict(os.environ, LC_ALL="C")).stdout
    fields = {k.strip(): v.strip() for k, _, v in
              (line.partition(":") for line in out.splitlines())}
    assert info["cpu_model"] == fields["Model name"]
    lscpu_flags = set(fields.get("Flags", "").split())
    assert info["avx512_bf16"] == ("avx512_bf16" in lscpu_flags)
    assert info["amx"] == ("amx_tile" in lscpu_flags)
    assert info["cpus_available"] <= info["logical_cpus"]


def test_benchmark_flags_are_the_options():
    """tools/perf/benchmark.py's flags give BenchmarkOptions field by field: the
    defaults are the dataclass's, and a parsed command line sets each field."""
    from absl import flags as absl_flags
    fv = absl_flags.FlagValues()
    benchmark.define_flags(fv)
    fv(["benchmark.py"])
    assert BenchmarkOptions.from_flags(fv) == BenchmarkOptions()
    fv = absl_flags.FlagValues()
    benchmark.define_flags(fv)
    fv(["benchmark.py", "--arch", "baseline", "--mixed_precision", "mixed_bfloat16",
        "--nopeak", "--mode", "both", "--flops_per_iteration", "3e9", "--num_replicas", "2"])
    options = BenchmarkOptions.from_flags(fv)
    assert (options.arch, options.mixed_precision, options.peak, options.mode,
            options.flops_per_iteration) == ("baseline", "mixed_bfloat16", False, "both", 3e9)
    assert fv.num_replicas == 2  # the devices, not an option


def test_profile_step_reads_op_times_from_the_profiler_trace():
    """The op profile of tools/perf/profile_step.py (sagan_tf.perf.op_profile):
    each op of a tiny function is found in the .xplane.pb with its type and
    the right count per call, and its time is positive; executor bookkeeping
    events are not ops."""

    @tf.function(autograph=False)
    def f(x):
        return tf.reduce_sum(tf.nn.relu(tf.matmul(x, x)))
    x = tf.random.normal([64, 64])
    f(x)
    table = op_profile.profile_ops(lambda: f(x).numpy(), steps=3)
    matmul = [k for k in table if "MatMul" in k]
    assert matmul, sorted(table)
    assert sum(table[k]["count"] for k in matmul) == 3
    assert all(table[k]["us"] > 0 for k in matmul)
    assert not any("::" in k or k.startswith("Memory") for k in table)
    by_name = op_profile.profile_ops(lambda: f(x).numpy(), steps=2, by_name=True)
    assert any(k.endswith(":" + matmul[0]) for k in by_name), sorted(by_name)


def test_benchmark_loop_alternates_loop_and_bare_blocks(tmp_path):
    """`tools/perf/benchmark_loop.py` on tiny records: one JSON line per 10 block
    pairs and a final one whose per-step times account for every timed step
    and whose overhead is the ratio of the two totals; the bare steps ran in
    another process (without the loop), and the kernels are named."""
    from sagan_tf.data import record_format
    rs = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    record_format.write_records(str(data / "part-0.tfrecords"),
                                rs.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
                                rs.integers(0, 3, 40))
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "perf", "benchmark_loop.py"), "--data_dir",
         str(data), "--number_classes", "3", "--gf_dim", "4", "--df_dim", "4",
         "--batch_size", "2", "--steps", "21", "--block", "1", "--warmup", "2",
         "--threads", "1"], capture_output=True, text=True, timeout=900,
        env=dict(TOOL_ENV, TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=str(scratch)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [x.get("steps") for x in lines[:-1]] == [10, 20, 21]
    final = lines[-1]
    assert final["config"]["steps"] == 21 and final["machine"]["cpu_model"]
    assert final["overhead"] == pytest.approx(
        final["loop_seconds_per_step"] / final["bare_seconds_per_step"] - 1.0, abs=1e-4)
    assert final["bare_worker_pid"] != final["loop_pid"]
    assert final["kernels"]["library"] in ("oneDNN", "Eigen")
    low, high = final["block_overhead_quartiles"]
    assert low <= final["block_overhead_median"] <= high
    assert not list(scratch.glob("benchmark_loop_*"))  # its scratch run directory is gone


@pytest.mark.parametrize("tool, flag", [
    ("perf/benchmark.py", "compare_tf1_reference"), ("perf/benchmark_loop.py", "--block"),
    ("perf/benchmark_resume.py", "--max_naive_step"), ("perf/profile_step.py", "--variants"),
    ("perf/tf1_reference_benchmark.py", "--trace_file"),
    ("parity/release_parity.py", "--sn_gradient")])
def test_measuring_tools_start_from_another_directory(tool, flag, tmp_path):
    """Each measuring tool imports the library normally (no path edits, no
    loading by file path): its --help works from any working directory and
    lists the tool's own flags."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", tool), "--help"],
                          capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
                          env=TOOL_ENV)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # absl's --help exits 1
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert flag in proc.stdout, proc.stdout[-3000:]
