"""Early signs of a training collapse, as TensorBoard scalars under ``collapse/``.

Read-only additions of this port (``--collapse_summaries``, on by default);
none changes what an iteration computes (``tests/test_collapse_summaries.py``
checks the weights bit for bit with and without them):

* ``collapse/sigma/<layer>``: the largest singular value of each
  spectral-norm layer's weight (G's and D's), the estimate ``sigma`` the
  layer's own spectral normalisation computed in the iteration (its last call:
  for G the D step's forward pass, for D the D step's). BigGAN found it to
  rise, in a few layers sharply, before a collapse;
* ``collapse/g_grad_norm``, ``collapse/d_grad_norm``: the global norm of G's
  gradient of the last G step and of D's of the last D step, as the
  optimiser receives them times the number of replicas (each replica's loss
  is scaled by 1/replicas), i.e. one replica's gradient of its mean loss;
  under ``mixed_float16`` they are divided by the step's loss scale (the
  gradient the optimiser applies), and a step the loss-scale optimiser skips
  for an overflow reads ``inf`` (its next step has half the scale);
* ``collapse/real_positive_share``: the share of the last D step's real
  images with a positive D logit (StyleGAN2-ADA's overfitting heuristic
  ``r_t``, there ``E[sign(D(x))]``; here ``(r_t + 1) / 2``): it climbs
  towards 1 as D memorises the training set.

The sigmas come from the iteration itself: each spectral-norm call puts its
``sigma`` tensor into the ``sigmas`` dict of the
:class:`~sagan_tf.models.pass_state.PassState` the trainer passes it, so no extra pass over the
networks or their weights is made. They are metrics of the compiled step and
are read back, like the losses, only at summary and log steps.
"""
import tensorflow as tf

__all__ = ["PREFIX", "SIGMAS", "step_metrics"]

PREFIX = "collapse/"
#: The key of the sigmas' vector among a replica's step metrics.
SIGMAS = PREFIX + "sigmas"


def step_metrics(g_grads, d_grads, logits_real, sigmas, num_replicas,
                 g_loss_scale=1.0, d_loss_scale=1.0):
    """The ``collapse/...`` metrics of one replica's iteration.

    Args:
      g_grads, d_grads: the gradients of the last G and D step (lists of tensors).
      logits_real: D's logits ``[B]`` (or ``[B, 1]``) of the last D step's real images.
      sigmas: ``{layer path: sigma}`` of the step's spectral-norm calls (``PassState.sigmas``).
      num_replicas: replicas in sync (the losses were scaled by its inverse).
      g_loss_scale, d_loss_scale: the loss scale each loss was multiplied by
        before its gradient (``mixed_float16``); 1 otherwise.

    Returns:
      ``(scalars, vectors)``: ``{name: scalar tensor}`` (gradient norms, the
      positive share) and ``{SIGMAS: (names, vector)}``, the sigmas as one
      ``[layers]`` vector with the metric name of each element.
    """
    scale = tf.cast(num_replicas, tf.float32)
    out = {
        PREFIX + "g_grad_norm": _global_norm(g_grads) * scale / _as_float(g_loss_scale),
        PREFIX + "d_grad_norm": _global_norm(d_grads) * scale / _as_float(d_loss_scale),
        PREFIX + "real_positive_share": tf.reduce_mean(
            tf.cast(tf.reshape(logits_real, [-1]) > 0, tf.float32)),
    }
    names = sorted(sigmas)
    vectors = {}
    if names:
        # The layers keep sigma as [1, 1]; one concat and one reshape give the
        # vector of all of them (not a reshape per layer: fewer kernels).
        vectors[SIGMAS] = ([f"{PREFIX}sigma/{name}" for name in names], tf.reshape(
            tf.concat([tf.cast(sigmas[name], tf.float32) for name in names], 0), [-1]))
    return out, vectors


def _global_norm(grads):
    grads = [tf.cast(g, tf.float32) for g in grads if g is not None]
    return tf.linalg.global_norm(grads)


def _as_float(x):
    return tf.cast(tf.convert_to_tensor(x), tf.float32)
