"""GAN losses of the release (NUMERICS §5).

Every function takes logits `[B, 1]` (or `[B]`) and returns float32 scalars:
means over the batch it is given. Under a distribution strategy the caller
scales by `1 / num_replicas` so that summed gradients are averages.
"""
import tensorflow as tf

from sagan_tf.options import LOSS_TYPES

__all__ = ["LOSS_TYPES", "discriminator_loss", "generator_loss"]


def _check(loss_type):
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {LOSS_TYPES}")


def discriminator_loss(loss_type, logits_real, logits_fake):
    """`(d_loss, d_loss_real, d_loss_fake)`.

    hinge: `mean(relu(1 - real)) + mean(relu(1 + fake))`;
    kl:    `mean(softplus(-real)) + mean(softplus(fake))`.
    """
    _check(loss_type)
    real = tf.cast(logits_real, tf.float32)
    fake = tf.cast(logits_fake, tf.float32)
    if loss_type == "hinge_loss":
        loss_real = tf.reduce_mean(tf.nn.relu(1.0 - real))
        loss_fake = tf.reduce_mean(tf.nn.relu(1.0 + fake))
    else:
        loss_real = tf.reduce_mean(tf.nn.softplus(-real))
        loss_fake = tf.reduce_mean(tf.nn.softplus(fake))
    return loss_real + loss_fake, loss_real, loss_fake


def generator_loss(loss_type, logits_fake):
    """`-mean(D(G(z)))` for both loss types (the release's generator losses)."""
    _check(loss_type)
    return -tf.reduce_mean(tf.cast(logits_fake, tf.float32))
