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
