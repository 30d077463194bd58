"""An exponential moving average of the generator's weights (optional).

Not in the release: BigGAN's ``G_ema`` and StyleGAN's ``G_ema``, offered
because a short run's raw generator oscillates from checkpoint to checkpoint
(docs/DEVIATIONS.md §15). With ``--g_ema_decay d > 0`` the trainer keeps a
second generator of the same architecture whose weights follow G after every
iteration ``t`` (1, 2, ...)::

    decay_t = min(d, (1 + t) / (10 + t))         # tf.train.ExponentialMovingAverage's
    w_ema  <- decay_t * w_ema + (1 - decay_t) * w    # warm-up with num_updates = t

for every trainable variable, while the non-trainable ones (spectral-norm
``u``, batch-norm moving statistics) are copied from G. The checkpoint holds
it as the child ``generator_ema`` (same object layout as ``generator``), so any
generator restores from either child. Training itself never reads it.
"""
import tensorflow as tf

__all__ = ["CHECKPOINT_CHILD", "GENERATOR_WEIGHTS", "decay_at", "update_average",
           "copy_weights"]

#: The checkpoint child that holds the averaged generator.
CHECKPOINT_CHILD = "generator_ema"
#: The ``--generator_weights`` choices of evaluation and the tools.
GENERATOR_WEIGHTS = ("auto", "raw", "ema")


def decay_at(decay, num_updates):
    """``min(decay, (1 + t) / (10 + t))`` for ``t = num_updates`` (a tensor)."""
    t = tf.cast(num_updates, tf.float32)
    return tf.minimum(tf.constant(decay, tf.float32), (1.0 + t) / (10.0 + t))


def update_average(average, model, decay, num_updates):
    """One averaging step of ``average`` (a model with ``model``'s variables, in
    the same order) towards ``model``.

    Call it in cross-replica context (the compiled step, after the replicas
    ran): a mirrored variable's ``assign`` there writes every replica's copy
    with the same value. Args: ``decay`` a Python float in (0, 1);
    ``num_updates`` the iteration count ``t`` (a scalar tensor).
    """
    d = decay_at(decay, num_updates)
    for target, source in zip(average.variables, model.variables):
        if source.trainable:
            target.assign(d * target + (1.0 - d) * tf.cast(source, target.dtype))
        else:
            target.assign(source)


def copy_weights(target, source):
    """Sets every variable of ``target`` to ``source``'s (same architecture)."""
    if len(target.variables) != len(source.variables):
        raise ValueError(f"cannot copy {len(source.variables)} variables into "
                         f"{len(target.variables)}")
    for t, s in zip(target.variables, source.variables):
        t.assign(s)
