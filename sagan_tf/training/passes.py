"""The forward/backward passes of one G step and one D step on one replica (NUMERICS §6).

Each pass takes the :class:`~sagan_tf.training.trainer.Trainer` (its networks,
optimizers and loss), a :class:`~sagan_tf.models.pass_state.PassState` saying
how the pass's state writes are made (the trainer defers them and makes them
after the pass) and where the SN sigmas go, and a
:class:`~sagan_tf.models.pass_state.PowerIterations` (or None) in which D's
power iterations of the G step are kept for the first D step. The trainer's
iteration applies the gradients they return.
"""
import tensorflow as tf

from sagan_tf.training import losses, optimizers

__all__ = ["dense_gradients", "generator_pass", "discriminator_pass"]


def dense_gradients(grads):
    """Converts ``IndexedSlices`` gradients to dense tensors.

    Class-indexed gathers (conditional-BN gamma/beta, the projection
    embedding) give ``IndexedSlices`` with one slice per example, so a class
    that occurs twice in the batch appears twice. TF1's Adam (the release)
    summed duplicate indices first, i.e. applied the dense gradient. Keras 3's
    Adam does not: it squares the slices one by one for the second moment
    (sum of squares instead of square of the sum), a different update whenever
    a label repeats, which at 64 images of 1000 classes is nearly every batch.
    Dense gradients restore the release's update; they also avoid one sparse
    all-reduce branch per such variable under a strategy. The tables have at
    most ``number_classes`` rows, so this costs little.
    """
    return [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]


def generator_pass(trainer, state, power_iterations, z, y_fake):
    """Forward/backward of one G step: ``(g_loss, grads of G)``.

    G runs in training mode and writes its BN statistics and ``u`` as
    ``state`` (a :class:`~sagan_tf.models.pass_state.PassState`) says; D
    leaves its ``u`` untouched and keeps its power iterations in
    ``power_iterations`` (None: not kept) for the first D step.
    """
    G, D = trainer.generator, trainer.discriminator
    # The optimisers sum gradients over replicas (all-reduce SUM); scaling
    # each replica's loss by 1/num_replicas makes that sum the average of
    # the tower gradients, as the release did.
    scale = 1.0 / tf.distribute.get_replica_context().num_replicas_in_sync
    d_state = state.with_power_iterations(power_iterations)
    # The release's G step also drew (and read) a real batch, but the
    # generator loss does not depend on it; it is not drawn here.
    with tf.GradientTape() as tape:
        fake = G(z, y_fake, training=True, state=state)             # G: BN stats, u written
        logits_fake = D(fake, y_fake, update_sn=False, state=d_state)  # D: u untouched
        g_loss = losses.generator_loss(trainer.config.loss_type, logits_fake)
        scaled = optimizers.scale_loss(trainer.g_optimizer, g_loss * scale)
    return g_loss, dense_gradients(tape.gradient(scaled, G.trainable_variables))


def discriminator_pass(trainer, state, power_iterations, real_images, real_labels, z, y_fake):
    """Forward/backward of one D step: ``(outputs, grads of D)``; G's and D's
    state written as ``state`` says, D's power iterations taken from
    ``power_iterations`` when the G step kept them there."""
    G, D = trainer.generator, trainer.discriminator
    scale = 1.0 / tf.distribute.get_replica_context().num_replicas_in_sync
    # G runs in training mode again (release): its BN moving stats and
    # u are updated a second time in this iteration. No gradient to G.
    fake = tf.stop_gradient(G(z, y_fake, training=True, state=state))
    n_real = tf.shape(real_images)[0]
    with tf.GradientTape() as tape:
        # One D call on real+fake: D has no batch-dependent layer, so
        # this equals D(real) (updating u) followed by D(fake) with the
        # same normalised weights, the release's behaviour.
        logits = D(tf.concat([tf.cast(real_images, fake.dtype), fake], 0),
                   tf.concat([tf.cast(real_labels, tf.int32), y_fake], 0),
                   update_sn=True, state=state.with_power_iterations(power_iterations))
        logits_real, logits_fake = logits[:n_real], logits[n_real:]
        d_loss, d_loss_real, d_loss_fake = losses.discriminator_loss(
            trainer.config.loss_type, logits_real, logits_fake)
        scaled = optimizers.scale_loss(trainer.d_optimizer, d_loss * scale)
    grads = dense_gradients(tape.gradient(scaled, D.trainable_variables))
    return (d_loss, d_loss_real, d_loss_fake, logits_real, logits_fake, fake), grads
