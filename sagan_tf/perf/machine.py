"""The machine a speed figure is measured on, and the devices it runs on.

``setup_devices`` sets the thread pools and the replicas before any
TensorFlow op runs; ``machine_info`` records what the figures can be judged
against (CPU model and its half-precision units, the CPUs this process may
use, the load when the run started, the GPUs), read from ``/proc/cpuinfo``
by ``parse_cpuinfo``.
"""
import os
import platform

#: /proc/cpuinfo flags of half-precision arithmetic units (x86).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
FP16_FLAGS = ("avx512_fp16", "amx_fp16")


def setup_devices(num_replicas=1, threads=0, cpu_if_too_few_gpus=False):
    """Thread pools and logical CPU replicas; must run before any TensorFlow op.

    ``threads``: intra- and inter-op threads (0: TensorFlow's default).
    Replicas are the first ``num_replicas`` GPUs if there are GPUs, else as
    many logical CPU devices; with fewer GPUs than replicas, an error, or
    with ``cpu_if_too_few_gpus`` logical CPUs. Returns the replica device names.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    gpus = tf.config.list_physical_devices("GPU")
    if cpu_if_too_few_gpus and num_replicas > len(gpus):
        gpus = []
    if gpus:
        if num_replicas > len(gpus):
            raise ValueError(f"--num_replicas {num_replicas} but only {len(gpus)} GPU(s)")
        return [f"/gpu:{i}" for i in range(num_replicas)]
    if num_replicas > 1:
        from sagan_tf.training.devices import \
            configure_cpu_replicas  # pylint: disable=import-outside-toplevel
        configure_cpu_replicas(num_replicas)
    return [f"/cpu:{i}" for i in range(num_replicas)]


def parse_cpuinfo(text):
    """CPU model and half-precision units from the text of ``/proc/cpuinfo``.

    Returns ``{"cpu_model", "cpu_family", "cpu_model_number", "bf16_units",
    "fp16_units", "avx512_bf16", "amx"}``: ``bf16_units``/``fp16_units`` list
    the flags of arithmetic units present (empty: none, half precision is
    emulated in float32), ``amx`` is whether AMX tiles exist. Fields missing
    from the text are None (non-x86 machines); only the first processor's
    entry is read (all are the same on the machines this runs on).
    """
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # end of the first processor's entry
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    return {"cpu_model": fields.get("model name"),
            "cpu_family": fields.get("cpu family"),
            "cpu_model_number": fields.get("model"),
            "bf16_units": [f for f in BF16_FLAGS if f in flags],
            "fp16_units": [f for f in FP16_FLAGS if f in flags],
            "avx512_bf16": "avx512_bf16" in flags,
            "amx": "amx_tile" in flags}


def _host_info():
    """``parse_cpuinfo`` of this machine, plus its CPU counts and 1-minute load."""
    try:
        with open("/proc/cpuinfo") as f:
            info = parse_cpuinfo(f.read())
    except OSError:
        info = parse_cpuinfo("")
    info["cpu_model"] = info["cpu_model"] or platform.processor() or None
    info["logical_cpus"] = os.cpu_count()
    try:
        info["cpus_available"] = len(os.sched_getaffinity(0))
    except AttributeError:
        info["cpus_available"] = os.cpu_count()
    try:
        info["load_average_1min"] = os.getloadavg()[0]
    except OSError:
        info["load_average_1min"] = None
    return info


def _gpu_info(devices):
    """``[{"device", "name", "compute_capability"}]`` of the GPU replicas among ``devices``."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    gpus = []
    physical = tf.config.list_physical_devices("GPU")
    for d in devices:
        if "gpu" not in d.lower():
            continue
        index = int(d.split(":")[-1])
        details = tf.config.experimental.get_device_details(physical[index]) \
            if index < len(physical) else {}
        capability = details.get("compute_capability")
        gpus.append({"device": d, "name": details.get("device_name"),
                     "compute_capability": ".".join(map(str, capability))
                     if capability else None})
    return gpus


def machine_info(devices=()):
    """What the figures of this run can be judged against (the ``machine`` key).

    CPU model and half-precision units (``parse_cpuinfo``), the CPUs this
    process may use, the 1-minute load average when the run started (a shared
    machine's figures are only comparable at similar load), and for each GPU
    replica among ``devices`` its name and compute capability
    (``tf.config.experimental.get_device_details``) and whether TF32 is on.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    info = _host_info()
    info["gpus"] = _gpu_info(devices)
    info["tensor_float_32"] = bool(
        tf.config.experimental.tensor_float_32_execution_enabled()) if info["gpus"] else None
    return info
