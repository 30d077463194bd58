"""Training and evaluation survive faults and bad input, losing nothing.

One test per fault class, each driving the real entry points
(``train_imagenet.py``, ``eval_imagenet.py``) in subprocesses on a tiny
configuration, and asserting the message *and* that nothing earlier was lost
or changed:

* preemption (SIGTERM, then SIGINT on the resumed run);
* hard kills (SIGKILL at random moments, most of them inside a checkpoint
  save; every restart resumes from the newest complete checkpoint) with an
  evaluator watching the directory the whole time; damaged newest
  checkpoints fall back to an older one;
* divergence (``--on_nan=stop`` and ``--on_nan=skip_step``, with an exact
  state check of the undo in-process);
* bad input (records, flags, checkpoints of another architecture, an
  unwritable checkpoint directory, a full disk while saving).

Faults made on purpose: ``tests/nan_noise.py`` (``train_imagenet.py`` with a
trainer that trains on NaN noise at given steps) and the seam
``SAGAN_TF_TEST_SAVE_FAULT=enospc@N`` (documented in docs/ARCHITECTURE.md: the
save of ckpt-N fails like a full disk). Tests run as root, where a read-only
directory is still writable, so the unwritable directory is a path under a
regular file.
"""
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.runs import checkpoints
from sagan_tf.data import record_format
from sagan_tf.training.config import TrainConfig
from sagan_tf.training.faults import NonFiniteGuard
from sagan_tf.training.run_config import save_config
from sagan_tf.training.trainer import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(REPO, "train_imagenet.py")
EVAL = os.path.join(REPO, "eval_imagenet.py")
NAN_NOISE_TRAIN = os.path.join(REPO, "tests", "nan_noise.py")  # train_imagenet.py, NaN noise
S, B, C = 32, 2, 4


def _write_records(directory, num_files=2, per_file=16, seed=0, size=S, classes=C):
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    for k in range(num_files):
        record_format.write_records(os.path.join(directory, f"train-{k:02d}.tfrecords"),
                            rng.integers(0, 256, (per_file, size, size, 3), dtype=np.uint8),
                            rng.integers(0, classes, per_file))
    return str(directory)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return _write_records(tmp_path_factory.mktemp("records"))


def _flags(data_dir, ckpt_dir, **kw):
    base = dict(data_dir=data_dir, checkpoint_dir=ckpt_dir, image_size=S, gf_dim=4, df_dim=4,
                z_dim=16, number_classes=C, batch_size=B, seed=3, save_summaries_steps=0,
                log_every_steps=1, save_checkpoint_secs=0, shuffle_buffer_size=64)
    base.update(kw)
    out = []
    for k, v in base.items():
        if isinstance(v, bool):
            out.append(f"--{k}" if v else f"--no{k}")
        else:
            out.append(f"--{k}={v}")
    return out


def _env(**extra):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop(checkpoints.SAVE_FAULT_ENV, None)
    env.update(extra)
    return env


def _start(args, env=None, script=TRAIN):
    return subprocess.Popen([sys.executable, script] + args, cwd=REPO, env=env or _env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc, timeout=240):
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"timed out:\n{out[-3000:]}")
    return proc.returncode, out


def _run_all(jobs, timeout=300, parallel=3):
    """Runs ``{name: (args, env, script)}`` at most ``parallel`` at a time;
    returns ``{name: (returncode, output)}``."""
    pending, running, results = list(jobs.items()), {}, {}
    deadline = time.time() + timeout
    try:
        while pending or running:
            while pending and len(running) < parallel:
                name, (args, env, script) = pending.pop(0)
                running[name] = _start(args, env, script)
            for name, proc in list(running.items()):
                if proc.poll() is not None:
                    results[name] = (proc.returncode, proc.stdout.read())
                    del running[name]
            if time.time() > deadline:
                raise AssertionError(f"timed out: {sorted(running)}")
            time.sleep(0.1)
    finally:
        for proc in running.values():
            proc.kill()
            proc.wait()
    return results


class _Lines:
    """Reads a child's output line by line without blocking the test forever."""

    def __init__(self, proc):
        import threading
        self.proc, self.lines = proc, []
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, predicate, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(predicate(line) for line in list(self.lines)):
                return True
            if self.proc.poll() is not None:
                time.sleep(0.2)
                return any(predicate(line) for line in list(self.lines))
            time.sleep(0.05)
        return False

    def text(self):
        self._thread.join(timeout=10)
        return "".join(self.lines)


def _digest(logdir, name):
    h = hashlib.sha256()
    files = sorted(f for f in os.listdir(logdir) if f.startswith(name + "."))
    assert files, f"no files of {name} in {logdir}"
    for f in files:
        h.update(f.encode())
        with open(os.path.join(logdir, f), "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()


def _all_finite(path):
    reader = tf.train.load_checkpoint(path)
    for key in reader.get_variable_to_shape_map():
        value = reader.get_tensor(key)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.isfinite(value).all(), f"{key} of {path} is not finite"
    return True


# ----------------------------------------------------------------------------
# 1. Preemption.

def test_sigterm_and_sigint_checkpoint_the_current_step_and_resume(records, tmp_path):
    ckpt = str(tmp_path / "ckpt")
    logdir = os.path.join(ckpt, f"imagenet_{B}")
    args = _flags(records, ckpt, max_steps=100000, save_checkpoint_steps=3, shuffle=False)
    stopped_at = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        proc = _start(args)
        lines = _Lines(proc)
        try:
            # A few steps past the start (and past the last step-3 save).
            first = None
            assert lines.wait_for(lambda l: l.startswith("step "), 120), lines.text()
            first = int([l for l in lines.lines if l.startswith("step ")][0].split()[1]
                        .split("/")[0])
            assert lines.wait_for(lambda l: l.startswith(f"step {first + 4}/"), 60), \
                lines.text()
            proc.send_signal(sig)
            rc = proc.wait(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out = lines.text()
        assert rc == 0, out
        name = signal.Signals(sig).name
        assert f"Received {name}: saving a checkpoint after the current step" in out, out
        stop_line = [l for l in out.splitlines() if l.startswith(f"Stopped by {name} at step")]
        assert stop_line, out
        step = int(stop_line[0].split("at step ")[1].split(":")[0])
        # The checkpoint holds exactly the step the run reached (not the last periodic one).
        latest = checkpoints.latest_complete_checkpoint(logdir)
        assert latest.endswith(f"ckpt-{step}") and checkpoints.checkpoint_step(latest) == step
        assert step >= first + 4
        if stopped_at:  # the second run resumed from the first run's signal checkpoint
            assert f"Resumed from {logdir}/ckpt-{stopped_at[-1]} at step {stopped_at[-1]}" \
                in out, out
        else:
            assert "Starting from scratch" in out
        stopped_at.append(step)
    assert stopped_at[1] > stopped_at[0]
    # Nothing earlier changed: the periodic checkpoints are all complete.
    assert all(checkpoints.checkpoint_problem(p) is None
               for p in checkpoints.listed_checkpoints(logdir))


# ----------------------------------------------------------------------------
# 2. Hard kills, with an evaluator beside the trainer.

def _state_steps(logdir):
    return [checkpoints.checkpoint_step(p) for p in checkpoints.list_complete_checkpoints(logdir)]


def test_sigkill_at_random_moments_resumes_from_newest_complete_checkpoint(records, tmp_path):
    from test_metrics import save_standin_classifier
    classifier = save_standin_classifier(tmp_path / "classifier", input_size=S)
    ckpt = str(tmp_path / "ckpt")
    logdir = os.path.join(ckpt, f"imagenet_{B}")
    # A checkpoint every step: the child spends much of its time inside saves.
    args = _flags(records, ckpt, max_steps=100000, save_checkpoint_steps=1,
                  keep_checkpoint_max=3)
    rnd = random.Random(1234)
    evaluator = None
    lives = []
    try:
        for life in range(3):  # lives 0 and 2: random moments; life 1: mid-save
            before = _state_steps(logdir)
            newest_before = before[-1] if before else None
            proc = _start(args)
            lines = _Lines(proc)
            try:
                resumed = "Starting from scratch" if newest_before is None else \
                    f"Resumed from {logdir}/ckpt-{newest_before} at step {newest_before}"
                assert lines.wait_for(lambda l, r=resumed: r in l, 120), \
                    (resumed, lines.text())
                if evaluator is None:  # the evaluator starts once config.json exists
                    evaluator = _start(
                        [f"--checkpoint_dir={ckpt}", f"--batch_size={B}",
                         f"--inception_path={classifier}", "--eval_sample_size=8",
                         "--dcgan_generator_batch_size=8", "--num_real_samples=16",
                         "--eval_interval_secs=0", "--seed=1"], script=EVAL)
                    eval_lines = _Lines(evaluator)
                # Wait for a new complete checkpoint of this life, then kill at a
                # random moment of the following saves.
                deadline = time.time() + 60
                while time.time() < deadline:
                    now = _state_steps(logdir)
                    if now and (newest_before is None or now[-1] > newest_before):
                        break
                    assert proc.poll() is None, lines.text()
                    time.sleep(0.02)
                else:
                    raise AssertionError(f"no new checkpoint in life {life}:\n{lines.text()}")
                mid_save = False
                if life % 2:  # kill the moment a save's temporary directory shows up
                    deadline = time.time() + 30
                    while time.time() < deadline and not mid_save:
                        mid_save = any(f.endswith("_temp") for f in os.listdir(logdir))
                        if not mid_save:
                            time.sleep(0.0005)
                else:  # kill at a random moment
                    time.sleep(rnd.uniform(0.0, 1.2))
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            out = lines.text()
            saved = [int(l.split()[1].split("/")[0]) for l in out.splitlines()
                     if l.startswith("step ")]
            after = _state_steps(logdir)
            leftovers = checkpoints.unlisted_checkpoints(logdir)
            lives.append(dict(mid_save=mid_save, last_step_logged=saved[-1] if saved else None,
                              newest_complete=after[-1], leftovers=leftovers))
            # At most the steps since the last complete checkpoint are lost: every
            # step logged before the last one was checkpointed (a save follows each).
            if saved:
                assert after[-1] >= saved[-1] - 1, (saved, after, out)
        assert any(life["mid_save"] for life in lives), lives  # killed inside a save
        # Damage the two newest checkpoints: the next start says so and falls back.
        complete = checkpoints.list_complete_checkpoints(logdir)
        newest, second, third = complete[-1], complete[-2], complete[-3]
        os.remove(newest + ".index")                      # incomplete
        data_file = [f for f in os.listdir(logdir)
                     if f.startswith(os.path.basename(second) + ".data-")][0]
        with open(os.path.join(logdir, data_file), "r+b") as f:   # truncated
            f.truncate(16)
        target = checkpoints.checkpoint_step(third) + 3
        rc, out = _finish(_start(_flags(records, ckpt, max_steps=target,
                                        save_checkpoint_steps=1, keep_checkpoint_max=3)))
        assert rc == 0, out
        name = os.path.basename
        assert (f"latest checkpoint {name(newest)} is incomplete or corrupt (no "
                f"{name(newest)}.index); {name(second)} is incomplete or corrupt (restore "
                f"failed: ") in out, out
        assert f"; resuming from {name(third)}" in out, out
        assert f"Resumed from {third} at step {checkpoints.checkpoint_step(third)}" in out
        assert f"Done: step {target}" in out
        final = checkpoints.latest_complete_checkpoint(logdir)
        assert final.endswith(f"ckpt-{target}") and _all_finite(final)
        # The evaluator kept going through every kill and restart and evaluates the
        # final checkpoint; it never failed on a checkpoint.
        record_path = os.path.join(ckpt, "eval", "evaluated.json")

        def evaluated():
            try:
                with open(record_path) as f:
                    return [e["checkpoint"] for e in json.load(f)["evaluated"]]
            except (OSError, ValueError):
                return []
        deadline = time.time() + 90
        while time.time() < deadline and os.path.abspath(final) not in evaluated():
            assert evaluator.poll() is None, eval_lines.text()
            time.sleep(0.2)
        assert os.path.abspath(final) in evaluated(), eval_lines.text()
        assert evaluator.poll() is None
        evaluator.send_signal(signal.SIGTERM)
        evaluator.wait(timeout=30)
        eval_out = eval_lines.text()
        assert "Traceback" not in eval_out, eval_out
        results = [json.loads(l) for l in eval_out.splitlines() if l.startswith('{"step"')]
        assert len(results) >= 2 and all(np.isfinite(r["fid"]) for r in results)
        # It only ever saw complete checkpoints: each evaluated step is a saved step.
        steps = [r["step"] for r in results]
        assert steps == sorted(steps), steps
        print("lives:", lives, "evaluated steps:", steps)
    finally:
        if evaluator is not None and evaluator.poll() is None:
            evaluator.kill()
            evaluator.wait()


# ----------------------------------------------------------------------------
# 3. Divergence.

def test_non_finite_step_stops_or_is_skipped(records, tmp_path):
    jobs = {}
    for mode in ("stop", "skip_step"):
        jobs[mode] = (["5"] + _flags(records, str(tmp_path / mode), max_steps=6,
                                     save_checkpoint_steps=2, on_nan=mode, shuffle=False),
                      _env(), NAN_NOISE_TRAIN)
    res = _run_all(jobs, parallel=2)
    rc, out = res["stop"]
    logdir = str(tmp_path / "stop" / f"imagenet_{B}")
    assert rc == 1, out
    # NaN noise makes G's weights NaN; whether the losses show it depends on
    # the kernels (oneDNN's fused conv+ReLU maps NaN to 0), so the message
    # names either the non-finite losses or the first non-finite weight.
    assert "train_imagenet.py: error: training diverged at step 5: non-finite " in out, out
    assert ("d_loss=nan" in out and "g_loss=nan" in out) or \
        "non-finite weight generator/" in out, out
    assert f"the last good checkpoint {logdir}/ckpt-4 is untouched" in out
    # Nothing was saved after the bad step; the checkpoints before it are intact.
    assert [checkpoints.checkpoint_step(p)
            for p in checkpoints.list_complete_checkpoints(logdir)] == [2, 4]
    assert _all_finite(os.path.join(logdir, "ckpt-4"))
    assert not [f for f in os.listdir(logdir) if f.startswith("ckpt-5")
                or f.startswith("ckpt-6")]

    rc, out = res["skip_step"]
    logdir = str(tmp_path / "skip_step" / f"imagenet_{B}")
    assert rc == 0, out
    assert ("WARNING: step 5: non-finite " in out and
            "step skipped (--on_nan=skip_step): state restored to step 4" in out), out
    assert "1 non-finite step(s) were skipped" in out
    assert "Done: step 6" in out
    final = checkpoints.latest_complete_checkpoint(logdir)
    assert final.endswith("ckpt-6") and checkpoints.checkpoint_step(final) == 6
    assert _all_finite(final)
    # The steps before the fault are those of the stopped run (same seed, same data).
    for step in (2, 4):
        a = tf.train.load_checkpoint(str(tmp_path / "stop" / f"imagenet_{B}" / f"ckpt-{step}"))
        b = tf.train.load_checkpoint(os.path.join(logdir, f"ckpt-{step}"))
        for key in a.get_variable_to_shape_map():
            np.testing.assert_array_equal(a.get_tensor(key), b.get_tensor(key), err_msg=key)


def test_skip_step_restores_the_state_exactly(strategy2, records, tmp_path):
    """The undo of --on_nan=skip_step, on 2 replicas: every per-replica copy of
    every variable (weights, u, BN statistics, Adam slots and iterations, step)
    is bit-identical to before the bad iteration."""
    config = TrainConfig(data_dir=records, checkpoint_dir=str(tmp_path), image_size=S,
                         gf_dim=4, df_dim=4, z_dim=16, number_classes=C, batch_size=B, seed=3,
                         on_nan="skip_step")
    trainer = Trainer(config, strategy2)
    guard = NonFiniteGuard(trainer, "skip_step")
    rng = np.random.default_rng(0)

    def inputs(poison):
        images = rng.uniform(-1, 1, (2 * B, S, S, 3)).astype(np.float32)
        labels = rng.integers(0, C, 2 * B)
        noise = trainer.sample_noise()
        if poison:
            noise = {"g": [(z * np.nan, y) for z, y in noise["g"]], "d": noise["d"]}
        return trainer.make_inputs_from_global(images, labels, noise)

    out, _, _ = trainer.parity_iteration(inputs(False))  # a good step: Adam slots non-zero
    assert guard.check(out) is None
    before = [(name, c.numpy().copy()) for name, c in guard.named]
    guard.before_step()
    out, _, _ = trainer.parity_iteration(inputs(True))
    problem = guard.check(out)
    assert problem and problem.startswith("non-finite ") and \
        ("g_loss=nan" in problem or "weight generator/" in problem), problem
    assert any(not np.array_equal(c.numpy(), v, equal_nan=False)
               for (_, c), (_, v) in zip(guard.named, before))  # the bad step changed it
    guard.undo()
    assert len(guard.named) > 2 * len(trainer.generator.variables)  # per replica copies
    for (name, c), (_, value) in zip(guard.named, before):
        np.testing.assert_array_equal(c.numpy(), value, err_msg=name)
    assert int(trainer.step.numpy()) == 1
    assert int(trainer.g_optimizer.iterations.numpy()) == 1


# ----------------------------------------------------------------------------
# 4. Bad input everywhere.

def _other_arch_checkpoint(root, records):
    """A logdir holding ckpt-1 of a gf_dim=8 run, with a config.json claiming gf_dim=4."""
    config = TrainConfig(data_dir=records, checkpoint_dir=str(root), image_size=S, gf_dim=8,
                         df_dim=4, z_dim=16, number_classes=C, batch_size=B, seed=3)
    trainer = Trainer(config, tf.distribute.get_strategy())
    trainer.step.assign(1)
    path = tf.train.CheckpointManager(trainer.checkpoint, config.logdir, 3).save(1)
    import dataclasses
    save_config(dataclasses.replace(config, gf_dim=4), config.logdir)
    return config.logdir, path


def test_bad_input_is_refused_with_a_clear_message(records, tmp_path):
    # Record files: truncated, of another image size, labels out of range.
    trunc = _write_records(tmp_path / "trunc", seed=1)
    bad_file = os.path.join(trunc, "train-01.tfrecords")
    with open(bad_file, "r+b") as f:
        f.truncate(os.path.getsize(bad_file) - 1000)
    big = _write_records(tmp_path / "big", size=64, per_file=4)
    labels = _write_records(tmp_path / "labels", classes=50)
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    a_file = str(tmp_path / "a_file")
    with open(a_file, "w") as f:
        f.write("not a directory")
    arch_logdir, arch_ckpt = _other_arch_checkpoint(tmp_path / "arch", records)
    arch_digest = _digest(arch_logdir, "ckpt-1")

    def job(data, name, extra_env=None, **kw):
        return (_flags(data, str(tmp_path / f"ck_{name}"), **kw), _env(**(extra_env or {})),
                TRAIN)
    jobs = {
        "truncated": job(trunc, "truncated", max_steps=40, shuffle=False),
        "skip_corrupt": job(trunc, "skip", max_steps=20, skip_corrupt_records=True,
                            save_summaries_steps=10),
        "image_size": job(big, "size", max_steps=2),
        "labels": job(labels, "labels", max_steps=20),
        "empty": job(empty, "empty", max_steps=2),
        "missing": job(str(tmp_path / "nowhere"), "missing", max_steps=2),
        "batch_size_0": job(records, "b0", batch_size=0),
        "generator_type": job(records, "gt", generator_type="huge"),
        "contradiction": job(records, "ct", strategy="tpu", num_cpu_replicas=2),
        "other_arch": (_flags(records, str(tmp_path / "arch"), max_steps=3), _env(), TRAIN),
        "unwritable": (_flags(records, os.path.join(a_file, "ckpt"), max_steps=2), _env(),
                       TRAIN),
        "disk_full": job(records, "full", {checkpoints.SAVE_FAULT_ENV: "enospc@4"},
                         max_steps=6, save_checkpoint_steps=2),
    }
    res = _run_all(jobs, parallel=3)

    rc, out = res["truncated"]
    assert rc == 1, out
    assert "train_imagenet.py: error: input data error at step" in out, out
    assert f"TFRecord file {bad_file} is truncated or corrupt" in out, out
    if "saved the state of step" in out:  # the steps before the bad record are kept
        step = int(out.split("saved the state of step ")[1].split()[0])
        kept = checkpoints.latest_complete_checkpoint(
            str(tmp_path / "ck_truncated" / f"imagenet_{B}"))
        assert checkpoints.checkpoint_step(kept) == step
    rc, out = res["skip_corrupt"]
    assert rc == 0, out
    assert f"TFRecord file {bad_file} is truncated or corrupt" in out
    assert "skipped the rest of this file" in out and "Done: step 20" in out
    # Counted: the truncated file's cut-off last record, once per pass
    # over it, in the progress lines, the end line and a TensorBoard scalar.
    counts = [int(l.split("  skipped ")[1].split()[0]) for l in out.splitlines()
              if l.startswith("step ") and "  skipped " in l]
    assert counts and counts == sorted(counts) and counts[0] >= 1, out
    total = re.search(r"^(\d+) corrupt record\(s\) skipped in this run \((\d+) read\(s\) "
                      r"of a damaged file stopped early", out, re.M)
    assert total and int(total.group(1)) == int(total.group(2)) >= counts[-1], out
    total = int(total.group(1))
    skip_logdir = str(tmp_path / "ck_skip" / f"imagenet_{B}")
    scalars = [(e.step, v.simple_value if v.HasField("simple_value") else
                float(tf.make_ndarray(v.tensor)))
               for f in sorted(os.listdir(skip_logdir)) if f.startswith("events.")
               for e in tf.compat.v1.train.summary_iterator(os.path.join(skip_logdir, f))
               for v in e.summary.value if v.tag == "skipped_corrupt_records"]
    assert [s for s, _ in scalars] == [1, 10, 20], scalars
    values = [v for _, v in scalars]
    assert values == sorted(values) and 1 <= values[-1] <= total, scalars

    rc, out = res["image_size"]
    assert rc == 2 and "--image_size is 32 but the records in --data_dir" in out, out
    assert "hold 64x64 images" in out
    rc, out = res["labels"]
    assert rc == 1 and "train_imagenet.py: error: input data error" in out, out
    assert "label" in out.split("input data error")[1]
    for name in ("empty", "missing"):
        rc, out = res[name]
        assert rc == 2 and "train_imagenet.py: error: --data_dir" in out, out
    rc, out = res["batch_size_0"]
    assert rc != 0 and "--batch_size=0" in out and "Traceback" not in out, out
    rc, out = res["generator_type"]
    assert rc != 0 and "generator_type" in out and "huge" in out and "Traceback" not in out
    rc, out = res["contradiction"]
    assert rc == 2 and "--num_cpu_replicas only applies to --strategy mirrored" in out, out

    rc, out = res["other_arch"]
    assert rc == 2, out
    assert ("train_imagenet.py: error: checkpoint ckpt-1 does not match this generator (the "
            "architecture does not match): generator/g_snh0/matrix has shape [16, 2048] in "
            "the checkpoint, [16, 1024] in the model") in out, out
    assert "gf_dim" in out.split("generator/g_snh0/matrix")[1]
    assert _digest(arch_logdir, "ckpt-1") == arch_digest  # refused, nothing written
    assert checkpoints.list_complete_checkpoints(arch_logdir) == [arch_ckpt]

    rc, out = res["unwritable"]
    assert rc == 2, out
    assert (f"train_imagenet.py: error: --checkpoint_dir: cannot write checkpoints to "
            f"{os.path.join(a_file, 'ckpt', f'imagenet_{B}')}") in out, out

    rc, out = res["disk_full"]
    logdir = str(tmp_path / "ck_full" / f"imagenet_{B}")
    assert rc == 1, out
    assert (f"train_imagenet.py: error: could not save checkpoint ckpt-4 in {logdir}: "
            "[Errno 28] No space left on device") in out, out
    assert "Earlier checkpoints are intact: ckpt-2" in out
    assert checkpoints.list_complete_checkpoints(logdir) == [os.path.join(logdir, "ckpt-2")]
    assert not [f for f in os.listdir(logdir) if f.startswith("ckpt-4")]  # partial removed
    assert _all_finite(os.path.join(logdir, "ckpt-2"))


# ----------------------------------------------------------------------------
# 5. Two trainers on one run directory: one writer only.

def test_two_trainers_racing_on_one_run_directory(records, tmp_path):
    import socket
    from sagan_tf.runs import rundir_lock
    ckpt = str(tmp_path / "ckpt")
    logdir = os.path.join(ckpt, f"imagenet_{B}")
    # A lock left by a trainer that is gone (same host, PID no longer exists).
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    os.makedirs(logdir)
    with open(os.path.join(logdir, rundir_lock.LOCK_FILENAME), "w") as f:
        json.dump({"host": socket.gethostname(), "pid": dead.pid, "since": time.time() - 5}, f)
    args = _flags(records, ckpt, max_steps=100000, shuffle=False)
    # A default environment: TensorFlow's start-up logging is the program's to hide.
    env = _env()
    del env["TF_CPP_MIN_LOG_LEVEL"]
    procs = [_start(args, env), _start(args, env)]
    readers = [_Lines(p) for p in procs]
    try:
        deadline = time.time() + 180
        while all(p.poll() is None for p in procs) and time.time() < deadline:
            time.sleep(0.1)
        losers = [i for i, p in enumerate(procs) if p.poll() is not None]
        assert len(losers) == 1, [r.text() for r in readers]
        loser = losers[0]
        winner = 1 - loser
        # The winner goes on, holding the lock; stop it cleanly (it saves and exits).
        procs[winner].send_signal(signal.SIGTERM)
        assert procs[winner].wait(timeout=90) == 0, readers[winner].text()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    loser_out, winner_out = readers[loser].text(), readers[winner].text()
    assert procs[loser].returncode == 1, loser_out
    # Nothing else (no traceback, no TF logging) but perhaps the stale-lock removal.
    errors = [l for l in loser_out.strip().splitlines() if not l.startswith("Removed the stale")]
    assert len(errors) == 1 and " since " in errors[0], loser_out
    assert errors == [f"train_imagenet.py: error: run directory {logdir} is in use by PID "
                      f"{procs[winner].pid} on host {socket.gethostname()} since "
                      + errors[0].split(" since ")[1]], loser_out
    cpp_log = re.compile(r"^[IWEF]\d{4} |oneDNN custom operations|cpu_feature_guard|cuInit|"
                         r"absl::InitializeLog|Traceback", re.M)
    assert not cpp_log.search(winner_out), winner_out
    assert "Starting from scratch" not in loser_out  # refused before touching the directory
    # The stale lock was removed once, by one of the two (either may then win).
    removal = (f"Removed the stale lock of run directory {logdir} held by PID {dead.pid} on "
               f"host {socket.gethostname()}")
    assert (loser_out + winner_out).count(removal) == 1, (loser_out, winner_out)
    # The winner released the lock at exit; its checkpoint is the only one.
    assert not os.path.exists(os.path.join(logdir, rundir_lock.LOCK_FILENAME))
    assert checkpoints.latest_complete_checkpoint(logdir)
