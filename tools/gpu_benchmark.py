r"""The GPU check of docs/PERFORMANCE.md ("GPU figures"): four benchmark runs at paper widths.

On a machine with a GPU, runs ``tools/benchmark.py`` at the paper's
configuration (``--arch test``, 128x128, gf=df=64, 1000 classes, batch 64 on
one GPU) in four variants, each in its own process with a timeout:

  fp32  float32 (TensorFlow's default TF32 for matmuls/convolutions on Ampere+)
  bf16  --mixed_precision mixed_bfloat16
  fp16  --mixed_precision mixed_float16 (dynamic loss scaling)
  xla   --xla (float32), last: compiling the paper graph is the slowest part

Each run measures the GPU's peak (matmul and 3x3 conv, in float32 and its
compute dtype) and reports achieved TFLOP/s and fraction of peak. The FLOPs
are counted once, in the first run, and passed to the others
(``--flops_per_iteration``; the variants run the same model).

Writes into ``--out_dir`` (default: ``$OUT``): ``benchmark.jsonl`` (the JSON
line of each run that finished, with a ``variant`` key), ``<variant>.log``
(its stderr), ``summary.md`` and ``summary.json``; prints the summary. The
whole check is held to ``--budget_s`` seconds of wall time (default 450,
inside 8 minutes with process start-up): each run's timeout is the smaller of
its own cap and what is left.

On a machine without a GPU it prints one line saying so, measures nothing and
exits with status 0 (``summary.md`` says the same when an output directory is
given). ``--cpu_smoke`` runs the same commands at a tiny configuration on the
CPU (1 iteration, no peak) to check them; ``--dry_run`` only prints them.
Exit status: 0 when every run finished (or there is no GPU), 1 when one failed
or timed out (the others' figures are still written).

  python tools/gpu_benchmark.py --out_dir /tmp/gpu_check
  OUT=/tmp/gpu_check python tools/gpu_benchmark.py
  python tools/gpu_benchmark.py --dry_run
"""
import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARK = os.path.join(HERE, "benchmark.py")

#: The paper's configuration, one GPU, batch 64 per replica (the release: 4 x 64).
PAPER_ARGS = ("--arch", "test", "--image_size", "128", "--gf_dim", "64", "--df_dim", "64",
              "--z_dim", "128", "--number_classes", "1000", "--batch_size", "64",
              "--num_replicas", "1")
#: --cpu_smoke: the same commands at a size that runs in seconds on a CPU.
SMOKE_ARGS = ("--arch", "test", "--image_size", "32", "--gf_dim", "8", "--df_dim", "8",
              "--z_dim", "16", "--number_classes", "5", "--batch_size", "2",
              "--num_replicas", "1", "--nopeak", "--threads", "2")
#: Variant -> (extra flags, timeout cap in seconds on the GPU), in run order.
VARIANTS = {
    "fp32": ((), 150),
    "bf16": (("--mixed_precision", "mixed_bfloat16"), 120),
    "fp16": (("--mixed_precision", "mixed_float16"), 120),
    "xla": (("--xla",), 240),
}


def define_flags():
    flags.DEFINE_string("out_dir", None, "Where the JSON lines, logs and summary go "
                        "(default: the environment variable OUT).")
    flags.DEFINE_list("variants", list(VARIANTS),
                      f"Which runs, in this order; any of {', '.join(VARIANTS)}.")
    flags.DEFINE_integer("iterations", 20, "Timed iterations per run.", lower_bound=1)
    flags.DEFINE_integer("warmup", 2, "Untimed iterations per run (the first one traces "
                         "and compiles: ~25 s and more at paper widths).", lower_bound=1)
    flags.DEFINE_integer("budget_s", None, "Wall-clock budget of the whole check, detection "
                         "included (default: 450 on the GPU, 1800 with --cpu_smoke).",
                         lower_bound=30)
    flags.DEFINE_boolean("cpu_smoke", False, "Run the commands at a tiny configuration on the "
                         "CPU (1 iteration, no peak), to check that they work.")
    flags.DEFINE_boolean("dry_run", False, "Print the commands and exit.")


def benchmark_commands(variants, iterations, warmup, smoke=False):
    """``[(variant, argv, timeout cap)]``: the benchmark command line of each run."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; "
                         f"known: {', '.join(VARIANTS)}")
    base = SMOKE_ARGS if smoke else PAPER_ARGS
    if smoke:
        iterations, warmup = 1, 1
    out = []
    for v in variants:
        extra, cap = VARIANTS[v]
        argv = [sys.executable, BENCHMARK, *base, *extra,
                "--iterations", str(iterations), "--warmup", str(warmup)]
        out.append((v, argv, 600 if smoke else cap))
    return out


def detect_gpus(timeout_s=120):
    """Names of the GPUs TensorFlow sees, from a separate process (this one stays
    free of CUDA). Without an NVIDIA driver (no ``nvidia-smi``, no
    ``/dev/nvidia*``) returns [] at once, without importing TensorFlow."""
    if not shutil.which("nvidia-smi") and not glob.glob("/dev/nvidia*"):
        return []
    code = ("import json, tensorflow as tf; gpus = tf.config.list_physical_devices('GPU'); "
            "print(json.dumps([tf.config.experimental.get_device_details(g).get("
            "'device_name', g.name) for g in gpus]))")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout_s, env=env)
    if proc.returncode:
        raise RuntimeError("could not list GPUs with TensorFlow: "
                           + (proc.stderr.strip().splitlines() or ["?"])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _figure(value, scale=1.0, fmt="{:.3f}"):
    return "" if value is None else fmt.format(value * scale)


def summarize(runs, machine_line, smoke=False):
    """Markdown summary: one row per run (its times beside the peak of its dtype)."""
    title = ("GPU check commands, CPU smoke run (tiny configuration)" if smoke
             else "GPU check, paper widths, batch 64 on one GPU")
    lines = [f"{title}. {machine_line}", "",
             "| variant | status | median s/it (min) | images/s | first iteration s | "
             "achieved TFLOP/s | peak TFLOP/s matmul / conv (dtype) | fraction of peak | "
             "peak GPU memory GiB | process s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run in runs:
        r = run.get("result") or {}
        peak = r.get("peak_gflops") or {}
        median = _figure(r.get("median_seconds_per_iteration"), fmt="{:.4f}")
        if median:
            median += f" ({_figure(r.get('min_seconds_per_iteration'), fmt='{:.4f}')})"
        peak_text = (f"{peak['matmul'] / 1e3:.0f} / {peak['conv'] / 1e3:.0f} ({peak['dtype']})"
                     if peak else "")
        lines.append(
            f"| {run['variant']} | {run['status']} | {median} | "
            f"{_figure(r.get('images_per_second'), fmt='{:.1f}')} | "
            f"{_figure(r.get('first_iteration_seconds'), fmt='{:.1f}')} | "
            f"{_figure(r.get('achieved_gflops'), 1e-3, '{:.3g}')} | {peak_text} | "
            f"{_figure(r.get('fraction_of_peak'), 100, '{:.0f}%')} | "
            f"{_figure(r.get('peak_device_memory_bytes'), 2.0 ** -30, '{:.1f}')} | "
            f"{run['wall_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def run_all(commands, out_dir, budget_s, smoke):
    """Runs the commands one after the other under the budget; returns the runs."""
    start = time.monotonic()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if smoke:
        env["CUDA_VISIBLE_DEVICES"] = "-1"  # the smoke run is a CPU run, GPU or not
    runs, flops = [], None
    for variant, argv, cap in commands:
        left = budget_s - (time.monotonic() - start)
        run = {"variant": variant, "command": shlex.join(argv), "result": None}
        runs.append(run)
        if left < 20:
            run.update(status="skipped (budget spent)", wall_seconds=0.0)
            continue
        if flops:
            argv = [*argv, "--flops_per_iteration", str(flops)]
            run["command"] = shlex.join(argv)
        timeout = min(cap, left)
        print(f"[gpu_benchmark] {variant}: {run['command']} (timeout {timeout:.0f} s)",
              flush=True)
        t0 = time.monotonic()
        log_path = os.path.join(out_dir, f"{variant}.log")
        with open(log_path, "w") as log:
            try:
                proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=log, text=True,
                                      timeout=timeout, env=env)
            except subprocess.TimeoutExpired:
                proc = None
        run["wall_seconds"] = time.monotonic() - t0
        if proc is None:
            run["status"] = f"timed out after {timeout:.0f} s"
        elif proc.returncode:
            run["status"] = f"failed (exit {proc.returncode}; see {variant}.log)"
        else:
            try:
                run["result"] = json.loads(proc.stdout.strip().splitlines()[-1])
                run["status"] = "ok"
            except (ValueError, IndexError):
                run["status"] = f"failed (no JSON line; see {variant}.log)"
        if run["result"]:
            flops = flops or run["result"].get("flops_per_iteration")
            with open(os.path.join(out_dir, "benchmark.jsonl"), "a") as f:
                f.write(json.dumps({"variant": variant, **run["result"]}, sort_keys=True)
                        + "\n")
        print(f"[gpu_benchmark] {variant}: {run['status']} ({run['wall_seconds']:.0f} s)",
              flush=True)
    return runs


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        commands = benchmark_commands(FLAGS.variants, FLAGS.iterations, FLAGS.warmup,
                                      smoke=FLAGS.cpu_smoke)
    except ValueError as e:
        raise app.UsageError(f"--variants: {e}")
    if FLAGS.dry_run:
        for _, cmd, _ in commands:
            print(shlex.join(cmd))
        return 0
    out_dir = FLAGS.out_dir or os.environ.get("OUT")
    if out_dir and os.path.exists(os.path.join(out_dir, "benchmark.jsonl")):
        raise app.UsageError(f"{out_dir}/benchmark.jsonl exists: choose an empty --out_dir "
                             "(earlier figures are not overwritten)")
    start = time.monotonic()
    budget_s = FLAGS.budget_s or (1800 if FLAGS.cpu_smoke else 450)
    if FLAGS.cpu_smoke:
        machine_line = "CPU smoke run (tiny configuration, 1 iteration): not a measurement."
    else:
        gpus = detect_gpus()
        if not gpus:
            message = ("gpu_benchmark: no GPU visible to TensorFlow on this machine; nothing "
                       "measured (--cpu_smoke checks the commands on the CPU).")
            print(message)
            if out_dir:
                os.makedirs(out_dir, exist_ok=True)
                with open(os.path.join(out_dir, "summary.md"), "w") as f:
                    f.write(message + "\n")
            return 0
        machine_line = f"GPU 0 of {len(gpus)}: {gpus[0]}."
    if not out_dir:
        raise app.UsageError("no output directory: pass --out_dir or set $OUT")
    os.makedirs(out_dir, exist_ok=True)
    budget_s -= time.monotonic() - start  # detection counts
    runs = run_all(commands, out_dir, budget_s, FLAGS.cpu_smoke)
    first = next((r["result"] for r in runs if r["result"]), None)
    if first:
        m = first["machine"]
        machine_line += (f" Host CPU: {m['cpu_model']} ({m['logical_cpus']} logical CPUs);"
                         f" TensorFlow {first['config']['tensorflow']};"
                         f" FLOPs per iteration (counted): {first['flops_per_iteration']}.")
    text = summarize(runs, machine_line, FLAGS.cpu_smoke)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump({"machine": machine_line, "budget_s": budget_s,
                   "runs": [{k: v for k, v in r.items() if k != "result"} for r in runs]},
                  f, indent=1, sort_keys=True)
    print(text, end="")
    return 0 if all(r["status"] == "ok" for r in runs) else 1


if __name__ == "__main__":
    define_flags()
    app.run(main)
