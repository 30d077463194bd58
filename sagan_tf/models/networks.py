"""The class-conditional SAGAN generator and discriminator (NUMERICS §4).

The layouts (which residual blocks at which resolution, where the attention
goes, per arch and image size) are :mod:`sagan_tf.models.layouts`; at
`image_size=128` they are exactly the release's `test`, `baseline` and
`test_64` networks.

Beyond the release (the paper's Table 1 and Figure 3 ablations, docs/REPRODUCING.md):
`attention_resolutions` places the block after each G / D block whose output has
one of the given sizes (the paper's feat8 ... feat64; `()` none), overriding the
arch's placement; `attention="residual"` / `"resnet_block"` puts the paper's
"Residual" comparison block there instead (see `ResidualComparisonBlock`);
`Generator(spectral_norm=False)` is the "SN on D only" generator (plain layers,
no `u`). One block keeps the release's name (`g_non_local`, `g_residual`,
`g_res_block`, and `d_...`) wherever it sits, as the release's `test` and
`test_64` both name theirs `g_non_local`; several get their resolution as a
suffix (`g_non_local_16`, `g_non_local_32`).

Sub-layer and variable names follow the release (`g_block1`, `d_non_local`,
...), so a model's variable paths, with the model name replaced by `model`,
are the release's checkpoint names (NUMERICS §10).
"""
import keras
import numpy as np
import tensorflow as tf

from sagan_tf.models.attention import GatedResidualBlock, SelfAttention, SlideSelfAttention
from sagan_tf.models.layers import (ConditionalBatchNorm, FinalBatchNorm, SpectralNormConv2D,
                                    SpectralNormDense, SpectralNormEmbedding, set_sn_gradient)
from sagan_tf.models.layouts import (ATTENTION_TYPES, _placements, discriminator_layout,
                                     generator_layout, parse_resolutions)

__all__ = ["Generator", "Discriminator", "build_networks", "count_parameters"]


@tf.custom_gradient
def _upsample_2x(x):
    """Nearest-neighbour 2x upsampling `[B,H,W,C] -> [B,2H,2W,C]` (`resize_nearest_neighbor`).

    Pixel (i, j) copies (i // 2, j // 2), as the release's op; the TF2
    resize with half-pixel centres picks the same pixels at an exact 2x.
    The gradient sums each 2x2 block, written as 4 * avg_pool (exact: the
    scalings are powers of two): it equals ResizeNearestNeighborGrad, which
    XLA cannot compile, and is faster than it. Together this runs faster
    than the equivalent `tf.repeat` pair (tile + reshape, reduce-sum backward).
    """
    def grad(dy):
        return 4.0 * tf.nn.avg_pool2d(dy, ksize=2, strides=2, padding="VALID")
    # Static sizes where known, so the output keeps a static H and W even when
    # the batch size is unknown (the attention block's reshapes need them).
    height, width = x.shape[1], x.shape[2]
    size = [2 * height, 2 * width] if height and width else 2 * tf.shape(x)[1:3]
    return tf.image.resize(x, size, method="nearest"), grad


def _avg_pool_2x2(x):
    return tf.nn.avg_pool2d(x, ksize=2, strides=2, padding="VALID")


def _make_attention(attention_type, query_block_size, name, spectral_norm=True):
    if attention_type not in ATTENTION_TYPES:
        raise ValueError(f"unknown attention type {attention_type!r}; expected one of {ATTENTION_TYPES}")
    cls = SelfAttention if attention_type == "release" else SlideSelfAttention
    return cls(query_block_size=query_block_size, spectral_norm=spectral_norm, name=name)


class _BuiltByTheFirstCall:
    """A layer whose sublayers create their own variables when a call first
    reaches them (each has its own `build`): nothing to create here.

    Without a `build`, Keras would build the layer by tracing `call`
    symbolically in a scratch graph before running it (~2 s of op creation
    per G and D pair at the test sizes, then the eager call runs anyway).
    """

    def build(self, input_shape):
        del input_shape


class GeneratorBlock(_BuiltByTheFirstCall, keras.layers.Layer):
    """Upsampling residual block with conditional BN (the release's G `block`).

    `x [B, H, W, in]`, `labels [B]` -> `[B, 2H, 2W, out]`:
    `h = conv3x3(relu(cbn_1(conv3x3(up(relu(cbn_0(x)))))))`,
    shortcut `conv1x1(up(x))` (always a conv, as in the release).
    `upsample=False` (the "resnet_block" comparison block) drops both `up`s:
    `[B, H, W, in]` -> `[B, H, W, out]`. `spectral_norm=False`: plain convs.
    """

    def __init__(self, out_channels, num_classes, upsample=True, spectral_norm=True, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = out_channels
        self.upsample = bool(upsample)
        self.cbn_0 = ConditionalBatchNorm(num_classes, name="cbn_0")
        self.snconv1 = SpectralNormConv2D(out_channels, 3, use_sn=spectral_norm, name="snconv1")
        self.cbn_1 = ConditionalBatchNorm(num_classes, name="cbn_1")
        self.snconv2 = SpectralNormConv2D(out_channels, 3, use_sn=spectral_norm, name="snconv2")
        self.snconv3 = SpectralNormConv2D(out_channels, 1, use_sn=spectral_norm, name="snconv3")

    def call(self, x, labels, training=False, update_sn=True, state=None):
        up = _upsample_2x if self.upsample else (lambda t: t)
        h = tf.nn.relu(self.cbn_0(x, labels, training=training, state=state))
        h = self.snconv1(up(h), update_sn=update_sn, state=state)
        h = tf.nn.relu(self.cbn_1(h, labels, training=training, state=state))
        h = self.snconv2(h, update_sn=update_sn, state=state)
        shortcut = self.snconv3(up(x), update_sn=update_sn, state=state)
        return shortcut + h


class ResidualComparisonBlock(GatedResidualBlock):
    """The paper's "Residual" block of Table 1, with the attention block's parameter count.

    `x [B, H, W, C]` -> `[B, H, W, C]` (C divisible by 8):
    `y = x + sigma_ratio * sn_conv_out(relu(sn_conv_hidden(x)))`, 1x1 convs
    without bias C -> 5C/8 -> C, `sigma_ratio` a scalar initialised to 0.
    Its weights, 2 * C * 5C/8 = 1.25 C^2 plus the scalar, are exactly the release
    attention block's (C^2/8 + C^2/8 + C^2/2 + C^2/2 plus `sigma_ratio`): the
    paper compares "with the same number of parameters". It is the attention
    block with the non-local (softmax) mixing over positions replaced by a
    position-wise ReLU layer, the same gate and the same identity at
    initialisation. Why this reading: docs/REPRODUCING.md.
    """

    def build(self, input_shape):
        self._start_build(input_shape)
        self.conv_hidden = self._conv1x1(self.channels * 5 // 8, "sn_conv_hidden")
        self.conv_out = self._conv1x1(self.channels, "sn_conv_out")
        self._add_gate()

    def call(self, x, update_sn=True, state=None):
        h = tf.nn.relu(self.conv_hidden(x, update_sn=update_sn, state=state))
        return self._gated(x, self.conv_out(h, update_sn=update_sn, state=state))


class DiscriminatorOptimizedBlock(_BuiltByTheFirstCall, keras.layers.Layer):
    """The discriminator's first block (`optimized_block`).

    `x [B, H, W, in]` -> `[B, H/2, W/2, out]`:
    `h = avgpool(conv3x3(relu(conv3x3(x))))`, shortcut `conv1x1(avgpool(x))`.
    """

    def __init__(self, out_channels, **kwargs):
        super().__init__(**kwargs)
        self.sn_conv1 = SpectralNormConv2D(out_channels, 3, name="sn_conv1")
        self.sn_conv2 = SpectralNormConv2D(out_channels, 3, name="sn_conv2")
        # Its output feeds the next layer's convolutions: keep the remapper
        # from fusing this conv + bias + residual add (see SpectralNormConv2D).
        self.sn_conv3 = SpectralNormConv2D(out_channels, 1, bias_as_add=True, name="sn_conv3")

    def call(self, x, update_sn=True, state=None):
        h = tf.nn.relu(self.sn_conv1(x, update_sn=update_sn, state=state))
        h = _avg_pool_2x2(self.sn_conv2(h, update_sn=update_sn, state=state))
        # Pool first, then conv: the release's order for this shortcut.
        shortcut = self.sn_conv3(_avg_pool_2x2(x), update_sn=update_sn, state=state)
        return shortcut + h


class DiscriminatorBlock(keras.layers.Layer):
    """Residual discriminator block (the release's D `block`).

    `x [B, H, W, in]` -> `[B, H/2, W/2, out]` (or `[B, H, W, out]` without
    downsampling): `h = [avgpool](conv3x3(relu(conv3x3(relu(x)))))`; shortcut
    `x`, or `[avgpool](conv1x1(x))` when downsampling or `in != out`.
    """

    def __init__(self, out_channels, downsample=True, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = out_channels
        self.downsample = downsample
        self.sn_conv1 = SpectralNormConv2D(out_channels, 3, name="sn_conv1")
        self.sn_conv2 = SpectralNormConv2D(out_channels, 3, name="sn_conv2")
        self.sn_conv3 = None

    def build(self, input_shape):
        if self.downsample or int(input_shape[-1]) != self.out_channels:
            self.sn_conv3 = SpectralNormConv2D(self.out_channels, 1, name="sn_conv3")

    def call(self, x, update_sn=True, state=None):
        h = self.sn_conv1(tf.nn.relu(x), update_sn=update_sn, state=state)
        h = self.sn_conv2(tf.nn.relu(h), update_sn=update_sn, state=state)
        if self.downsample:
            h = _avg_pool_2x2(h)
        shortcut = x
        if self.sn_conv3 is not None:
            shortcut = self.sn_conv3(x, update_sn=update_sn, state=state)
            if self.downsample:
                shortcut = _avg_pool_2x2(shortcut)
        return shortcut + h


class Generator(_BuiltByTheFirstCall, keras.Model):
    """Class-conditional SAGAN generator.

    Call: `G(z [B, z_dim] float, labels [B] int, training=False, update_sn=True,
    state=None)` -> images `[B, S, S, 3]` float32 in [-1, 1].
    `training` selects batch statistics (and moving-average updates) versus
    moving statistics in every batch norm. The release's generator always
    writes its spectral-norm `u` (train and eval); `update_sn=False` is an
    extension for side-effect-free sampling. `state`: a
    `sagan_tf.models.pass_state.PassState` saying how the pass's state writes
    are made (the trainer defers them; None: assigned in place).

    Args:
      arch: "test" (attention at 32x32), "baseline" (none), "test_64" (64x64).
      image_size: output size S (power of two >= 32; 128 is the release).
      z_dim, gf_dim, num_classes: as the release's flags.
      attention: "release" (pooled, NUMERICS §3) or "slide" (paper-slide variant);
        or a comparison block in its place, "residual" / "resnet_block"
        (`RESIDUAL_TYPES`; docs/REPRODUCING.md).
      attention_query_block_size: process attention queries in blocks of this
        many positions (memory-efficient path; same result).
      attention_resolutions: None (the arch's placement) or the feature-map
        sizes (block outputs, 8 .. S) followed by a block; `()` for none.
      spectral_norm: False for plain linear / conv layers (no `u`) everywhere
        in G (the paper's "SN on D only" baseline).
      sn_gradient: backward pass of spectral normalisation, "release" (what
        the release ran, default) or "exact" (docs/NUMERICS.md §1.2); applied
        to every spectral-norm layer by `ensure_built()`.
    """

    def __init__(self, arch="test", image_size=128, z_dim=128, gf_dim=64, num_classes=1000,
                 attention="release", attention_query_block_size=None, name="generator",
                 attention_resolutions=None, spectral_norm=True, sn_gradient="release",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.sn_gradient = sn_gradient
        self.arch, self.image_size, self.z_dim = arch, image_size, z_dim
        self.gf_dim, self.num_classes = gf_dim, num_classes
        self.attention_type = attention
        self.attention_resolutions = parse_resolutions(attention_resolutions)
        self.spectral_norm = bool(spectral_norm)
        mults, res, att_after = generator_layout(arch, image_size)
        placements = _placements("generator", res, att_after, self.attention_resolutions,
                                 attention)
        # `attention_after`: the block `g_non_local` follows (None without it).
        self.attention_after = next((i for i, n in placements if n == "g_non_local"), None)
        self.g_snh0 = SpectralNormDense(4 * 4 * gf_dim * 16, use_sn=spectral_norm, name="g_snh0")
        # Blocks are attributes, not a list: Keras 3 list tracking is invisible to
        # tf.train.Checkpoint, which would silently skip their variables.
        self._block_names = [f"g_block{i + 1}" for i in range(len(mults))]
        for block_name, m in zip(self._block_names, mults):
            setattr(self, block_name, GeneratorBlock(gf_dim * m, num_classes,
                                                     spectral_norm=spectral_norm, name=block_name))
        # The blocks after the residual blocks (attention or its comparison
        # block): {block index: layer name}, created here in the release's order.
        self._extra_after = {}
        self.g_non_local = None
        for i, layer_name in placements:
            setattr(self, layer_name, self._make_extra_block(
                attention, gf_dim * mults[i], attention_query_block_size, layer_name))
            self._extra_after[i] = layer_name
        self.g_bn = FinalBatchNorm(name="g_bn")
        self.g_snconv_last = SpectralNormConv2D(3, 3, use_sn=spectral_norm, name="g_snconv_last")

    def _make_extra_block(self, attention, channels, query_block_size, name):
        if attention == "residual":
            return ResidualComparisonBlock(spectral_norm=self.spectral_norm, name=name)
        if attention == "resnet_block":
            return GeneratorBlock(channels, self.num_classes, upsample=False,
                                  spectral_norm=self.spectral_norm, name=name)
        return _make_attention(attention, query_block_size, name, self.spectral_norm)

    @property
    def extra_blocks(self):
        """`[(block index, layer)]`: the attention / comparison blocks and the
        residual block each follows."""
        return [(i, getattr(self, n)) for i, n in sorted(self._extra_after.items())]

    @property
    def blocks(self):
        """The residual blocks, lowest resolution first."""
        return [getattr(self, name) for name in self._block_names]

    def call(self, z, labels, training=False, update_sn=True, state=None):
        training = bool(training)
        labels = tf.cast(labels, tf.int32)
        h = self.g_snh0(z, update_sn=update_sn, state=state)
        h = tf.reshape(h, [-1, 4, 4, self.gf_dim * 16])
        for i, block in enumerate(self.blocks):
            h = block(h, labels, training=training, update_sn=update_sn, state=state)
            if i in self._extra_after:
                extra = getattr(self, self._extra_after[i])
                if isinstance(extra, GeneratorBlock):
                    h = extra(h, labels, training=training, update_sn=update_sn, state=state)
                else:
                    h = extra(h, update_sn=update_sn, state=state)
        h = tf.nn.relu(self.g_bn(h, training=training, state=state))
        h = self.g_snconv_last(h, update_sn=update_sn, state=state)
        return tf.cast(tf.tanh(h), tf.float32)

    def ensure_built(self):
        """Creates every variable (one call on a dummy batch) without changing any state,
        and sets `sn_gradient` on every spectral-norm layer (some exist only once built)."""
        if not self.built or not self.variables:
            self(tf.zeros([1, self.z_dim]), tf.zeros([1], tf.int32), training=False, update_sn=False)
        set_sn_gradient(self, self.sn_gradient)
        return self

    def get_config(self):
        return {"arch": self.arch, "image_size": self.image_size, "z_dim": self.z_dim,
                "gf_dim": self.gf_dim, "num_classes": self.num_classes,
                "attention": self.attention_type,
                "attention_resolutions": self.attention_resolutions,
                "spectral_norm": self.spectral_norm, "sn_gradient": self.sn_gradient}


class Discriminator(_BuiltByTheFirstCall, keras.Model):
    """Class-conditional projection discriminator with self-attention.

    Call: `D(images [B, S, S, 3], labels [B] int, update_sn=True, state=None)` ->
    logits `[B, 1]` float32 = `SNLinear(h) + sum(h * SNEmbedding(labels), axis=1)`,
    `h = sum_{H,W} relu(features)`; `h` and the two heads are float32 also
    under a mixed precision policy. `update_sn=False` leaves every `u` untouched;
    `state` as for `Generator` (also: D's power iterations shared between passes).
    `attention` and `attention_resolutions` as for `Generator` (D's block
    outputs are S/2 .. 4), and `sn_gradient`.
    """

    def __init__(self, arch="test", image_size=128, df_dim=64, num_classes=1000,
                 attention="release", attention_query_block_size=None, name="discriminator",
                 attention_resolutions=None, sn_gradient="release", **kwargs):
        super().__init__(name=name, **kwargs)
        self.sn_gradient = sn_gradient
        self.arch, self.image_size = arch, image_size
        self.df_dim, self.num_classes = df_dim, num_classes
        self.attention_type = attention
        self.attention_resolutions = parse_resolutions(attention_resolutions)
        mults, res, att_after = discriminator_layout(arch, image_size)
        placements = _placements("discriminator", res, att_after, self.attention_resolutions,
                                 attention)
        # `attention_after`: the block `d_non_local` follows (None without it).
        self.attention_after = next((i for i, n in placements if n == "d_non_local"), None)
        # Blocks are attributes, not a list (see Generator).
        self.d_optimized_block1 = DiscriminatorOptimizedBlock(df_dim * mults[0],
                                                              name="d_optimized_block1")
        self._block_names = ["d_optimized_block1"]
        for i, m in enumerate(mults[1:] + [16]):
            block_name = f"d_block{i + 2}"
            setattr(self, block_name, DiscriminatorBlock(
                df_dim * m, downsample=i + 1 < len(mults), name=block_name))
            self._block_names.append(block_name)
        self._extra_after = {}
        self.d_non_local = None
        for i, layer_name in placements:
            if attention == "residual":
                layer = ResidualComparisonBlock(name=layer_name)
            elif attention == "resnet_block":
                layer = DiscriminatorBlock(df_dim * mults[i], downsample=False, name=layer_name)
            else:
                layer = _make_attention(attention, attention_query_block_size, layer_name)
            setattr(self, layer_name, layer)
            self._extra_after[i] = layer_name
        # The head (pooled sum, linear and projection) computes in float32
        # under a mixed precision policy, as the logits and losses do: the
        # sum of relu features over H x W and the [B, 16 df] dot products are
        # where float16 would overflow or lose the most.
        self.d_sn_linear = SpectralNormDense(1, dtype="float32", name="d_sn_linear")
        self.d_embedding = SpectralNormEmbedding(num_classes, df_dim * 16, dtype="float32",
                                                 name="d_embedding")

    @property
    def blocks(self):
        """The blocks, input resolution first (the optimized block, then the rest)."""
        return [getattr(self, name) for name in self._block_names]

    @property
    def extra_blocks(self):
        """`[(block index, layer)]`, as `Generator.extra_blocks`."""
        return [(i, getattr(self, n)) for i, n in sorted(self._extra_after.items())]

    def features(self, images, update_sn=True, state=None):
        """`h [B, 16 df]` float32: the pooled features before the linear and
        projection heads (summed in float32 under a mixed precision policy)."""
        h = images
        for i, block in enumerate(self.blocks):
            h = block(h, update_sn=update_sn, state=state)
            if i in self._extra_after:
                h = getattr(self, self._extra_after[i])(h, update_sn=update_sn, state=state)
        return tf.reduce_sum(tf.nn.relu(tf.cast(h, tf.float32)), axis=[1, 2])

    def call(self, images, labels, update_sn=True, state=None):
        labels = tf.cast(labels, tf.int32)
        h = self.features(images, update_sn=update_sn, state=state)
        logits = self.d_sn_linear(h, update_sn=update_sn, state=state)
        embedded = self.d_embedding(labels, update_sn=update_sn, state=state)
        projection = tf.reduce_sum(h * embedded, axis=1, keepdims=True)
        return tf.cast(logits + projection, tf.float32)

    def ensure_built(self):
        """Creates every variable (one call on a dummy batch) without changing any state."""
        if not self.built or not self.variables:
            self(tf.zeros([1, self.image_size, self.image_size, 3]), tf.zeros([1], tf.int32),
                 update_sn=False)
        set_sn_gradient(self, self.sn_gradient)
        return self

    def get_config(self):
        return {"arch": self.arch, "image_size": self.image_size, "df_dim": self.df_dim,
                "num_classes": self.num_classes, "attention": self.attention_type,
                "attention_resolutions": self.attention_resolutions,
                "sn_gradient": self.sn_gradient}


def build_networks(spec, discriminator=True):
    """`(G, D)` of a `sagan_tf.models.spec.NetworkSpec`, built (every variable
    created, `ensure_built`); D is None without `discriminator`.

    Call it in the distribution strategy's scope (and under the dtype policy)
    the networks are to live in. G is created first, then D: with the same
    Keras seed, the same initial weights.
    """
    generator = Generator(
        arch=spec.generator_type, image_size=spec.image_size, z_dim=spec.z_dim,
        gf_dim=spec.gf_dim, num_classes=spec.number_classes, attention=spec.attention,
        attention_query_block_size=spec.attention_query_block_size,
        attention_resolutions=spec.g_attention_resolutions,
        spectral_norm=spec.g_spectral_norm, sn_gradient=spec.sn_gradient)
    if not discriminator:
        return generator.ensure_built(), None
    if spec.df_dim is None:
        raise ValueError("the discriminator's df_dim is unknown (not in config.json)")
    disc = Discriminator(
        arch=spec.discriminator_type, image_size=spec.image_size, df_dim=spec.df_dim,
        num_classes=spec.number_classes, attention=spec.attention,
        attention_query_block_size=spec.attention_query_block_size,
        attention_resolutions=spec.d_attention_resolutions, sn_gradient=spec.sn_gradient)
    generator.ensure_built()
    return generator, disc.ensure_built()


def count_parameters(model):
    """Number of trainable scalars of a built model."""
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))
