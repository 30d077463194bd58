"""sagan_tf: a faithful TensorFlow 2 / Keras 3 port of Self-Attention GAN (2018 release).

`../shared/SPEC.md` is the reference numerics; docs/ARCHITECTURE.md maps the modules.
"""
from sagan_tf import losses
from sagan_tf.attention import SelfAttention, SlideSelfAttention
from sagan_tf.layers import (ConditionalBatchNorm, FinalBatchNorm, SpectralNormConv2D,
                             SpectralNormDense, SpectralNormEmbedding, spectral_normalize)
from sagan_tf.networks import ARCHS, Discriminator, Generator

__version__ = "0.1.0"
