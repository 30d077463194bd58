r"""The GPU check of docs/PERFORMANCE.md §7: one call, within 8 minutes, on a machine with GPUs.

Phases, in this order, each in its own process with a timeout (the library
side is ``sagan_tf/perf/gpu_check.py``):

  devices   the GPUs TensorFlow sees, its CUDA build, the driver. A driver
            without visible GPUs (a TensorFlow without CUDA) fails the
            check at once, naming the fix; so does a machine without GPUs.
  data      generated training records (the release's format) and a
            stand-in classifier (no download) for the evaluator.
  forward   G and D at paper widths on the first GPU, TF32 off (and on, for
            comparison), against float32 on the CPU: relative errors.
  parity    one training iteration (G then D, float32, TF32 off) from the
            same weights and inputs on the CPU and on the first GPU: the
            difference of the weights and losses against the CPU's own
            noise floor (the same iteration under the other Grappler setting).
  placement the compiled training iteration on the first GPU: no op asked
            for on the GPU may run on the CPU (soft placement's silent
            fallback, e.g. an op without a bf16/fp16 GPU kernel).
  train     20 iterations of the real training loop (sagan_tf.training.loop.train:
            records -> input pipeline, non-finite guard, summaries, a
            checkpoint half way and at the end, sample grid), paper widths,
            batch 64 per replica: fp32 on 1 replica, then on every GPU,
            then fp16 and bf16 on every GPU, then on 1 replica (runs that
            would repeat one, with a single GPU, are left out).
  eval      eval_imagenet.py on the last GPU (--device gpu:N) over the fp32
            1-replica run's checkpoint, while nvidia-smi shows each GPU's
            memory: the others must stay untouched, the chosen one must not
            be filled (memory growth).
  train_fp32_xla_x1  4 iterations of the loop with --xla on 1 GPU.
  host_cost the host's share of an iteration at minimal compute (test
            networks, 128x128, gf=df=8, batch 2 per replica): kernels per
            replica, cross-replica reductions, time per iteration and per
            kernel, with 1 GPU and with every GPU (up to 4), against the
            release's TF1 graph on one GPU, alternated (docs/PERFORMANCE.md §9).

Everything is held to --budget_s of wall time (default 450 s, inside 8
minutes with start-up; 1800 s with --dry_run); a phase that would start with under 20 s left is
skipped (status "skipped (budget spent)"). Writes into --out_dir (default: $OUT): ``gpu_check.jsonl`` (one JSON
line per phase: name, status, seconds, result), ``<phase>.log`` (its
stderr), ``summary.md`` and ``summary.json``; prints the summary. Exit status
0 when every phase passed or was skipped for lack of time, 1 otherwise (the
others' figures are still written).

``--dry_run`` runs the same phases on the CPU at tiny sizes (32x32, widths 4,
4 iterations; "every GPU" is 2 logical CPUs; the evaluator on --device cpu,
its memory check not measured; the parity phase compares two logical CPUs,
the placement phase runs on the CPU): what a machine without GPUs can check.

  OUT=/path/to/empty/dir python tools/perf/gpu_benchmark.py
  python tools/perf/gpu_benchmark.py --out_dir /tmp/gpu_check --precisions fp32,bf16
  python tools/perf/gpu_benchmark.py --dry_run --out_dir /tmp/gpu_check_dry
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from sagan_tf.perf import gpu_check  # imports no TensorFlow
from sagan_tf.training import nvidia

FLAGS = flags.FLAGS
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
#: Phase -> timeout cap in seconds.
CAPS = {"devices": 90, "data": 120, "forward": 150, "parity": 150, "placement": 120,
        "host_cost": 120, "train": 200, "eval": 150}
#: Results file in --out_dir.
JSONL = "gpu_check.jsonl"


def define_flags():
    """The check's flags (defined when it runs as a script, not on import)."""
    flags.DEFINE_string("out_dir", None, "Where the JSON lines, logs and summary go (default: "
                        "the environment variable OUT).")
    flags.DEFINE_list("precisions", list(gpu_check.PRECISIONS),
                      f"Training precisions, any of {', '.join(gpu_check.PRECISIONS)}.")
    flags.DEFINE_list("replicas", ["1", "all"], "Training runs on 1 replica and/or on every GPU "
                      "('all'; 2 logical CPUs with --dry_run).")
    flags.DEFINE_integer("iterations", None, "Training iterations per run (default 20; 4 with "
                         "--dry_run).", lower_bound=2)
    flags.DEFINE_integer("eval_samples", None, "Generated samples of the evaluation (default "
                         "2000; 64 with --dry_run).", lower_bound=16)
    flags.DEFINE_integer("budget_s", None, "Wall-clock budget of the whole check (default 450; "
                         "1800 with --dry_run).", lower_bound=30)
    flags.DEFINE_boolean("dry_run", False, "Run every phase on the CPU at tiny sizes.")
    flags.DEFINE_string("work_dir", None, "Records, checkpoints and the classifier (default: a "
                        "temporary directory, removed at the end).")
    flags.DEFINE_string("phase", None, "Internal: run one phase in this process.")
    flags.DEFINE_string("phase_args", "{}", "Internal: the phase's arguments (JSON).")


# ----------------------------------------------------------------------------
# One phase, in this process (a child of the check).

def run_phase(name, args):
    """Runs phase ``name`` here; returns its JSON-able result."""
    from sagan_tf import cli  # pylint: disable=import-outside-toplevel
    cli.quiet_tensorflow()
    if name == "devices":
        report = gpu_check.device_report()
        report["ok"], report["verdict"] = gpu_check.check_device_report(report, args["dry_run"])
        return report
    sizes = gpu_check.TINY if args["dry_run"] else gpu_check.PAPER
    if name == "data":
        out = gpu_check.write_records(args["data_dir"], sizes, args["num_records"])
        from sagan_tf.evaluation import \
            demo_classifier as classifier  # pylint: disable=import-outside-toplevel
        size = sizes["image_size"] if args["dry_run"] else 299  # Inception's input size
        model = classifier.build_classifier_model(size, sizes["number_classes"])
        out["classifier"] = classifier.save_classifier(model, size, args["classifier_dir"])
        return out
    if name == "forward":
        return gpu_check.forward_parity(sizes, batch=2 if args["dry_run"] else 8)
    if name == "parity":
        return gpu_check.training_parity(sizes, dry_run=args["dry_run"])
    if name == "placement":
        return gpu_check.placement_run(sizes, dry_run=args["dry_run"])
    if name == "host_cost":
        return gpu_check.host_cost_run(args["replicas"], args["release"], args["rounds"],
                                       dry_run=args["dry_run"])
    if name == "train":
        return gpu_check.train_run(sizes, args["precision"], args["replicas"],
                                   args["iterations"], args["data_dir"], args["checkpoint_dir"],
                                   dry_run=args["dry_run"], xla=args.get("xla", False))
    raise app.UsageError(f"--phase {name}: unknown")


# ----------------------------------------------------------------------------
# The check: phases in child processes, under the budget.

class Check:
    """The phases run so far (``self.runs``) and the budget left."""

    def __init__(self, out_dir, work_dir, budget_s, dry_run):
        self.out_dir, self.work_dir, self.dry_run = out_dir, work_dir, dry_run
        self.deadline = time.monotonic() + budget_s
        self.runs = []
        self.env = dict(os.environ, PYTHONPATH=ROOT, CUDA_DEVICE_ORDER="PCI_BUS_ID")
        self.env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the quiet start filters the notices
        if dry_run:
            self.env["CUDA_VISIBLE_DEVICES"] = "-1"

    def left(self):
        return self.deadline - time.monotonic()

    def record(self, run):
        self.runs.append(run)
        with open(os.path.join(self.out_dir, JSONL), "a") as f:
            f.write(json.dumps(run, sort_keys=True) + "\n")
        print(f"[gpu_check] {run['name']}: {run['status']} ({run['seconds']:.0f} s)", flush=True)
        return run

    def start(self, name):
        """A run record, or None (recorded as skipped) when the budget is spent."""
        if self.left() < 20:
            self.record({"name": name, "status": gpu_check.SKIPPED_FOR_TIME, "seconds": 0.0,
                         "result": None})
            return None
        return {"name": name, "status": None, "result": None}

    def phase(self, name, phase, cap, env=None, **args):
        """Runs ``phase`` in a child process; records and returns the run."""
        run = self.start(name)
        if run is None:
            return None
        argv = [sys.executable, os.path.abspath(__file__), "--phase", phase, "--phase_args",
                json.dumps(dict(args, dry_run=self.dry_run))]
        timeout = min(cap * (4 if self.dry_run else 1), self.left())
        t0 = time.monotonic()
        with open(os.path.join(self.out_dir, f"{name}.log"), "w") as log:
            try:
                proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=log, text=True,
                                      timeout=timeout, env=env or self.env)
            except subprocess.TimeoutExpired:
                proc = None
        run["seconds"] = time.monotonic() - t0
        if proc is None:
            run["status"] = f"timed out after {timeout:.0f} s"
        elif proc.returncode:
            run["status"] = f"failed (exit {proc.returncode}; see {name}.log)"
        else:
            try:
                run["result"] = json.loads(proc.stdout.strip().splitlines()[-1])
                run["status"] = "ok" if run["result"].get("ok", True) else "failed (see result)"
            except (ValueError, IndexError):
                run["status"] = f"failed (no JSON line; see {name}.log)"
        return self.record(run)

    def evaluate(self, run_dir, data_dir, classifier, batch_size, gpu_index, samples):
        """eval_imagenet.py on one device while nvidia-smi samples every GPU's memory."""
        run = self.start("eval")
        if run is None:
            return None
        device = "cpu" if gpu_index is None else f"gpu:{gpu_index}"
        argv = [sys.executable, os.path.join(ROOT, "eval_imagenet.py"),
                f"--checkpoint_dir={run_dir}", f"--batch_size={batch_size}",
                f"--data_dir={data_dir}", f"--inception_path={classifier}",
                f"--eval_sample_size={samples}", f"--num_real_samples={samples}",
                "--dcgan_generator_batch_size=50", "--max_evals=1", "--timeout=0",
                "--eval_interval_secs=0", "--seed=0", f"--device={device}",
                f"--eval_dir={os.path.join(self.work_dir, 'eval')}"]
        timeout = min(CAPS["eval"] * (4 if self.dry_run else 1), self.left())
        baseline = None if gpu_index is None else gpu_check.gpu_memory_query()
        samples_seen, t0 = [], time.monotonic()
        with open(os.path.join(self.out_dir, "eval.log"), "w") as log:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True,
                                    env=self.env)
            while proc.poll() is None and time.monotonic() - t0 < timeout:
                if baseline:
                    snapshot = gpu_check.gpu_memory_query()
                    if snapshot:
                        samples_seen.append(snapshot)
                time.sleep(0.5)
            if proc.poll() is None:
                proc.kill()
            out, _ = proc.communicate()
        run["seconds"] = time.monotonic() - t0
        lines = [ln for ln in out.splitlines() if ln.startswith('{"step"')]
        result = {"device": device, "evaluation": json.loads(lines[-1]) if lines else None}
        with open(os.path.join(self.out_dir, "eval.log")) as f:
            result["device_line"] = next((ln.strip() for ln in f if "Evaluating on" in ln), None)
        if baseline:
            result["memory"] = gpu_check.untouched_gpus(baseline, samples_seen,
                                                        _smi_index(gpu_index))
        else:
            result["memory"] = "not measured (no GPU or no nvidia-smi)"
        ok = proc.returncode == 0 and result["evaluation"] is not None
        if baseline:
            ok = ok and result["memory"]["others_untouched"] and result["memory"]["chosen_used"]
        run["result"] = result
        run["status"] = "ok" if ok else (f"failed (exit {proc.returncode}; see eval.log)"
                                         if proc.returncode else "failed (see result)")
        return self.record(run)


def _smi_index(tf_index):
    """nvidia-smi's number of TensorFlow's GPU ``tf_index`` (the children run
    with CUDA_DEVICE_ORDER=PCI_BUS_ID; CUDA_VISIBLE_DEVICES may keep a subset)."""
    numbers = nvidia.smi_indices(tf_index + 1, dict(os.environ, CUDA_DEVICE_ORDER="PCI_BUS_ID"),
                                 gpu_check.gpu_memory_query())
    return tf_index if numbers is None else numbers[tf_index]


def run_check(check, iterations, eval_samples, precisions, replicas=("1", "all")):
    """All the phases; returns False when the devices phase stops the check."""
    devices_run = check.phase("devices", "devices", CAPS["devices"])
    report = devices_run and devices_run["result"]
    if report is None:
        return False
    if not report["ok"]:  # no GPU: nothing to check (a driver without one: the fix)
        print(f"gpu_benchmark: error: {report['verdict']}", file=sys.stderr, flush=True)
        return False
    num_gpus = 2 if check.dry_run else len(report["gpus"])
    sizes = gpu_check.TINY if check.dry_run else gpu_check.PAPER
    work = check.work_dir
    data_dir, classifier = os.path.join(work, "records"), os.path.join(work, "classifier")
    cpu_env = dict(check.env, CUDA_VISIBLE_DEVICES="-1")
    records = max(4 * sizes["batch_size"] * num_gpus, eval_samples, 256)
    check.phase("data", "data", CAPS["data"], env=cpu_env, data_dir=data_dir,
                classifier_dir=classifier, num_records=records)
    check.phase("forward", "forward", CAPS["forward"])
    check.phase("parity", "parity", CAPS["parity"])
    check.phase("placement", "placement", CAPS["placement"])
    for k, (precision, count) in enumerate(gpu_check.train_order(precisions, num_gpus, replicas)):
        run_dir = os.path.join(work, f"train_{precision}_{count}")
        trained = check.phase(f"train_{precision}_x{count}", "train", CAPS["train"],
                              precision=precision, replicas=count, iterations=iterations,
                              data_dir=data_dir, checkpoint_dir=run_dir)
        if k == 0 and trained and trained["status"] == "ok":  # eval reads its checkpoint
            check.evaluate(run_dir, data_dir, classifier, sizes["batch_size"],
                           None if check.dry_run else num_gpus - 1, eval_samples)
        elif k == 0:
            check.record({"name": "eval", "status": "skipped (no checkpoint: the first "
                          "training run did not pass)", "seconds": 0.0, "result": None})
        elif os.path.isdir(run_dir):
            shutil.rmtree(run_dir)  # paper-width checkpoints are ~1 GB each
    xla_dir = os.path.join(work, "train_xla")
    check.phase("train_fp32_xla_x1", "train", CAPS["train"], precision=precisions[0], replicas=1,
                iterations=min(iterations, 4), data_dir=data_dir, checkpoint_dir=xla_dir,
                xla=True)
    shutil.rmtree(xla_dir, ignore_errors=True)
    # Last: the training runs and the evaluator are the first-contact checks;
    # the host's share is a measurement, skipped first when the budget runs out.
    check.phase("host_cost", "host_cost", CAPS["host_cost"],
                replicas=[1] + ([min(num_gpus, 4)] if num_gpus > 1 else []),
                release=not check.dry_run, rounds=2 if check.dry_run else 6)
    return True


def summarize(runs, dry_run):
    """The markdown summary of the runs."""
    title = ("GPU check, dry run (CPU, tiny sizes): not a measurement" if dry_run
             else "GPU check (paper widths, batch 64 per replica)")
    lines = [f"# {title}", "", "| phase | status | seconds | figures |",
             "| --- | --- | --- | --- |"]
    for run in runs:
        lines.append(f"| {run['name']} | {run['status']} | {run['seconds']:.0f} | "
                     f"{_figures(run['name'], run.get('result'))} |")
    return "\n".join(lines) + "\n"


def _figures(name, r):
    """One table cell of a phase's main figures."""
    if not r:
        return ""
    if name == "devices":
        gpus = ", ".join(f"{g['device_name']} (cc {g['compute_capability']})" for g in r["gpus"])
        return (f"TensorFlow {r['tensorflow']}, CUDA {r['cuda_build'].get('cuda_version')}, "
                f"cuDNN {r['cuda_build'].get('cudnn_version')}; {gpus or 'no GPU'}; "
                f"{r.get('verdict', '')}")
    if name == "forward":
        return "; ".join(
            f"{k}: G max rel {r[k]['generator']['max_rel']:.2e}, D max rel "
            f"{r[k]['discriminator']['max_rel']:.2e}" for k in ("tf32_off", "tf32_on") if k in r)
    if name == "parity":
        return (f"{r['device']} vs CPU: weights {r['difference']['weights']:.2e}, metrics "
                f"{r['difference']['metrics']:.2e}; CPU noise floor: weights "
                f"{r['floor']['weights']:.2e}, metrics {r['floor']['metrics']:.2e}")
    if name == "placement":
        moved = ", ".join(f"{t} x{n}" for t, n in r["moved_by_type"].items()) or "none"
        return (f"{r['ops_requested_on_replicas']} ops asked for on the {r['replica_type']} "
                f"replica; run on the CPU instead: {moved}")
    if name == "host_cost":
        return "; ".join(
            f"{k}: {v.get('kernels_executed_per_replica', 0):.0f} kernels/replica, "
            f"{1e3 * v['seconds_per_iteration']['median']:.1f} ms/it, "
            f"{v.get('microseconds_per_kernel', float('nan')):.1f} us/kernel"
            for k, v in r["variants"].items())
    if name.startswith("train"):
        mem = max(r.get("peak_gpu_memory_bytes") or [0]) / 2 ** 30
        return (f"{r['num_replicas']} replica(s), global batch {r['global_batch_size']}: "
                f"{r['images_per_second']:.1f} img/s after a first step of "
                f"{r['first_step_s']:.1f} s; applied G/D steps {r['applied_steps']['g']}/"
                f"{r['applied_steps']['d']}; loss scale {r['loss_scale']}; peak GPU memory "
                f"{mem:.1f} GiB; checkpoints {', '.join(r['checkpoints'])}")
    if name == "eval":
        memory = r["memory"]
        if isinstance(memory, dict):
            memory = (f"MiB gained per GPU {memory['grew_mib']}, others untouched: "
                      f"{memory['others_untouched']}, chosen GPU's share "
                      f"{memory['chosen_fraction']:.1%}")
        return f"{r['device_line'] or r['device']}; {memory}"
    return ", ".join(f"{k} {v}" for k, v in r.items() if not isinstance(v, (dict, list)))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.phase:
        print(json.dumps(run_phase(FLAGS.phase, json.loads(FLAGS.phase_args))), flush=True)
        return 0
    unknown = [p for p in FLAGS.precisions if p not in gpu_check.PRECISIONS]
    if unknown or not FLAGS.precisions:
        raise app.UsageError(f"--precisions: unknown {', '.join(unknown) or '(none given)'}; "
                             f"known: {', '.join(gpu_check.PRECISIONS)}")
    if not FLAGS.replicas or set(FLAGS.replicas) - {"1", "all"}:
        raise app.UsageError(f"--replicas: 1 and/or all, got {FLAGS.replicas}")
    out_dir = FLAGS.out_dir or os.environ.get("OUT")
    if not out_dir:
        raise app.UsageError("no output directory: pass --out_dir or set $OUT")
    if os.path.exists(os.path.join(out_dir, JSONL)):
        raise app.UsageError(f"{out_dir}/{JSONL} exists: choose an empty --out_dir (earlier "
                             "figures are not overwritten)")
    os.makedirs(out_dir, exist_ok=True)
    work_dir = FLAGS.work_dir or tempfile.mkdtemp(prefix="gpu_check_")
    budget_s = FLAGS.budget_s or (1800 if FLAGS.dry_run else 450)
    check = Check(out_dir, work_dir, budget_s, FLAGS.dry_run)
    try:
        completed = run_check(check, FLAGS.iterations or (4 if FLAGS.dry_run else 20),
                              FLAGS.eval_samples or (64 if FLAGS.dry_run else 2000),
                              FLAGS.precisions, FLAGS.replicas)
    finally:
        if not FLAGS.work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
    text = summarize(check.runs, FLAGS.dry_run)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump({"dry_run": FLAGS.dry_run, "budget_s": budget_s, "runs": check.runs},
                  f, indent=1, sort_keys=True)
    print(text, end="")
    return gpu_check.exit_status(completed, check.runs)


if __name__ == "__main__":
    define_flags()
    app.run(main)
