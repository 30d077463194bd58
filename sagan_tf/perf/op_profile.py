"""Where a step's time goes, op by op: the TF profiler's trace summed per op type.

``profile_ops`` runs a function under ``tf.profiler.experimental`` and reads
the trace's ``.xplane.pb`` (``op_type_table``): the host-side duration of
every TensorFlow op's kernel, as the profiler's "TensorFlow Op" statistics
show it. Ops on parallel inter-op threads can overlap, so the column sums to
more than the wall time on a busy graph. ``format_op_tables`` prints the
tables of several variants side by side.
"""
import collections
import glob
import os
import tempfile


def op_type_table(xplane_path, by_name=False):
    """``{op_type: {"us": total microseconds, "count": n}}`` from a profiler ``.xplane.pb``.

    ``by_name``: keyed by ``"<op name>:<op type>"`` instead (one row per graph op).

    TensorFlow op events on the host plane are named ``"<op name>:<op type>"``
    with the op type as display name; executor bookkeeping events
    (``ExecutorState::Process``, ``ThreadpoolListener::...``, memory events)
    have no ``:<type>`` and are skipped. Durations are each event's own span.
    """
    from tensorflow.tsl.profiler.protobuf import \
        xplane_pb2  # pylint: disable=import-outside-toplevel
    space = xplane_pb2.XSpace()
    with open(xplane_path, "rb") as f:
        space.ParseFromString(f.read())
    table = collections.defaultdict(lambda: {"us": 0.0, "count": 0})
    for plane in space.planes:
        if not plane.name.startswith("/host:"):
            continue
        for line in plane.lines:
            for event in line.events:
                meta = plane.event_metadata[event.metadata_id]
                name = meta.name
                if "::" in name or ":" not in name or not meta.display_name:
                    continue
                op_type = meta.display_name
                if name.rsplit(":", 1)[1] != op_type:
                    continue
                key = name if by_name else op_type
                table[key]["us"] += event.duration_ps / 1e6
                table[key]["count"] += 1
    return dict(table)


def profile_ops(fn, steps, logdir=None, by_name=False):
    """Runs ``fn()`` ``steps`` times under the TF profiler; returns ``op_type_table`` of the trace.

    ``logdir``: where the trace goes (default: a temporary directory, removed after).
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    with tempfile.TemporaryDirectory() as tmp:
        logdir = logdir or tmp
        tf.profiler.experimental.start(logdir)
        try:
            for _ in range(steps):
                fn()
        finally:
            tf.profiler.experimental.stop()
        paths = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")))
        if not paths:
            raise RuntimeError(f"the profiler wrote no .xplane.pb under {logdir}")
        return op_type_table(paths[-1], by_name)


def by_op_type(per_name):
    """An ``op_type_table(..., by_name=True)`` summed over the ops of each type."""
    table = collections.defaultdict(lambda: {"us": 0.0, "count": 0})
    for key, x in per_name.items():
        table[key.rsplit(":", 1)[1]]["us"] += x["us"]
        table[key.rsplit(":", 1)[1]]["count"] += x["count"]
    return table


def format_op_tables(tables, top=12):
    """A markdown table: the ``top`` op types by time (over all variants), ms per iteration.

    ``tables``: ``{variant: {"ops": {op type: {"ms", "count"}}, "op_ms_total",
    "wall_ms_per_iteration"}}``.
    """
    variants = list(tables)
    totals = collections.Counter()
    for t in tables.values():
        for k, x in t["ops"].items():
            totals[k] += x["ms"]
    rows = [k for k, _ in totals.most_common(top)]
    head = "| op type | " + " | ".join(f"{v} ms (n)" for v in variants) + " |"
    lines = [head, "| --- |" + " --- |" * len(variants)]
    for k in rows:
        cells = []
        for v in variants:
            x = tables[v]["ops"].get(k)
            cells.append("-" if x is None else f"{x['ms']:.1f} ({x['count']:.0f})")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines.append("| all ops (sum) | " + " | ".join(
        f"{tables[v]['op_ms_total']:.1f}" for v in variants) + " |")
    lines.append("| wall time per iteration | " + " | ".join(
        f"{tables[v]['wall_ms_per_iteration']:.1f}" for v in variants) + " |")
    return "\n".join(lines)
