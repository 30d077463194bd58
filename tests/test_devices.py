"""Which devices training, evaluation and the tools use (sagan_tf/training/devices.py).

The GPUs are simulated: the choices take the device list and the driver's
presence as arguments, and the command-line tests put a stand-in
``nvidia-smi`` on the PATH of a machine whose TensorFlow sees no GPU (what a
GPU machine with a CPU-only TensorFlow looks like).
"""
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.training import devices
from sagan_tf.data import record_format
from sagan_tf.training.config import TrainConfig
from sagan_tf.training.devices import DeviceError, plan_single_device, plan_training_devices
from sagan_tf.training.trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPUS5 = [f"/physical_device:GPU:{i}" for i in range(5)]
DRIVER = "nvidia-smi (/usr/bin/nvidia-smi)"


# ----------------------------------------------------------------------------
# Training: --num_towers, the driver check, --allow_cpu.

def test_num_towers_takes_the_first_gpus_and_leaves_the_spare():
    plan = plan_training_devices(4, GPUS5, DRIVER)
    assert plan.kind == "gpu" and plan.devices == ("/gpu:0", "/gpu:1", "/gpu:2", "/gpu:3")
    assert plan.visible_gpus == 5 and "the first 4 of 5 visible GPUs" in plan.note
    assert plan_training_devices(4, GPUS5[:4]).devices == ("/gpu:0", "/gpu:1", "/gpu:2",
                                                           "/gpu:3")
    assert plan_training_devices(1, GPUS5).devices == ("/gpu:0",)
    every = plan_training_devices(0, GPUS5)
    assert len(every.devices) == 5 and "every visible GPU" in every.note


def test_fewer_gpus_than_towers_is_an_error_naming_the_fix():
    with pytest.raises(DeviceError) as e:
        plan_training_devices(4, GPUS5[:2], DRIVER)
    message = str(e.value)
    assert "--num_towers 4 needs 4 GPUs but TensorFlow sees 2 (GPU:0, GPU:1)" in message
    assert "pass --num_towers 2" in message and "CUDA_VISIBLE_DEVICES" in message
    with pytest.raises(DeviceError, match="--num_cpu_replicas 2 is for machines without GPUs"):
        plan_training_devices(1, GPUS5, num_cpu_replicas=2)
    with pytest.raises(DeviceError, match="must be >= 0"):
        plan_training_devices(-1, GPUS5)


def test_driver_without_visible_gpu_is_an_error_unless_allowed():
    with pytest.raises(DeviceError) as e:
        plan_training_devices(4, [], DRIVER)
    message = str(e.value)
    assert f"NVIDIA driver ({DRIVER}) but TensorFlow sees no GPU" in message
    assert "pip install -e '.[gpu]'" in message and "--allow_cpu" in message
    allowed = plan_training_devices(4, [], DRIVER, allow_cpu=True)
    assert allowed.kind == "cpu" and allowed.devices == ("/cpu:0",)
    assert "--allow_cpu" in allowed.note and "--num_towers 4 counts GPUs" in allowed.note
    hidden = plan_training_devices(4, [], DRIVER, hidden=True)  # CUDA_VISIBLE_DEVICES=''
    assert hidden.devices == ("/cpu:0",) and "CUDA_VISIBLE_DEVICES hides" in hidden.note
    no_driver = plan_training_devices(4, [], None, num_cpu_replicas=2)
    assert no_driver.devices == ("/cpu:0", "/cpu:1") and "no GPU on this machine" in no_driver.note


def test_driver_and_hidden_gpus_are_read_from_the_machine():
    assert devices.nvidia_driver(which=lambda name: None, exists=lambda p: False) is None
    assert devices.nvidia_driver(which=lambda name: f"/opt/bin/{name}",
                                 exists=lambda p: False) == "nvidia-smi (/opt/bin/nvidia-smi)"
    assert devices.nvidia_driver(which=lambda name: None,
                                 exists=lambda p: p == "/proc/driver/nvidia") == \
        "/proc/driver/nvidia"
    assert devices.gpus_hidden_on_purpose({"CUDA_VISIBLE_DEVICES": ""})
    assert devices.gpus_hidden_on_purpose({"CUDA_VISIBLE_DEVICES": "-1"})
    assert not devices.gpus_hidden_on_purpose({"CUDA_VISIBLE_DEVICES": "0,1"})
    assert not devices.gpus_hidden_on_purpose({})


def test_start_line_names_devices_replicas_and_global_batch():
    strategy = types.SimpleNamespace(num_replicas_in_sync=4, extended=types.SimpleNamespace(
        worker_devices=[f"/job:localhost/replica:0/task:0/device:GPU:{i}" for i in range(4)]))
    line = devices.describe_replicas(strategy, plan_training_devices(4, GPUS5), 64)
    assert line == ("Replicas: 4 on /gpu:0, /gpu:1, /gpu:2, /gpu:3 (--num_towers 4, the first "
                    "4 of 5 visible GPUs); global batch = 64 per replica x 4 = 256")


def test_trainer_turns_tf32_off_unless_allowed(strategy2):
    """TF32 is a process-wide runtime switch (no graph op shows it): the
    trainer sets it from the config, off by default."""
    was = tf.config.experimental.tensor_float_32_execution_enabled()
    base = dict(image_size=32, gf_dim=4, df_dim=4, z_dim=8, number_classes=3, batch_size=2,
                seed=0, generator_type="baseline", discriminator_type="baseline")
    try:
        tf.config.experimental.enable_tensor_float_32_execution(True)  # TensorFlow's default
        Trainer(TrainConfig(**base), strategy2)
        assert not tf.config.experimental.tensor_float_32_execution_enabled()
        Trainer(TrainConfig(**base, allow_tf32=True), strategy2)
        assert tf.config.experimental.tensor_float_32_execution_enabled()
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(was)


# ----------------------------------------------------------------------------
# Evaluation and the tools: one device.

def test_single_device_choice():
    assert devices.parse_device("gpu:4") == ("gpu", 4)
    assert devices.parse_device("/device:GPU:2") == ("gpu", 2)
    assert devices.parse_device("CPU") == ("cpu", None)
    assert devices.parse_device("auto") == ("auto", None)
    for bad in ("gpu", "tpu:0", "gpu:x"):
        with pytest.raises(DeviceError, match="expected auto, cpu or gpu:N"):
            devices.parse_device(bad)
    index, text = plan_single_device("auto", GPUS5)
    assert index == 4 and "the last visible GPU" in text and "memory growth" in text
    assert plan_single_device("gpu:4", GPUS5)[0] == 4
    assert plan_single_device("gpu:0", GPUS5)[0] == 0
    assert plan_single_device("cpu", GPUS5) == (None, "CPU (--device cpu)")
    with pytest.raises(DeviceError, match=r"sees 5 GPU\(s\), gpu:0 \.\. gpu:4"):
        plan_single_device("gpu:5", GPUS5)
    assert plan_single_device("auto", [])[0] is None
    with pytest.raises(DeviceError, match="sees no GPU on this machine; pass --device cpu"):
        plan_single_device("gpu:0", [])
    with pytest.raises(DeviceError, match=r"NVIDIA driver .* '\.\[gpu\]'.*--device cpu"):
        plan_single_device("auto", [], DRIVER)
    assert plan_single_device("cpu", [], DRIVER)[0] is None
    assert plan_single_device("auto", [], DRIVER, hidden=True)[0] is None


# ----------------------------------------------------------------------------
# The command lines on a machine with a driver whose TensorFlow sees no GPU.

@pytest.fixture(scope="module")
def driver_env(tmp_path_factory):
    """The environment of a machine with an NVIDIA driver (a stand-in
    nvidia-smi on the PATH) whose TensorFlow has no CUDA: no GPU visible,
    none hidden on purpose."""
    bin_dir = tmp_path_factory.mktemp("driver_bin")
    fake = bin_dir / "nvidia-smi"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    # Neither CUDA_VISIBLE_DEVICES (it would hide the GPUs on purpose) nor
    # TF_CPP_MIN_LOG_LEVEL (the quiet start then filters TensorFlow's notices).
    env = {k: v for k, v in os.environ.items()
           if k not in ("CUDA_VISIBLE_DEVICES", "TF_CPP_MIN_LOG_LEVEL")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=ROOT)
    return env


def _run_all(commands, env, timeout=300):
    """Runs ``[argv, ...]`` (Python scripts) at the same time; returns their
    ``(returncode, stdout, stderr)`` in order."""
    procs = [subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for argv in commands]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        results.append((proc.returncode, out, err))
    return results


def test_training_with_a_driver_but_no_visible_gpu(driver_env, tmp_path):
    """Refused with one line naming the fix; --allow_cpu trains on the CPU and
    says so in the start line and config.json."""
    data = tmp_path / "data"
    data.mkdir()
    record_format.write_records(str(data / "part-0.tfrecords"),
                                np.zeros((4, 32, 32, 3), np.uint8), np.arange(4) % 3)
    argv = [os.path.join(ROOT, "train_imagenet.py"), f"--data_dir={data}",
            f"--checkpoint_dir={tmp_path / 'ckpt'}", "--image_size=32", "--number_classes=3",
            "--gf_dim=4", "--df_dim=4", "--z_dim=8", "--batch_size=2", "--max_steps=0",
            "--generator_type=baseline", "--discriminator_type=baseline", "--seed=0"]
    on_cpu = argv + ["--allow_cpu", f"--checkpoint_dir={tmp_path / 'cpu'}"]
    (rc, _, err), (rc_cpu, out_cpu, err_cpu) = _run_all([argv, on_cpu], driver_env)
    assert rc == 2, err
    [line] = [ln for ln in err.splitlines() if ln.strip()]
    assert line.startswith("train_imagenet.py: error: this machine has an NVIDIA driver "
                           "(nvidia-smi (")
    assert "pip install -e '.[gpu]'" in line and "--allow_cpu" in line
    assert not (tmp_path / "ckpt").exists()
    assert rc_cpu == 0, err_cpu[-3000:]
    [start] = [ln for ln in out_cpu.splitlines() if ln.startswith("Replicas:")]
    assert start.startswith("Replicas: 1 on /cpu:0 (CPU: --allow_cpu: TensorFlow sees no GPU "
                            "although a driver is present (nvidia-smi (")
    assert "global batch = 2 per replica x 1 = 2; TF32 off" in start
    stored = json.loads((tmp_path / "cpu" / "imagenet_2" / "config.json").read_text())
    assert stored["allow_cpu"] is True and stored["devices"]["replica_devices"] == ["/cpu:0"]
    assert stored["devices"]["num_replicas"] == 1 and stored["devices"]["global_batch_size"] == 2


def test_evaluation_and_tools_with_a_driver_but_no_visible_gpu(driver_env, tmp_path):
    """--device auto is refused with the fix; --device cpu goes on (and fails
    later, on the missing run directory)."""
    missing = str(tmp_path / "no_run")
    commands = [[os.path.join(ROOT, "eval_imagenet.py"), f"--checkpoint_dir={missing}"],
                [os.path.join(ROOT, "tools", "sample.py"), f"--checkpoint_dir={missing}",
                 f"--output={tmp_path / 'x.png'}"]]
    results = _run_all(commands + [argv + ["--device=cpu"] for argv in commands], driver_env)
    for argv, (rc, _, err) in zip(commands, results[:2]):
        assert rc == 2, err
        assert err.strip().splitlines()[-1].startswith(
            f"{os.path.basename(argv[0])}: error: --device auto: this machine has an NVIDIA "
            "driver"), err
    for rc, _, err in results[2:]:
        assert rc == 2 and "does not exist" in err and "NVIDIA driver" not in err, err


def test_gpu_install_is_the_one_the_errors_name():
    """setup.py's `gpu` extra is TensorFlow's CUDA build of the same version
    range; the README installs it, and the driver errors name it."""
    import ast
    with open(os.path.join(ROOT, "setup.py")) as f:
        call = next(node for node in ast.walk(ast.parse(f.read()))
                    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup")
    keywords = {k.arg: ast.literal_eval(k.value) for k in call.keywords
                if k.arg in ("install_requires", "extras_require")}
    [plain] = [r for r in keywords["install_requires"] if r.startswith("tensorflow>=")]
    gpu = [plain.replace("tensorflow", "tensorflow[and-cuda]")]
    assert keywords["extras_require"]["gpu"] == gpu
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert 'python3 -m pip install -e ".[gpu,test]"' in readme
    assert "pip install -e '.[gpu]'" in devices.GPU_INSTALL_FIX


def test_start_line_and_record_of_the_default_strategy():
    """The default strategy has no device list: the line and the record say
    what they know."""
    strategy = tf.distribute.get_strategy()
    assert devices.describe_replicas(strategy, None, 8) == (
        "Replicas: 1; global batch = 8 per replica x 1 = 8")
    record = devices.run_record(strategy, None, 8)
    assert record["replica_devices"] == [] and record["global_batch_size"] == 8


@pytest.fixture
def five_fake_gpus(monkeypatch):
    """Five simulated physical GPUs, no driver file checks, nothing hidden,
    and TensorFlow's device-configuration calls recorded instead of made."""
    gpus = [tf.config.PhysicalDevice(name=name, device_type="GPU") for name in GPUS5]
    calls = []
    monkeypatch.setattr(devices, "_physical_gpus", lambda: gpus)
    monkeypatch.setattr(devices, "nvidia_driver", lambda: DRIVER)
    monkeypatch.setattr(devices, "gpus_hidden_on_purpose", lambda: False)
    monkeypatch.setattr(tf.config, "set_visible_devices",
                        lambda chosen, kind: calls.append(("visible", list(chosen), kind)))
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth",
                        lambda gpu, on: calls.append(("growth", gpu, on)))
    was = tf.config.experimental.tensor_float_32_execution_enabled()
    yield gpus, calls
    tf.config.experimental.enable_tensor_float_32_execution(was)


def test_configured_devices_hide_the_other_gpus(five_fake_gpus):
    """What is applied: the trainer's process sees only its first 4 GPUs; the
    evaluator's only GPU 4, with memory growth, TF32 off unless allowed."""
    gpus, calls = five_fake_gpus
    plan = devices.configure_training_devices(4)
    assert plan.devices == ("/gpu:0", "/gpu:1", "/gpu:2", "/gpu:3")
    assert calls == [("visible", gpus[:4], "GPU")]
    calls.clear()
    tf.config.experimental.enable_tensor_float_32_execution(True)
    text = devices.configure_single_device("gpu:4")
    assert calls == [("visible", [gpus[4]], "GPU"), ("growth", gpus[4], True)]
    assert text.startswith("GPU:4 of 5 visible (--device gpu:4; memory growth")
    assert not tf.config.experimental.tensor_float_32_execution_enabled()
    calls.clear()
    devices.configure_single_device("cpu", allow_tf32=True)
    assert calls == [("visible", [], "GPU")]
    assert tf.config.experimental.tensor_float_32_execution_enabled()


# ----------------------------------------------------------------------------
# The first day on GPUs: the causes of an invisible GPU, nvidia-smi's numbers,
# --device auto by memory in use, visibility that cannot apply any more.

def test_driver_without_gpu_names_the_cause_seen_on_the_machine(five_fake_gpus, monkeypatch):
    """configure_* read the machine (nvidia.observe, injected here): a driver
    too old for this TensorFlow's CUDA is named with its fix, not the install."""
    from sagan_tf.training import nvidia
    monkeypatch.setattr(devices, "_physical_gpus", lambda: [])
    monkeypatch.setattr(devices, "cuda_major", lambda: 12)
    state = nvidia.MachineGpuState(driver=DRIVER, driver_version="470.57.02",
                                   device_nodes=("/dev/nvidia0",),
                                   cuda_packages={"nvidia-cudnn-cu12": "9.3"})
    monkeypatch.setattr(nvidia, "observe", lambda: state)
    for call in (lambda: devices.configure_training_devices(4),
                 lambda: devices.configure_single_device("auto")):
        with pytest.raises(DeviceError) as e:
            call()
        message = str(e.value)
        assert "driver 470.57.02 is too old for CUDA 12: upgrade the NVIDIA driver to " \
               "525.60.13 or newer" in message
        assert "pip install" not in message


def test_start_line_names_nvidia_smi_numbers(five_fake_gpus, monkeypatch):
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert devices.training_plan(4).note == ("--num_towers 4, the first 4 of 5 visible GPUs; "
                                             "nvidia-smi GPUs 0, 1, 2, 3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7,6,5,4,3")
    assert devices.training_plan(2).note.endswith("; nvidia-smi GPUs 7, 6")
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "FASTEST_FIRST")
    assert "nvidia-smi's numbers of these GPUs unknown (CUDA_DEVICE_ORDER is not PCI_BUS_ID" \
        in devices.training_plan(2).note
    assert plan_training_devices(1, GPUS5, smi_numbers=[3]).note == (
        "--num_towers 1, the first 1 of 5 visible GPUs; nvidia-smi GPU 3")


def test_entry_points_number_gpus_as_nvidia_smi(monkeypatch):
    """cli.quiet_tensorflow sets CUDA_DEVICE_ORDER=PCI_BUS_ID unless the user chose."""
    from sagan_tf import cli
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    cli.quiet_tensorflow()
    assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "FASTEST_FIRST")
    cli.quiet_tensorflow()
    assert os.environ["CUDA_DEVICE_ORDER"] == "FASTEST_FIRST"


def test_device_auto_avoids_the_training_gpus():
    busy, free = 70000.0, 300.0
    assert devices.choose_auto_gpu(5, [busy] * 4 + [free])[0::2] == (4, None)
    # The evaluator on GPU 0, the trainer on 1-4: still a free GPU.
    index, how, warning = devices.choose_auto_gpu(5, [free] + [busy] * 4)
    assert (index, warning) == (0, None) and "without memory in use" in how
    # A 4-GPU machine with the trainer on all four: the least used, with a warning.
    index, how, warning = devices.choose_auto_gpu(4, [busy, busy, 60000.0, busy])
    assert index == 2 and "least used" in how
    assert warning == ("--device auto: every visible GPU has memory in use (GPU:0 70000 MiB, "
                       "GPU:1 70000 MiB, GPU:2 60000 MiB, GPU:3 70000 MiB): sharing GPU:2 with "
                       "the process on it (a trainer?), which can run out of memory; choose "
                       "with --device gpu:N (or CUDA_VISIBLE_DEVICES)")
    index, _, warning = devices.choose_auto_gpu(4, None)
    assert index == 3 and "may be one the trainer uses" in warning and "\n" not in warning
    assert devices.choose_auto_gpu(1, None) == (0, "the last visible GPU, --device auto", None)
    warned = []
    assert plan_single_device("auto", GPUS5[:4], used_mib=[busy] * 4, warn=warned.append)[0] == 3
    assert len(warned) == 1 and "sharing GPU:3" in warned[0]


def test_configured_device_auto_reads_nvidia_smi(five_fake_gpus, monkeypatch):
    """configure_single_device('auto') maps nvidia-smi's memory figures to
    TensorFlow's numbers (CUDA_VISIBLE_DEVICES keeps GPUs 1-4, renumbered 0-3)."""
    from sagan_tf.training import nvidia
    gpus, calls = five_fake_gpus
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,2,3,4,0")
    used = [300, 70000, 70000, 70000, 70000]  # nvidia-smi's numbering: GPU 0 is free
    query = lambda: nvidia.parse_gpu_query("\n".join(  # noqa: E731
        f"{i}, GPU-{i}, {u}, 81559" for i, u in enumerate(used)))
    warned = []
    text = devices.configure_single_device("auto", query_gpus=query, warn=warned.append)
    assert calls[0] == ("visible", [gpus[4]], "GPU") and not warned
    assert text.startswith("GPU:4 of 5 visible (the last visible GPU without memory in use")
    assert text.endswith("; nvidia-smi GPU 0")
    used[0] = 50000
    calls.clear()
    devices.configure_single_device("auto", query_gpus=query, warn=warned.append)
    assert calls[0] == ("visible", [gpus[4]], "GPU") and "sharing GPU:4" in warned[0]


def test_visibility_that_cannot_apply_is_an_error(five_fake_gpus, monkeypatch):
    """If TensorFlow's runtime started before the trainer hid the other GPUs,
    the trainer would take every GPU: an error, not a silent success."""
    def started(chosen, kind):
        raise RuntimeError("Visible devices cannot be modified after being initialized")
    monkeypatch.setattr(tf.config, "set_visible_devices", started)
    with pytest.raises(DeviceError, match=r"the trainer's GPUs \(/gpu:0, /gpu:1, /gpu:2, "
                                          r"/gpu:3\) can no longer be chosen"):
        devices.configure_training_devices(4)
    with pytest.raises(DeviceError, match="can no longer be chosen"):
        devices.apply_training_plan(plan_training_devices(1, GPUS5))
    devices.apply_training_plan(plan_training_devices(4, [], allow_cpu=True))  # CPU: nothing
    with pytest.raises(RuntimeError, match="already started"):
        devices.configure_single_device("gpu:1")
