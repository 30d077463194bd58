"""What a machine shows of its NVIDIA GPUs without TensorFlow, and why TensorFlow may see none.

Read without a GPU runtime (no TensorFlow import): the driver's presence
(``nvidia-smi`` on the PATH, ``/proc/driver/nvidia``) and version
(``nvidia-smi`` or ``/proc/driver/nvidia/version``), the ``/dev/nvidia*``
device nodes, the CUDA libraries installed as pip packages
(``nvidia-*-cu12``), ``CUDA_VISIBLE_DEVICES`` and ``CUDA_DEVICE_ORDER``, and
per GPU its memory in use (``nvidia-smi``). :func:`observe` collects them
into a :class:`MachineGpuState` (every reader replaceable in tests);
:func:`why_no_gpu` names each cause it can see of "a driver, but TensorFlow
sees no GPU" with its own fix.

GPU numbers: with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (:func:`use_pci_bus_order`,
set by every entry point before TensorFlow loads) TensorFlow numbers the GPUs
it sees in ``nvidia-smi``'s order; :func:`smi_indices` maps them back to
``nvidia-smi``'s numbers through ``CUDA_VISIBLE_DEVICES``.
"""
import dataclasses
import glob as globbing
import importlib.metadata
import os
import re
import shutil
import subprocess

__all__ = ["GPU_INSTALL_FIX", "DOCKER_GPU_FIX", "MIN_DRIVER", "MachineGpuState", "nvidia_driver",
           "gpus_hidden_on_purpose", "use_pci_bus_order", "observe", "why_no_gpu",
           "query_gpus", "parse_gpu_query", "smi_indices"]

#: What makes TensorFlow see the GPUs when its CUDA libraries are missing.
GPU_INSTALL_FIX = ("install TensorFlow with its CUDA libraries: pip install -e '.[gpu]' "
                   "(tensorflow[and-cuda]); check that nvidia-smi lists the GPUs and that "
                   "CUDA_VISIBLE_DEVICES does not hide them")
#: What a container needs to reach the GPUs.
DOCKER_GPU_FIX = ("start the container with GPU access: docker run --gpus all (NVIDIA "
                  "Container Toolkit), or request nvidia.com/gpu in Kubernetes")
#: CUDA major version -> the oldest Linux driver that runs it (NVIDIA's CUDA
#: compatibility table: minor-version compatibility within a major version).
MIN_DRIVER = {11: (450, 80, 2), 12: (525, 60, 13)}
_PROC_VERSION = "/proc/driver/nvidia/version"
_CUDA_PACKAGE = re.compile(r"^nvidia-[a-z0-9-]+-cu(\d+)$")


@dataclasses.dataclass(frozen=True)
class MachineGpuState:
    """What the machine shows of its NVIDIA GPUs (see :func:`observe`).

    ``driver``: where a driver shows (:func:`nvidia_driver`) or None;
    ``driver_version``: e.g. ``"535.104.05"`` or None; ``device_nodes``:
    the ``/dev/nvidia*`` paths; ``cuda_packages``: ``{package: version}`` of
    the installed ``nvidia-*-cuNN`` pip packages; ``visible_devices``:
    ``CUDA_VISIBLE_DEVICES`` or None; ``smi_gpus``: the GPUs ``nvidia-smi``
    lists (:func:`parse_gpu_query`), None when it cannot.
    """
    driver: str = None
    driver_version: str = None
    device_nodes: tuple = ()
    cuda_packages: dict = dataclasses.field(default_factory=dict)
    visible_devices: str = None
    smi_gpus: dict = None


def nvidia_driver(which=shutil.which, exists=os.path.exists):
    """Where this machine shows an NVIDIA driver -- ``"nvidia-smi (<path>)"`` or
    ``"/proc/driver/nvidia"`` -- or None. ``which`` and ``exists`` are
    ``shutil.which`` and ``os.path.exists`` (replaceable in tests)."""
    path = which("nvidia-smi")
    if path:
        return f"nvidia-smi ({path})"
    if exists("/proc/driver/nvidia"):
        return "/proc/driver/nvidia"
    return None


def gpus_hidden_on_purpose(environ=None):
    """True when ``CUDA_VISIBLE_DEVICES`` is set to ``''`` or ``-1``: the user hid the GPUs."""
    value = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    return value is not None and value.strip() in ("", "-1")


def use_pci_bus_order(environ=None):
    """Sets ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (``nvidia-smi``'s numbering) unless
    the user set it; CUDA's default numbers the fastest GPU first. Must run
    before TensorFlow initialises CUDA. Returns the order in effect."""
    environ = os.environ if environ is None else environ
    return environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")


_GPU_QUERY = ("nvidia-smi", "--query-gpu=index,uuid,memory.used,memory.total",
              "--format=csv,noheader,nounits")


def _smi(args, run):
    """``nvidia-smi`` ``args``' standard output, or None when it is missing or fails."""
    try:
        proc = run(list(args), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return None if proc.returncode else proc.stdout


def query_gpus(run=subprocess.run):
    """``{index: {"uuid", "used_mib", "total_mib"}}`` from ``nvidia-smi`` (its
    numbering), or None when it is not there or fails."""
    text = _smi(_GPU_QUERY, run)
    return None if text is None else parse_gpu_query(text)


def parse_gpu_query(text):
    """Parses ``nvidia-smi --query-gpu=index,uuid,memory.used,memory.total
    --format=csv,noheader,nounits`` output."""
    gpus = {}
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4 or not parts[0].isdigit():
            continue
        try:
            gpus[int(parts[0])] = {"uuid": parts[1], "used_mib": float(parts[2]),
                                   "total_mib": float(parts[3])}
        except ValueError:
            continue
    return gpus


def _driver_version(run, read):
    """The driver's version from ``nvidia-smi``, else from ``/proc/driver/nvidia/version``."""
    text = _smi(("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"), run)
    found = re.search(r"\b(\d+\.\d+(?:\.\d+)?)\b", text or "")
    if not found:
        try:
            found = re.search(r"Kernel Module\s+(\d+\.\d+(?:\.\d+)?)", read(_PROC_VERSION))
        except OSError:
            found = None
    return found.group(1) if found else None


def _read(path):
    with open(path) as f:
        return f.read()


def _cuda_packages(distributions):
    """``{name: version}`` of the installed ``nvidia-*-cuNN`` pip packages."""
    out = {}
    for dist in distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if _CUDA_PACKAGE.match(name):
            out[name] = dist.version
    return out


def observe(environ=None, run=subprocess.run, read=_read, glob=globbing.glob,
            which=shutil.which, exists=os.path.exists,
            distributions=importlib.metadata.distributions):
    """This machine's :class:`MachineGpuState`; each reader replaceable in tests
    (``run`` for ``nvidia-smi``, ``read`` for ``/proc`` files, ``glob`` for
    ``/dev/nvidia*``, ``distributions`` for the pip packages)."""
    environ = os.environ if environ is None else environ
    driver = nvidia_driver(which, exists)
    return MachineGpuState(
        driver=driver, driver_version=_driver_version(run, read) if driver else None,
        device_nodes=tuple(sorted(glob("/dev/nvidia*"))),
        cuda_packages=_cuda_packages(distributions),
        visible_devices=environ.get("CUDA_VISIBLE_DEVICES"),
        smi_gpus=query_gpus(run) if driver else None)


def _version_tuple(text):
    return tuple(int(p) for p in text.split("."))


def why_no_gpu(state, cuda_major):
    """Each cause :func:`observe` can see of "an NVIDIA driver, but TensorFlow
    sees no GPU", with its fix, as one text (``"<cause>: <fix>; also ..."``).

    ``cuda_major``: the CUDA major version TensorFlow was built with (12 for
    TensorFlow 2.15+). Causes, most specific first: ``CUDA_VISIBLE_DEVICES``
    naming no GPU, no ``/dev/nvidia*`` device nodes (a container without GPU
    access), a driver older than ``cuda_major`` needs, no CUDA libraries of
    that major version; none seen: :data:`GPU_INSTALL_FIX`.
    """
    causes = []
    visible = state.visible_devices
    if visible is not None and visible.strip() not in ("", "-1"):
        listed = (f"nvidia-smi lists {len(state.smi_gpus)} GPU(s), 0 .. "
                  f"{len(state.smi_gpus) - 1}" if state.smi_gpus else "nvidia-smi's numbers")
        causes.append(f"CUDA_VISIBLE_DEVICES={visible} may name no usable GPU: unset it or "
                      f"give GPUs that exist ({listed})")
    if not state.device_nodes:
        causes.append(f"no /dev/nvidia* device nodes (a container without GPU access): "
                      f"{DOCKER_GPU_FIX}")
    need = MIN_DRIVER.get(int(cuda_major)) if cuda_major else None
    if need and state.driver_version and _version_tuple(state.driver_version) < need:
        causes.append(f"driver {state.driver_version} is too old for CUDA {cuda_major}: "
                      f"upgrade the NVIDIA driver to {'.'.join(map(str, need))} or newer")
    majors = {int(_CUDA_PACKAGE.match(n).group(1)) for n in state.cuda_packages}
    if cuda_major and int(cuda_major) not in majors:
        have = (f" (installed: CUDA {', '.join(map(str, sorted(majors)))} packages)"
                if majors else "")
        causes.append(f"no CUDA {cuda_major} libraries (nvidia-*-cu{cuda_major} pip "
                      f"packages){have}: pip install -e '.[gpu]' (tensorflow[and-cuda]), or "
                      f"put a CUDA {cuda_major} installation's libraries on LD_LIBRARY_PATH")
    if not causes:
        return GPU_INSTALL_FIX
    return "; also ".join(causes)


def smi_indices(count, environ=None, smi_gpus=None):
    """``nvidia-smi``'s numbers of TensorFlow's GPUs 0 .. ``count``-1, or None
    when they cannot be known (``CUDA_DEVICE_ORDER`` not ``PCI_BUS_ID``, or
    ``CUDA_VISIBLE_DEVICES`` naming GPUs by UUID without ``smi_gpus``)."""
    environ = os.environ if environ is None else environ
    if environ.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST") != "PCI_BUS_ID":
        return None
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(range(count))
    by_uuid = {g["uuid"]: i for i, g in (smi_gpus or {}).items()}
    out = []
    for entry in [v.strip() for v in visible.split(",")][:count]:
        if entry.isdigit():
            out.append(int(entry))
        elif entry in by_uuid:
            out.append(by_uuid[entry])
        else:
            return None
    return out if len(out) == count else None
