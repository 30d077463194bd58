"""Which CPU kernels TensorFlow runs: oneDNN's or Eigen's, and on which ISA.

TensorFlow turns its oneDNN kernels on by default only on CPUs with
AVX512_VNNI, AVX512_BF16 or AMX; elsewhere (AVX2 CPUs such as AMD Zen 1-3 and
Intel before Ice Lake) every convolution and matmul runs Eigen's kernels, about
1.8x slower for the demo's training step (docs/PERFORMANCE.md).
:func:`use_onednn_by_default` turns oneDNN on for every x86 CPU where the user
has not set ``TF_ENABLE_ONEDNN_OPTS``; the entry points and tools call it
through :func:`sagan_tf.cli.quiet_tensorflow`, before TensorFlow loads (the
variable is read once, when TensorFlow loads). ``TF_ENABLE_ONEDNN_OPTS=0``
keeps Eigen's kernels; ``ONEDNN_MAX_CPU_ISA=AVX2`` makes an AVX-512 machine
compute what an AVX2 one does.

:func:`run_record` says which kernels run (``config.json``'s ``"kernels"``),
:func:`describe` says it in the start line, and :func:`bf16_cost_warning`
warns when ``mixed_bfloat16`` would run on a CPU without bfloat16 units.

Importing this module does not import TensorFlow.
"""
import os
import platform

__all__ = ["ONEDNN_ENV", "MAX_ISA_ENV", "ONEDNN_ISAS", "use_onednn_by_default", "cpu_isa",
           "run_record", "describe", "bf16_cost_warning"]

#: TensorFlow's switch of its oneDNN kernels ("1" on, "0" off; read at load time).
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
#: oneDNN's cap on the instruction set its kernels use (e.g. ``AVX2``).
MAX_ISA_ENV = "ONEDNN_MAX_CPU_ISA"
#: oneDNN's ISA names, lowest first, each with the /proc/cpuinfo flags it needs.
ONEDNN_ISAS = (
    ("sse41", ("sse4_1",)),
    ("avx", ("avx",)),
    ("avx2", ("avx2", "fma")),
    ("avx2_vnni", ("avx2", "fma", "avx_vnni")),
    ("avx512_core", ("avx512f", "avx512bw", "avx512vl", "avx512dq")),
    ("avx512_core_vnni", ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni")),
    ("avx512_core_bf16", ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni",
                          "avx512_bf16")),
    ("avx512_core_amx", ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni",
                         "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")),
)
_X86 = ("x86_64", "amd64", "i386", "i686", "x86")
#: The slowdown of mixed_bfloat16 against float32 measured on a CPU without
#: bfloat16 units (AMD EPYC Zen 3, tools/perf/profile_step.py, 128x128,
#: gf=df=8, batch 32: 13.8 s vs 2.9 s per iteration).
BF16_EMULATED_SLOWDOWN = 4.7


def use_onednn_by_default(environ=None, machine=None):
    """Sets ``TF_ENABLE_ONEDNN_OPTS=1`` in ``environ`` (default ``os.environ``)
    on an x86 ``machine`` (default ``platform.machine()``) where it is unset.
    Has an effect only before TensorFlow loads. Returns whether it set it."""
    environ = os.environ if environ is None else environ
    machine = platform.machine() if machine is None else machine
    if ONEDNN_ENV in environ or machine.lower() not in _X86:
        return False
    environ[ONEDNN_ENV] = "1"
    return True


def cpu_flags(cpuinfo_text=None):
    """The flags of the first processor in ``cpuinfo_text`` (default: this
    machine's /proc/cpuinfo; empty where it cannot be read)."""
    if cpuinfo_text is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo_text = f.read()
        except OSError:
            return frozenset()
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cpu_isa(flags, max_isa=None):
    """oneDNN's ISA on a CPU with ``flags``: the highest of :data:`ONEDNN_ISAS`
    the flags allow, capped at ``max_isa`` (``ONEDNN_MAX_CPU_ISA``'s value,
    any case; an unknown name caps nothing). None when the flags allow none."""
    names = [name for name, _ in ONEDNN_ISAS]
    cap = names.index(max_isa.lower()) if max_isa and max_isa.lower() in names else len(names)
    best = None
    for i, (name, needed) in enumerate(ONEDNN_ISAS):
        if i <= cap and all(f in flags for f in needed):
            best = name
    return best


def _onednn_enabled():
    """Whether the loaded TensorFlow runs oneDNN's kernels (None: unknown)."""
    try:
        from tensorflow.python.util import \
            _pywrap_util_port  # pylint: disable=import-outside-toplevel
        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def run_record(environ=None, flags=None, onednn=None):
    """What ``config.json`` records of the CPU kernels (``"kernels"`` key):
    ``{"library": "oneDNN" | "Eigen" | None, "isa": oneDNN's ISA or None,
    "TF_ENABLE_ONEDNN_OPTS": ..., "ONEDNN_MAX_CPU_ISA": ...}`` (the variables
    as set, None when unset). ``environ``, ``flags`` (CPU flags) and ``onednn``
    (whether TensorFlow runs oneDNN) default to this process's."""
    environ = os.environ if environ is None else environ
    onednn = _onednn_enabled() if onednn is None else onednn
    library = None if onednn is None else ("oneDNN" if onednn else "Eigen")
    isa = cpu_isa(cpu_flags() if flags is None else flags,
                  environ.get(MAX_ISA_ENV)) if onednn else None
    return {"library": library, "isa": isa, ONEDNN_ENV: environ.get(ONEDNN_ENV),
            MAX_ISA_ENV: environ.get(MAX_ISA_ENV)}


def describe(record):
    """The start line's words for a :func:`run_record`, e.g. ``oneDNN (avx2)``
    or ``Eigen (TF_ENABLE_ONEDNN_OPTS=0)``."""
    if record["library"] == "oneDNN":
        return f"oneDNN ({record['isa'] or 'ISA unknown'})"
    if record["library"] == "Eigen":
        why = record[ONEDNN_ENV]
        return f"Eigen ({ONEDNN_ENV}={why})" if why is not None else "Eigen"
    return "unknown"


def bf16_cost_warning(mixed_precision, replica_devices, flags=None):
    """A one-line warning when ``mixed_bfloat16`` runs on CPU replicas of a CPU
    without bfloat16 units (neither ``avx512_bf16`` nor ``amx_bf16`` in
    ``flags``, default this machine's), where bfloat16 is emulated; else None.

    Args:
      mixed_precision: the ``--mixed_precision`` policy name.
      replica_devices: the replicas' device names (``/cpu:0``, ``/gpu:1``, ...);
        GPU replicas never warn.
      flags: the CPU's /proc/cpuinfo flags (injectable for tests).
    """
    if mixed_precision != "mixed_bfloat16":
        return None
    if not replica_devices or any("gpu" in d.lower() for d in replica_devices):
        return None
    flags = cpu_flags() if flags is None else flags
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return None
    return (f"WARNING: --mixed_precision mixed_bfloat16 on a CPU without bfloat16 units "
            f"(no avx512_bf16/amx_bf16): bfloat16 is emulated, measured "
            f"{BF16_EMULATED_SLOWDOWN}x slower per iteration than --mixed_precision none")
