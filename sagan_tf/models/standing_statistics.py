"""Standing batch-norm statistics for sampling (a documented deviation, docs/DEVIATIONS.md).

The release samples with the generator's moving batch-norm statistics. The
final batch norm (``g_bn``) has decay 0.9999, so after ``t`` training steps its
moving statistics have moved only ``1 - 0.9999**t`` of the way from their
initial values (14% after 1,500 steps): a short run samples with statistics
that describe no batch the generator ever produced. *Standing statistics*
(BigGAN-PyTorch's ``accumulate_standing_stats``, compare_gan's
``standing_statistics``) replace them before sampling: G runs in training mode
over ``num_batches`` batches of fresh ``z ~ N(0, 1)`` and uniform labels, and
every batch norm's moving mean and variance are set to the *average* of its
per-batch statistics over those batches (the variance in the layer's own
convention: biased for the conditional batch norms, Bessel-corrected for
``g_bn``, as their moving averages are).

The average is accumulated by the layers' own update rule with the decay set,
for batch ``k = 1, 2, ...``, to ``(k - 1) / k``: ``m_k = m_{k-1} (k-1)/k +
b_k / k`` is the running mean of ``b_1..b_k`` (``k = 1`` discards the old
value). Spectral-norm ``u`` vectors are not touched (``update_sn=False``).

Only the in-memory variables change; nothing is written to disk.
:func:`standing_statistics` restores the previous values on exit, for callers
(the trainer's end-of-run sample grid) whose networks must stay equal to the
checkpoint.
"""
import contextlib

import numpy as np
import tensorflow as tf

from sagan_tf.models import layers

__all__ = ["batch_norm_layers", "moving_statistics_variables",
           "accumulate_standing_statistics", "standing_statistics", "describe"]

_BATCH_NORM_TYPES = (layers.ConditionalBatchNorm, layers.FinalBatchNorm)


def batch_norm_layers(generator):
    """Every batch-norm layer of ``generator`` (conditional and final), in build order."""
    return [layer for layer in generator._flatten_layers(include_self=False, recursive=True)  # pylint: disable=protected-access
            if isinstance(layer, _BATCH_NORM_TYPES)]


def moving_statistics_variables(generator):
    """The moving mean / variance variables of every batch norm of ``generator``."""
    out = []
    for bn in batch_norm_layers(generator):
        if isinstance(bn, layers.ConditionalBatchNorm):
            out += [bn.moving_mean, bn.moving_var]
        else:
            out += [bn.moving_mean, bn.moving_variance]
    return out


def describe(num_batches, batch_size):
    """The label every output carries: which batch-norm statistics G sampled with."""
    if not num_batches:
        return "moving averages (the release)"
    return f"standing statistics over {int(num_batches)} batches of {int(batch_size)}"


def accumulate_standing_statistics(generator, num_batches, batch_size, seed=0):
    """Sets every batch norm's moving statistics of ``generator`` to standing statistics.

    Args:
      generator: a built :class:`sagan_tf.models.networks.Generator` (its variables
        may be mirrored: the eager calls run in cross-replica context).
      num_batches: batches to average over (>= 1).
      batch_size: images per batch (use the training per-replica batch size:
        the moving averages estimate statistics of batches of that size).
      seed: seed of the z and labels (numpy), so the result is reproducible.

    Returns:
      ``num_batches``. The spectral-norm ``u`` vectors are left untouched.
    """
    num_batches, batch_size = int(num_batches), int(batch_size)
    if num_batches < 1 or batch_size < 1:
        raise ValueError(f"standing statistics need num_batches >= 1 and batch_size >= 1, "
                         f"got {num_batches} and {batch_size}")
    bns = batch_norm_layers(generator)
    decays = [bn.decay for bn in bns]
    rng = np.random.default_rng(seed)
    try:
        for k in range(1, num_batches + 1):
            for bn in bns:  # read at call time: G runs eagerly here
                bn.decay = (k - 1.0) / k
            z = rng.standard_normal((batch_size, generator.z_dim)).astype(np.float32)
            labels = rng.integers(0, generator.num_classes, batch_size).astype(np.int32)
            generator(tf.constant(z), tf.constant(labels), training=True, update_sn=False)
    finally:
        for bn, decay in zip(bns, decays):
            bn.decay = decay
    return num_batches


@contextlib.contextmanager
def standing_statistics(generator, num_batches, batch_size, seed=0):
    """Context: standing statistics inside (see :func:`accumulate_standing_statistics`),
    the previous moving statistics restored on exit. ``num_batches=0`` is a no-op."""
    if not num_batches:
        yield
        return
    variables = moving_statistics_variables(generator)
    saved = [tf.identity(v) for v in variables]
    try:
        accumulate_standing_statistics(generator, num_batches, batch_size, seed)
        yield
    finally:
        for v, value in zip(variables, saved):
            v.assign(value)
