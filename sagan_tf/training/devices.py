"""Which devices a run uses: the trainer's replicas, the one device of the evaluator and the tools.

Training (``train_imagenet.py``): ``--num_towers N`` takes the first N GPUs
TensorFlow sees, as the release's towers ``/gpu:0`` .. ``/gpu:N-1`` did; fewer
visible GPUs is an error naming the count and the fix, never a silent change
of the global batch (``--batch_size`` x N). The other GPUs are hidden from the
trainer's process (no memory reserved on them), so with 5 GPUs and the
default ``--num_towers 4`` the fifth stays free for the evaluator.
``--num_towers 0`` takes every visible GPU. A machine without GPUs trains on
the CPU (one replica, or ``--num_cpu_replicas`` logical CPUs), unless it has
an NVIDIA driver (``nvidia-smi`` on the PATH, ``/proc/driver/nvidia``) and
TensorFlow still sees no GPU: that is a TensorFlow without CUDA libraries,
and an error naming the fix (``pip install -e '.[gpu]'``) unless
``--allow_cpu`` (or ``CUDA_VISIBLE_DEVICES=''`` / ``-1``, which hides the GPUs
on purpose).

Evaluation and the tools (``--device``): one device, ``gpu:N``, ``cpu``, or
``auto`` (the last visible GPU: the spare one of the 4+1 layout; the CPU
without GPUs), with memory growth, every other GPU hidden from the process.

TF32: TensorFlow runs float32 convolutions and matmuls in TF32 on Ampere and
newer GPUs by default; the release's GPUs had none, so it is off unless asked
for (``--allow_tf32``, :func:`set_tf32`).

The choices (:func:`plan_training_devices`, :func:`plan_single_device`) take
the device list and the driver's presence as arguments; the ``configure_*``
functions read them from TensorFlow and the machine and apply them. Applying
must happen before TensorFlow runs its first op (device visibility and memory
growth are fixed when its runtime starts).
"""
import dataclasses
import os
import re
import shutil

__all__ = ["DeviceError", "DevicePlan", "GPU_INSTALL_FIX", "nvidia_driver",
           "gpus_hidden_on_purpose", "plan_training_devices", "training_plan",
           "show_only_first_gpus", "configure_training_devices",
           "parse_device", "plan_single_device", "configure_single_device", "set_tf32",
           "describe_replicas", "run_record"]

#: What makes TensorFlow see the GPUs of a machine with an NVIDIA driver.
GPU_INSTALL_FIX = ("install TensorFlow with its CUDA libraries: pip install -e '.[gpu]' "
                   "(tensorflow[and-cuda]); check that nvidia-smi lists the GPUs and that "
                   "CUDA_VISIBLE_DEVICES does not hide them")


class DeviceError(ValueError):
    """The devices asked for do not exist, or the GPUs are not usable; names the fix."""


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


@dataclasses.dataclass(frozen=True)
class DevicePlan:
    """The devices of a training run.

    ``kind`` "gpu" or "cpu"; ``devices`` the replicas' TensorFlow device names
    (``/gpu:0`` ..., ``/cpu:0`` ...) after the GPUs beyond them are hidden;
    ``visible_gpus`` how many GPUs TensorFlow saw; ``note`` why these devices
    (for the start line).
    """
    kind: str
    devices: tuple
    visible_gpus: int
    note: str


def plan_training_devices(num_towers, gpus, driver=None, allow_cpu=False, num_cpu_replicas=0,
                          hidden=False):
    """The replicas of a mirrored training run.

    Args:
      num_towers: GPUs to use, the first ones (0: all visible GPUs).
      gpus: names of the GPUs TensorFlow sees, in its order.
      driver: :func:`nvidia_driver`'s answer (None: no NVIDIA driver).
      allow_cpu: train on the CPU even though a driver is present.
      num_cpu_replicas: CPU-only: logical CPU replicas (0 or 1: one).
      hidden: :func:`gpus_hidden_on_purpose`.

    Returns:
      A :class:`DevicePlan`.

    Raises:
      DeviceError: fewer GPUs than ``num_towers``; GPUs and
        ``num_cpu_replicas > 1``; a driver but no GPU, without ``allow_cpu``.
    """
    num_towers, num_cpu_replicas = int(num_towers), int(num_cpu_replicas or 0)
    if num_towers < 0:
        raise DeviceError(f"--num_towers must be >= 0 (0: every visible GPU), got {num_towers}")
    count = len(gpus)
    if count:
        if num_cpu_replicas > 1:
            raise DeviceError(
                f"--num_cpu_replicas {num_cpu_replicas} is for machines without GPUs, but "
                f"TensorFlow sees {count} GPU(s); drop --num_cpu_replicas (the GPUs are the "
                f"replicas, --num_towers) or hide the GPUs with CUDA_VISIBLE_DEVICES=''")
        if num_towers > count:
            raise DeviceError(
                f"--num_towers {num_towers} needs {num_towers} GPUs but TensorFlow sees "
                f"{count} ({', '.join(_short(g) for g in gpus)}); pass --num_towers {count} "
                f"(the global batch is --batch_size x --num_towers: raise --batch_size to "
                f"keep it) or make more GPUs visible (CUDA_VISIBLE_DEVICES)")
        used = num_towers or count
        which = ("--num_towers 0: every visible GPU" if not num_towers else
                 f"--num_towers {num_towers}" + (f", the first {used} of {count} visible GPUs"
                                                 if used < count else ""))
        return DevicePlan("gpu", tuple(f"/gpu:{i}" for i in range(used)), count, which)
    if driver and not allow_cpu and not hidden:
        raise DeviceError(
            f"this machine has an NVIDIA driver ({driver}) but TensorFlow sees no GPU: "
            f"{GPU_INSTALL_FIX}. To train on the CPU anyway, pass --allow_cpu")
    replicas = max(num_cpu_replicas, 1)
    if hidden:
        why = "CUDA_VISIBLE_DEVICES hides the GPUs"
    elif driver:
        why = f"--allow_cpu: TensorFlow sees no GPU although a driver is present ({driver})"
    else:
        why = "no GPU on this machine"
    cpus = f"; --num_cpu_replicas {num_cpu_replicas}" if replicas > 1 else ""
    note = f"CPU: {why}{cpus}; --num_towers {num_towers} counts GPUs"
    return DevicePlan("cpu", tuple(f"/cpu:{i}" for i in range(replicas)), 0, note)


def _short(name):
    """``/physical_device:GPU:3`` -> ``GPU:3``."""
    return name.rsplit("/", 1)[-1].replace("physical_device:", "")


def _physical_gpus():
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    return tf.config.list_physical_devices("GPU")


def _show_only(gpus, memory_growth=False):
    """Makes ``gpus`` (physical devices) the only GPUs of this process. After
    TensorFlow's runtime has started this cannot change any more: returns
    False then (the devices keep what they had)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    try:
        tf.config.set_visible_devices(list(gpus), "GPU")
        for gpu in gpus:
            if memory_growth:
                tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:  # the runtime is initialised: visibility is fixed
        return False
    return True


def training_plan(num_towers, allow_cpu=False, num_cpu_replicas=0):
    """:func:`plan_training_devices` for this machine's GPUs, driver and
    ``CUDA_VISIBLE_DEVICES`` (nothing applied)."""
    return plan_training_devices(num_towers, [g.name for g in _physical_gpus()], nvidia_driver(),
                                 allow_cpu, num_cpu_replicas, gpus_hidden_on_purpose())


def show_only_first_gpus(count):
    """Hides every GPU but the first ``count`` from this process, if TensorFlow's
    runtime has not started yet; returns whether it could."""
    return _show_only(_physical_gpus()[:count])


def configure_training_devices(num_towers, allow_cpu=False, num_cpu_replicas=0):
    """:func:`plan_training_devices` for this machine, applied: the GPUs beyond
    the first ``num_towers`` hidden from this process, or the CPU split into
    ``num_cpu_replicas`` logical devices. Call it before TensorFlow runs any op
    (``train_imagenet.py`` does, first thing); later, the plan is still
    returned and the replicas are the same, but unused GPUs keep the memory
    TensorFlow reserved on them."""
    plan = training_plan(num_towers, allow_cpu, num_cpu_replicas)
    if plan.kind == "gpu":
        show_only_first_gpus(len(plan.devices))
    elif len(plan.devices) > 1:
        from sagan_tf.training.distribute import \
            configure_cpu_replicas  # pylint: disable=import-outside-toplevel
        configure_cpu_replicas(len(plan.devices))
    return plan


_DEVICE_SPEC = re.compile(r"^/?(?:device:)?(gpu|cpu)(?::(\d+))?$", re.IGNORECASE)


def parse_device(spec):
    """``--device`` -> ``("auto", None)``, ``("cpu", None)`` or ``("gpu", N)``.
    Accepts ``auto``, ``cpu``, ``gpu:N``, ``/gpu:N``, ``GPU:N``, ``/device:GPU:N``."""
    text = str(spec or "auto").strip()
    if text.lower() == "auto":
        return "auto", None
    match = _DEVICE_SPEC.match(text)
    if not match or (match.group(1).lower() == "gpu" and match.group(2) is None):
        raise DeviceError(f"--device {spec!r}: expected auto, cpu or gpu:N (e.g. gpu:4)")
    kind = match.group(1).lower()
    return kind, (int(match.group(2)) if kind == "gpu" else None)


def plan_single_device(spec, gpus, driver=None, hidden=False):
    """The one device of the evaluator or a tool.

    Args:
      spec: ``--device`` (:func:`parse_device`); ``auto`` is the last visible
        GPU (the spare one of the 4+1 layout), else the CPU.
      gpus, driver, hidden: as :func:`plan_training_devices`.

    Returns:
      ``(index, description)``: the GPU's index among the visible ones, or
      None for the CPU.

    Raises:
      DeviceError: no such GPU; a driver but no GPU (``--device cpu`` runs on
        the CPU anyway).
    """
    kind, index = parse_device(spec)
    if kind == "cpu":
        return None, "CPU (--device cpu)"
    count = len(gpus)
    if not count:
        if driver and not hidden:
            raise DeviceError(
                f"--device {spec}: this machine has an NVIDIA driver ({driver}) but "
                f"TensorFlow sees no GPU: {GPU_INSTALL_FIX}. To run on the CPU anyway, pass "
                f"--device cpu")
        if kind == "gpu":
            raise DeviceError(f"--device {spec}: TensorFlow sees no GPU on this machine; "
                              "pass --device cpu (or auto)")
        return None, "CPU (no GPU visible)"
    if kind == "auto":
        index, how = count - 1, "the last visible GPU, --device auto"
    elif index >= count:
        raise DeviceError(f"--device {spec}: TensorFlow sees {count} GPU(s), gpu:0 .. "
                          f"gpu:{count - 1} ({', '.join(_short(g) for g in gpus)}); pick one of "
                          "them (CUDA_VISIBLE_DEVICES renumbers the GPUs it keeps from 0)")
    else:
        how = f"--device {spec}"
    return index, f"GPU:{index} of {count} visible ({how}; memory growth, the others unused)"


def configure_single_device(spec="auto", allow_tf32=False):
    """:func:`plan_single_device` for this machine, applied before TensorFlow's
    runtime starts: only the chosen GPU visible, with memory growth (none
    with ``cpu``); TF32 as ``allow_tf32``. Returns the description.

    Raises:
      DeviceError: as :func:`plan_single_device`.
      RuntimeError: TensorFlow already ran an op, so the choice cannot apply.
    """
    gpus = _physical_gpus()
    index, description = plan_single_device(spec, [g.name for g in gpus], nvidia_driver(),
                                            gpus_hidden_on_purpose())
    if gpus and not _show_only([] if index is None else [gpus[index]], memory_growth=True):
        raise RuntimeError(f"--device {spec}: TensorFlow already started on its devices; "
                           "the device must be chosen before anything runs")
    set_tf32(allow_tf32)
    return description


def set_tf32(allowed):
    """Whether float32 convolutions and matmuls may run in TF32 on GPUs that
    have it (Ampere and newer); TensorFlow's default is yes, the release had
    no TF32. Process-wide; no effect on CPUs."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    tf.config.experimental.enable_tensor_float_32_execution(bool(allowed))


def _replica_devices(strategy):
    """This worker's replica devices; [] where the strategy has no such list
    (the default strategy raises RuntimeError)."""
    try:
        return list(getattr(getattr(strategy, "extended", None), "worker_devices", ()) or ())
    except RuntimeError:
        return []


def describe_replicas(strategy, plan, batch_size):
    """The start line's part on devices, replicas and global batch, e.g.
    ``Replicas: 4 on /gpu:0, /gpu:1, /gpu:2, /gpu:3 (--num_towers 4, the first 4
    of 5 visible GPUs); global batch = 64 per replica x 4 = 256``."""
    n = strategy.num_replicas_in_sync
    devices = _replica_devices(strategy)
    local = "" if len(devices) in (0, n) else " (this worker's)"
    where = f" on {', '.join(_device_label(d) for d in devices)}{local}" if devices else ""
    why = f" ({plan.note})" if plan is not None else ""
    return (f"Replicas: {n}{where}{why}; global batch = {batch_size} per replica x {n} = "
            f"{batch_size * n}")


def _device_label(name):
    """``/job:localhost/replica:0/task:0/device:GPU:1`` -> ``/gpu:1``."""
    match = re.search(r"device:([A-Za-z]+):(\d+)$", name)
    return f"/{match.group(1).lower()}:{match.group(2)}" if match else name


def run_record(strategy, plan, batch_size):
    """What ``config.json`` records of the devices of a run (``"devices"`` key):
    the replicas' devices, their number, the global batch, whether TF32 was
    allowed, and the plan's note."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    n = strategy.num_replicas_in_sync
    return {"replica_devices": [_device_label(d) for d in _replica_devices(strategy)],
            "num_replicas": n, "global_batch_size": batch_size * n,
            "tf32": bool(tf.config.experimental.tensor_float_32_execution_enabled()),
            "why": plan.note if plan is not None else None}
