"""The phases of the GPU check (``tools/perf/gpu_benchmark.py``), each run in its own process.

* :func:`device_report` -- the GPUs TensorFlow sees, its CUDA build, the
  NVIDIA driver; :func:`check_device_report` decides whether a check can run
  (a driver without visible GPUs is a failure naming the fix).
* :func:`write_records` -- generated training records in the release's format.
* :func:`forward_parity` -- G and D forward passes on the GPU (TF32 off, and
  on for comparison) against the same weights and inputs in float32 on the
  CPU: relative error figures.
* :func:`training_parity` -- one training iteration from the same weights and
  inputs on the CPU and on the first GPU (float32, TF32 off), against the
  CPU's own noise floor (:func:`parity_verdict`).
* :func:`placement_run` -- whether the compiled iteration runs any op asked
  for on the GPU on the CPU instead (:mod:`sagan_tf.perf.placement`).
* :func:`host_cost_run` -- kernels per replica, cross-replica reductions and
  time per iteration at minimal compute (the host's share), with 1 and with
  every GPU (up to 4) as replicas, against the release's TF1 graph.
* :func:`train_run` -- iterations of the real training loop
  (:func:`sagan_tf.training.loop.train`: input pipeline from the records, the
  non-finite guard, summaries, checkpoints, the end-of-run grid) at a
  precision on 1 replica or on every GPU, with or without ``--xla``.
* :func:`parse_gpu_query`, :func:`untouched_gpus` -- the evaluator's device
  check: per-GPU memory from ``nvidia-smi`` before and while it runs
  (:mod:`sagan_tf.training.nvidia`).
* :func:`exit_status` -- 0 when every phase passed or was skipped for time.

Sizes: :data:`PAPER` (the release's 128x128 networks, batch 64 per replica)
on a GPU; :data:`TINY` in ``--dry_run``, which runs the same phases on the
CPU. TensorFlow is imported inside the phases only: the tool's own process
never touches the GPUs.
"""
import dataclasses
import os

from sagan_tf.training.nvidia import parse_gpu_query
from sagan_tf.training.nvidia import query_gpus as gpu_memory_query

__all__ = ["PAPER", "TINY", "HOST_COST", "HOST_COST_DRY", "PRECISIONS", "FORWARD_TOLERANCE",
           "PARITY_FLOOR_FACTOR", "UNTOUCHED_MIB", "host_cost_run", "device_report",
           "check_device_report", "write_records", "forward_parity", "training_parity",
           "parity_verdict", "placement_run", "train_run", "gpu_memory_query",
           "parse_gpu_query", "untouched_gpus", "SKIPPED_FOR_TIME", "exit_status"]

#: The release's configuration (one replica's batch).
PAPER = dict(image_size=128, gf_dim=64, df_dim=64, z_dim=128, number_classes=1000,
             batch_size=64, generator_type="test", discriminator_type="test")
#: --dry_run: the same phases at a size that runs in seconds on a CPU.
TINY = dict(image_size=32, gf_dim=4, df_dim=4, z_dim=16, number_classes=10, batch_size=2,
            generator_type="test", discriminator_type="test")
#: The host-cost phase: minimal compute (the iteration's time is the host's).
HOST_COST = dict(image_size=128, gf_dim=8, df_dim=8, batch_size=2, number_classes=10)
#: --dry_run's host-cost size.
HOST_COST_DRY = dict(image_size=32, gf_dim=4, df_dim=4, batch_size=2, number_classes=10)
#: Precision name -> --mixed_precision.
PRECISIONS = {"fp32": "none", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
#: Largest relative error (max |GPU - CPU| / max |CPU|) of a float32 forward pass
#: at TF32 off that counts as agreement (a sanity bound: float32 kernels in
#: another order differ by ~1e-6 relative per op).
FORWARD_TOLERANCE = 1e-3
#: A training iteration's GPU-vs-CPU difference agrees when it is at most this
#: many times the CPU's own noise floor (the same iteration under another
#: CPU graph optimisation: other kernel orders, the same arithmetic).
PARITY_FLOOR_FACTOR = 100
#: Memory (MiB) a GPU may gain while the evaluator runs on another one and
#: still count as untouched (a CUDA context alone is several hundred MiB).
UNTOUCHED_MIB = 64


def device_report():
    """What this process's TensorFlow sees: ``{"tensorflow", "cuda_build",
    "gpus": [{"name", "device_name", "compute_capability"}], "driver",
    "hidden", "tf32_default"}``."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from sagan_tf.training import devices, nvidia  # pylint: disable=import-outside-toplevel
    build = tf.sysconfig.get_build_info()
    gpus = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capability = details.get("compute_capability")
        gpus.append({"name": gpu.name, "device_name": details.get("device_name"),
                     "compute_capability": ".".join(map(str, capability)) if capability
                     else None})
    state = nvidia.observe()
    report = {"tensorflow": tf.__version__,
              "cuda_build": {k: build.get(k) for k in ("is_cuda_build", "cuda_version",
                                                       "cudnn_version")},
              "gpus": gpus, "driver": state.driver, "driver_version": state.driver_version,
              "device_nodes": list(state.device_nodes), "cuda_packages": state.cuda_packages,
              "hidden": devices.gpus_hidden_on_purpose(),
              "cuda_device_order": os.environ.get("CUDA_DEVICE_ORDER"),
              "tf32_default": bool(tf.config.experimental.tensor_float_32_execution_enabled())}
    if state.driver and not gpus:
        report["why_no_gpu"] = nvidia.why_no_gpu(state, devices.cuda_major())
    return report


def check_device_report(report, dry_run=False):
    """``(ok, message)``: whether the GPU check can run on what
    :func:`device_report` found. Without GPUs it cannot (except in a dry run):
    with a driver present that names each cause seen and its fix
    (``why_no_gpu``), without one it says there is nothing to check."""
    from sagan_tf.training.nvidia import GPU_INSTALL_FIX  # pylint: disable=import-outside-toplevel
    gpus = report["gpus"]
    if gpus:
        names = ", ".join(f"{g['device_name'] or g['name']}" for g in gpus)
        return True, f"{len(gpus)} GPU(s): {names}"
    if dry_run:
        return True, "dry run: no GPU used (CPU, tiny sizes)"
    if report["driver"] and not report["hidden"]:
        return False, (f"this machine has an NVIDIA driver ({report['driver']}) but "
                       f"TensorFlow {report['tensorflow']} sees no GPU (CUDA build: "
                       f"{report['cuda_build'].get('is_cuda_build')}): "
                       f"{report.get('why_no_gpu') or GPU_INSTALL_FIX}")
    why = "CUDA_VISIBLE_DEVICES hides them" if report["hidden"] else "no NVIDIA driver"
    return False, (f"no GPU visible to TensorFlow ({why}): nothing checked; --dry_run runs "
                   "the same phases on the CPU")


def write_records(data_dir, sizes, num_records, seed=0):
    """``num_records`` random images and labels of ``sizes`` in 4 record files
    of the release's format (named ``check_N.tfrecords``: not converter shards,
    which need a manifest); returns ``{"records", "files"}``."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    from sagan_tf.data import record_format  # pylint: disable=import-outside-toplevel
    rng = np.random.default_rng(seed)
    s, files = sizes["image_size"], 4
    os.makedirs(data_dir, exist_ok=True)
    for i in range(files):
        n = num_records // files + (i < num_records % files)
        record_format.write_records(
            os.path.join(data_dir, f"check_{i}.tfrecords"),
            rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8),
            rng.integers(0, sizes["number_classes"], n))
    return {"records": int(num_records), "files": files}


def _relative(got, want):
    """Max and mean relative error of ``got`` against ``want`` (float64)."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    diff = np.abs(got - want)
    return {"max_rel": float(diff.max() / max(np.abs(want).max(), 1e-30)),
            "mean_rel": float(diff.mean() / max(np.abs(want).mean(), 1e-30)),
            "finite": bool(np.all(np.isfinite(got)))}


def forward_parity(sizes, batch=8, seed=0):
    """G and D (``test`` networks of ``sizes``, float32) on the first GPU with
    TF32 off and on, against the same weights and inputs on the CPU.

    G runs in eval mode (moving statistics) without SN updates; D runs on G's
    CPU images, so that its figure is its own. Returns ``{"device",
    "tf32_off": {"generator": {max_rel, mean_rel, finite}, "discriminator":
    ...}, "tf32_on": ..., "ok"}``; ``ok``: every TF32-off figure within
    :data:`FORWARD_TOLERANCE`.
    """
    import keras  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from sagan_tf.models.networks import (Discriminator,  # pylint: disable=import-outside-toplevel
                                          Generator)
    from sagan_tf.training import devices  # pylint: disable=import-outside-toplevel
    keras.utils.set_random_seed(seed)
    common = dict(image_size=sizes["image_size"], num_classes=sizes["number_classes"])
    G = Generator(arch=sizes["generator_type"], z_dim=sizes["z_dim"], gf_dim=sizes["gf_dim"],
                  **common).ensure_built()
    D = Discriminator(arch=sizes["discriminator_type"], df_dim=sizes["df_dim"],
                      **common).ensure_built()
    rng = np.random.default_rng(seed)
    z = tf.constant(rng.standard_normal((batch, sizes["z_dim"])), tf.float32)
    y = tf.constant(rng.integers(0, sizes["number_classes"], batch), tf.int32)

    def run(device, tf32, images=None):
        devices.set_tf32(tf32)
        with tf.device(device):
            fake = G(z, y, training=False, update_sn=False)
            logits = D(fake if images is None else images, y, update_sn=False)
        return fake.numpy(), logits.numpy()
    cpu_images, cpu_logits = run("/cpu:0", False)
    gpu = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
    result = {"device": gpu, "batch": batch}
    try:
        for name, tf32 in (("tf32_off", False), ("tf32_on", True)):
            images, _ = run(gpu, tf32)
            _, logits = run(gpu, tf32, tf.constant(cpu_images))
            result[name] = {"generator": _relative(images, cpu_images),
                            "discriminator": _relative(logits, cpu_logits)}
    finally:
        devices.set_tf32(False)
    off = result["tf32_off"].values()
    result["ok"] = all(f["finite"] and f["max_rel"] <= FORWARD_TOLERANCE for f in off)
    return result


def _one_iteration(config, device, weights, images, labels, noise):
    """One training iteration (noise from outside) of a trainer on ``device``
    starting from ``weights`` (G's then D's variables, numpy; None: its own).
    Returns ``(weights before, metrics, weights after)`` as numpy."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from sagan_tf.training.trainer import Trainer  # pylint: disable=import-outside-toplevel
    trainer = Trainer(config, tf.distribute.MirroredStrategy([device]))
    variables = trainer.generator.variables + trainer.discriminator.variables
    for variable, value in zip(variables, weights or ()):
        variable.assign(value)
    before = [v.numpy() for v in variables]
    metrics, _, _ = trainer.parity_iteration(trainer.make_inputs_from_global(images, labels, noise))
    return before, {k: float(v) for k, v in metrics.items()}, [v.numpy() for v in variables]


def _update_difference(got, want, before):
    """``|got - want| / |want - before|`` over all variables (Euclidean norms):
    the difference of two iterations' results relative to the update itself.
    (Per variable it would be dominated by Adam's first step on parameters
    whose gradient is ~0: ``g / sqrt(v)`` turns rounding noise into +-lr.)"""
    import numpy as np  # pylint: disable=import-outside-toplevel
    diff = sum(float(np.sum((g.astype(np.float64) - w) ** 2)) for g, w in zip(got, want))
    step = sum(float(np.sum((w.astype(np.float64) - b) ** 2)) for w, b in zip(want, before))
    return (diff / max(step, 1e-300)) ** 0.5


def parity_verdict(difference, floor, factor=PARITY_FLOOR_FACTOR, minimum=1e-6):
    """Whether a device's difference from the CPU agrees: at most ``factor``
    times the CPU's own noise ``floor`` (at least ``minimum``, for a floor of 0)."""
    return difference <= factor * max(floor, minimum)


def training_parity(sizes, dry_run=False, seed=0):
    """One training iteration (G then D, float32, TF32 off) from the same weights
    and inputs on the CPU and on the first GPU, against the CPU's own noise
    floor: the same iteration on the CPU with the other Grappler setting
    (``--graph_optimization light`` vs ``full``: other kernel orders). In a
    dry run the "GPU" is a second logical CPU.

    Returns ``{"device", "floor": {"weights", "metrics", "finite"},
    "difference": {...}, "ok"}``: the weights after the iteration (their
    difference relative to the update, :func:`_update_difference`) and the
    metrics (max relative difference) against the CPU's; ``ok``: finite, and
    each within :func:`parity_verdict` of its floor.
    """
    import math  # pylint: disable=import-outside-toplevel

    import numpy as np  # pylint: disable=import-outside-toplevel

    from sagan_tf.training import devices  # pylint: disable=import-outside-toplevel
    from sagan_tf.training.config import TrainConfig  # pylint: disable=import-outside-toplevel
    if dry_run:
        devices.configure_cpu_replicas(2)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    devices.set_tf32(False)
    device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:1"
    config = TrainConfig(**sizes, seed=seed, graph_optimization="full")
    rng = np.random.default_rng(seed)
    n, s = sizes["batch_size"], sizes["image_size"]
    images = rng.uniform(-1, 1, (n, s, s, 3)).astype(np.float32)
    labels = rng.integers(0, sizes["number_classes"], n).astype(np.int32)
    noise = {part: [(tf.constant(rng.standard_normal((n, sizes["z_dim"])), tf.float32),
                     tf.constant(rng.integers(0, sizes["number_classes"], n), tf.int32))]
             for part in ("g", "d")}
    weights, reference, after = _one_iteration(config, "/cpu:0", None, images, labels, noise)
    runs = {"floor": _one_iteration(dataclasses.replace(config, graph_optimization="light"),
                                    "/cpu:0", weights, images, labels, noise),
            "difference": _one_iteration(config, device, weights, images, labels, noise)}
    result = {"device": device}
    for name, (_, metrics, got) in runs.items():
        result[name] = {
            "weights": _update_difference(got, after, weights),
            "metrics": max(abs(metrics[k] - reference[k]) / max(abs(reference[k]), 1e-30)
                           for k in reference),
            "finite": all(math.isfinite(v) for v in metrics.values())}
    result["ok"] = result["difference"]["finite"] and all(
        parity_verdict(result["difference"][k], result["floor"][k]) for k in ("weights",
                                                                              "metrics"))
    return result


def placement_run(sizes, dry_run=False):
    """Where the compiled training iteration's ops run on one replica (the
    first GPU; the CPU in a dry run): :func:`sagan_tf.perf.placement.check_placement`
    of :func:`sagan_tf.perf.host_cost.port_variant`'s first call."""
    from sagan_tf.perf import host_cost  # pylint: disable=import-outside-toplevel
    from sagan_tf.training import devices  # pylint: disable=import-outside-toplevel
    devices.set_tf32(False)
    _, info = host_cost.port_variant(1, sizes)
    return dict(info["placement"], kernels_per_replica=info["kernels_per_replica"],
                dry_run=dry_run)


def train_run(sizes, precision, replicas, iterations, data_dir, checkpoint_dir, dry_run=False,
              xla=False):
    """``iterations`` steps of :func:`sagan_tf.training.loop.train` on the records of
    ``data_dir``, then what they did.

    Args:
      sizes: :data:`PAPER` or :data:`TINY`.
      precision: a key of :data:`PRECISIONS`.
      replicas: GPUs (the first ones; ``--num_towers``), or in a dry run
        logical CPU replicas.
      iterations: training steps; a checkpoint half way and at the end.
      xla: ``--xla`` (each replica's forward/backward passes XLA-compiled).

    Returns:
      ``{"ok", "start_line", "num_replicas", "global_batch_size",
      "first_step_s", "steps_per_second", "images_per_second", "metrics",
      "finite", "checkpoints", "checkpoint_complete", "applied_steps",
      "loss_scale", "peak_gpu_memory_bytes", "last_progress_line"}``.
    """
    import math  # pylint: disable=import-outside-toplevel

    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from sagan_tf.runs import checkpoints
    from sagan_tf.training import devices  # pylint: disable=import-outside-toplevel
    from sagan_tf.training.config import TrainConfig  # pylint: disable=import-outside-toplevel
    from sagan_tf.training.loop import train  # pylint: disable=import-outside-toplevel
    plan = devices.configure_training_devices(0 if dry_run else replicas, allow_cpu=dry_run,
                                              num_cpu_replicas=replicas if dry_run else 0)
    config = TrainConfig(
        data_dir=data_dir, checkpoint_dir=checkpoint_dir, seed=0, max_steps=iterations,
        num_towers=0 if dry_run else replicas, num_cpu_replicas=replicas if dry_run else 0,
        allow_cpu=dry_run, mixed_precision=PRECISIONS[precision], shuffle_buffer_size=256,
        xla=xla,
        log_every_steps=5, save_summaries_steps=10, save_checkpoint_secs=0,
        save_checkpoint_steps=max(iterations // 2, 1), keep_checkpoint_max=3, **sizes)
    lines = []
    result = train(config, log=lines.append)
    trainer = result["trainer"]
    metrics = result["metrics"]
    logdir = config.logdir
    complete = checkpoints.list_complete_checkpoints(logdir)
    out = {
        "precision": precision, "replicas": replicas, "plan": plan.note, "xla": xla,
        "start_line": next((ln for ln in lines if ln.startswith("Replicas:")), None),
        "num_replicas": result["num_replicas"], "global_batch_size": result["global_batch_size"],
        "steps": result["step"], "first_step_s": round(result["first_step_s"], 3),
        "steps_per_second": result["steps_per_second"],
        "images_per_second": result["images_per_second"], "metrics": metrics,
        "finite": all(math.isfinite(v) for v in metrics.values()),
        "checkpoints": [os.path.basename(p) for p in complete],
        "checkpoint_complete": bool(complete) and complete[-1] == result["checkpoint"],
        "applied_steps": {"g": int(trainer.g_optimizer.iterations.numpy()),
                          "d": int(trainer.d_optimizer.iterations.numpy())},
        "loss_scale": ({n: float(getattr(trainer, f"{n}_optimizer").dynamic_scale.numpy())
                        for n in ("g", "d")} if precision == "fp16" else None),
        "peak_gpu_memory_bytes": [
            tf.config.experimental.get_memory_info(f"GPU:{i}")["peak"]
            for i in range(len(tf.config.list_logical_devices("GPU")))],
        "last_progress_line": next((ln for ln in reversed(lines) if ln.startswith("step ")),
                                   None)}
    out["ok"] = (out["finite"] and out["checkpoint_complete"] and out["steps"] == iterations
                 and out["num_replicas"] == replicas)
    return out


def host_cost_run(replica_counts, release, rounds, dry_run=False):
    """The host's share of a training iteration (:mod:`sagan_tf.perf.host_cost`)
    at minimal compute (:data:`HOST_COST`; :data:`HOST_COST_DRY` in a dry run),
    with each of ``replica_counts`` replicas (GPUs; logical CPUs in a dry run)
    and, with ``release``, the release's TF1 graph on one device, alternated.

    At minimal compute the GPU's work is negligible, so seconds per iteration
    over kernels executed per replica (``microseconds_per_kernel``) measures
    what docs/PERFORMANCE.md §9 assumes (5-10 us per kernel launch and
    executor bookkeeping). Returns ``{"ok", "variants": {name: figures}}``.
    """
    from sagan_tf.perf import host_cost  # pylint: disable=import-outside-toplevel
    from sagan_tf.perf.machine import setup_devices  # pylint: disable=import-outside-toplevel
    setup_devices(max(replica_counts), cpu_if_too_few_gpus=True)  # a dry run: logical CPUs
    size = HOST_COST_DRY if dry_run else HOST_COST
    measured = host_cost.measure_iterations(sorted(set(replica_counts)), size, release=release,
                                            threads=0, profile_steps=2, rounds=rounds, steps=2,
                                            warmup=2)
    keep = ("replicas", "first_iteration_seconds", "ops_traced_per_replica",
            "kernels_per_replica", "kernels_executed_per_replica", "cross_replica_reductions",
            "reduce_calls_traced", "seconds_per_iteration", "microseconds_per_kernel",
            "median_vs_port_1", "median_vs_release_tf1", "placement")
    variants = {name: {k: v[k] for k in keep if k in v}
                for name, v in measured["variants"].items()}
    ok = all(v.get("kernels_executed_per_replica", 0) > 0
             and v["seconds_per_iteration"]["median"] > 0 for v in variants.values())
    return {"ok": ok, "size": size, "variants": variants,
            "load_average_during": measured["load_average_during"]}


def untouched_gpus(baseline, samples, chosen, threshold_mib=UNTOUCHED_MIB):
    """Whether a process ran on GPU ``chosen`` only, from per-GPU memory before
    it started (``baseline``) and while it ran (``samples``, each a
    :func:`parse_gpu_query` dict; ``chosen`` is an ``nvidia-smi`` index).

    Returns ``{"chosen", "grew_mib": {index: max increase}, "others_untouched",
    "chosen_used", "chosen_fraction"}``: the others untouched when none grew by
    more than ``threshold_mib``; ``chosen_fraction`` the chosen GPU's largest
    increase over its memory (small with memory growth, ~1 without).
    """
    grew = {i: max([s[i]["used_mib"] - base["used_mib"] for s in samples if i in s] or [0.0])
            for i, base in baseline.items()}
    others = {i: g for i, g in grew.items() if i != chosen}
    total = baseline.get(chosen, {}).get("total_mib") or 0
    return {"chosen": chosen, "grew_mib": grew,
            "others_untouched": all(g <= threshold_mib for g in others.values()),
            "chosen_used": grew.get(chosen, 0.0) > threshold_mib,
            "chosen_fraction": grew.get(chosen, 0.0) / total if total else None}


def train_order(precisions, num_gpus, replicas=("1", "all")):
    """``[(precision, replicas)]``: the first precision (fp32) on 1 replica, then
    on every GPU, then the other precisions on every GPU, then on 1; only the
    replica counts in ``replicas`` ("1", "all"), without repeats (1 GPU)."""
    counts = {"1": 1, "all": num_gpus}
    first = [(precisions[0], counts[r]) for r in ("1", "all") if r in replicas]
    rest = [(p, counts[r]) for r in ("all", "1") if r in replicas for p in precisions[1:]]
    out = []
    for item in first + rest:
        if item not in out:
            out.append(item)
    return out


#: The status of a phase left out because the check's time budget was spent.
SKIPPED_FOR_TIME = "skipped (budget spent)"


def exit_status(completed, runs):
    """The check's exit status: 0 when it completed and every phase passed or
    was only skipped for lack of time (:data:`SKIPPED_FOR_TIME`), else 1."""
    return 0 if completed and all(r["status"] in ("ok", SKIPPED_FOR_TIME) for r in runs) else 1
