"""sagan_tf: a faithful TensorFlow 2 / Keras 3 port of Self-Attention GAN (2018 release).

docs/ARCHITECTURE.md maps the modules.

The top-level names (``sagan_tf.Generator``, ``sagan_tf.SelfAttention``, ...)
are loaded on first use, so that ``import sagan_tf.cli`` does not import
TensorFlow: the entry points quieten TensorFlow's start-up logging before it
is imported (:func:`sagan_tf.cli.quiet_tensorflow`).
"""
import importlib

__version__ = "0.1.0"

# name -> submodule that defines it
_LAZY = {
    "SelfAttention": "models.attention", "SlideSelfAttention": "models.attention",
    "ConditionalBatchNorm": "models.layers", "FinalBatchNorm": "models.layers",
    "SpectralNormConv2D": "models.layers", "SpectralNormDense": "models.layers",
    "SpectralNormEmbedding": "models.layers", "spectral_normalize": "models.layers",
    "ARCHS": "models.layouts", "Discriminator": "models.networks", "Generator": "models.networks",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"sagan_tf.{_LAZY[name]}"), name)
    if name == "losses":
        return importlib.import_module("sagan_tf.training.losses")
    raise AttributeError(f"module 'sagan_tf' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY) + ["losses"])
