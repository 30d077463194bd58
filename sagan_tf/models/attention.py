"""Self-attention blocks (NUMERICS §3).

`SelfAttention` is the release's `sn_non_local_block_sim`: 1x1 spectral-norm
convolutions to C/8 (theta, "f"), C/8 (phi, "g") and C/2 (g, "h") channels,
2x2 max-pooling of the key/value paths, and an output 1x1 conv back to C
(`sn_conv_attn`, "v"). `SlideSelfAttention` is the paper-slide variant (f, g,
h with C/8, C/8, C channels, no pooling, no output conv), kept for
comparison. Both add `sigma_ratio * o` to the input with `sigma_ratio`
initialised to 0, so each block is the identity at initialisation.

`SelfAttention(..., query_block_size=k)` computes the same function with the
queries processed in blocks of `k` positions, each block's softmax recomputed
in the backward pass (`tf.recompute_grad`), so the `[B, N, N/4]` attention map
is never held in memory as a whole.
"""
import keras
import tensorflow as tf

from sagan_tf.models.layers import SpectralNormConv2D

__all__ = ["GatedResidualBlock", "SelfAttention", "SlideSelfAttention", "attention_weights",
           "attend"]


def _max_pool_2x2(x):
    return tf.nn.max_pool2d(x, ksize=2, strides=2, padding="VALID")


def attention_weights(queries, keys):
    """`softmax(queries @ keys^T)` over the key axis.

    queries `[B, N, d]`, keys `[B, M, d]` -> `[B, N, M]`. Softmax in float32.
    """
    logits = tf.matmul(tf.cast(queries, tf.float32), tf.cast(keys, tf.float32), transpose_b=True)
    return tf.nn.softmax(logits, axis=-1)


def attend(queries, keys, values, query_block_size=None):
    """`softmax(queries @ keys^T) @ values`, optionally in query blocks.

    queries `[B, N, d]`, keys `[B, M, d]`, values `[B, M, c]` -> `[B, N, c]`
    (dtype of `values`). With `query_block_size`, N is split into blocks whose
    attention maps `[B, block, M]` are recomputed in the backward pass instead
    of being stored; results equal the one-shot computation.
    """
    if not query_block_size or query_block_size >= queries.shape[1]:
        weights = attention_weights(queries, keys)
        return tf.matmul(tf.cast(weights, values.dtype), values)

    @tf.recompute_grad
    def one_block(q, k, v):
        w = attention_weights(q, k)
        return tf.matmul(tf.cast(w, v.dtype), v)

    num_queries = queries.shape[1]
    outputs = [one_block(queries[:, start:start + query_block_size], keys, values)
               for start in range(0, num_queries, query_block_size)]
    return tf.concat(outputs, axis=1)


class GatedResidualBlock(keras.layers.Layer):
    """Base of the blocks `y = x + sigma_ratio * f(x)` that sit where the release's
    attention goes: the attention variants here and the paper's "Residual"
    comparison block (`sagan_tf.models.networks.ResidualComparisonBlock`).

    `x [B, H, W, C]`, C divisible by 8. Subclasses create their 1x1 convolutions
    with `_conv1x1` in `build` after `_start_build`, then the gate with
    `_add_gate` (the scalar `sigma_ratio`, init 0: the block starts as the
    identity), and return `_gated(x, o)`. `spectral_norm=False`: plain 1x1
    convolutions (no `u`).
    """

    def __init__(self, spectral_norm=True, **kwargs):
        super().__init__(**kwargs)
        self.spectral_norm = bool(spectral_norm)

    def _start_build(self, input_shape):
        channels = int(input_shape[-1])
        if channels % 8:
            raise ValueError(f"{self.name}: channels must be divisible by 8, got {channels}")
        self.channels = channels

    def _conv1x1(self, filters, name):
        return SpectralNormConv2D(filters, 1, use_bias=False, use_sn=self.spectral_norm, name=name)

    def _add_gate(self):
        self.sigma_ratio = self.add_weight(name="sigma_ratio", shape=(), initializer="zeros",
                                           autocast=False)

    def _gated(self, x, o):
        return x + tf.cast(self.sigma_ratio, x.dtype) * o

    def get_config(self):
        return {**super().get_config(), "spectral_norm": self.spectral_norm}


class SelfAttention(GatedResidualBlock):
    """The release's pooled self-attention block (`sn_non_local_block_sim`).

    `x [B, H, W, C]` -> `[B, H, W, C]`; H and W even, C divisible by 8.
    Sub-layers `sn_conv_theta`, `sn_conv_phi`, `sn_conv_g`, `sn_conv_attn`
    (spectral-norm 1x1 convs without bias) and the scalar `sigma_ratio`
    (the paper's gamma, init 0). `spectral_norm=False`: plain 1x1 convs (no `u`).
    """

    def __init__(self, query_block_size=None, spectral_norm=True, **kwargs):
        super().__init__(spectral_norm=spectral_norm, **kwargs)
        self.query_block_size = query_block_size

    def build(self, input_shape):
        self._start_build(input_shape)
        c = self.channels
        self.conv_theta = self._conv1x1(c // 8, "sn_conv_theta")
        self.conv_phi = self._conv1x1(c // 8, "sn_conv_phi")
        self.conv_g = self._conv1x1(c // 2, "sn_conv_g")
        self.conv_attn = self._conv1x1(c, "sn_conv_attn")
        self._add_gate()

    def projections(self, x, update_sn=True, state=None):
        """theta `[B, N, C/8]`, phi `[B, N/4, C/8]`, g `[B, N/4, C/2]` for input `x`."""
        batch, height, width = tf.shape(x)[0], x.shape[1], x.shape[2]
        c = self.channels
        theta = tf.reshape(self.conv_theta(x, update_sn=update_sn, state=state),
                           [batch, height * width, c // 8])
        phi = _max_pool_2x2(self.conv_phi(x, update_sn=update_sn, state=state))
        phi = tf.reshape(phi, [batch, height * width // 4, c // 8])
        g = _max_pool_2x2(self.conv_g(x, update_sn=update_sn, state=state))
        g = tf.reshape(g, [batch, height * width // 4, c // 2])
        return theta, phi, g

    def attention_map(self, x, update_sn=False):
        """The attention weights `[B, N, N/4]` (for visualisation); no state change by default."""
        theta, phi, _ = self.projections(x, update_sn=update_sn)
        return attention_weights(theta, phi)

    def call(self, x, update_sn=True, state=None):
        batch, height, width = tf.shape(x)[0], x.shape[1], x.shape[2]
        theta, phi, g = self.projections(x, update_sn=update_sn, state=state)
        o = attend(theta, phi, g, self.query_block_size)
        o = tf.reshape(o, [batch, height, width, self.channels // 2])
        return self._gated(x, self.conv_attn(o, update_sn=update_sn, state=state))

    def get_config(self):
        return {**super().get_config(), "query_block_size": self.query_block_size}


class SlideSelfAttention(GatedResidualBlock):
    """The paper-slide self-attention variant, for comparison.

    `x [B, H, W, C]` -> `[B, H, W, C]`: `f, g` = SN 1x1 convs to C/8, `h` = SN
    1x1 conv to C, `o = softmax(f g^T) h` over all N = H*W positions (no
    pooling, no output conv), `y = x + sigma_ratio * o`.
    """

    def __init__(self, query_block_size=None, spectral_norm=True, **kwargs):
        super().__init__(spectral_norm=spectral_norm, **kwargs)
        self.query_block_size = query_block_size

    def build(self, input_shape):
        self._start_build(input_shape)
        c = self.channels
        self.conv_f = self._conv1x1(c // 8, "sn_conv_f")
        self.conv_g = self._conv1x1(c // 8, "sn_conv_g")
        self.conv_h = self._conv1x1(c, "sn_conv_h")
        self._add_gate()

    def projections(self, x, update_sn=True, state=None):
        """f `[B, N, C/8]`, g `[B, N, C/8]`, h `[B, N, C]`."""
        batch, n = tf.shape(x)[0], x.shape[1] * x.shape[2]
        c = self.channels
        f = tf.reshape(self.conv_f(x, update_sn=update_sn, state=state), [batch, n, c // 8])
        g = tf.reshape(self.conv_g(x, update_sn=update_sn, state=state), [batch, n, c // 8])
        h = tf.reshape(self.conv_h(x, update_sn=update_sn, state=state), [batch, n, c])
        return f, g, h

    def attention_map(self, x, update_sn=False):
        """The attention weights `[B, N, N]`; no state change by default."""
        f, g, _ = self.projections(x, update_sn=update_sn)
        return attention_weights(f, g)

    def call(self, x, update_sn=True, state=None):
        f, g, h = self.projections(x, update_sn=update_sn, state=state)
        return self._gated(x, tf.reshape(attend(f, g, h, self.query_block_size), tf.shape(x)))

    def get_config(self):
        return {**super().get_config(), "query_block_size": self.query_block_size}
