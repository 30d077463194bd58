"""The SAGAN training loop (NUMERICS §6, §9): ``train_imagenet.py``'s library.

Layout (in the spirit of NVlabs stylegan2-ada's ``training_loop.py``):

* :mod:`sagan_tf.training.config` -- :class:`~sagan_tf.training.config.TrainConfig`, every
  flag, validated; :mod:`sagan_tf.training.run_config` writes it to ``config.json``;
* :mod:`sagan_tf.training.trainer` -- :class:`~sagan_tf.training.trainer.Trainer`, the state
  and the compiled training iteration;
* :mod:`sagan_tf.training.faults` -- stop signals, the non-finite guard, writable
  checks, :class:`~sagan_tf.training.faults.TrainingError`;
* here: :func:`train`, the loop -- restore, step, log, summarise,
  checkpoint, write a sample grid at the end (the input of a resumed run is
  positioned by :func:`sagan_tf.data.pipeline.training_iterator`).
"""
import contextlib
import datetime
import os
import time

import numpy as np
import tensorflow as tf

from sagan_tf import kernels, summaries
from sagan_tf.data import pipeline, pixel_pipelines, record_format
from sagan_tf.runs import checkpoints, rundir_lock
from sagan_tf.sampling import samples as sampling
from sagan_tf.training import devices, distribute, run_config
from sagan_tf.training.config import ConfigError
from sagan_tf.training.faults import (MAX_CONSECUTIVE_SKIPS, NonFiniteGuard, StopSignals,
                                      TrainingError, check_logdir_writable, diverged,
                                      first_line)
from sagan_tf.training.trainer import Trainer

__all__ = ["train", "open_loop", "SUMMARY_SCALARS", "SKIPPED_RECORDS_SCALAR",
           "SUMMARY_IMAGES", "COLLAPSE_LOGIT_GAP"]

#: Scalar summary tags written every ``save_summaries_steps`` (plus one
#: ``sigma_ratio/<variable path>`` per attention layer).
SUMMARY_SCALARS = ("d_loss", "d_loss_real", "d_loss_fake", "g_loss", "logit_real",
                   "logit_fake", "d_learning_rate", "g_learning_rate",
                   "steps_per_second", "images_per_second")
#: Scalar summary of the records ``--skip_corrupt_records`` dropped so far
#: (written with the others when that flag is on).
SKIPPED_RECORDS_SCALAR = "skipped_corrupt_records"
#: Image summary tags (TF-GAN ``image_grid`` of up to 16 images).
SUMMARY_IMAGES = ("input_images", "generated_images")
#: A D real-minus-fake mean logit gap above this is logged as a collapse sign.
COLLAPSE_LOGIT_GAP = 10.0


# ----------------------------------------------------------------------------
# The loop.

def train(config, strategy=None, log=print, make_trainer=Trainer):
    """Trains until ``config.max_steps``; returns a summary dict.

    Restores the newest complete checkpoint of ``config.logdir`` if there is
    one ("Resumed from <path> at step N"; an incomplete or unreadable newer one
    is reported and skipped, see :func:`sagan_tf.runs.checkpoints.restore_newest`),
    else starts from scratch. Writes ``config.json``, TensorBoard summaries
    every ``save_summaries_steps`` (and at the first step of a run),
    checkpoints every ``save_checkpoint_secs`` / ``save_checkpoint_steps`` and
    at the end, and ``samples_<step>.png`` at the end (plus
    ``samples_<step>_standing_stats.png`` with ``standing_stats_batches``).
    The chief holds the run directory's lock (:mod:`sagan_tf.runs.rundir_lock`)
    from before it writes anything until it returns; a live holder makes it
    raise :class:`TrainingError` naming that holder (host, PID, since when).

    Faults: SIGTERM/SIGINT (in the main thread) end the run after the current
    iteration with a checkpoint of that step (``result["stopped_by"]``). A
    non-finite loss or weight raises :class:`TrainingDivergedError` without
    saving (``on_nan="stop"``) or undoes that iteration exactly
    (``"skip_step"``). Unreadable input records and failed checkpoint saves
    raise :class:`TrainingError` (after saving the last good state, where
    possible); a checkpoint of another architecture, an unwritable logdir or
    a bad flag raise :class:`ConfigError`.

    Args:
      config: :class:`~sagan_tf.training.config.TrainConfig`.
      strategy: a ``tf.distribute.Strategy``; default: from the config.
      log: function printing one line (progress and status messages).
      make_trainer: ``make_trainer(config, strategy)`` -> the
        :class:`~sagan_tf.training.trainer.Trainer` (tests pass a subclass
        that injects faults).

    Returns:
      dict with ``step``, ``steps_run``, ``logdir``, ``checkpoint``,
      ``samples``, ``samples_standing_stats`` (path or None), ``resumed_from``, ``metrics`` (last step's, floats),
      ``wall_time_s``, ``train_time_s``, ``steps_per_second``,
      ``images_per_second``, ``num_replicas``, ``global_batch_size``,
      ``stopped_by`` (signal name or None), ``skipped_steps``,
      ``skipped_corrupt_records`` (records ``--skip_corrupt_records`` dropped
      in this run; also in the progress line and the
      ``skipped_corrupt_records`` summary).
    """
    t_start = time.time()
    with open_loop(config, strategy, log, make_trainer) as loop:
        loop.run()
        return loop.finish(t_start)


@contextlib.contextmanager
def open_loop(config, strategy=None, log=print, make_trainer=Trainer):
    """The loop of :func:`train`, opened but not run: the config checked, the
    run directory taken (lock, ``config.json``), the newest checkpoint
    restored, the input pipeline started. Yields the loop; ``loop.run(until=N)``
    trains up to step N (default ``max_steps``), ``loop.finish(t_start)``
    saves and returns :func:`train`'s dict. For tools that interleave the
    loop with other work (``tools/perf/benchmark_loop.py``); the arguments are
    :func:`train`'s. The lock is released and the signal handlers restored on exit."""
    with StopSignals(log) as stop, contextlib.ExitStack() as cleanup:
        config.validate()
        records = _check_data_dir(config)
        check_logdir_writable(config.logdir)
        config = run_config.resume_config(config)  # same architecture as the stored run; its seed
        trainer = make_trainer(config, strategy)
        opened = _open_run(trainer, log, cleanup, records_pipeline=records[0])
        pixel_pipelines.log_records(config.data_dir, *records, log=log)  # warns if not the release's
        yield _Loop(trainer, *opened, stop, log)


def _open_run(trainer, log, cleanup, records_pipeline=None):
    """Takes the run directory (lock, config.json) and restores the newest complete
    checkpoint. Returns ``(manager, ckpt_dir, chief, resumed_from)``."""
    config, strategy = trainer.config, trainer.strategy
    logdir = config.logdir
    chief = _is_chief(strategy)
    if chief:  # one writer per run directory (sagan_tf/runs/rundir_lock.py)
        try:
            lock = rundir_lock.acquire(logdir, log)
        except rundir_lock.RunDirLockedError as e:
            raise TrainingError(str(e)) from e
        if lock is not None:
            cleanup.callback(lock.release)
    # Non-chief workers of a multi-worker run save into a scratch directory
    # (every worker must take part in saving) which is deleted afterwards.
    ckpt_dir = logdir if chief else os.path.join(
        logdir, f"worker_tmp_{strategy.cluster_resolver.task_id}")
    device_record = devices.run_record(strategy, trainer.device_plan, config.batch_size)
    kernel_record = kernels.run_record()
    if chief:
        run_config.save_config(config, logdir, extra={
            "records_pixel_pipeline": records_pipeline, "devices": device_record,
            "kernels": kernel_record})
    manager = tf.train.CheckpointManager(trainer.checkpoint, ckpt_dir,
                                         max_to_keep=config.keep_checkpoint_max)
    # The newest complete checkpoint whose data reads back; each variable's
    # shape is checked against the stored tensor before anything is restored.
    try:
        # Every worker restores the chief's checkpoint (logdir): a non-chief's
        # scratch ckpt_dir is deleted at the end, so resuming from it would
        # start that worker from scratch while the chief resumes.
        resumed_from = checkpoints.restore_newest(trainer.checkpoint, logdir, log)
    except checkpoints.CheckpointMismatchError as e:
        raise ConfigError(f"{e}; use the run's flags or another --checkpoint_dir") from e
    except checkpoints.NoRestorableCheckpointError as e:
        raise TrainingError(str(e)) from e
    if resumed_from:
        log(f"Resumed from {resumed_from} at step {int(trainer.step.numpy())}")
    else:
        log("Starting from scratch")
    tf32 = "on (--allow_tf32)" if config.allow_tf32 else "off (--allow_tf32 turns it on)"
    log(f"{devices.describe_replicas(strategy, trainer.device_plan, config.batch_size)}; "
        f"TF32 {tf32}; CPU kernels: {kernels.describe(kernel_record)}; "
        f"graph optimisation: {trainer.graph_optimization} "
        f"(--graph_optimization {config.graph_optimization})")
    if warning := kernels.bf16_cost_warning(config.mixed_precision,
                                            device_record["replica_devices"]):
        log(warning)
    return manager, ckpt_dir, chief, resumed_from


class _Loop:
    """One run of the loop: iterations, summaries, progress lines, checkpoints.

    Holds what changes between iterations (step, last metrics, timings, skip
    counters); :meth:`run` iterates until ``max_steps`` or a stop signal,
    :meth:`finish` saves the final checkpoint and the sample grids and returns
    :func:`train`'s summary dict.
    """

    def __init__(self, trainer, manager, ckpt_dir, chief, resumed_from, stop, log):
        from sagan_tf.data.pipeline import \
            SkippedRecordCounter  # pylint: disable=import-outside-toplevel
        config = trainer.config
        self.trainer, self.config, self.manager, self.ckpt_dir = trainer, config, manager, ckpt_dir
        self.chief, self.resumed_from, self.stop, self.log = chief, resumed_from, stop, log
        self.start_step = self.step = int(trainer.step.numpy())
        self.writer = (tf.summary.create_file_writer(config.logdir)
                       if chief and config.save_summaries_steps
                       else tf.summary.create_noop_writer())
        self.skipped_records = SkippedRecordCounter() if config.skip_corrupt_records else None
        self.iterator = pipeline.training_iterator(config, trainer.strategy, self.start_step,
                                              self.skipped_records)
        self.metrics = {}
        self.last_ckpt_time = time.time()
        self.last_ckpt_step = self.start_step if resumed_from else None
        self.t_loop = time.time()
        self.t_first = None  # end of the first step: it includes tracing, excluded from throughput
        # The first call of k iterations traces that function: its (seconds,
        # steps), kept out of the throughput too and named in the next progress line.
        self.excluded, self.tracing_note = (0.0, 0), None
        self.t_end = None
        self.last_log = self.last_summary = (self.t_loop, self.step)
        self.guard = NonFiniteGuard(trainer, config.on_nan)
        self.skipped_steps = self.consecutive_skips = 0

    def save_now(self):
        """Checkpoints the current step; a failed save is a :class:`TrainingError`."""
        self._settle()  # nothing non-finite is saved
        try:
            path = checkpoints.save(self.manager, self.step)
        except checkpoints.CheckpointSaveError as e:
            raise TrainingError(str(e)) from e
        self.last_ckpt_time, self.last_ckpt_step = time.time(), self.step
        return path

    def run(self, until=None):
        """Iterates until ``max_steps`` (or step ``until``, if smaller) or a
        stop signal (SIGTERM/SIGINT)."""
        config = self.config
        end = config.max_steps if until is None else min(int(until), config.max_steps)
        while self.step < end:
            if self.stop.signal:  # SIGTERM/SIGINT: checkpoint in finish(), then return
                break
            k = self._iterations_in_next_call(end)
            if k > 1:
                self._iterations(k)
                continue
            try:
                outputs = self._iteration()
            except tf.errors.OpError as e:  # NCCL in a container fails here: say what it needs
                if self.t_first is None and (report := distribute.nccl_failure(e)):
                    raise TrainingError(report) from e
                raise
            if outputs is None:  # a non-finite iteration, undone (--on_nan=skip_step)
                continue
            self.step += 1
            self._after_step(*outputs)
        self.t_end = time.time()

    def _real_batches(self):
        """``d_step`` real batches; unreadable records keep what was trained and
        raise :class:`TrainingError`."""
        config = self.config
        try:
            return [next(self.iterator) for _ in range(config.d_step)]
        except tf.errors.OpError as e:  # unreadable records: keep what was trained
            kept = "nothing trained in this run"
            if self.step > self.start_step:
                saved = (self.save_now() if self.last_ckpt_step != self.step
                         else self.manager.latest_checkpoint)
                kept = f"saved the state of step {self.step} in {saved}"
            raise TrainingError(f"input data error at step {self.step + 1} (--data_dir "
                                f"{config.data_dir}): {first_line(e)}; {kept}") from e

    def _iterations_in_next_call(self, end):
        """How many iterations the next compiled call runs: ``iterations_per_loop``
        when none of the steps it would end before has anything to write
        (summaries, progress line, step-based checkpoint, the first step's
        timing), else 1."""
        config, step = self.config, self.step
        k = config.iterations_per_loop
        if k <= 1 or step + k > end or self.t_first is None:
            return 1

        def quiet(s):
            return not any(self._writes_after(s)) and s != config.max_steps
        return k if all(quiet(s) for s in range(step + 1, step + k)) else 1

    def _writes_after(self, step, first=False):
        """What the loop writes after ``step`` by its cadence in steps:
        ``(summaries, progress line, checkpoint)`` (time-based checkpoints aside)."""
        config = self.config

        def every(n):
            return bool(n) and (first or step % n == 0)
        return (every(config.save_summaries_steps),
                every(config.log_every_steps) or (
                    bool(config.log_every_steps) and step == config.max_steps),
                bool(config.save_checkpoint_steps) and step % config.save_checkpoint_steps == 0)

    def _iterations(self, k):
        """``k`` iterations in one compiled call (``--iterations_per_loop``), the
        same numbers as ``k`` :meth:`_iteration` calls; their checks are
        deferred and what follows a step is done after the last one."""
        trainer, guard = self.trainer, self.guard
        batches = [self._real_batches() for _ in range(k)]
        t0 = time.time()
        results, real_images, fake = trainer.train_iterations(batches, guard.state_check)
        if not self.excluded[1]:  # the first such call (k is the same for the whole run)
            self.excluded = (time.time() - t0, k)
            self.tracing_note = f" (includes tracing the {k}-iteration call)"
        for metrics, all_finite in results:
            self.step += 1
            guard.defer(self.step, metrics, all_finite)
        self._after_step(results[-1][0], real_images, fake)

    def _iteration(self):
        """One training iteration, checked by the non-finite guard. Returns
        ``(metrics, input_images, generated_images)``, or None when the
        iteration was undone."""
        trainer, guard, step = self.trainer, self.guard, self.step
        real = self._real_batches()
        guard.before_step()
        # Noise drawn and the state checked inside the one compiled call.
        [(metrics, all_finite)], real_images, fake = trainer.train_iterations(
            [real], guard.state_check)
        outputs = (metrics, real_images, fake)
        if guard.defer(step + 1, outputs[0], all_finite):  # read in _settle, no sync now
            return outputs
        problem = guard.check(outputs[0], all_finite)
        if not problem:
            self.consecutive_skips = 0
            return outputs
        if self.config.on_nan == "stop":
            raise diverged(step + 1, problem, self.ckpt_dir, "stop")
        guard.undo()
        self.skipped_steps += 1
        self.consecutive_skips += 1
        self.log(f"WARNING: step {step + 1}: {problem}; step skipped (--on_nan=skip_step): "
                 f"state restored to step {step}, its batch and noise discarded "
                 f"({self.skipped_steps} skipped so far)")
        if self.consecutive_skips >= MAX_CONSECUTIVE_SKIPS:
            raise diverged(step + 1, problem, self.ckpt_dir, "skip_step")
        return None

    def _settle(self):  # acts on the deferred non-finite checks (--on_nan=stop)
        if bad := self.guard.settle():
            raise diverged(*bad, self.ckpt_dir, "stop")

    def _after_step(self, out, input_images, generated_images):
        """Summaries, progress line and checkpoint cadence after step ``self.step``."""
        config, step = self.config, self.step
        first = self.t_first is None
        summarise, show, checkpoint_step = self._writes_after(step, first)
        if summarise or show or step == config.max_steps or self.guard.must_settle():
            self._settle()
            self.metrics = {k: float(v) for k, v in out.items()}  # waits for the step to finish
        now = time.time()
        if summarise:
            self._write_summaries(now, input_images, generated_images)
        if show:
            self._log_progress(now, first)
        if first:
            # The first summaries trace their ops too: one-time costs, kept
            # out of the steady-state throughput.
            self.t_first = time.time()
            self.last_log = self.last_summary = (self.t_first, step)
        if checkpoint_step or (config.save_checkpoint_secs
                               and now - self.last_ckpt_time >= config.save_checkpoint_secs):
            self.save_now()

    def _write_summaries(self, now, input_images, generated_images):
        """The TensorBoard scalars (:data:`SUMMARY_SCALARS`, sigma ratios, skipped
        records) and image grids (:data:`SUMMARY_IMAGES`) of this step."""
        trainer, step, size = self.trainer, self.step, self.config.image_size
        rate = (step - self.last_summary[1]) / max(now - self.last_summary[0], 1e-9)
        self.last_summary = (now, step)
        with self.writer.as_default(step=step):
            for k, v in self.metrics.items():
                summaries.write_scalar(k, v)
            summaries.write_scalar("d_learning_rate", _to_float(trainer.d_optimizer.learning_rate))
            summaries.write_scalar("g_learning_rate", _to_float(trainer.g_optimizer.learning_rate))
            for v in trainer.sigma_ratio_variables:
                summaries.write_scalar(f"sigma_ratio/{v.path}", _to_float(v))
            if self.skipped_records is not None:
                summaries.write_scalar(SKIPPED_RECORDS_SCALAR, self.skipped_records.records)
            summaries.write_scalar("steps_per_second", rate)
            summaries.write_scalar("images_per_second", rate * trainer.global_batch_size)
            summaries.write_image("input_images", _summary_grid(input_images, size))
            summaries.write_image("generated_images", _summary_grid(generated_images, size))
        self.writer.flush()

    def _log_progress(self, now, first):
        """The console progress line (losses, logits, speed, ETA) and, never acted
        on, a warning when D separates real from fake almost perfectly."""
        config, step, metrics = self.config, self.step, self.metrics
        sec_per_step = (now - self.last_log[0]) / max(step - self.last_log[1], 1)
        self.last_log = (now, step)
        speed = (f"first step {sec_per_step:.1f} s (includes tracing)" if first else
                 f"{sec_per_step:.3f} s/step  "
                 f"{self.trainer.global_batch_size / sec_per_step:.1f} img/s  "
                 f"ETA {_format_seconds(sec_per_step * (config.max_steps - step))}"
                 f"{self.tracing_note or ''}")
        self.tracing_note = None
        records = self.skipped_records
        skipped = (f"  skipped {records.records} corrupt record(s)"
                   if records is not None and records.records else "")
        self.log(f"step {step}/{config.max_steps}  d_loss {metrics['d_loss']:.4f} "
                 f"(real {metrics['d_loss_real']:.4f} fake {metrics['d_loss_fake']:.4f})  "
                 f"g_loss {metrics['g_loss']:.4f}  logits {metrics['logit_real']:+.3f}/"
                 f"{metrics['logit_fake']:+.3f}  {speed}{skipped}")
        # GAN collapse signals are reported, never acted on.
        gap = metrics["logit_real"] - metrics["logit_fake"]
        if gap > COLLAPSE_LOGIT_GAP or metrics["d_loss"] < 1e-3:
            self.log(f"WARNING: step {step}: D separates real from fake almost perfectly "
                     f"(logit gap {gap:+.2f}, d_loss {metrics['d_loss']:.4f}): a sign of "
                     "D overpowering G / mode collapse; training continues")

    def finish(self, t_start):
        """The final checkpoint, end-of-run messages and sample grids; returns
        :func:`train`'s summary dict."""
        step, manager, log = self.step, self.manager, self.log
        self._settle()
        if self.last_ckpt_step != step or manager.latest_checkpoint is None:
            self.save_now()
        if self.stop.signal:
            log(f"Stopped by {self.stop.signal} at step {step}: checkpoint "
                f"{os.path.basename(manager.latest_checkpoint)} saved in {self.ckpt_dir}; "
                "rerun the same command to resume")
        if self.skipped_steps:
            log(f"{self.skipped_steps} non-finite step(s) were skipped (--on_nan=skip_step)")
        records = self.skipped_records
        if records is not None and records.records:
            log(f"{records.records} corrupt record(s) skipped in this run "
                f"({records.files} read(s) of a damaged file stopped early; "
                "--skip_corrupt_records)")
        self.writer.flush()
        samples_path = standing_samples_path = None
        if self.chief:
            samples_path, standing_samples_path = sampling.write_end_of_run_grids(
                self.trainer, self.config.logdir, step, log)
        else:
            tf.io.gfile.rmtree(self.ckpt_dir)
        result = self._result(t_start, samples_path, standing_samples_path)
        log(f"Done: step {step}, {result['steps_run']} steps in "
            f"{_format_seconds(self.t_end - self.t_loop)} "
            f"({result['images_per_second']:.1f} img/s after the first step); "
            f"checkpoint {result['checkpoint']}")
        return result

    def _result(self, t_start, samples_path, standing_samples_path):
        trainer, t_first, t_end = self.trainer, self.t_first, self.t_end
        steps_run = self.step - self.start_step
        # Steady-state speed: steps after the first and the first call of k
        # iterations (which include tracing).
        seconds = (t_end - t_first - self.excluded[0]) if t_first else 0.0
        steps = steps_run - 1 - self.excluded[1]
        steady = steps / seconds if steps > 0 and seconds > 0 else 0.0
        return {
            "step": self.step, "steps_run": steps_run, "logdir": self.config.logdir,
            "checkpoint": self.manager.latest_checkpoint if self.chief else None,
            "samples": samples_path, "samples_standing_stats": standing_samples_path,
            "resumed_from": self.resumed_from, "metrics": self.metrics,
            "wall_time_s": time.time() - t_start, "train_time_s": t_end - self.t_loop,
            "first_step_s": (t_first - self.t_loop) if t_first else 0.0,
            "steps_per_second": steady,
            "images_per_second": steady * trainer.global_batch_size,
            "num_replicas": trainer.num_replicas,
            "global_batch_size": trainer.global_batch_size,
            "config": self.config, "trainer": trainer,
            "stopped_by": self.stop.signal, "skipped_steps": self.skipped_steps,
            "skipped_corrupt_records": self.skipped_records.records if self.skipped_records else 0,
        }


def _summary_grid(images, image_size):
    """TF-GAN ``image_grid`` of up to 16 images ``[-1, 1]`` -> ``[1, H, W, 3]`` in [0, 1]."""
    return tf.clip_by_value((summaries.image_grid(images, image_size) + 1.0) / 2.0, 0.0, 1.0)


def _is_chief(strategy):
    """True on the worker that writes summaries, config and checkpoints."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in (resolver.cluster_spec().as_dict() or {})
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def _to_float(v):
    """A Python float from a scalar tensor or (Keras/mirrored) variable."""
    return float(np.asarray(tf.convert_to_tensor(getattr(v, "value", v))))


def _format_seconds(s):
    return str(datetime.timedelta(seconds=int(max(0, s))))


# ----------------------------------------------------------------------------
# Input pipeline.

def _check_data_dir(config):
    """Fails early, naming the flag, if ``--data_dir`` cannot feed this config; else its pipeline."""
    if not config.data_dir:
        raise ConfigError("--data_dir is required (a directory of *.tfrecords files)")
    try:
        files = record_format.list_record_files(config.data_dir)
    except FileNotFoundError as e:
        raise ConfigError(f"--data_dir {config.data_dir!r}: {e}") from e
    problem = record_format.incomplete_records_problem(config.data_dir, files)
    if problem and not config.allow_incomplete_records:
        raise ConfigError(f"--data_dir: {problem}; rerun the converter to finish them, or "
                          "pass --allow_incomplete_records to train on what is there")
    stored = record_format.peek_image_size(files)
    if stored != config.image_size:
        raise ConfigError(f"--image_size is {config.image_size} but the records in --data_dir "
                         f"{config.data_dir!r} hold {stored}x{stored} images")
    return pixel_pipelines.records_pixel_pipeline(config.data_dir)
