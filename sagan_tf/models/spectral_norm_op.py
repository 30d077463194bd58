"""Spectral normalisation as one differentiable function with a hand-written backward.

The forward pass is the release's `spectral_normed_weight` (docs/NUMERICS.md
§1.1), op for op, so its values are bit-identical to the straightforward
formulation. The backward pass is written out (docs/NUMERICS.md §1.3 derives
it) instead of being assembled by autodiff from the gradients of each
elementwise op: TensorFlow's gradient of one `RealDiv` alone is about ten ops
(shape arithmetic, broadcasting reductions, two divisions), and the
release's backward (§1.2) additionally needed a second, stop-gradient copy
of the power iteration. A one-layer step (forward, a loss, the backward,
the `u` write) traces 61 ops here against 105 (exact) and 127 (release)
with autodiff. Both backwards of §1.2 are offered:

* exact: the gradient of `W / sigma(W)` with `u` held fixed;
* release: the same, except that the first product `u @ W_mat^T` is
  differentiated with respect to `W_mat` with `u_new` in place of `u` (what
  TF 1.5 computed, its `u` being a ref variable overwritten before the
  backward pass ran).

Shapes: `w` has `out` units on its last axis (`[kh, kw, in, out]` or
`[in, out]`), `W_mat = reshape(w, [-1, out])` is `[k, out]`, `u` is
`[1, out]`.
"""
import collections

import tensorflow as tf

__all__ = ["L2_EPS", "PowerIteration", "l2_normalize", "normalized_weight", "power_iteration",
           "spectral_normalize"]

#: The release's `_l2normalize` adds this to the norm (not to the squared norm).
L2_EPS = 1e-12


def l2_normalize(x, eps=L2_EPS):
    """`x / (sqrt(sum(x**2)) + eps)` over all elements (the release's `_l2normalize`)."""
    return x / (tf.sqrt(tf.reduce_sum(tf.square(x))) + eps)


def _normalize_with_norm(x):
    """`(x / (n + eps), n, n + eps)` with `n = ||x||`: `l2_normalize`'s ops, keeping
    the norm for the backward pass."""
    norm = tf.sqrt(tf.reduce_sum(tf.square(x)))
    denominator = norm + L2_EPS
    return x / denominator, norm, denominator


def _is_zero(t):
    """True when `t` is None or a tensor statically known to be all zeros (the
    tape's stand-in gradient for an output nobody used)."""
    if t is None:
        return True
    value = tf.get_static_value(t)
    return value is not None and not value.any()


def _l2n_backward(grad_y, y, norm, denominator):
    """Gradient w.r.t. `x` of `y = x / (||x|| + eps)` for an upstream `grad_y [1, n]`:
    `grad_y / (||x|| + eps) - y * (y . grad_y) / ||x||` (docs/NUMERICS.md §1.3)."""
    return grad_y / denominator - y * (tf.matmul(y, grad_y, transpose_b=True) / norm)


class PowerIteration(collections.namedtuple(
        "PowerIteration", "w u w_mat v norm_a den_a b u_new norm_b den_b sigma w_bar")):
    """The forward tensors of one power iteration (what the backward reads).

    `w_mat [k, out]`, `v [1, k]` with `a = u @ W_mat^T`'s norm `norm_a` and
    `den_a = norm_a + eps`, `b = v @ W_mat [1, out]`, `u_new [1, out]` with
    `norm_b`, `den_b`, `sigma [1, 1]` and `w_bar = w / sigma`.
    """


def power_iteration(w, u):
    """The forward pass of §1.1, op for op: a :class:`PowerIteration`."""
    w = tf.convert_to_tensor(w)
    u = tf.convert_to_tensor(u, dtype=w.dtype)
    w_mat = tf.reshape(w, [-1, w.shape[-1]])                             # [k, out]
    v, norm_a, den_a = _normalize_with_norm(tf.matmul(u, w_mat, transpose_b=True))  # [1, k]
    b = tf.matmul(v, w_mat)                                              # [1, out]
    u_new, norm_b, den_b = _normalize_with_norm(b)
    # [1, 1]: dividing by it is dividing by the scalar (no reshape op).
    sigma = tf.matmul(b, u_new, transpose_b=True)
    return PowerIteration(w, u, w_mat, v, norm_a, den_a, b, u_new, norm_b, den_b, sigma,
                          w / sigma)


def _backward(it, release_backward, grad_w_bar, grad_u_new=None, grad_sigma=None):
    """d L / d w from the upstream gradients of `w_bar` (and of `u_new`, `sigma`).

    Everything after `d L / d sigma` is linear in it and carried negated
    (`minus_*`), which spares a negation op; negation is exact.
    """
    # W_bar = W / sigma: the direct term, and d L / d sigma.
    grad_w = grad_w_bar / it.sigma
    minus_grad_s = tf.reduce_sum(grad_w_bar * it.w_bar) / it.sigma     # -dL/dsigma
    if not _is_zero(grad_sigma):
        minus_grad_s = minus_grad_s - grad_sigma
    # sigma = b . u_new with u_new = b / (|b| + eps): d sigma / d b is
    # u_new (1 + eps / (|b| + eps)) (§1.3). The factor is kept where it can
    # differ from 1: in float32 and narrower types 1 + eps / (|b| + eps)
    # rounds to 1 unless |b| < 1.7e-5 (weights all but zero).
    if it.den_b.dtype.size <= 4:
        minus_grad_b = minus_grad_s * it.u_new                           # [1, out]
    else:
        minus_grad_b = (minus_grad_s * (1.0 + L2_EPS / it.den_b)) * it.u_new
    if not _is_zero(grad_u_new):
        minus_grad_b = minus_grad_b - _l2n_backward(grad_u_new, it.u_new, it.norm_b, it.den_b)
    # b = v @ W_mat; v = a / (|a| + eps); a = u @ W_mat^T.
    minus_grad_v = tf.matmul(minus_grad_b, it.w_mat, transpose_b=True)   # [1, k]
    minus_grad_a = _l2n_backward(minus_grad_v, it.v, it.norm_a, it.den_a)  # [1, k]
    u_seen = it.u_new if release_backward else it.u
    minus_grad_w_mat = (tf.matmul(it.v, minus_grad_b, transpose_a=True)
                        + tf.matmul(minus_grad_a, u_seen, transpose_a=True))  # [k, out]
    w = it.w
    shape = w.shape if w.shape.is_fully_defined() else tf.shape(w)
    return grad_w - tf.reshape(minus_grad_w_mat, shape)


def _power_iteration(w, u, release_backward, differentiable_state, forward=None):
    """`w_bar` as a `tf.custom_gradient` function of `w` over `forward` (a
    :class:`PowerIteration` of the same `w` and `u`; computed here if None).

    Returns `(w_bar, u_new, sigma)`. With `differentiable_state` all three
    are outputs of the custom-gradient function (the hand-written backward
    takes upstream gradients for each, `sigma` a scalar); without, only
    `w_bar` is, and `u_new`, `sigma [1, 1]` are the forward pass's own
    tensors (the tape then builds no zero gradients for them; differentiated
    anyway, they give autodiff's exact gradients, as the tape records the
    forward ops too). No gradient flows to `u`.
    """
    it = power_iteration(w, u) if forward is None else forward

    @tf.custom_gradient
    def normalize(w):  # pylint: disable=unused-argument
        def grad(*upstream):
            return _backward(it, release_backward, *upstream)
        if differentiable_state:
            return (it.w_bar, it.u_new, tf.reshape(it.sigma, [])), grad
        return it.w_bar, grad

    out = normalize(tf.convert_to_tensor(w))
    return out if differentiable_state else (out, it.u_new, it.sigma)


def spectral_normalize(w, u, release_backward=False):
    """One power iteration of the release's `spectral_normed_weight`.

    Args:
      w: weight whose last axis has `out` units (a conv kernel `[kh, kw, in,
        out]` or a matrix `[in, out]`), floating point.
      u: the persistent left vector, `[1, out]`, same dtype.
      release_backward: the backward pass the release ran when its call wrote
        `u` (`u_new` in place of `u` in the gradient of `u @ W_mat^T` w.r.t.
        `W_mat`); False: the exact gradient. Forward values are identical.

    Returns:
      `(w_bar, u_new, sigma)`: `w_bar = w / sigma` with the shape of `w`,
      `u_new [1, out]` and the scalar `sigma`. Nothing is stopped: the
      gradient of each output w.r.t. `w` flows through `sigma`, `v` and
      `u_new` (a reparameterisation). No gradient flows to `u` (a
      non-trainable state variable).
    """
    return _power_iteration(w, u, release_backward, differentiable_state=True)


def normalized_weight(w, u, release_backward=False, forward=None):
    """`spectral_normalize` for a layer: `(w_bar, u_new, sigma)`, the same
    values (`sigma` shaped `[1, 1]`); only `w_bar` takes the hand-written
    backward (a layer writes `u_new` into its state, neither is
    differentiated). `forward`: this `w`'s and `u`'s :class:`PowerIteration`
    computed before (the same values), reused instead of computing it again."""
    return _power_iteration(w, u, release_backward, False, forward)
