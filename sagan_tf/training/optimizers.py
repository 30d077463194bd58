"""The release's Adam update as one fused kernel per variable (NUMERICS §6).

`ReleaseAdam` is `keras.optimizers.Adam` (same variables, same checkpoint
layout, same hyper-parameters) whose per-variable update runs TensorFlow's
`ResourceApplyAdam`, the kernel TF1's `tf.train.AdamOptimizer` -- and so the
release -- ran. Keras 3's TensorFlow backend writes the same formula as about
15 separate ops per variable (two pow, sub, mul, square, sqrt, div, three
assigns ...), each a full pass over the variable; at the paper's 81.5M
parameters that is several GB of memory traffic per iteration, and on small
models it is a thousand tiny ops per step. The fused kernel makes one pass.

Both compute, with t = iterations + 1:
  lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
  m <- m + (g - m) * (1 - beta1);  v <- v + (g*g - v) * (1 - beta2)
  var <- var - lr_t * m / (sqrt(v) + epsilon)
(TF1 kept beta^t in `beta1_power`/`beta2_power` variables multiplied once per
step; Keras recomputes it from `iterations`, the same value up to float32
rounding.) `tests/test_optimizers.py` checks the update against a numpy oracle.

The Keras formula is kept for what the fused kernel does not cover:
`IndexedSlices` gradients (the trainer passes dense ones), `amsgrad`,
non-float32 variables and TPUStrategy (untested there).

`ReplicaSafeLossScaleOptimizer` is `keras.optimizers.LossScaleOptimizer`
(mixed_float16's dynamic loss scaling) whose "are the gradients finite?"
decision is taken over every replica. Keras 3 decides it from each replica's
*local* gradients, before the wrapped optimizer sums them across replicas,
and under `MirroredStrategy` takes replica 0's answer for all: an overflow in
replica 1 only is then not skipped, the summed gradient carries the inf into
Adam and every replica's weights become NaN, and the loss scale does not
fall (`tests/test_optimizers.py` shows it with two logical CPU replicas).
"""
import keras
import tensorflow as tf

__all__ = ["ReleaseAdam", "ReplicaSafeLossScaleOptimizer", "scale_loss", "loss_scale"]


class ReleaseAdam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` updating each variable with `ResourceApplyAdam`.

    Args and state: those of `keras.optimizers.Adam` (use `epsilon=1e-8`, the
    TF1 default, for the release's numerics).
    """

    def _fused(self, gradient, variable):
        return (not self.amsgrad
                and not isinstance(gradient, tf.IndexedSlices)
                and isinstance(variable, tf.Variable)
                and variable.dtype == tf.float32
                and not isinstance(self._distribution_strategy, tf.distribute.TPUStrategy))

    _step_scalars_cache = None  # {device: scalars} during one update

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # The update's scalars (beta powers, casts) are the same for every
        # variable: built once per device, not ~10 ops for each of ~100
        # variables (the same values; fewer ops to trace and optimise).
        self._step_scalars_cache = {}
        try:
            super()._backend_update_step(grads, trainable_variables, learning_rate)
        finally:
            self._step_scalars_cache = None

    def _step_scalars(self, learning_rate, device):
        """``ResourceApplyAdam``'s scalar inputs for this update, on ``device``."""
        cache = self._step_scalars_cache
        if cache is not None and device in cache:
            return cache[device]
        local_step = tf.cast(self.iterations + 1, tf.float32)
        beta_1 = tf.cast(self.beta_1, tf.float32)
        beta_2 = tf.cast(self.beta_2, tf.float32)
        scalars = dict(beta1_power=tf.pow(beta_1, local_step),
                       beta2_power=tf.pow(beta_2, local_step),
                       lr=tf.cast(learning_rate, tf.float32), beta1=beta_1, beta2=beta_2,
                       epsilon=tf.cast(self.epsilon, tf.float32))
        if cache is not None:
            cache[device] = scalars
        return scalars

    def update_step(self, gradient, variable, learning_rate):
        if not self._fused(gradient, variable):
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index].value, self._velocities[index].value
        # `.handle` of a mirrored slot is its component on the device being
        # updated (this runs inside `strategy.extended.update`).
        return tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=m.handle, v=v.handle,
            grad=tf.cast(gradient, tf.float32), use_locking=False,
            **self._step_scalars(learning_rate, variable.device))


class ReplicaSafeLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """`keras.optimizers.LossScaleOptimizer` whose finiteness check is all-reduced.

    A step is applied only when the gradients of *every* replica are finite;
    otherwise it is skipped on every replica (weights, slots and `iterations`
    unchanged) and the loss scale is halved, as Keras does for one replica.
    Same variables and checkpoint layout as the Keras class.
    """

    def check_finite(self, grads):
        finite = super().check_finite(grads)
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return finite
        # Called per replica on its local gradients: count the replicas that
        # saw a non-finite value, so that all of them take the same branch.
        non_finite = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                        tf.cast(tf.logical_not(finite), tf.float32))
        return tf.equal(non_finite, 0.0)


def scale_loss(optimizer, loss):
    """Loss scaling of ``mixed_float16`` (``LossScaleOptimizer``); identity otherwise."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.scale_loss(loss)
    return loss


def loss_scale(optimizer):
    """The factor :func:`scale_loss` multiplies the loss by now (a float32
    tensor; 1.0 without loss scaling)."""
    if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return 1.0
    scale = optimizer.dynamic_scale if optimizer.built else optimizer.initial_scale
    return tf.identity(tf.convert_to_tensor(scale, tf.float32))
