"""The human-readable line a benchmark prints beside its JSON result."""


def _timing_part(name, figures, unit="iteration"):
    """``"<name>: <median> s/<unit> (min ...), <GFLOP/s> = <%> of peak"``."""
    med = figures.get("median_seconds_per_iteration")
    if med is None:
        return f"{name}: not timed"
    text = f"{name}: {med:.4g} s/{unit} (min {figures['min_seconds_per_iteration']:.4g})"
    if figures.get("achieved_gflops"):
        text += f", {figures['achieved_gflops']:.1f} GFLOP/s"
        if figures.get("fraction_of_peak") is not None:
            text += f" = {100 * figures['fraction_of_peak']:.0f}% of peak"
    return text


def machine_part(machine):
    """``"machine: <GPUs or CPU model> (bf16 units: ...; load ...)"``."""
    m = machine or {}
    gpus = ", ".join(g["name"] or g["device"] for g in m.get("gpus") or [])
    load = m.get("load_average_1min")
    return (f"machine: {gpus or m.get('cpu_model')} "
            f"(bf16 units: {', '.join(m.get('bf16_units') or []) or 'none'}; "
            f"load {'?' if load is None else f'{load:.1f}'})")


def summary_line(result):
    """One line of a ``sagan_tf.perf.benchmark`` result: each time beside its
    achieved GFLOP/s and fraction of peak, the peak, and the machine."""
    sampling_only = result["config"]["mode"] == "sample"
    parts = [_timing_part("sampling" if sampling_only else "iteration", result,
                          "batch" if sampling_only else "iteration")]
    if "tf1_reference" in result:
        parts.append(_timing_part("TF1 reference", result["tf1_reference"]))
    if result.get("sample") and result["config"]["mode"] == "both":
        parts.append(_timing_part("sampling", result["sample"], "batch"))
    peak = result.get("peak_gflops")
    if peak:
        parts.append(f"peak {peak['dtype']}: matmul {peak['matmul']:.1f}, "
                     f"conv {peak['conv']:.1f} GFLOP/s")
    parts.append(machine_part(result.get("machine")))
    return "; ".join(parts)
