"""Which devices a run uses: the trainer's replicas, the one device of the evaluator and the tools.

Training (``train_imagenet.py``): ``--num_towers N`` takes the first N GPUs
TensorFlow sees, as the release's towers ``/gpu:0`` .. ``/gpu:N-1`` did; fewer
visible GPUs is an error naming the count and the fix, never a silent change
of the global batch (``--batch_size`` x N). The other GPUs are hidden from the
trainer's process (no memory reserved on them), so with 5 GPUs and the
default ``--num_towers 4`` the fifth stays free for the evaluator.
``--num_towers 0`` takes every visible GPU. A machine without GPUs trains on
the CPU (one replica, or ``--num_cpu_replicas`` logical CPUs,
:func:`configure_cpu_replicas`), unless it has an NVIDIA driver
(``nvidia-smi`` on the PATH, ``/proc/driver/nvidia``) and TensorFlow still
sees no GPU: an error naming each cause the machine shows (CUDA libraries,
driver version, device nodes, ``CUDA_VISIBLE_DEVICES``:
:func:`sagan_tf.training.nvidia.why_no_gpu`) with its fix, unless
``--allow_cpu`` (or ``CUDA_VISIBLE_DEVICES=''`` / ``-1``, which hides the GPUs
on purpose). The start line names the GPUs also by ``nvidia-smi``'s numbers
(the entry points set ``CUDA_DEVICE_ORDER=PCI_BUS_ID``).

Evaluation and the tools (``--device``): one device, ``gpu:N``, ``cpu``, or
``auto`` (:func:`choose_auto_gpu`: the last visible GPU without memory in use,
by ``nvidia-smi``, so the spare one of the 4+1 layout; a warning when it
must share one; the CPU without GPUs), with memory growth, every other GPU
hidden from the process.

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
import sys

from sagan_tf.training import nvidia
from sagan_tf.training.nvidia import GPU_INSTALL_FIX, gpus_hidden_on_purpose, nvidia_driver

__all__ = ["DeviceError", "DevicePlan", "GPU_INSTALL_FIX", "BUSY_MIB", "nvidia_driver",
           "gpus_hidden_on_purpose", "plan_training_devices", "training_plan",
           "show_only_first_gpus", "apply_training_plan", "configure_training_devices",
           "configure_cpu_replicas", "cuda_major", "explain_no_gpu", "parse_device",
           "choose_auto_gpu", "plan_single_device", "configure_single_device", "set_tf32",
           "describe_replicas", "run_record"]

#: Memory in use (MiB, nvidia-smi) above which ``--device auto`` counts a GPU as
#: taken by another process (the trainer reserves nearly all of its GPUs).
BUSY_MIB = 1024


class DeviceError(ValueError):
    """The devices asked for do not exist, or the GPUs are not usable; names the fix."""


@dataclasses.dataclass(frozen=True)
class DevicePlan:
    """The devices of a training run.

    ``kind`` "gpu" or "cpu"; ``devices`` the replicas' TensorFlow device names
    (``/gpu:0`` ..., ``/cpu:0`` ...) after the GPUs beyond them are hidden;
    ``visible_gpus`` how many GPUs TensorFlow saw; ``note`` why these devices
    (for the start line); ``all_reduce`` the mirrored strategy's all-reduce
    (``--cross_device_ops``, resolved; None before the strategy exists).
    """
    kind: str
    devices: tuple
    visible_gpus: int
    note: str
    all_reduce: str = None


def plan_training_devices(num_towers, gpus, driver=None, allow_cpu=False, num_cpu_replicas=0,
                          hidden=False, smi_numbers=None, why_no_gpu=GPU_INSTALL_FIX):
    """The replicas of a mirrored training run.

    Args:
      num_towers: GPUs to use, the first ones (0: all visible GPUs).
      gpus: names of the GPUs TensorFlow sees, in its order.
      driver: :func:`nvidia_driver`'s answer (None: no NVIDIA driver).
      allow_cpu: train on the CPU even though a driver is present.
      num_cpu_replicas: CPU-only: logical CPU replicas (0 or 1: one).
      hidden: :func:`gpus_hidden_on_purpose`.
      smi_numbers: ``nvidia-smi``'s numbers of ``gpus`` (:func:`nvidia.smi_indices`),
        named in the note; None: not named.
      why_no_gpu: the causes and fixes of a driver without visible GPUs
        (:func:`nvidia.why_no_gpu`).

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
        return DevicePlan("gpu", tuple(f"/gpu:{i}" for i in range(used)), count,
                          which + _smi_note(smi_numbers, used))
    if driver and not allow_cpu and not hidden:
        raise DeviceError(
            f"this machine has an NVIDIA driver ({driver}) but TensorFlow sees no GPU: "
            f"{why_no_gpu}. To train on the CPU anyway, pass --allow_cpu")
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


def _smi_note(smi_numbers, used):
    """``"; nvidia-smi GPUs 0, 1, 2, 3"`` for the first ``used`` GPUs ("" when not asked)."""
    if smi_numbers is None:
        return ""
    if smi_numbers == "unknown":
        return ("; nvidia-smi's numbers of these GPUs unknown (CUDA_DEVICE_ORDER is not "
                "PCI_BUS_ID, or CUDA_VISIBLE_DEVICES names GPUs nvidia-smi does not list)")
    return f"; nvidia-smi GPU{'s' if used > 1 else ''} {', '.join(map(str, smi_numbers[:used]))}"


def _short(name):
    """``/physical_device:GPU:3`` -> ``GPU:3``."""
    return name.rsplit("/", 1)[-1].replace("physical_device:", "")


def _physical_gpus():
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    return tf.config.list_physical_devices("GPU")


def cuda_major():
    """The CUDA major version this TensorFlow was built with (None: not a CUDA build)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    version = tf.sysconfig.get_build_info().get("cuda_version")
    return int(str(version).split(".")[0]) if version else None


def explain_no_gpu():
    """:func:`nvidia.why_no_gpu` of this machine and this TensorFlow's CUDA version."""
    return nvidia.why_no_gpu(nvidia.observe(), cuda_major())


def _smi_numbers(count, query_gpus=nvidia.query_gpus):
    """nvidia-smi's numbers of TensorFlow's ``count`` GPUs, or ``"unknown"``
    (nvidia-smi is asked only when ``CUDA_VISIBLE_DEVICES`` names GPUs by UUID)."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    by_uuid = any(v and not v.isdigit() for v in visible)
    numbers = nvidia.smi_indices(count, smi_gpus=query_gpus() if by_uuid else None)
    return "unknown" if numbers is None else numbers


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
    gpus = [g.name for g in _physical_gpus()]
    driver, hidden = nvidia_driver(), gpus_hidden_on_purpose()
    why = (explain_no_gpu() if driver and not gpus and not hidden and not allow_cpu
           else GPU_INSTALL_FIX)
    return plan_training_devices(num_towers, gpus, driver, allow_cpu, num_cpu_replicas, hidden,
                                 _smi_numbers(len(gpus)) if gpus else None, why)


def show_only_first_gpus(count):
    """Hides every GPU but the first ``count`` from this process, if TensorFlow's
    runtime has not started yet; returns whether it could."""
    return _show_only(_physical_gpus()[:count])


def apply_training_plan(plan):
    """Applies a GPU :class:`DevicePlan`'s visibility: every GPU beyond its
    replicas hidden from this process.

    Raises:
      DeviceError: TensorFlow's runtime already started with more GPUs (the
        trainer would take the others' memory, the evaluator's GPU too).
    """
    if plan.kind == "gpu" and not show_only_first_gpus(len(plan.devices)):
        raise DeviceError(
            f"the trainer's GPUs ({', '.join(plan.devices)}) can no longer be chosen: "
            f"TensorFlow already started on all {plan.visible_gpus} visible GPUs. Choose the "
            "devices before anything runs a TensorFlow op (configure_training_devices first), "
            "or set CUDA_VISIBLE_DEVICES")


def configure_training_devices(num_towers, allow_cpu=False, num_cpu_replicas=0):
    """:func:`plan_training_devices` for this machine, applied: the GPUs beyond
    the first ``num_towers`` hidden from this process, or the CPU split into
    ``num_cpu_replicas`` logical devices. Call it before TensorFlow runs any op
    (``train_imagenet.py`` does, first thing).

    Raises:
      DeviceError: as :func:`plan_training_devices`, and when the GPUs cannot be
        hidden any more (:func:`apply_training_plan`).
    """
    plan = training_plan(num_towers, allow_cpu, num_cpu_replicas)
    if plan.kind == "gpu":
        apply_training_plan(plan)
    elif len(plan.devices) > 1:
        configure_cpu_replicas(len(plan.devices))
    return plan


def configure_cpu_replicas(n):
    """Splits the physical CPU into ``n`` logical CPU devices (``/cpu:0`` .. ``/cpu:n-1``)
    so that a real ``MirroredStrategy`` with ``n`` replicas runs on a machine
    without GPUs (tests, the demo, the speed tools).

    Idempotent: if the CPU is already split into exactly ``n`` logical devices
    (e.g. by the test harness), nothing happens.

    Raises:
      ValueError: if ``n < 1``.
      RuntimeError: if TensorFlow has already initialised its devices with a
        different CPU layout (some op ran before this call).
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    n = int(n)
    if n < 1:
        raise ValueError(f"num_cpu_replicas must be >= 1, got {n}")
    cpus = tf.config.list_physical_devices("CPU")
    current = tf.config.get_logical_device_configuration(cpus[0])
    if (current is None and n == 1) or (current is not None and len(current) == n):
        return
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as e:
        have = len(tf.config.list_logical_devices("CPU"))
        raise RuntimeError(
            f"configure_cpu_replicas({n}) must be called before any TensorFlow op "
            f"runs (the runtime is already initialised with {have} logical CPU "
            f"device(s)). Call it first thing in the program, before building "
            f"models, datasets or tensors.") from e


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


def choose_auto_gpu(count, used_mib=None):
    """``--device auto`` among ``count`` visible GPUs: ``(index, how, warning)``.

    ``used_mib``: memory in use per visible GPU (TensorFlow's order; from
    ``nvidia-smi``), None when unknown. The last GPU with less than
    :data:`BUSY_MIB` in use (the spare one of the 4+1 layout, the trainer's
    GPUs being full); when every GPU is in use, the least used one, with a
    one-line warning that it is shared; unknown memory: the last visible GPU
    (a warning with more than one GPU, since it may be a training GPU).
    """
    choose = "choose with --device gpu:N (or CUDA_VISIBLE_DEVICES)"
    if used_mib is None:
        warning = None if count == 1 else (
            f"--device auto: GPU:{count - 1}, the last visible GPU, may be one the trainer "
            f"uses (no memory figures from nvidia-smi to tell); {choose}")
        return count - 1, "the last visible GPU, --device auto", warning
    free = [i for i in range(count) if used_mib[i] < BUSY_MIB]
    if free:
        return free[-1], "the last visible GPU without memory in use, --device auto", None
    index = min(range(count), key=lambda i: (used_mib[i], -i))
    in_use = ", ".join(f"GPU:{i} {used_mib[i]:.0f} MiB" for i in range(count))
    return index, "the least used visible GPU, --device auto", (
        f"--device auto: every visible GPU has memory in use ({in_use}): sharing GPU:{index} "
        f"with the process on it (a trainer?), which can run out of memory; {choose}")


def plan_single_device(spec, gpus, driver=None, hidden=False, used_mib=None, warn=None,
                       why_no_gpu=GPU_INSTALL_FIX):
    """The one device of the evaluator or a tool.

    Args:
      spec: ``--device`` (:func:`parse_device`); ``auto``: :func:`choose_auto_gpu`,
        else the CPU.
      gpus, driver, hidden, why_no_gpu: as :func:`plan_training_devices`.
      used_mib: memory in use per visible GPU (:func:`choose_auto_gpu`).
      warn: called with the one-line warning of a shared GPU (None: dropped).

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
                f"TensorFlow sees no GPU: {why_no_gpu}. To run on the CPU anyway, pass "
                f"--device cpu")
        if kind == "gpu":
            raise DeviceError(f"--device {spec}: TensorFlow sees no GPU on this machine; "
                              "pass --device cpu (or auto)")
        return None, "CPU (no GPU visible)"
    if kind == "auto":
        index, how, warning = choose_auto_gpu(count, used_mib)
        if warning and warn is not None:
            warn(warning)
    elif index >= count:
        raise DeviceError(f"--device {spec}: TensorFlow sees {count} GPU(s), gpu:0 .. "
                          f"gpu:{count - 1} ({', '.join(_short(g) for g in gpus)}); pick one of "
                          "them (CUDA_VISIBLE_DEVICES renumbers the GPUs it keeps from 0)")
    else:
        how = f"--device {spec}"
    return index, f"GPU:{index} of {count} visible ({how}; memory growth, the others unused)"


def _used_mib(count, query_gpus):
    """Memory in use per visible GPU (TensorFlow's order) from nvidia-smi, or None."""
    smi = query_gpus()
    numbers = nvidia.smi_indices(count, smi_gpus=smi) if smi else None
    if numbers is None or any(n not in smi for n in numbers):
        return None
    return [smi[n]["used_mib"] for n in numbers]


def _stderr_line(text):
    print(text, file=sys.stderr, flush=True)


def configure_single_device(spec="auto", allow_tf32=False, query_gpus=nvidia.query_gpus,
                            warn=_stderr_line):
    """:func:`plan_single_device` for this machine, applied before TensorFlow's
    runtime starts: only the chosen GPU visible, with memory growth (none
    with ``cpu``); TF32 as ``allow_tf32``. ``--device auto`` reads each GPU's
    memory in use with ``query_gpus`` (:func:`nvidia.query_gpus`) and prints
    a shared GPU's warning with ``warn``. Returns the description, with the
    GPU's ``nvidia-smi`` number when known.

    Raises:
      DeviceError: as :func:`plan_single_device`.
      RuntimeError: TensorFlow already ran an op, so the choice cannot apply.
    """
    gpus = _physical_gpus()
    driver, hidden = nvidia_driver(), gpus_hidden_on_purpose()
    auto = parse_device(spec)[0] == "auto"
    index, description = plan_single_device(
        spec, [g.name for g in gpus], driver, hidden,
        used_mib=_used_mib(len(gpus), query_gpus) if auto and gpus else None, warn=warn,
        why_no_gpu=explain_no_gpu() if driver and not gpus and not hidden else GPU_INSTALL_FIX)
    if gpus and not _show_only([] if index is None else [gpus[index]], memory_growth=True):
        raise RuntimeError(f"--device {spec}: TensorFlow already started on its devices; "
                           "the device must be chosen before anything runs")
    set_tf32(allow_tf32)
    if index is not None:
        numbers = _smi_numbers(len(gpus), query_gpus)
        if numbers != "unknown":
            description += f"; nvidia-smi GPU {numbers[index]}"
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
    reduce = (f"; all-reduce: {plan.all_reduce} (--cross_device_ops)"
              if plan is not None and plan.all_reduce and n > 1 else "")
    return (f"Replicas: {n}{where}{why}; global batch = {batch_size} per replica x {n} = "
            f"{batch_size * n}{reduce}")


def _device_label(name):
    """``/job:localhost/replica:0/task:0/device:GPU:1`` -> ``/gpu:1``."""
    match = re.search(r"device:([A-Za-z]+):(\d+)$", name)
    return f"/{match.group(1).lower()}:{match.group(2)}" if match else name


def run_record(strategy, plan, batch_size):
    """What ``config.json`` records of the devices of a run (``"devices"`` key):
    the replicas' devices, their number, the global batch, whether TF32 was
    allowed, the plan's note and (``all_reduce``) its all-reduce."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    n = strategy.num_replicas_in_sync
    record = {"replica_devices": [_device_label(d) for d in _replica_devices(strategy)],
              "num_replicas": n, "global_batch_size": batch_size * n,
              "tf32": bool(tf.config.experimental.tensor_float_32_execution_enabled()),
              "why": plan.note if plan is not None else None}
    if plan is not None and plan.all_reduce:  # a mirrored strategy the trainer made
        record["all_reduce"] = plan.all_reduce
    return record
