"""Absolute tolerances of float32 results compared against a reference.

A relative tolerance alone fails wherever a result is a cancellation (a signed
sum whose value is much smaller than its terms): there, TensorFlow's kernels
(Eigen's or oneDNN's, AVX2 or AVX-512, each summing in its own order) and
numpy differ by a few roundings of the *terms*, not of the value. Each
comparison therefore also carries an absolute tolerance scaled to the
magnitude of what was summed -- small enough that a wrong result (a missing
term, a transposed matrix, the wrong batch statistics) still fails.

Nothing here imports sagan_tf or TensorFlow.
"""
import numpy as np

#: float32's machine epsilon (2**-23).
EPS32 = float(np.finfo(np.float32).eps)


def dot_atol(a, b, bias=None):
    """The float32 rounding bound of ``a @ b (+ bias)`` in any summation order:
    ``(n + 1) * eps * max(|a| @ |b| + |bias|)``, n the inner dimension
    (Higham's gamma_n bound on a dot product of n terms; the +1 is the bias)."""
    a, b = np.abs(np.asarray(a, np.float64)), np.abs(np.asarray(b, np.float64))
    magnitude = a @ b + (0.0 if bias is None else np.abs(np.asarray(bias, np.float64)))
    return (a.shape[-1] + 1) * EPS32 * float(np.max(magnitude))


def scaled_atol(reference, fraction):
    """``fraction`` of the largest magnitude in ``reference``: with ``rtol=fraction``
    an element passes when it is within ``fraction`` of itself or of the
    array's scale (a near-zero element is held to the scale of its neighbours,
    not to its own)."""
    return fraction * float(np.max(np.abs(np.asarray(reference, np.float64))))
