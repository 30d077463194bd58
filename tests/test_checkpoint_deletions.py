"""The evaluator says in one line when the trainer deleted checkpoints before it
reached them (evaluation_loop.DeletionWatch)."""
import logging

import tensorflow as tf

from sagan_tf.evaluation import evaluation_loop
from sagan_tf.runs import checkpoints


def _manager(logdir, keep):
    checkpoint = tf.train.Checkpoint(v=tf.Variable(1.0))
    return tf.train.CheckpointManager(checkpoint, str(logdir), max_to_keep=keep)


def test_unseen_and_unreached_deleted_checkpoints_are_named_with_the_fix(tmp_path, caplog):
    manager = _manager(tmp_path, keep=2)
    watch = evaluation_loop.DeletionWatch()
    manager.save(checkpoint_number=100)
    evaluated = set()
    assert watch.update(checkpoints.list_complete_checkpoints(str(tmp_path)), evaluated) == []
    evaluated.add(manager.latest_checkpoint)  # ckpt-100 evaluated
    manager.save(checkpoint_number=200)
    assert watch.update(checkpoints.list_complete_checkpoints(str(tmp_path)), evaluated) == []
    # A long evaluation: the trainer writes 300..600 and keeps the last two; 200 was
    # seen but not reached, 300 and 400 were never seen.
    for step in (300, 400, 500, 600):
        manager.save(checkpoint_number=step)
    with caplog.at_level(logging.WARNING):
        lines = watch.update(checkpoints.list_complete_checkpoints(str(tmp_path)), evaluated)
    assert len(lines) == 2
    assert lines[0].startswith("Checkpoints at steps [200] were deleted by the trainer before "
                               "the evaluator reached them")
    assert lines[1].startswith("2 checkpoint(s) written between steps 200 and 500 were deleted")
    for line in lines:
        assert "--keep_checkpoint_max" in line and "--eval_sample_size" in line
        assert "\n" not in line and line in caplog.text
    # Nothing new deleted: nothing said again; ckpt-100 (evaluated, then deleted) never.
    assert watch.update(checkpoints.list_complete_checkpoints(str(tmp_path)), evaluated) == []
    assert all("100" not in line for line in lines)


class _SlowEvaluator:
    """Stands in for the Evaluator: while it evaluates, the trainer saves 4 checkpoints."""

    def __init__(self, logdir, eval_dir, manager):
        self.logdir, self.eval_dir, self.manager = logdir, eval_dir, manager
        self.next_step = 200

    def evaluate(self, path):
        for _ in range(4):
            self.manager.save(checkpoint_number=self.next_step)
            self.next_step += 100
        return {"step": checkpoints.checkpoint_step(path)}


def test_evaluate_repeatedly_names_checkpoints_it_never_saw(tmp_path, caplog):
    from sagan_tf.evaluation.evaluator import EvalOptions
    logdir = tmp_path / "run"
    manager = _manager(logdir, keep=2)
    manager.save(checkpoint_number=100)
    evaluator = _SlowEvaluator(str(logdir), str(tmp_path / "eval"), manager)
    options = EvalOptions(checkpoint_dir=str(tmp_path), eval_interval_secs=0, timeout=0,
                          max_evals=2)
    with caplog.at_level(logging.WARNING):
        done = evaluation_loop.evaluate_repeatedly(options, evaluator, poll_secs=0.01)
    assert [r["step"] for r in done] == [100, 400]
    warned = [r.getMessage() for r in caplog.records if "deleted by the trainer" in
              r.getMessage()]
    assert warned == [f"2 checkpoint(s) written between steps 100 and 400 were deleted by "
                      f"the trainer before the evaluator saw them: {evaluation_loop.DELETION_FIX}"]
