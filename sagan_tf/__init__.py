"""sagan_tf: a faithful TensorFlow 2 / Keras 3 port of Self-Attention GAN (2018 release).

See ../shared/SPEC.md (the reference numerics) and README.md.
"""
