"""An exponential moving average of the generator's weights (optional).

Not in the release: BigGAN's ``G_ema`` and StyleGAN's ``G_ema``, offered
because a short run's raw generator oscillates from checkpoint to checkpoint
(docs/DEVIATIONS.md §16). With ``--g_ema_decay d > 0`` the trainer keeps a
second generator of the same architecture whose weights follow G after every
iteration ``t`` (1, 2, ...)::

    decay_t = d (1 - d^(t-1)) / (1 - d^t)
    w_ema  <- decay_t * w_ema + (1 - decay_t) * w

for every trainable variable. That is the bias-corrected average (Adam's
correction of its moments): after iteration ``t``, ``w_ema`` is exactly
``sum_s d^(t-s) w_s / sum_s d^(t-s)`` over the weights ``w_1 .. w_t`` after
each iteration, so it is G's own weights at ``t = 1`` and an average over
about the last ``1 / (1 - d)`` iterations later, with no weight on G's
initialisation. The non-trainable variables (spectral-norm ``u``, batch-norm
moving statistics) are copied from G. The checkpoint holds
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
    """``d (1 - d^(t-1)) / (1 - d^t)`` for ``t = num_updates >= 1`` (a tensor),
    through ``expm1`` so that it stays accurate in float32 for ``d`` near 1."""
    t = tf.cast(num_updates, tf.float32)
    log_d = tf.math.log(tf.constant(decay, tf.float32))
    return decay * tf.math.expm1((t - 1.0) * log_d) / tf.math.expm1(t * log_d)


def update_average(average, model, decay, num_updates):
    """One averaging step of ``average`` (a model with ``model``'s variables, in
    the same order) towards ``model``.

    Call it in cross-replica context (the compiled step, after the replicas
    ran). Under a mirrored strategy each replica's copy is updated in place
    from that replica's copy of ``model`` (``strategy.extended.update``),
    instead of computing the average on one device and copying it to every
    replica; the copies are equal, so the values are the same. Args:
    ``decay`` a Python float in (0, 1); ``num_updates`` the iteration count
    ``t`` (a scalar tensor).
    """
    d = decay_at(decay, num_updates)
    for target, source in zip(average.variables, model.variables):
        if source.trainable:
            def average_into(t, s):
                return t.assign(d * t + (1.0 - d) * tf.cast(s, t.dtype))
        else:
            def average_into(t, s):
                return t.assign(s)
        inner_target, inner_source = _tf_variable(target), _tf_variable(source)
        if isinstance(inner_target, tf.distribute.DistributedValues):
            inner_target.distribute_strategy.extended.update(
                inner_target, average_into, args=(inner_source,), group=False)
        else:
            average_into(target, source)


def _tf_variable(v):
    """The TensorFlow variable (possibly distributed) behind a Keras variable."""
    return getattr(v, "value", v) if not isinstance(v, tf.Variable) else v


def copy_weights(target, source):
    """Sets every variable of ``target`` to ``source``'s (same architecture)."""
    if len(target.variables) != len(source.variables):
        raise ValueError(f"cannot copy {len(source.variables)} variables into "
                         f"{len(target.variables)}")
    for t, s in zip(target.variables, source.variables):
        t.assign(s)
