"""Which CPU kernels run (sagan_tf/kernels.py): oneDNN on by default on x86, the
ISA oneDNN uses, the start line and config.json, and the warning of
mixed_bfloat16 on a CPU without bfloat16 units (CPU flags injected)."""
import json
import os
import subprocess
import sys

import pytest

from sagan_tf import kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: /proc/cpuinfo flags (abridged) of an AMD EPYC Zen 3: AVX2 and FMA, no AVX-512.
ZEN3 = frozenset("fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c bmi2 sha_ni vaes".split())
#: An Intel Sapphire Rapids: AVX-512 with VNNI and BF16, and AMX.
SPR = ZEN3 | frozenset("avx512f avx512bw avx512vl avx512dq avx512_vnni avx512_bf16 "
                       "avx512_fp16 amx_tile amx_int8 amx_bf16".split())


def test_onednn_on_by_default_on_x86_only_where_unset():
    env = {}
    assert kernels.use_onednn_by_default(env, "x86_64") and env == {"TF_ENABLE_ONEDNN_OPTS": "1"}
    env = {"TF_ENABLE_ONEDNN_OPTS": "0"}  # the user's choice stays
    assert not kernels.use_onednn_by_default(env, "x86_64")
    assert env == {"TF_ENABLE_ONEDNN_OPTS": "0"}
    env = {}
    assert not kernels.use_onednn_by_default(env, "aarch64") and env == {}
    assert kernels.use_onednn_by_default(env, "AMD64") and env["TF_ENABLE_ONEDNN_OPTS"] == "1"


def test_cpu_flags_and_onednn_isa():
    text = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx avx2 fma sse4_1\n\n" \
           "processor\t: 1\nflags\t\t: fpu\n"
    assert kernels.cpu_flags(text) == {"fpu", "avx", "avx2", "fma", "sse4_1"}
    assert kernels.cpu_flags("") == frozenset()
    assert kernels.cpu_isa(ZEN3) == "avx2"
    assert kernels.cpu_isa(SPR) == "avx512_core_amx"
    assert kernels.cpu_isa(SPR, "AVX2") == "avx2"  # ONEDNN_MAX_CPU_ISA caps it
    assert kernels.cpu_isa(SPR, "avx512_core_bf16") == "avx512_core_bf16"
    assert kernels.cpu_isa(ZEN3, "AVX512_CORE") == "avx2"  # a cap above the CPU's changes nothing
    assert kernels.cpu_isa(SPR, "no_such_isa") == "avx512_core_amx"
    assert kernels.cpu_isa(frozenset({"fpu"})) is None


def test_run_record_and_description():
    on = kernels.run_record({"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"}, SPR,
                            onednn=True)
    assert on == {"library": "oneDNN", "isa": "avx2", "TF_ENABLE_ONEDNN_OPTS": "1",
                  "ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert kernels.describe(on) == "oneDNN (avx2)"
    off = kernels.run_record({"TF_ENABLE_ONEDNN_OPTS": "0"}, ZEN3, onednn=False)
    assert off["library"] == "Eigen" and off["isa"] is None
    assert kernels.describe(off) == "Eigen (TF_ENABLE_ONEDNN_OPTS=0)"
    assert kernels.describe(kernels.run_record({}, ZEN3, onednn=False)) == "Eigen"


@pytest.mark.parametrize("env_value, library", [(None, "oneDNN"), ("0", "Eigen"), ("1", "oneDNN")])
def test_entry_points_load_tensorflow_with_onednn_unless_set(env_value, library):
    """cli.quiet_tensorflow (every entry point's and tool's start) loads TensorFlow
    with oneDNN on this x86 machine unless TF_ENABLE_ONEDNN_OPTS says otherwise."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if env_value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = env_value
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    code = ("import json; from sagan_tf import cli, kernels; cli.quiet_tensorflow(); "
            "print(json.dumps(kernels.run_record()))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(proc.stdout.splitlines()[-1])
    if kernels.platform.machine().lower() in ("x86_64", "amd64") or env_value == "1":
        assert record["library"] == library, record
    assert record["TF_ENABLE_ONEDNN_OPTS"] == (env_value or "1")


def test_bf16_warning_only_on_cpu_replicas_without_bf16_units():
    line = kernels.bf16_cost_warning("mixed_bfloat16", ["/cpu:0"], ZEN3)
    assert line.startswith("WARNING: --mixed_precision mixed_bfloat16") and "\n" not in line
    assert f"{kernels.BF16_EMULATED_SLOWDOWN}x slower" in line and "none" in line
    assert kernels.bf16_cost_warning("mixed_bfloat16", ["/cpu:0", "/cpu:1"], SPR) is None
    assert kernels.bf16_cost_warning("mixed_bfloat16", ["/gpu:0", "/gpu:1"], ZEN3) is None
    assert kernels.bf16_cost_warning("none", ["/cpu:0"], ZEN3) is None
    assert kernels.bf16_cost_warning("mixed_float16", ["/cpu:0"], ZEN3) is None
    only_amx = frozenset(ZEN3 | {"amx_bf16"})
    assert kernels.bf16_cost_warning("mixed_bfloat16", ["/cpu:0"], only_amx) is None


def test_training_start_warns_of_emulated_bf16(tmp_path, monkeypatch):
    """The start of a run with --mixed_precision mixed_bfloat16 on a CPU whose
    flags (injected) have no bf16 units prints the warning; config.json and
    the start line name the kernels."""
    import numpy as np
    from sagan_tf.data import record_format
    from sagan_tf.training.config import TrainConfig
    from sagan_tf.training.loop import train
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    record_format.write_records(str(data / "part-0.tfrecords"),
                                rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
                                rng.integers(0, 3, 8))
    monkeypatch.setattr(kernels, "cpu_flags", lambda text=None: ZEN3)
    config = TrainConfig(data_dir=str(data), checkpoint_dir=str(tmp_path / "run"),
                         image_size=32, gf_dim=4, df_dim=4, z_dim=8, number_classes=3,
                         batch_size=2, max_steps=1, seed=0,
                         mixed_precision="mixed_bfloat16", shuffle=False,
                         save_summaries_steps=0, log_every_steps=0, save_checkpoint_secs=0)
    lines = []
    train(config, log=lines.append)
    warnings = [line for line in lines if "mixed_bfloat16" in line]
    assert warnings == [kernels.bf16_cost_warning("mixed_bfloat16", ["/cpu:0"], ZEN3)]
    record = kernels.run_record(flags=ZEN3)
    start = next(line for line in lines if line.startswith("Replicas:"))
    assert f"; CPU kernels: {kernels.describe(record)}; " in start
    with open(os.path.join(config.logdir, "config.json")) as f:
        assert json.load(f)["kernels"] == record
