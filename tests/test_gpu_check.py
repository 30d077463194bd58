"""The GPU check (tools/perf/gpu_benchmark.py, sagan_tf/perf/gpu_check.py) on a CPU-only machine.

What can be checked without a GPU: its decisions on simulated device
reports and nvidia-smi output, its flags, its refusal on a machine with a
driver but no visible GPU (a stand-in nvidia-smi on the PATH), and a dry run
of its phases on the CPU at tiny sizes.
"""
import json
import os
import subprocess
import sys

import pytest

from sagan_tf.perf import gpu_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "perf", "gpu_benchmark.py")


def _report(gpus=(), driver=None, hidden=False):
    return {"tensorflow": "2.21.0", "cuda_build": {"is_cuda_build": False},
            "gpus": [{"name": f"/physical_device:GPU:{i}", "device_name": name,
                      "compute_capability": "9.0"} for i, name in enumerate(gpus)],
            "driver": driver, "hidden": hidden, "tf32_default": True}


def test_device_report_verdicts():
    ok, text = gpu_check.check_device_report(_report(["NVIDIA H200"] * 2, "nvidia-smi (x)"))
    assert ok and text == "2 GPU(s): NVIDIA H200, NVIDIA H200"
    ok, text = gpu_check.check_device_report(_report(driver="/proc/driver/nvidia"))
    assert not ok and "NVIDIA driver (/proc/driver/nvidia) but TensorFlow 2.21.0 sees no GPU"\
        in text and "pip install -e '.[gpu]'" in text
    ok, text = gpu_check.check_device_report(_report())
    assert not ok and "no NVIDIA driver" in text and "--dry_run" in text
    ok, text = gpu_check.check_device_report(_report(driver="x", hidden=True))
    assert not ok and "CUDA_VISIBLE_DEVICES hides them" in text
    assert gpu_check.check_device_report(_report(driver="x"), dry_run=True)[0]


def test_evaluator_memory_check_from_nvidia_smi_output():
    """Memory per GPU before and while the evaluator ran on GPU 4: the others
    must not grow, GPU 4 must (and not be filled, with memory growth)."""
    def query(used):
        return gpu_check.parse_gpu_query("\n".join(
            f"{i}, GPU-{i:04d}, {u}, 81559" for i, u in enumerate(used)) + "\nbad line\n")
    baseline = query([70000, 70000, 70000, 70000, 0])
    assert baseline[4] == {"uuid": "GPU-0004", "used_mib": 0.0, "total_mib": 81559.0}
    during = [query([70000, 70010, 70000, 70000, 900]), query([70000, 70000, 70000, 70000,
                                                                2400])]
    fine = gpu_check.untouched_gpus(baseline, during, chosen=4)
    assert fine["others_untouched"] and fine["chosen_used"]
    assert fine["grew_mib"] == {0: 0.0, 1: 10.0, 2: 0.0, 3: 0.0, 4: 2400.0}
    assert fine["chosen_fraction"] == pytest.approx(2400 / 81559)
    touched = gpu_check.untouched_gpus(baseline, during + [query([70500, 70000, 70000, 70000,
                                                                  2400])], chosen=4)
    assert not touched["others_untouched"] and touched["grew_mib"][0] == 500.0
    assert not gpu_check.untouched_gpus(baseline, [baseline], chosen=4)["chosen_used"]


def test_training_runs_in_priority_order():
    assert gpu_check.train_order(["fp32", "bf16", "fp16"], 4) == [
        ("fp32", 1), ("fp32", 4), ("bf16", 4), ("fp16", 4), ("bf16", 1), ("fp16", 1)]
    assert gpu_check.train_order(["fp32", "bf16", "fp16"], 1) == [("fp32", 1), ("bf16", 1),
                                                              ("fp16", 1)]
    assert gpu_check.train_order(["fp32", "fp16"], 2, ["all"]) == [("fp32", 2), ("fp16", 2)]


def _tool(*args, env=None, timeout=120):
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_flags_are_checked_before_anything_runs(tmp_path):
    bad = _tool("--precisions", "fp32,fp8", "--out_dir", str(tmp_path / "a"))
    assert bad.returncode != 0 and "--precisions: unknown fp8" in bad.stderr
    bad = _tool("--replicas", "2", "--out_dir", str(tmp_path / "a"))
    assert bad.returncode != 0 and "--replicas: 1 and/or all" in bad.stderr
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "gpu_check.jsonl").write_text("{}\n")
    again = _tool("--out_dir", str(tmp_path / "b"))
    assert again.returncode != 0 and "gpu_check.jsonl exists" in again.stderr
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    assert "pass --out_dir or set $OUT" in _tool(env=env).stderr
    assert not (tmp_path / "a").exists()


def test_driver_without_visible_gpu_fails_the_check(tmp_path):
    """A machine whose nvidia-smi works but whose TensorFlow sees no GPU: the
    check fails (status 1) at the devices phase, naming the fix."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if k not in ("CUDA_VISIBLE_DEVICES", "TF_CPP_MIN_LOG_LEVEL")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    out = tmp_path / "out"
    proc = _tool("--out_dir", str(out), env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "gpu_benchmark: error: this machine has an NVIDIA driver (nvidia-smi (" in proc.stderr
    assert "pip install -e '.[gpu]'" in proc.stderr
    [line] = (out / "gpu_check.jsonl").read_text().splitlines()
    run = json.loads(line)
    assert run["name"] == "devices" and run["status"] == "failed (see result)"
    assert run["result"]["gpus"] == [] and run["result"]["driver"].startswith("nvidia-smi")
    assert "| devices | failed (see result) |" in (out / "summary.md").read_text()


def test_dry_run_runs_every_phase_on_the_cpu(tmp_path):
    """--dry_run: devices, data, forward, the training parity (two logical CPUs
    against the CPU's noise floor), the placement check, a training run of 2
    iterations on 2 logical CPU replicas, the evaluator on its checkpoint, a
    run with --xla, and the host cost (1 and 2 replicas) -- the phases' code
    on the CPU at tiny sizes -- each a JSON line, status 0."""
    out = tmp_path / "out"
    proc = _tool("--dry_run", "--precisions", "fp32", "--replicas", "all", "--iterations", "2",
                 "--eval_samples", "16", "--budget_s", "1500", "--out_dir", str(out),
                 timeout=1500)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = {r["name"]: r for r in map(json.loads, (out / "gpu_check.jsonl").read_text()
                                      .splitlines())}
    assert list(runs) == ["devices", "data", "forward", "parity", "placement", "train_fp32_x2",
                          "eval", "train_fp32_xla_x1", "host_cost"]
    assert all(r["status"] == "ok" for r in runs.values()), runs
    forward = runs["forward"]["result"]
    assert forward["device"] == "/cpu:0" and forward["tf32_off"]["generator"]["max_rel"] == 0.0
    host = runs["host_cost"]["result"]["variants"]
    assert set(host) == {"port_1", "port_2"}
    for name, replicas in (("port_1", 1), ("port_2", 2)):
        assert host[name]["replicas"] == replicas and host[name]["kernels_executed_per_replica"] > 0
        assert len(host[name]["kernels_per_replica"]) == replicas
        assert host[name]["microseconds_per_kernel"] == pytest.approx(
            1e6 * host[name]["seconds_per_iteration"]["median"]
            / host[name]["kernels_executed_per_replica"])
    assert host["port_2"]["cross_replica_reductions"] > 0 == host["port_1"][
        "cross_replica_reductions"]
    parity = runs["parity"]["result"]  # two logical CPUs: the same kernels, the same numbers
    assert parity["device"] == "/cpu:1" and parity["difference"]["weights"] == 0.0
    assert 0 < parity["floor"]["weights"] < 1e-3 and parity["ok"]
    placement = runs["placement"]["result"]
    assert placement["ok"] and placement["moved_to_cpu"] == []
    assert placement["ops_requested_on_replicas"] > 100
    xla = runs["train_fp32_xla_x1"]["result"]
    assert xla["xla"] and xla["steps"] == 2 and xla["finite"] and xla["num_replicas"] == 1
    assert host["port_1"]["placement"]["ok"]
    train = runs["train_fp32_x2"]["result"]
    assert train["num_replicas"] == 2 and train["global_batch_size"] == 4
    assert train["steps"] == 2 and train["finite"] and train["checkpoints"] == ["ckpt-1",
                                                                              "ckpt-2"]
    assert train["start_line"].startswith("Replicas: 2 on /cpu:0, /cpu:1 (CPU: ")
    assert train["applied_steps"] == {"g": 2, "d": 2}
    evaluation = runs["eval"]["result"]
    assert evaluation["device"] == "cpu" and evaluation["evaluation"]["num_samples"] == 16
    assert "Evaluating on CPU (--device cpu); TF32 off" in evaluation["device_line"]
    summary = (out / "summary.md").read_text()
    assert "dry run (CPU, tiny sizes): not a measurement" in summary
    assert "| train_fp32_x2 | ok |" in summary
    assert json.loads((out / "summary.json").read_text())["dry_run"] is True


def test_a_phase_skipped_for_time_is_not_a_failure():
    ok = {"name": "devices", "status": "ok"}
    skipped = {"name": "host_cost", "status": gpu_check.SKIPPED_FOR_TIME}
    assert gpu_check.exit_status(True, [ok, skipped]) == 0
    assert gpu_check.exit_status(False, [ok]) == 1
    for status in ("failed (see result)", "timed out after 120 s",
                   "skipped (no checkpoint: the first training run did not pass)"):
        assert gpu_check.exit_status(True, [ok, skipped, {"status": status}]) == 1


def test_training_parity_verdict_against_the_noise_floor():
    """The GPU's difference from the CPU passes up to PARITY_FLOOR_FACTOR times
    the CPU's own (another Grappler setting); a floor of 0 (identical
    kernels) is held to 1e-6."""
    import numpy as np
    assert gpu_check.parity_verdict(3e-5, floor=4e-7)
    assert not gpu_check.parity_verdict(1e-3, floor=4e-7)
    assert gpu_check.parity_verdict(5e-5, floor=0.0)
    assert not gpu_check.parity_verdict(2e-4, floor=0.0)
    before = [np.zeros(4), np.ones(2)]
    want = [np.array([0.1, -0.1, 0.1, 0.0]), np.ones(2)]
    got = [np.array([0.1, -0.1, 0.1, 0.03]), np.ones(2)]
    # |got - want| = 0.03 against an update of norm sqrt(3) * 0.1.
    assert gpu_check._update_difference(got, want, before) == pytest.approx(
        0.03 / (3 ** 0.5 * 0.1))


def test_device_report_names_the_cause_seen():
    report = _report(driver="nvidia-smi (x)")
    report["why_no_gpu"] = "no /dev/nvidia* device nodes (a container without GPU access): x"
    ok, text = gpu_check.check_device_report(report)
    assert not ok and text.endswith("sees no GPU (CUDA build: False): no /dev/nvidia* device "
                                    "nodes (a container without GPU access): x")
