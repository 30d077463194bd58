"""Where the ops of a compiled step run: ops the code put on a replica's GPU that run on the CPU.

With soft placement (TensorFlow's default) an op without a kernel for its
device and dtype (bf16/fp16 paths in particular) silently runs on the CPU,
its inputs and outputs copied every iteration. The traced graph holds the
device each op was asked for (the mirrored strategy puts each replica's ops
on its device); the optimised partition graphs of the first call
(:func:`first_call_partitions`) hold where each one runs. :func:`moved_ops`
compares the two by op name; :func:`check_placement` is the GPU check's
verdict. Ops created by Grappler have no requested device and are not judged;
ops inside nested functions are matched by their inlined names only.
"""
import collections

__all__ = ["requested_devices", "placed_devices", "moved_ops", "first_call_partitions",
           "check_placement"]


def _spec(device):
    """``(TYPE, index or None)`` of a device string, None when empty."""
    if not device:
        return None
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    spec = tf.DeviceSpec.from_string(device)
    return (spec.device_type or "").upper() or None, spec.device_index


def requested_devices(graph):
    """``{op name: device}`` of the ops of a traced ``tf.Graph`` that ask for one."""
    return {op.name: op.device for op in graph.get_operations() if op.device}


def placed_devices(graph_defs):
    """``{node name: device}`` over partition ``GraphDef``s (where each node runs)."""
    return {node.name: node.device for graph_def in graph_defs for node in graph_def.node}


def moved_ops(requested, placed, to_type="CPU"):
    """``[{"op", "requested", "placed"}]``, sorted by op: the ops requested on a
    device of another type (or another index of ``to_type``) that run on a
    ``to_type`` device."""
    moved = []
    for name, want in requested.items():
        got = placed.get(name)
        want_spec, got_spec = _spec(want), _spec(got)
        if want_spec is None or got_spec is None or got_spec[0] != to_type:
            continue
        other_type = want_spec[0] is not None and want_spec[0] != to_type
        other_index = (want_spec[0] == to_type and want_spec[1] is not None
                       and want_spec[1] != got_spec[1])
        if other_type or other_index:
            moved.append({"op": name, "requested": want, "placed": got})
    return sorted(moved, key=lambda m: m["op"])


def first_call_partitions(fn):
    """Calls ``fn()`` once with run metadata on; returns ``(its result, the
    optimised partition GraphDefs of every function it instantiated)``."""
    from tensorflow.python.eager import context  # pylint: disable=import-outside-toplevel
    ctx = context.context()
    ctx.enable_run_metadata()
    try:
        result = fn()
    finally:
        metadata = ctx.export_run_metadata()
        ctx.disable_run_metadata()
    return result, [p for fg in metadata.function_graphs for p in fg.partition_graphs]


def check_placement(graph, partitions, replica_devices):
    """The GPU check's placement verdict of a compiled step.

    Args:
      graph: the traced step's ``tf.Graph``.
      partitions: its optimised partition graphs (:func:`first_call_partitions`).
      replica_devices: the replicas' device names (``/gpu:0`` ...).

    Returns:
      ``{"replica_type", "ops_requested_on_replicas", "moved_to_cpu": [...],
      "moved_by_type": {op type: count}, "ok"}``; ``ok``: no op requested on a
      GPU replica runs on the CPU (trivially true when the replicas are CPUs).
    """
    kinds = {(_spec(d) or ("CPU", None))[0] for d in replica_devices}
    requested = requested_devices(graph)
    on_replicas = {n: d for n, d in requested.items() if (_spec(d) or (None,))[0] in kinds}
    moved = [m for m in moved_ops(requested, placed_devices(partitions))
             if (_spec(m["requested"]) or (None,))[0] != "CPU"]
    types = {op.name: op.type for op in graph.get_operations()}
    return {"replica_type": "/".join(sorted(kinds)),
            "ops_requested_on_replicas": len(on_replicas),
            "moved_to_cpu": moved[:50],
            "moved_by_type": dict(collections.Counter(types[m["op"]] for m in moved)),
            "ok": not moved}
