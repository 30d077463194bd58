"""What the machine shows of its NVIDIA GPUs without one (sagan_tf/training/nvidia.py).

Every reader is injected: nvidia-smi's output, /proc/driver/nvidia/version,
the /dev/nvidia* nodes, the installed pip packages, the environment. Each
cause of "a driver, but TensorFlow sees no GPU" must be named with its own
fix, and only when the machine shows it.
"""
import subprocess
import types

import pytest

from sagan_tf.training import nvidia

SMI_4 = "\n".join(f"{i}, GPU-{i:04d}, {u}, 81559" for i, u in enumerate([70000, 70000, 12, 0]))
PROC_VERSION = ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.57.02  Tue Jul 13 16:14:05 "
                "UTC 2021\nGCC version:  gcc version 9.3.0\n")


def _smi(outputs):
    """A stand-in ``subprocess.run`` for nvidia-smi: the query's argument -> stdout
    (missing: nvidia-smi fails)."""
    def run(argv, **_):
        for key, out in outputs.items():
            if key in " ".join(argv):
                return subprocess.CompletedProcess(argv, 0, out, "")
        return subprocess.CompletedProcess(argv, 9, "", "NVIDIA-SMI has failed")
    return run


def _dists(*names):
    return lambda: [types.SimpleNamespace(metadata={"Name": n}, version="12.5.82")
                    for n in names]


def _observe(smi=None, nodes=("/dev/nvidia0", "/dev/nvidiactl"), packages=(), environ=None,
             proc=PROC_VERSION):
    def read(path):
        if proc is None:
            raise FileNotFoundError(path)
        return proc
    return nvidia.observe(environ=environ or {}, run=_smi(smi or {}), read=read,
                          glob=lambda pattern: list(nodes),
                          which=lambda name: "/usr/bin/nvidia-smi",
                          exists=lambda p: True, distributions=_dists(*packages))


CU12 = ("nvidia-cudnn-cu12", "nvidia-cuda-runtime-cu12", "tensorflow", "numpy")


def test_observe_reads_driver_version_nodes_packages_and_gpus():
    state = _observe({"driver_version": "550.54.15\n550.54.15\n", "memory.used": SMI_4},
                     packages=CU12 + ("nvidia-cublas-cu11",), environ={"CUDA_VISIBLE_DEVICES": "2"})
    assert state.driver == "nvidia-smi (/usr/bin/nvidia-smi)"
    assert state.driver_version == "550.54.15"
    assert state.device_nodes == ("/dev/nvidia0", "/dev/nvidiactl")
    assert set(state.cuda_packages) == {"nvidia-cudnn-cu12", "nvidia-cuda-runtime-cu12",
                                        "nvidia-cublas-cu11"}
    assert state.visible_devices == "2" and state.smi_gpus[2]["used_mib"] == 12.0
    # nvidia-smi failing (a container without GPU access): the version from /proc.
    fallback = _observe()
    assert fallback.driver_version == "470.57.02" and fallback.smi_gpus is None
    assert _observe(proc=None).driver_version is None


def test_each_cause_is_named_with_its_own_fix():
    cuda = 12
    fine = _observe({"driver_version": "550.54.15"}, packages=CU12)
    assert nvidia.why_no_gpu(fine, cuda) == nvidia.GPU_INSTALL_FIX  # nothing seen: the checklist

    hidden = _observe({"driver_version": "550.54.15", "memory.used": SMI_4}, packages=CU12,
                      environ={"CUDA_VISIBLE_DEVICES": "7"})
    text = nvidia.why_no_gpu(hidden, cuda)
    assert text.startswith("CUDA_VISIBLE_DEVICES=7 may name no usable GPU: unset it")
    assert "nvidia-smi lists 4 GPU(s), 0 .. 3" in text and "pip install" not in text

    container = _observe({"driver_version": "550.54.15"}, nodes=(), packages=CU12)
    text = nvidia.why_no_gpu(container, cuda)
    assert text.startswith("no /dev/nvidia* device nodes (a container without GPU access): "
                           "start the container with GPU access: docker run --gpus all")
    assert "too old" not in text and "pip install" not in text

    old = _observe(packages=CU12)  # driver 470 from /proc
    text = nvidia.why_no_gpu(old, cuda)
    assert text == ("driver 470.57.02 is too old for CUDA 12: upgrade the NVIDIA driver to "
                    "525.60.13 or newer")
    old_cu11 = _observe(packages=("nvidia-cublas-cu11",))
    assert nvidia.why_no_gpu(old_cu11, 11) == nvidia.GPU_INSTALL_FIX  # 470 runs CUDA 11

    no_libraries = _observe({"driver_version": "550.54.15"}, packages=("nvidia-cublas-cu11",))
    text = nvidia.why_no_gpu(no_libraries, cuda)
    assert text.startswith("no CUDA 12 libraries (nvidia-*-cu12 pip packages) (installed: "
                           "CUDA 11 packages): pip install -e '.[gpu]'")

    everything = _observe(nodes=(), environ={"CUDA_VISIBLE_DEVICES": "3"})
    causes = nvidia.why_no_gpu(everything, cuda).split("; also ")
    assert [c.split(" ")[0] for c in causes] == ["CUDA_VISIBLE_DEVICES=3", "no", "driver", "no"]


def test_gpu_numbers_follow_nvidia_smi():
    pci = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert nvidia.smi_indices(4, pci) == [0, 1, 2, 3]
    assert nvidia.smi_indices(2, dict(pci, CUDA_VISIBLE_DEVICES="4,2")) == [4, 2]
    smi = nvidia.parse_gpu_query(SMI_4)
    assert nvidia.smi_indices(2, dict(pci, CUDA_VISIBLE_DEVICES="GPU-0003,1"), smi) == [3, 1]
    assert nvidia.smi_indices(1, dict(pci, CUDA_VISIBLE_DEVICES="GPU-ffff"), smi) is None
    assert nvidia.smi_indices(4, {}) is None  # CUDA's default order: fastest first
    assert nvidia.smi_indices(2, {"CUDA_DEVICE_ORDER": "FASTEST_FIRST"}) is None
    environ = {}
    assert nvidia.use_pci_bus_order(environ) == "PCI_BUS_ID" == environ["CUDA_DEVICE_ORDER"]
    user = {"CUDA_DEVICE_ORDER": "FASTEST_FIRST"}
    assert nvidia.use_pci_bus_order(user) == "FASTEST_FIRST"


def test_nvidia_smi_missing_or_failing_is_none():
    def missing(argv, **_):
        raise FileNotFoundError(argv[0])
    assert nvidia.query_gpus(missing) is None
    assert nvidia.query_gpus(_smi({})) is None
    assert nvidia.query_gpus(_smi({"memory.used": SMI_4}))[3] == {
        "uuid": "GPU-0003", "used_mib": 0.0, "total_mib": 81559.0}


@pytest.mark.parametrize("value, hidden", [("", True), ("-1", True), (" -1 ", True),
                                           ("0", False), (None, False)])
def test_hidden_on_purpose(value, hidden):
    environ = {} if value is None else {"CUDA_VISIBLE_DEVICES": value}
    assert nvidia.gpus_hidden_on_purpose(environ) is hidden
