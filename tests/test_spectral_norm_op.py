"""The hand-written spectral-norm backward against autodiff of the plain formulation.

`autodiff_spectral_normalize` below is the power iteration written with
TensorFlow's own gradients (the release's backward as a stop-gradient probe,
docs/NUMERICS.md §1.2): the forward values must be bit-identical, the
gradients equal to rounding, in both backward modes and with upstream
gradients on every output. The float64 finite-difference oracles of
tests/test_layers.py check the same function independently.
"""
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.models.spectral_norm_op import l2_normalize, normalized_weight, spectral_normalize


def autodiff_spectral_normalize(w, u, release_backward):
    w_mat = tf.reshape(w, [-1, w.shape[-1]])
    if release_backward:
        w_const = tf.stop_gradient(w_mat)
        first = tf.matmul(u, w_const, transpose_b=True)
        u_written = tf.stop_gradient(l2_normalize(tf.matmul(l2_normalize(first), w_const)))
        probe = tf.matmul(u_written, w_mat, transpose_b=True)
        first = first + (probe - tf.stop_gradient(probe))
    else:
        first = tf.matmul(u, w_mat, transpose_b=True)
    v = l2_normalize(first)
    u_new = l2_normalize(tf.matmul(v, w_mat))
    sigma = tf.reshape(tf.matmul(tf.matmul(v, w_mat), u_new, transpose_b=True), [])
    return w / sigma, u_new, sigma


def _values_and_gradient(fn, w, u, release, upstream):
    r_w, r_u, r_s = upstream
    with tf.GradientTape() as tape:
        w_bar, u_new, sigma = fn(w, u, release)
        loss = tf.reduce_sum(w_bar * r_w)
        if r_u is not None:
            loss += tf.reduce_sum(u_new * r_u) + r_s * sigma
    return ([w_bar.numpy(), u_new.numpy(), np.reshape(sigma.numpy(), [])],
            tape.gradient(loss, w).numpy())


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 2e-6)])
@pytest.mark.parametrize("shape", [(3, 3, 4, 5), (7, 2), (2, 9)])
@pytest.mark.parametrize("release", [False, True])
@pytest.mark.parametrize("fn,all_outputs", [(spectral_normalize, False),
                                            (spectral_normalize, True),
                                            (normalized_weight, False)])
def test_forward_is_bit_identical_and_gradient_equals_autodiff(rng, dtype, rtol, shape, release,
                                                               fn, all_outputs):
    w = tf.Variable(rng.uniform(-1, 1, shape).astype(dtype))
    u = tf.constant(rng.normal(size=(1, shape[-1])).astype(dtype))
    upstream = (tf.constant(rng.normal(size=shape).astype(dtype)),
                tf.constant(rng.normal(size=(1, shape[-1])).astype(dtype)) if all_outputs
                else None, dtype(rng.normal()))
    want_values, want_grad = _values_and_gradient(autodiff_spectral_normalize, w, u, release,
                                                  upstream)
    values, grad = _values_and_gradient(fn, w, u, release, upstream)
    for got, want in zip(values, want_values):
        np.testing.assert_array_equal(got, want)
    scale = np.abs(want_grad).max()
    np.testing.assert_allclose(grad, want_grad, rtol=0, atol=rtol * scale)


def test_state_outputs_of_normalized_weight_have_the_plain_gradients(rng):
    """`normalized_weight`'s `u_new` and `sigma` are not part of the hand-written
    backward; differentiated anyway, they give autodiff's (exact) gradients."""
    w = tf.Variable(rng.uniform(-1, 1, (4, 3)))
    u = rng.normal(size=(1, 3))
    grads = []
    for fn in (normalized_weight, autodiff_spectral_normalize):
        with tf.GradientTape(persistent=True) as tape:
            _, u_new, sigma = fn(w, u, False)
            u_loss = tf.reduce_sum(u_new * np.arange(3.0))
        grads.append([tape.gradient(u_loss, w).numpy(), tape.gradient(sigma, w).numpy()])
    for got, want in zip(*grads):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_release_and_exact_backwards_differ_by_the_u_new_term(rng):
    """release - exact = reshape(dL/da^T @ (u_new - u)), a = u @ W_mat^T: the only
    difference (docs/NUMERICS.md §1.2), checked in float64."""
    w = tf.Variable(rng.uniform(-1, 1, (3, 3, 2, 4)))
    u = tf.constant(rng.normal(size=(1, 4)))
    r = tf.constant(rng.normal(size=(3, 3, 2, 4)))
    _, exact = _values_and_gradient(spectral_normalize, w, u, False, (r, None, 0.0))
    _, release = _values_and_gradient(spectral_normalize, w, u, True, (r, None, 0.0))
    w_mat = tf.reshape(w, [-1, 4])
    a = tf.matmul(u, w_mat, transpose_b=True)
    with tf.GradientTape() as tape:
        tape.watch(a)
        v = l2_normalize(a)
        u_new = l2_normalize(tf.matmul(v, w_mat))
        sigma = tf.reduce_sum(tf.matmul(v, w_mat) * u_new)
        loss = tf.reduce_sum(w / sigma * r)
    d_a = tape.gradient(loss, a).numpy()
    correction = (d_a.T @ (u_new.numpy() - u.numpy())).reshape(w.shape)
    np.testing.assert_allclose(release - exact, correction, rtol=1e-9, atol=1e-12)


def _gradient_graph_ops(fn, release):
    w = tf.Variable(tf.random.uniform((3, 3, 8, 16)))
    u = tf.Variable(tf.random.normal((1, 16)))

    @tf.function(autograph=False)
    def step():
        with tf.GradientTape() as tape:
            w_bar, u_new, _ = fn(tf.convert_to_tensor(w), tf.convert_to_tensor(u), release)
            loss = tf.reduce_sum(tf.square(w_bar))
        u.assign(u_new)
        return tape.gradient(loss, w)
    return len(step.get_concrete_function().graph.get_operations())


@pytest.mark.parametrize("release", [False, True])
def test_hand_written_backward_traces_fewer_ops(release):
    """The point of the hand-written backward: forward + backward of one layer
    (with a loss, its gradient and the `u` write around them) in fewer ops
    than autodiff builds, and no more than the forward pass alone costs
    twice."""
    mine = _gradient_graph_ops(normalized_weight, release)
    autodiff = _gradient_graph_ops(autodiff_spectral_normalize, release)
    assert mine < (0.6 if release else 0.75) * autodiff, (mine, autodiff)
