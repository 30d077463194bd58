"""Which checkpoints ``eval_imagenet.py`` evaluates: one, or each new one once.

One evaluation is :class:`sagan_tf.evaluation.evaluator.Evaluator`'s; this module
decides what it is run on. :func:`evaluate_checkpoint` evaluates one
checkpoint (a given one, else the newest complete one).
:func:`evaluate_repeatedly` watches the checkpoint directory like the
release's ``evaluate_repeatedly``: every checkpoint the trainer finishes is
evaluated exactly once. A checkpoint counts as complete only once it is listed
in the CheckpointManager's ``checkpoint`` state file (written atomically after
the checkpoint files) *and* its ``.index`` reads back and all its data shards
exist (:mod:`sagan_tf.runs.checkpoints`), so a half-written one is never read; a
listed checkpoint whose data does not read back (e.g. truncated, or deleted
by the trainer meanwhile: :class:`sagan_tf.runs.checkpoints.CheckpointReadError`
from the restore) is skipped with a warning, and watching goes on through
trainer kills and restarts. Every other failure of an evaluation -- out of
memory, a CUDA error, unreadable training records in the real-statistics
pass -- stops the evaluator with one line naming it and the checkpoint.
Evaluated checkpoints are recorded in ``<eval_dir>/evaluated.json`` (with
their results, :class:`EvaluatedRecord`, read and written through
``tf.io.gfile``), so a restarted evaluator never redoes one.

When the trainer deletes checkpoints (``--keep_checkpoint_max``) faster than
they are evaluated, :class:`DeletionWatch` says so in one line: the steps of
listed checkpoints that vanished before their turn, and -- from the
checkpoints' ``save_counter`` -- how many were written and deleted between
two that the evaluator saw, with the fix.
"""
import json
import logging
import os
import time

import tensorflow as tf

from sagan_tf.evaluation.evaluator import Evaluator
from sagan_tf.fileio import absolute_path, atomic_write
from sagan_tf.runs import checkpoints

__all__ = ["EVALUATED_NAME", "EvaluatedRecord", "DeletionWatch", "evaluate_checkpoint",
           "evaluate_repeatedly"]

log = logging.getLogger(__name__)

#: The record of evaluated checkpoints, in the eval directory.
EVALUATED_NAME = "evaluated.json"


class EvaluatedRecord:
    """``<eval_dir>/evaluated.json``: the checkpoints already evaluated, with results.

    Keyed by the checkpoint's absolute path. Rewritten atomically after every
    evaluation, so a crash never loses or corrupts earlier entries.
    """

    def __init__(self, eval_dir):
        """Loads the record of ``eval_dir`` (empty if there is none)."""
        self.path = os.path.join(eval_dir, EVALUATED_NAME)
        self.entries = []
        if tf.io.gfile.exists(self.path):
            with tf.io.gfile.GFile(self.path) as f:
                try:
                    self.entries = list(json.load(f)["evaluated"])
                except (ValueError, KeyError, TypeError) as e:
                    raise ValueError(f"{self.path} is not a valid evaluation record: {e}") from e

    @staticmethod
    def _key(path):
        return absolute_path(path)

    def __contains__(self, checkpoint_path):
        key = self._key(checkpoint_path)
        return any(e.get("checkpoint") == key for e in self.entries)

    def add(self, checkpoint_path, result):
        """Records ``checkpoint_path`` as evaluated with ``result`` (dict)."""
        entry = dict(result)
        entry["checkpoint"] = self._key(checkpoint_path)
        self.entries.append(entry)
        atomic_write(self.path, json.dumps({"evaluated": self.entries}, indent=1) + "\n")


#: The fix named when checkpoints were deleted before they were evaluated.
DELETION_FIX = ("keep more checkpoints (train_imagenet.py --keep_checkpoint_max) or make "
                "evaluations cheaper (a smaller --eval_sample_size, --nomanifold_metrics, "
                "--intra_fid_samples_per_class 0)")


def _save_counter(path):
    """The ``save_counter`` stored in checkpoint ``path``, or None."""
    try:
        return int(tf.train.load_checkpoint(path).get_tensor(
            "save_counter/.ATTRIBUTES/VARIABLE_VALUE"))
    except (tf.errors.OpError, ValueError, KeyError):
        return None


class DeletionWatch:
    """Notices checkpoints the trainer deleted before the evaluator reached them.

    :meth:`update` is given each round's listed checkpoints and the set of
    those evaluated (or given up on); it returns the warning lines (also
    logged) for checkpoints listed at an earlier round that are gone without
    an evaluation, and for gaps in ``save_counter`` between consecutive
    checkpoints the evaluator saw (checkpoints it never saw).
    """

    def __init__(self):
        self.listed = {}       # path -> step, every checkpoint seen listed
        self.counters = {}     # save_counter -> step of the checkpoints seen

    def update(self, listed, done):
        """``listed``: this round's checkpoint paths; ``done``: a container of
        the paths evaluated or skipped. Returns the warning lines."""
        lines = []
        vanished = sorted(step for path, step in self.listed.items()
                          if path not in listed and path not in done)
        if vanished:
            lines.append(f"Checkpoints at steps {vanished} were deleted by the trainer before "
                         f"the evaluator reached them: {DELETION_FIX}")
        for path in listed:
            if path not in self.listed:
                step = checkpoints.checkpoint_step(path)
                counter = _save_counter(path)
                if counter is not None:
                    lines.extend(self._gap_before(counter, step))
                    self.counters[counter] = step
        self.listed = {p: self.listed.get(p, checkpoints.checkpoint_step(p)) for p in listed}
        for line in lines:
            log.warning("%s", line)
        return lines

    def _gap_before(self, counter, step):
        """The warning for checkpoints written just before ``counter`` and never seen."""
        earlier = [c for c in self.counters if c < counter]
        if not earlier or counter - max(earlier) <= 1:
            return []
        previous = max(earlier)
        return [f"{counter - previous - 1} checkpoint(s) written between steps "
                f"{self.counters[previous]} and {step} were deleted by the trainer before the "
                f"evaluator saw them: {DELETION_FIX}"]


def evaluate_checkpoint(options, checkpoint_path=None, evaluator=None):
    """Evaluates one checkpoint (``checkpoint_path``, ``options.checkpoint_path``,
    else the latest complete checkpoint of the logdir) and returns its result dict.

    Raises:
      FileNotFoundError: there is no checkpoint to evaluate.
    """
    evaluator = evaluator or Evaluator(options)
    path = checkpoint_path or options.checkpoint_path
    if path is None:
        path = checkpoints.latest_complete_checkpoint(evaluator.logdir)
        if path is None:
            raise FileNotFoundError(
                f"no checkpoint in {evaluator.logdir} (expected a 'checkpoint' state file "
                f"listing ckpt-N written by the trainer)")
    result = _evaluate(evaluator, path)
    EvaluatedRecord(evaluator.eval_dir).add(path, result)
    return result


def _evaluate(evaluator, path):
    """``evaluator.evaluate(path)``; a TensorFlow error other than reading the
    checkpoint (out of memory, CUDA, the records of the real statistics) is
    raised again, of the same class, with a first line naming it and the
    checkpoint (the entry point prints that line and exits)."""
    try:
        return evaluator.evaluate(path)
    except checkpoints.CheckpointReadError:
        raise
    except tf.errors.OpError as e:
        text = (str(e.message or "").strip().splitlines() or [""])[0]
        cls = tf.errors.UnknownError if type(e) is tf.errors.OpError else type(e)
        raise cls(e.node_def, e.op, (
            f"evaluation of {path} failed: {type(e).__name__}: {text[:500]} (not a "
            f"checkpoint read error: the evaluator stops)")) from e


class _Done:
    """The checkpoints evaluated (``record``) or given up on (``unreadable`` keys)."""

    def __init__(self, record, unreadable):
        self.record, self.unreadable = record, unreadable

    def __contains__(self, path):
        return path in self.record or any(p == path for p, _ in self.unreadable)


def _mtime(path):
    try:
        return tf.io.gfile.stat(path).mtime_nsec
    except tf.errors.OpError:
        return None


def evaluate_repeatedly(options, evaluator=None, poll_secs=1.0, sleep=time.sleep,
                        clock=time.monotonic):
    """Evaluates every new complete checkpoint of the logdir exactly once.

    Like the release's ``evaluate_repeatedly`` / ``tf.train.checkpoints_iterator``:
    polls every ``poll_secs`` (at most ``eval_interval_secs``) for checkpoints not
    yet in ``<eval_dir>/evaluated.json``, evaluates them oldest first, and starts
    evaluation rounds at least ``options.eval_interval_secs`` apart. Stops after
    ``options.max_evals`` evaluations in this run, or when no new checkpoint
    appeared for ``options.timeout`` seconds (None: run forever).

    Returns:
      The list of result dicts of this run.
    """
    evaluator = evaluator or Evaluator(options)
    record = EvaluatedRecord(evaluator.eval_dir)
    interval = max(float(options.eval_interval_secs or 0.0), 0.0)
    poll = min(poll_secs, interval) if interval > 0 else poll_secs
    results = []
    unreadable = set()
    deletions = DeletionWatch()
    last_new = clock()
    next_round = clock()
    while True:
        now = clock()
        if now < next_round:
            wait = next_round - now
            if options.timeout is not None:
                wait = min(wait, max(last_new + options.timeout - now, 0.0))
            if wait > 0:
                sleep(wait)
            if options.timeout is not None and clock() >= last_new + options.timeout:
                next_round = clock()  # timed out: poll one last time, then stop
            continue
        round_start = clock()
        complete = checkpoints.list_complete_checkpoints(evaluator.logdir)
        deletions.update(complete, _Done(record, unreadable))
        pending = [p for p in complete
                   if p not in record and (p, _mtime(p + ".index")) not in unreadable]
        evaluated_any = False
        for path in pending:
            try:
                result = _evaluate(evaluator, path)
            except checkpoints.CheckpointReadError as e:
                if not tf.io.gfile.exists(path + ".index"):
                    log.warning("Checkpoint %s disappeared before it was evaluated: %s",
                                path, e)
                    unreadable.add((path, None))  # named here: not again by the watch
                    continue
                # Listed and complete, but its data cannot be read (e.g. a
                # truncated shard): skip it (once per version of its files)
                # and keep watching, as the trainer does on resume.
                key = (path, _mtime(path + ".index"))
                if key not in unreadable:
                    unreadable.add(key)
                    log.warning("Skipping checkpoint %s: %s", path, e)
                continue
            record.add(path, result)
            results.append(result)
            evaluated_any = True
            if options.max_evals is not None and len(results) >= options.max_evals:
                return results
        if evaluated_any:
            last_new = clock()
            next_round = round_start + interval
            continue
        if options.timeout is not None and clock() - last_new >= options.timeout:
            log.info("No new checkpoint for %ss; stopping", options.timeout)
            return results
        next_round = clock() + poll
