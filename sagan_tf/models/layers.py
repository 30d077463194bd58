"""Spectral-normalised layers and the two batch norms of the SAGAN release.

NUMERICS §1 (spectral normalisation) and §2 (batch norm). Everything here computes
what the 2018 TF1 release computes; comments mark the places where that
differs from the obvious Keras choice.

Shapes are NHWC. Variable names match the release checkpoints (NUMERICS §10).

Mixed precision: weights, the power iteration and the batch-norm moments are
always float32 (`autocast=False`); only the normalised weight / normalised
activations are cast to the layer's compute dtype. In training mode a
half-precision batch norm runs TensorFlow's fused kernel (`_fused_batch_norm`:
moments accumulated in float32 inside one op, one op for the backward pass)
instead of casting the activations to float32 and back around a dozen
elementwise ops (docs/DEVIATIONS.md, item 15); float32 inputs take
the unfused path, the release's arithmetic.
"""
import keras
import tensorflow as tf

from sagan_tf.models import state_writes
from sagan_tf.models.pass_state import IN_PLACE
# Backward passes of spectral normalisation (sagan_tf/options.py), re-exported here.
from sagan_tf.options import SN_GRADIENTS
# One power iteration with its hand-written backward (both of NUMERICS §1.2).
from sagan_tf.models.spectral_norm_op import (l2_normalize, normalized_weight,
                                              power_iteration, spectral_normalize)

__all__ = [
    "l2_normalize",
    "spectral_normalize",
    "set_sn_gradient",
    "SN_GRADIENTS",
    "SpectralNormConv2D",
    "SpectralNormDense",
    "SpectralNormEmbedding",
    "ConditionalBatchNorm",
    "FinalBatchNorm",
]


class _SpectralNormBase(keras.layers.Layer):
    """Shared `u` handling for the spectral-normalised layers.

    `u` is non-trainable and sync-on-read: every replica computes the same
    `u_new` from the same weights and `u`, and writes its own copy without
    a cross-replica reduction; reads outside the replicas (checkpoints,
    summaries) take replica 0's copy (sagan_tf/models/state_writes.py).

    `use_sn=False` makes the layer a plain one (no `u`, no normalisation; the
    other variables and names unchanged): the generator without spectral norm
    of the paper's "SN on D only" baseline.

    `sn_gradient` (one of `SN_GRADIENTS`) picks the backward pass of a call
    that writes `u`: `"release"` (default) is the one the release ran under
    TF1 ref variables, `"exact"` the exact gradient of `W / sigma(W)`
    (docs/NUMERICS.md §1.2). A call that does not write `u` is exact in both.
    """

    def __init__(self, use_sn=True, sn_gradient="release", **kwargs):
        super().__init__(**kwargs)
        self.use_sn = bool(use_sn)
        self.sn_gradient = sn_gradient

    @property
    def sn_gradient(self):
        return self._sn_gradient

    @sn_gradient.setter
    def sn_gradient(self, value):
        if value not in SN_GRADIENTS:
            raise ValueError(f"sn_gradient must be one of {SN_GRADIENTS}, got {value!r}")
        self._sn_gradient = value

    def _add_u(self, out_units):
        if not self.use_sn:
            self.u = None
            return
        # `add_weight` with a `synchronization`: each replica keeps and writes
        # its own copy of `u` (identical on all, sagan_tf/models/state_writes.py).
        with keras.name_scope(self.name, caller=self):
            self.u = keras.Variable(
                initializer=keras.initializers.TruncatedNormal(mean=0.0, stddev=1.0),
                shape=(1, out_units), dtype=self.variable_dtype, trainable=False, autocast=False,
                aggregation=state_writes.LOCAL_U_AGGREGATION,
                synchronization=state_writes.LOCAL_U_SYNCHRONIZATION, name="u")
        self._track_variable(self.u)

    def _normalized_weight(self, w, update_sn, state):
        """Returns `w / sigma(w)`; writes `u <- u_new` when `update_sn`.

        `state` (a `sagan_tf.models.pass_state.PassState`) says how: the write
        in place or deferred to the caller, the `sigma` recorded or not, the
        power iteration taken from an earlier pass over the same weights
        (`state.power_iterations`) or computed here.
        """
        if not self.use_sn:
            return w
        # The release's backward saw `u` as it stood after the forward pass:
        # `u_new` when this call writes it, the stored `u` otherwise.
        release_backward = bool(update_sn) and self.sn_gradient == "release"

        def compute():
            return power_iteration(w, tf.convert_to_tensor(self.u))
        forward = (compute() if state.power_iterations is None
                   else state.power_iterations.forward(self, update_sn, compute))
        w_bar, u_new, sigma = normalized_weight(w, forward.u, release_backward, forward)
        state.record_sigma(self.path, sigma)  # collapse summaries: read-only, no extra op
        if update_sn:
            state.assign(self.u, u_new)
        return w_bar

    def sigma(self):
        """The current spectral-norm estimate (no state change), for logging and tests."""
        if not self.use_sn:
            raise ValueError(f"{self.name} has no spectral norm (use_sn=False)")
        return spectral_normalize(self._sn_weight(), tf.convert_to_tensor(self.u))[2]

    def get_config(self):
        return {**super().get_config(), "use_sn": self.use_sn, "sn_gradient": self.sn_gradient}


def set_sn_gradient(model, sn_gradient):
    """Sets `sn_gradient` on every spectral-normalised layer inside `model`."""
    for layer in model._flatten_layers(include_self=True, recursive=True):  # pylint: disable=protected-access
        if isinstance(layer, _SpectralNormBase):
            layer.sn_gradient = sn_gradient


class SpectralNormConv2D(_SpectralNormBase):
    """Spectral-normalised 2-D convolution, stride 1, padding SAME (`snconv2d`).

    Input `[B, H, W, in]` -> output `[B, H, W, filters]`.
    Variables: `w [kh, kw, in, filters]` (Glorot uniform), `biases [filters]`
    (zeros, only with `use_bias`), `u [1, filters]`.

    `bias_as_add=True` adds the bias with a broadcasting add instead of
    `BiasAdd` (the same float sums). Grappler's remapper fuses conv +
    `BiasAdd` + a following residual add into one kernel, and in TF 2.21
    (oneDNN) that rewrite fails when the sum also feeds another
    convolution's gradient ("remapper failed: ... fanout ... for missing
    node"); a failed remapper leaves the whole step graph without any of its
    fusions (~10% slower here). The discriminator's first block is such a
    place.
    """

    def __init__(self, filters, kernel_size=3, use_bias=True, bias_as_add=False, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.use_bias = use_bias
        self.bias_as_add = bool(bias_as_add)

    def build(self, input_shape):
        in_channels = int(input_shape[-1])
        self.w = self.add_weight(
            name="w", shape=(self.kernel_size, self.kernel_size, in_channels, self.filters),
            initializer=keras.initializers.GlorotUniform(), autocast=False)
        if self.use_bias:
            self.biases = self.add_weight(
                name="biases", shape=(self.filters,), initializer="zeros", autocast=False)
        self._add_u(self.filters)

    def _sn_weight(self):
        return tf.convert_to_tensor(self.w)

    def call(self, x, update_sn=True, state=None):
        """`update_sn`: write `u`; `state`: how (see `_normalized_weight`), None: in place."""
        w_bar = self._normalized_weight(self._sn_weight(), update_sn, state or IN_PLACE)
        y = tf.nn.conv2d(x, tf.cast(w_bar, x.dtype), strides=1, padding="SAME")
        if self.use_bias and self.bias_as_add:
            y = y + tf.cast(self.biases, x.dtype)  # same sums; see the class docstring
        elif self.use_bias:
            y = tf.nn.bias_add(y, tf.cast(self.biases, x.dtype))
        return y

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "use_bias": self.use_bias,
                "bias_as_add": self.bias_as_add}


class SpectralNormDense(_SpectralNormBase):
    """Spectral-normalised linear layer (`snlinear`).

    Input `[B, in]` -> output `[B, units]`.
    Variables: `Matrix [in, units]` (Glorot uniform), `bias [units]` (zeros), `u [1, units]`.
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    def build(self, input_shape):
        self.matrix = self.add_weight(
            name="Matrix", shape=(int(input_shape[-1]), self.units),
            initializer=keras.initializers.GlorotUniform(), autocast=False)
        self.bias = self.add_weight(
            name="bias", shape=(self.units,), initializer="zeros", autocast=False)
        self._add_u(self.units)

    def _sn_weight(self):
        return tf.convert_to_tensor(self.matrix)

    def call(self, x, update_sn=True, state=None):
        w_bar = self._normalized_weight(self._sn_weight(), update_sn, state or IN_PLACE)
        return tf.matmul(x, tf.cast(w_bar, x.dtype)) + tf.cast(self.bias, x.dtype)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class SpectralNormEmbedding(_SpectralNormBase):
    """Spectral-normalised class embedding (`sn_embedding`).

    Labels `[B]` (int) -> embeddings `[B, embedding_size]`.
    Variables: `embedding_map [num_classes, embedding_size]` (Glorot uniform)
    and `u [1, num_classes]`: the release normalises the *transpose*
    `[embedding_size, num_classes]`, so `u` has `num_classes` entries.
    """

    def __init__(self, num_classes, embedding_size, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.embedding_size = int(embedding_size)

    def build(self, input_shape):
        self.embedding_map = self.add_weight(
            name="embedding_map", shape=(self.num_classes, self.embedding_size),
            initializer=keras.initializers.GlorotUniform(), autocast=False)
        self._add_u(self.num_classes)

    def _sn_weight(self):
        return tf.transpose(tf.convert_to_tensor(self.embedding_map))

    def call(self, labels, update_sn=True, state=None):
        map_bar = tf.transpose(self._normalized_weight(self._sn_weight(), update_sn,
                                                       state or IN_PLACE))
        return tf.cast(tf.gather(map_bar, labels), self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "embedding_size": self.embedding_size}


def _fused_batch_norm(x, scale, offset, epsilon):
    """Training-mode batch norm of a half-precision `x [B, H, W, C]` in one kernel.

    `FusedBatchNormV3` (oneDNN on CPU, cuDNN on GPU) reads `x` in its own
    dtype, accumulates the moments over (N, H, W) in float32 and writes
    `y = (x - mean) / sqrt(var + epsilon) * scale + offset` in the dtype of
    `x`; its gradient is one `FusedBatchNormGradV3`. `scale` and `offset`
    are float32 `[C]`. Returns `(y, mean, unbiased_var)`: the kernel
    normalises with the biased batch variance but returns the
    Bessel-corrected one (n / (n - 1)), the one TF1's `batch_norm` fed to
    its moving average. `epsilon` is passed to the op as is (the Python
    wrappers clamp it to 1.001e-5).
    """
    empty = tf.zeros([0], tf.float32)
    y, mean, unbiased_var, _, _, _ = tf.raw_ops.FusedBatchNormV3(
        x=x, scale=scale, offset=offset, mean=empty, variance=empty, epsilon=epsilon,
        exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
    return y, mean, unbiased_var


def _uses_fused_kernel(x, training):
    """Half-precision activations in training mode take `_fused_batch_norm`."""
    return training and x.dtype in (tf.bfloat16, tf.float16) and x.shape.rank == 4


class ConditionalBatchNorm(keras.layers.Layer):
    """Class-conditional batch norm of the generator blocks (`ConditionalBatchNorm`).

    `x [B, H, W, C]`, `labels [B]` -> `[B, H, W, C]`.
    Variables: `gamma [num_classes, C]` (ones), `beta [num_classes, C]`
    (zeros), `mean [1, 1, 1, C]` (zeros) and `var [1, 1, 1, C]` (ones), the
    last two non-trainable moving statistics with `aggregation="mean"`.

    Training normalises with the batch moments over (N, H, W), biased variance,
    and updates `m <- m * decay + batch_m * (1 - decay)` for mean and (biased)
    variance. Inference normalises with the moving statistics.
    """

    def __init__(self, num_classes, decay=0.999, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.decay = decay
        self.epsilon = epsilon

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.gamma = self.add_weight(name="gamma", shape=(self.num_classes, channels),
                                     initializer="ones", autocast=False)
        self.beta = self.add_weight(name="beta", shape=(self.num_classes, channels),
                                    initializer="zeros", autocast=False)
        self.moving_mean = self.add_weight(
            name="mean", shape=(1, 1, 1, channels), initializer="zeros",
            trainable=False, aggregation="mean", autocast=False)
        self.moving_var = self.add_weight(
            name="var", shape=(1, 1, 1, channels), initializer="ones",
            trainable=False, aggregation="mean", autocast=False)

    def call(self, x, labels, training=False, state=None):
        """`training` updates the moving statistics as `state` says (None: in place)."""
        state = state or IN_PLACE
        in_dtype = x.dtype
        if _uses_fused_kernel(x, training):
            return self._fused_call(x, labels, state)
        x = tf.cast(x, tf.float32)
        gamma, beta = self._per_sample(self.gamma, labels), self._per_sample(self.beta, labels)
        if training:
            mean, var = tf.nn.moments(x, axes=[0, 1, 2], keepdims=True)
            state.assign(self.moving_mean,
                         self.moving_mean * self.decay + mean * (1.0 - self.decay))
            state.assign(self.moving_var, self.moving_var * self.decay + var * (1.0 - self.decay))
        else:
            mean = tf.convert_to_tensor(self.moving_mean)
            var = tf.convert_to_tensor(self.moving_var)
        y = tf.nn.batch_normalization(x, mean, var, beta, gamma, self.epsilon)
        return tf.cast(y, in_dtype)

    @staticmethod
    def _per_sample(param, labels):
        """`param[labels]` as `[B, 1, 1, C]` (a reshape, not a strided slice: on
        a GPU no kernel, and its gradient is a reshape too)."""
        rows = tf.gather(tf.convert_to_tensor(param), labels)
        return tf.reshape(rows, [-1, 1, 1, param.shape[-1]])

    def _fused_call(self, x, labels, state):
        """Half-precision training path: the fused kernel normalises (float32
        moments), the per-sample `gamma`, `beta` are applied in `x`'s dtype."""
        channels = x.shape[-1]
        x_hat, mean, unbiased_var = _fused_batch_norm(
            x, tf.ones([channels], tf.float32), tf.zeros([channels], tf.float32), self.epsilon)
        n = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
        var = unbiased_var * (tf.maximum(n - 1.0, 1.0) / n)  # biased, as the unfused path
        state.assign(self.moving_mean, self.moving_mean * self.decay
                     + tf.reshape(mean, [1, 1, 1, channels]) * (1.0 - self.decay))
        state.assign(self.moving_var, self.moving_var * self.decay
                     + tf.reshape(var, [1, 1, 1, channels]) * (1.0 - self.decay))
        gamma, beta = self._per_sample(self.gamma, labels), self._per_sample(self.beta, labels)
        return x_hat * tf.cast(gamma, x.dtype) + tf.cast(beta, x.dtype)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "decay": self.decay, "epsilon": self.epsilon}


class FinalBatchNorm(keras.layers.Layer):
    """The generator's last, unconditional batch norm (`g_bn`).

    `[B, H, W, C]` -> `[B, H, W, C]`. The release used
    `tf.contrib.layers.batch_norm(decay=0.9999, epsilon=1e-5, scale=True)`,
    which ran the fused kernel; reproduced here:
      - epsilon is clamped to 1.001e-5 (the fused kernel's minimum);
      - training normalises with the biased batch variance but updates the
        moving variance with the Bessel-corrected one (n / (n - 1));
      - inference normalises with the moving statistics.
    Variables: `gamma, beta, moving_mean, moving_variance [C]`.
    """

    def __init__(self, decay=0.9999, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.decay = decay
        self.epsilon = max(epsilon, 1.001e-5)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones",
                                     autocast=False)
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros",
                                    autocast=False)
        self.moving_mean = self.add_weight(
            name="moving_mean", shape=(channels,), initializer="zeros",
            trainable=False, aggregation="mean", autocast=False)
        self.moving_variance = self.add_weight(
            name="moving_variance", shape=(channels,), initializer="ones",
            trainable=False, aggregation="mean", autocast=False)

    def call(self, x, training=False, state=None):
        """`training` updates the moving statistics as `state` says (None: in place)."""
        state = state or IN_PLACE
        in_dtype = x.dtype
        if _uses_fused_kernel(x, training):
            # Half precision: one fused kernel (float32 moments), same updates.
            y, mean, unbiased_var = _fused_batch_norm(
                x, tf.convert_to_tensor(self.gamma), tf.convert_to_tensor(self.beta),
                self.epsilon)
            state.assign(self.moving_mean,
                         self.moving_mean * self.decay + mean * (1.0 - self.decay))
            state.assign(self.moving_variance,
                         self.moving_variance * self.decay + unbiased_var * (1.0 - self.decay))
            return y
        x = tf.cast(x, tf.float32)
        if training:
            mean, var = tf.nn.moments(x, axes=[0, 1, 2])
            n = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
            unbiased_var = var * n / tf.maximum(n - 1.0, 1.0)
            state.assign(self.moving_mean,
                         self.moving_mean * self.decay + mean * (1.0 - self.decay))
            state.assign(self.moving_variance,
                         self.moving_variance * self.decay + unbiased_var * (1.0 - self.decay))
        else:
            mean = tf.convert_to_tensor(self.moving_mean)
            var = tf.convert_to_tensor(self.moving_variance)
        y = tf.nn.batch_normalization(x, mean, var, self.beta, self.gamma, self.epsilon)
        return tf.cast(y, in_dtype)

    def get_config(self):
        return {**super().get_config(), "decay": self.decay, "epsilon": self.epsilon}
