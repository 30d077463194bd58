"""Spectral norm and batch norm layers against the numpy oracle of NUMERICS §1-2."""
import numpy as np
import pytest
import tensorflow as tf

import numpy_reference as ref
from tolerances import scaled_atol
from sagan_tf.models.layers import (ConditionalBatchNorm, FinalBatchNorm, SpectralNormConv2D,
                             SpectralNormDense, SpectralNormEmbedding, spectral_normalize)


def _set(var, value):
    var.assign(np.asarray(value, var.dtype))


def test_spectral_normalize_matches_oracle(rng):
    w = rng.normal(size=(3, 3, 5, 7))
    u = rng.normal(size=(1, 7))
    w_bar, u_new, sigma = spectral_normalize(tf.constant(w), tf.constant(u))
    ref_w_bar, ref_u_new, ref_sigma = ref.spectral_norm(w, u)
    for got, want in ((sigma, ref_sigma), (u_new, ref_u_new), (w_bar, ref_w_bar)):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=scaled_atol(want, 1e-10))


def test_power_iteration_converges_to_top_singular_value(rng):
    layer = SpectralNormDense(6)
    layer.build((None, 9))
    w = rng.normal(size=(9, 6))
    _set(layer.matrix, w)
    for _ in range(60):
        layer(tf.zeros([1, 9]), update_sn=True)
    top = np.linalg.svd(w, compute_uv=False)[0]
    np.testing.assert_allclose(layer.sigma().numpy(), top, rtol=1e-4)


@pytest.mark.parametrize("update_sn", [True, False])
def test_dense_forward_and_u_update(rng, update_sn):
    layer = SpectralNormDense(4)
    layer.build((None, 6))
    w, b, u = rng.normal(size=(6, 4)), rng.normal(size=(4,)), rng.normal(size=(1, 4))
    _set(layer.matrix, w), _set(layer.bias, b), _set(layer.u, u)
    x = rng.normal(size=(3, 6)).astype(np.float32)
    y = layer(x, update_sn=update_sn).numpy()
    w_bar, u_new, _ = ref.spectral_norm(w, u)
    np.testing.assert_allclose(y, x @ w_bar + b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.u.numpy(), u_new if update_sn else u, rtol=1e-5, atol=1e-6)


def test_conv_forward_and_u_update(rng):
    layer = SpectralNormConv2D(5, 3)
    layer.build((None, 6, 6, 3))
    w, b, u = rng.normal(size=(3, 3, 3, 5)), rng.normal(size=(5,)), rng.normal(size=(1, 5))
    _set(layer.w, w), _set(layer.biases, b), _set(layer.u, u)
    x = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
    y = layer(x).numpy()
    w_bar, u_new, _ = ref.spectral_norm(w, u)
    np.testing.assert_allclose(y, ref.conv2d_same(x, w_bar, b), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.u.numpy(), u_new, rtol=1e-5, atol=1e-6)


def test_conv_without_bias_has_no_bias_variable():
    layer = SpectralNormConv2D(8, 1, use_bias=False)
    layer.build((None, 4, 4, 16))
    assert sorted(v.name for v in layer.variables) == ["u", "w"]


def test_embedding_normalises_the_transpose(rng):
    layer = SpectralNormEmbedding(num_classes=7, embedding_size=5)
    layer.build((None,))
    assert tuple(layer.u.shape) == (1, 7)
    emb, u = rng.normal(size=(7, 5)), rng.normal(size=(1, 7))
    _set(layer.embedding_map, emb), _set(layer.u, u)
    labels = np.array([0, 6, 3, 3])
    out = layer(labels).numpy()
    w_bar_t, u_new, _ = ref.spectral_norm(emb.T, u)
    np.testing.assert_allclose(out, w_bar_t.T[labels], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.u.numpy(), u_new, rtol=1e-5, atol=1e-6)


def test_u_initial_values_are_unnormalised_truncated_normal():
    layer = SpectralNormDense(4000)
    layer.build((None, 2))
    u = layer.u.numpy()
    assert np.abs(u).max() <= 2.0  # truncated at two standard deviations
    assert 0.6 < u.std() < 1.0     # std of N(0,1) truncated to [-2, 2] is 0.88
    assert np.linalg.norm(u) > 10  # not normalised at init
    assert not layer.u.trainable


@pytest.mark.parametrize("layer_kind", ["dense", "conv"])
def test_gradient_flows_through_sigma_finite_differences(rng, layer_kind):
    """d loss / d W of the layer equals central finite differences of the same
    function (u fixed), and differs from the gradient with sigma held constant."""
    if layer_kind == "dense":
        layer = SpectralNormDense(3, dtype="float64")
        layer.build((None, 4))
        kernel = layer.matrix
        x = tf.constant(rng.normal(size=(5, 4)))
    else:
        layer = SpectralNormConv2D(3, 3, dtype="float64")
        layer.build((None, 4, 4, 2))
        kernel = layer.w
        x = tf.constant(rng.normal(size=(2, 4, 4, 2)))
    # Weights and u from the seeded rng, not the initializers' global state.
    _set(kernel, rng.normal(size=kernel.shape))
    _set(layer.u, rng.normal(size=layer.u.shape))
    # r = the output at W0, so the loss |y0|^2 is far from 0 and the term
    # through sigma, -(loss / sigma) d sigma / dW, is as large as the rest.
    r = tf.constant(layer(x, update_sn=False))

    def loss_fn():
        return tf.reduce_sum(layer(x, update_sn=False) * r)

    with tf.GradientTape() as tape:
        loss = loss_fn()
    grad = tape.gradient(loss, kernel.value).numpy()

    w0 = kernel.numpy()
    fd = np.zeros_like(w0)
    eps = 1e-6
    for idx in np.ndindex(w0.shape):
        for sign in (1, -1):
            w = w0.copy()
            w[idx] += sign * eps
            kernel.assign(w)
            fd[idx] += sign * loss_fn().numpy() / (2 * eps)
    kernel.assign(w0)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7)

    # With sigma treated as a constant the gradient would be W-independent
    # scaling only; it must differ, which proves the gradient goes through sigma
    # (by 0.95-1.9 of the gradient's size over seeds 0-5 of this set-up).
    _, _, sigma = spectral_normalize(tf.constant(w0), tf.convert_to_tensor(layer.u))
    with tf.GradientTape() as tape:
        w_var = tf.Variable(w0)
        w_bar = w_var / tf.stop_gradient(sigma)
        if layer_kind == "dense":
            y = tf.matmul(x, w_bar) + layer.bias
        else:
            y = tf.nn.conv2d(x, w_bar, 1, "SAME") + layer.biases
        loss_const = tf.reduce_sum(y * r)
    grad_const = tape.gradient(loss_const, w_var).numpy()
    assert np.abs(grad_const - grad).max() > 0.1 * np.abs(grad).max()


def _cbn_with_params(rng, channels=3, classes=4):
    layer = ConditionalBatchNorm(classes)
    layer.build((None, 5, 5, channels))
    p = {"gamma": rng.uniform(0.5, 1.5, (classes, channels)),
         "beta": rng.normal(size=(classes, channels)),
         "mean": rng.normal(size=(1, 1, 1, channels)),
         "var": rng.uniform(0.5, 1.5, (1, 1, 1, channels))}
    _set(layer.gamma, p["gamma"]), _set(layer.beta, p["beta"])
    _set(layer.moving_mean, p["mean"]), _set(layer.moving_var, p["var"])
    return layer, {f"cbn/{k}": v for k, v in p.items()}


@pytest.mark.parametrize("training", [True, False])
def test_conditional_batch_norm(rng, training):
    layer, params = _cbn_with_params(rng)
    x = (rng.normal(size=(6, 5, 5, 3)) * 2 + 1).astype(np.float32)
    y = np.array([0, 3, 1, 1, 2, 0])
    out = layer(x, y, training=training).numpy()
    net = ref._Net(params, update_sn=False)
    expected = net.cbn(x.astype(np.float64), y, "cbn", training)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    new_mean = net.new_state.get("cbn/mean", params["cbn/mean"])
    new_var = net.new_state.get("cbn/var", params["cbn/var"])
    np.testing.assert_allclose(layer.moving_mean.numpy(), new_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_var.numpy(), new_var, rtol=1e-5, atol=1e-6)
    if training:  # decay 0.999 with the biased batch variance
        np.testing.assert_allclose(
            layer.moving_var.numpy().ravel(),
            params["cbn/var"].ravel() * 0.999 + x.var(axis=(0, 1, 2)) * 0.001, rtol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_final_batch_norm(rng, training):
    layer = FinalBatchNorm()
    layer.build((None, 4, 4, 3))
    p = {"gamma": rng.uniform(0.5, 1.5, 3), "beta": rng.normal(size=3),
         "moving_mean": rng.normal(size=3), "moving_variance": rng.uniform(0.5, 1.5, 3)}
    for k, v in p.items():
        _set(getattr(layer, k), v)
    x = (rng.normal(size=(2, 4, 4, 3)) * 3 - 1).astype(np.float32)
    out = layer(x, training=training).numpy()
    params = {f"g_bn/{k}": v for k, v in p.items()}
    net = ref._Net(params, update_sn=False)
    np.testing.assert_allclose(out, net.final_bn(x.astype(np.float64), "g_bn", training),
                               rtol=1e-4, atol=1e-4)
    for k in ("moving_mean", "moving_variance"):
        np.testing.assert_allclose(getattr(layer, k).numpy(),
                                   net.new_state.get(f"g_bn/{k}", p[k]), rtol=1e-5, atol=1e-6)
    if training:  # decay 0.9999 with the Bessel-corrected variance (n = 32)
        n = 32
        np.testing.assert_allclose(
            layer.moving_variance.numpy(),
            p["moving_variance"] * 0.9999 + x.var(axis=(0, 1, 2)) * n / (n - 1) * 1e-4, rtol=1e-6)
    assert layer.epsilon == pytest.approx(1.001e-5)


@pytest.mark.parametrize("kind", ["conditional", "final"])
def test_bfloat16_batch_norm_in_training_runs_the_fused_kernel(rng, kind):
    """bf16 activations in training mode: one FusedBatchNormV3 (float32 moments),
    values and gradients within bf16 rounding of the float64 oracle / the
    float32 layer, moving statistics as the float32 path; float32 inputs keep
    the unfused arithmetic (no fused op in their graph)."""
    channels = 16
    x = (rng.normal(size=(6, 8, 8, channels)) * 2 + 1).astype(np.float32)
    labels = np.array([0, 3, 1, 1, 2, 0])
    r = rng.normal(size=x.shape).astype(np.float32)
    if kind == "conditional":
        p = {"gamma": rng.uniform(0.5, 1.5, (4, channels)), "beta": rng.normal(size=(4, channels)),
             "mean": rng.normal(size=(1, 1, 1, channels)),
             "var": rng.uniform(0.5, 1.5, (1, 1, 1, channels))}
        scope, names = "cbn", {"mean": "moving_mean", "var": "moving_var"}
        def make(dtype):
            return ConditionalBatchNorm(4, dtype=dtype)
    else:
        p = {"gamma": rng.uniform(0.5, 1.5, channels), "beta": rng.normal(size=channels),
             "moving_mean": rng.normal(size=channels),
             "moving_variance": rng.uniform(0.5, 1.5, channels)}
        scope, names = "g_bn", {"moving_mean": "moving_mean", "moving_variance": "moving_variance"}
        def make(dtype):
            return FinalBatchNorm(dtype=dtype)

    def run(policy):
        layer = make(policy)
        layer.build((None, 8, 8, channels))
        for k, v in p.items():
            _set(getattr(layer, names.get(k, k)), v)

        @tf.function(autograph=False)
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                args = (x, labels) if kind == "conditional" else (x,)
                y = layer(*args, training=True)
                loss = tf.reduce_sum(tf.cast(y, tf.float32) * r)
            return (y,) + tuple(tape.gradient(loss, [x, layer.gamma, layer.beta]))
        x_in = tf.cast(x, layer.compute_dtype)
        out = step(x_in)
        ops = {op.type for op in step.get_concrete_function(x_in).graph.get_operations()}
        stats = {k: getattr(layer, names[k]).numpy() for k in names}
        return ([tf.cast(tf.convert_to_tensor(t), tf.float32).numpy() for t in out], stats,
                ops, out[0].dtype)

    (y32, *g32), stats32, ops32, _ = run("float32")
    (y16, *g16), stats16, ops16, dtype16 = run("mixed_bfloat16")
    assert dtype16 == tf.bfloat16
    assert "FusedBatchNormV3" in ops16 and "FusedBatchNormGradV3" in ops16
    assert not {"FusedBatchNormV3", "FusedBatchNormGradV3"} & ops32
    net = ref._Net({f"{scope}/{k}": v for k, v in p.items()}, update_sn=False)
    if kind == "conditional":
        expected = net.cbn(x.astype(np.float64), labels, scope, True)
    else:
        expected = net.final_bn(x.astype(np.float64), scope, True)
    np.testing.assert_allclose(y32, expected, rtol=1e-4, atol=1e-4)
    # bf16 keeps 8 significant bits: |error| within a few 2^-8 of the output scale.
    assert np.abs(y16 - expected).max() <= 3 * 2.0 ** -8 * np.abs(expected).max()
    for a, b in zip(g16, g32):  # d/dx, d/dgamma, d/dbeta
        assert np.abs(a - b).max() <= 2e-2 * np.abs(b).max()
    for k in names:  # moving statistics: the float32 path's update, to float32 rounding
        np.testing.assert_allclose(stats16[k], net.new_state[f"{scope}/{k}"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(stats16[k], stats32[k], rtol=1e-4, atol=1e-5)


def _release_gradient_oracle(layer, kernel, x, r, eps=1e-6):
    """The release's d loss / d kernel in float64, from finite differences.

    The release's backward is the exact gradient except in one place: the
    first power-iteration product `y1 = u @ W_mat^T` is differentiated with
    respect to `W_mat` with `u_new` in place of `u`. So it equals
    `exact + reshape(dL/dy1^T @ (u_new - u))`, with the exact gradient and
    `dL/dy1` both taken by central differences of a float64 re-implementation
    of the layer (`y1` perturbed directly for the latter).
    """
    import numpy as np_
    u = layer.u.numpy()
    is_embedding = isinstance(layer, SpectralNormEmbedding)

    def w_mat_of(w):
        return w.T if is_embedding else w.reshape(-1, w.shape[-1])

    def forward(w, y1=None):
        w_mat = w_mat_of(w)
        y1 = u @ w_mat.T if y1 is None else y1
        v = y1 / (np_.sqrt((y1 ** 2).sum()) + 1e-12)
        un = v @ w_mat
        un = un / (np_.sqrt((un ** 2).sum()) + 1e-12)
        sigma = (v @ w_mat @ un.T).item()
        w_bar = w / sigma
        if is_embedding:
            out = w_bar[x]
        elif w.ndim == 2:
            out = x @ w_bar
        else:
            out = tf.nn.conv2d(tf.constant(x), tf.constant(w_bar), 1, "SAME").numpy()
        return (out * r).sum(), un

    w0 = kernel.numpy().astype(np_.float64)
    exact = np_.zeros_like(w0)
    for idx in np_.ndindex(w0.shape):
        for sign in (1, -1):
            w = w0.copy()
            w[idx] += sign * eps
            exact[idx] += sign * forward(w)[0] / (2 * eps)
    y1_0 = u @ w_mat_of(w0).T
    d_y1 = np_.zeros_like(y1_0)
    for idx in np_.ndindex(y1_0.shape):
        for sign in (1, -1):
            y1 = y1_0.copy()
            y1[idx] += sign * eps
            d_y1[idx] += sign * forward(w0, y1)[0] / (2 * eps)
    u_new = forward(w0)[1]
    correction = d_y1.T @ (u_new - u)                      # [k, out] in W_mat's layout
    correction = correction.T if is_embedding else correction.reshape(w0.shape)
    return exact, exact + correction, u_new


@pytest.mark.parametrize("layer_kind", ["dense", "conv", "embedding"])
@pytest.mark.parametrize("sn_gradient", ["release", "exact"])
def test_gradient_of_an_updating_call_matches_float64_oracle(rng, layer_kind, sn_gradient):
    """A call that writes `u`: `sn_gradient="exact"` is the exact gradient of
    `W / sigma(W)` (central differences), `"release"` is the release's TF1
    ref-variable backward (the oracle above); the two differ, the forward
    values and the written `u` do not."""
    if layer_kind == "dense":
        layer = SpectralNormDense(3, dtype="float64", sn_gradient=sn_gradient)
        layer.build((None, 4))
        kernel, x = layer.matrix, rng.normal(size=(5, 4))
    elif layer_kind == "conv":
        layer = SpectralNormConv2D(3, 3, dtype="float64", sn_gradient=sn_gradient)
        layer.build((None, 4, 4, 2))
        kernel, x = layer.w, rng.normal(size=(2, 4, 4, 2))
    else:
        layer = SpectralNormEmbedding(5, 3, dtype="float64", sn_gradient=sn_gradient)
        layer.build((None,))
        kernel, x = layer.embedding_map, np.array([0, 3, 3, 1, 4, 2])
    # Weights and a random (not converged) u from this test's rng, not from the
    # global Keras seed (test order): u_new - u is large and the modes differ.
    kernel.assign(rng.uniform(-1, 1, kernel.shape))
    layer.u.assign(rng.normal(size=layer.u.shape))
    r = rng.normal(size=layer(tf.constant(x), update_sn=False).shape)
    exact, release, u_new = _release_gradient_oracle(layer, kernel, x, r)
    u_before = layer.u.numpy()
    with tf.GradientTape() as tape:
        out = layer(tf.constant(x), update_sn=True)
        loss = tf.reduce_sum(out * r)
    grad = tape.gradient(loss, kernel.value).numpy()
    np.testing.assert_allclose(layer.u.numpy(), u_new, rtol=1e-10, atol=scaled_atol(u_new, 1e-10))
    expected = release if sn_gradient == "release" else exact
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)
    assert np.abs(release - exact).max() > 1e-3 * np.abs(exact).max()  # >> the rtol above
    # Same forward value in both modes.
    layer.u.assign(u_before)
    other = "exact" if sn_gradient == "release" else "release"
    out_first = layer(tf.constant(x), update_sn=False).numpy()
    layer.sn_gradient = other
    layer.u.assign(u_before)
    np.testing.assert_array_equal(layer(tf.constant(x), update_sn=True).numpy(), out_first)


def test_sn_gradient_is_validated_and_set_on_every_layer():
    from sagan_tf.models.layers import set_sn_gradient
    from sagan_tf.models.networks import Discriminator
    with pytest.raises(ValueError, match="sn_gradient must be one of"):
        SpectralNormDense(3, sn_gradient="approximate")
    D = Discriminator(arch="test", image_size=32, df_dim=8, num_classes=3,
                      sn_gradient="exact").ensure_built()
    sn_layers = [l for l in D._flatten_layers() if hasattr(l, "u")]
    # Built lazily: the blocks' 1x1 shortcut convs exist only after build.
    assert any(l.name == "sn_conv3" for l in sn_layers)
    assert {l.sn_gradient for l in sn_layers} == {"exact"}
    set_sn_gradient(D, "release")
    assert {l.sn_gradient for l in sn_layers} == {"release"}


@pytest.mark.parametrize("path", ["function", "jit", "deferred_writes"])
def test_release_gradient_is_the_same_on_every_execution_path(rng, path):
    """The release backward does not depend on how the step runs: eager,
    `tf.function`, XLA (`jit_compile`) and the deferred state writes of the
    training path (`PassState(defer_writes=True)`) give the same gradient and
    the same new `u`."""
    from sagan_tf.models.pass_state import PassState
    layer = SpectralNormConv2D(4, 3)
    layer.build((None, 6, 6, 3))
    layer.w.assign(rng.uniform(-0.5, 0.5, layer.w.shape))
    layer.u.assign(rng.normal(size=layer.u.shape))
    x = tf.constant(rng.normal(size=(2, 6, 6, 3)), tf.float32)
    u0 = layer.u.numpy()

    def grad_and_u(deferred=False):
        with tf.GradientTape() as tape:
            if deferred:
                state = PassState(defer_writes=True)
                loss = tf.reduce_sum(tf.square(layer(x, update_sn=True, state=state)))
                (_, u_new), = state.writes
            else:
                loss = tf.reduce_sum(tf.square(layer(x, update_sn=True)))
                u_new = tf.convert_to_tensor(layer.u)
        return tape.gradient(loss, layer.w), u_new

    eager_grad, eager_u = grad_and_u()
    layer.u.assign(u0)
    if path == "function":
        grad, u = tf.function(grad_and_u)()
    elif path == "jit":
        grad, u = tf.function(lambda: grad_and_u(deferred=True), jit_compile=True)()
    else:
        grad, u = grad_and_u(deferred=True)
        np.testing.assert_array_equal(layer.u.numpy(), u0)  # nothing written yet
    scale = np.abs(eager_grad.numpy()).max()
    np.testing.assert_allclose(grad.numpy(), eager_grad.numpy(), rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(u.numpy(), eager_u.numpy(), rtol=1e-5, atol=1e-7)
    # And it is the release backward, not the exact one.
    layer.sn_gradient = "exact"
    layer.u.assign(u0)
    exact_grad, _ = grad_and_u()
    assert np.abs(exact_grad.numpy() - eager_grad.numpy()).max() > 1e-2 * scale
