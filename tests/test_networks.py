"""Generator/discriminator structure and forward passes against the numpy oracle (NUMERICS §4, §10)."""
import numpy as np
import pytest
import tensorflow as tf

import numpy_reference as ref
from tolerances import scaled_atol
import sagan_tf
from sagan_tf.training import losses
from sagan_tf.runs.legacy import spec_variable_map


def spec_names(arch="test", num_g_blocks=5):
    """The release's model variable names, spelled out from NUMERICS §10 (128x128)."""
    names = [f"model/g_snh0/{v}" for v in ("Matrix", "bias", "u")]
    for i in range(1, num_g_blocks + 1):
        names += [f"model/g_block{i}/cbn_{j}/{v}" for j in (0, 1)
                  for v in ("gamma", "beta", "mean", "var")]
        names += [f"model/g_block{i}/snconv{j}/{v}" for j in (1, 2, 3)
                  for v in ("w", "biases", "u")]
    attention = arch != "baseline"
    for net in ("g", "d") if attention else ():
        names += [f"model/{net}_non_local/sn_conv_{c}/{v}" for c in ("theta", "phi", "g", "attn")
                  for v in ("w", "u")]
        names.append(f"model/{net}_non_local/sigma_ratio")
    names += [f"model/g_bn/{v}" for v in ("gamma", "beta", "moving_mean", "moving_variance")]
    names += [f"model/g_snconv_last/{v}" for v in ("w", "biases", "u")]
    names += [f"model/d_optimized_block1/sn_conv{j}/{v}" for j in (1, 2, 3)
              for v in ("w", "biases", "u")]
    names += [f"model/d_block{i}/sn_conv{j}/{v}" for i in (2, 3, 4, 5) for j in (1, 2, 3)
              for v in ("w", "biases", "u")]
    names += [f"model/d_block6/sn_conv{j}/{v}" for j in (1, 2) for v in ("w", "biases", "u")]
    names += [f"model/d_sn_linear/{v}" for v in ("Matrix", "bias", "u")]
    names += ["model/d_embedding/embedding_map", "model/d_embedding/u"]
    return names


@pytest.mark.parametrize("arch,count", [("test", 169), ("baseline", 151)])
def test_variable_names_and_count_match_release(arch, count):
    G = sagan_tf.Generator(arch, 128, z_dim=128, gf_dim=8, num_classes=10).ensure_built()
    D = sagan_tf.Discriminator(arch, 128, df_dim=8, num_classes=10).ensure_built()
    names = spec_names(arch)
    assert len(names) == count
    assert sorted(spec_variable_map(G, D)) == sorted(names)
    assert len(G.variables) + len(D.variables) == count
    non_trainable = {n for n, v in spec_variable_map(G, D).items() if not v.trainable}
    assert non_trainable == {n for n in names if n.rsplit("/", 1)[1] in
                             ("u", "mean", "var", "moving_mean", "moving_variance")}


def test_paper_size_shapes():
    """At the paper's widths the shapes are the release's (checked on a few key variables)."""
    G = sagan_tf.Generator("test", 128, 128, 64, 1000).ensure_built()
    D = sagan_tf.Discriminator("test", 128, 64, 1000).ensure_built()
    m = spec_variable_map(G, D)
    expected = {"model/g_snh0/Matrix": (128, 16384), "model/g_block1/snconv1/w": (3, 3, 1024, 1024),
                "model/g_block3/cbn_1/gamma": (1000, 256), "model/g_block1/cbn_0/mean": (1, 1, 1, 1024),
                "model/g_non_local/sn_conv_g/w": (1, 1, 256, 128),
                "model/g_non_local/sn_conv_attn/w": (1, 1, 128, 256),
                "model/g_bn/moving_variance": (64,), "model/g_snconv_last/w": (3, 3, 64, 3),
                "model/d_optimized_block1/sn_conv3/w": (1, 1, 3, 64),
                "model/d_non_local/sn_conv_theta/u": (1, 16),
                "model/d_block6/sn_conv2/w": (3, 3, 1024, 1024), "model/d_sn_linear/Matrix": (1024, 1),
                "model/d_embedding/embedding_map": (1000, 1024), "model/d_embedding/u": (1, 1000)}
    for name, shape in expected.items():
        assert tuple(m[name].shape) == shape, name


@pytest.mark.parametrize("arch", sagan_tf.ARCHS)
@pytest.mark.parametrize("size", [32, 64, 128])
def test_every_arch_and_size_builds(rng, arch, size):
    G = sagan_tf.Generator(arch, size, z_dim=16, gf_dim=4, num_classes=5)
    D = sagan_tf.Discriminator(arch, size, df_dim=8, num_classes=5)
    z = rng.normal(size=(3, 16)).astype(np.float32)
    y = np.array([0, 4, 2])
    images = G(z, y, training=True)
    assert images.shape == (3, size, size, 3) and images.dtype == tf.float32
    assert np.all(np.abs(images.numpy()) <= 1.0) and images.numpy().std() > 0
    logits = D(images, y)
    assert logits.shape == (3, 1)
    assert np.all(np.isfinite(logits.numpy()))
    has_attention = arch != "baseline"
    assert (G.g_non_local is not None) == has_attention
    assert (D.d_non_local is not None) == has_attention


def test_layouts_documented():
    from sagan_tf.models.layouts import discriminator_layout, generator_layout
    assert generator_layout("test", 128) == ([16, 8, 4, 2, 1], [8, 16, 32, 64, 128], 2)
    assert generator_layout("test_64", 128)[2] == 3
    assert generator_layout("test", 32) == ([16, 8, 4], [8, 16, 32], 2)
    assert generator_layout("test", 256)[0] == [16, 8, 4, 2, 1, 1]
    assert discriminator_layout("test", 128) == ([1, 2, 4, 8, 16], [64, 32, 16, 8, 4], 1)
    assert discriminator_layout("test_64", 128)[2] == 0
    assert discriminator_layout("test", 64) == ([2, 4, 8, 16], [32, 16, 8, 4], 0)
    assert discriminator_layout("test", 32) == ([4, 8, 16], [16, 8, 4], 0)
    with pytest.raises(ValueError, match="power of two"):
        generator_layout("test", 48)
    with pytest.raises(ValueError, match="unknown architecture"):
        sagan_tf.Generator("big", 128)


def _randomise(G, D, rng):
    """Random values in every variable (also sigma_ratio, BN stats); returns oracle params."""
    mapping = spec_variable_map(G, D)
    params = ref.random_params({n: tuple(v.shape) for n, v in mapping.items()}, rng)
    for name, var in mapping.items():
        var.assign(params[name].astype(np.float32))
    # the oracle sees exactly the float32 values the port holds
    return {n: v.numpy().astype(np.float64) for n, v in mapping.items()}


def _state(model_map, names):
    return {n: model_map[n].numpy() for n in names}


@pytest.mark.parametrize("training", [True, False])
def test_generator_matches_oracle_at_release_layout(rng, training):
    G = sagan_tf.Generator("test", 128, z_dim=8, gf_dim=2, num_classes=5).ensure_built()
    D = sagan_tf.Discriminator("test", 128, df_dim=4, num_classes=5).ensure_built()
    params = _randomise(G, D, rng)
    z = rng.normal(size=(3, 8)).astype(np.float32)
    y = np.array([1, 4, 0])
    out = G(z, y, training=training).numpy()
    expected, new_state = ref.generator_forward(params, z, y, 2, [16, 8, 4, 2, 1], 3,
                                                training=training)
    np.testing.assert_allclose(out, expected, rtol=2e-3, atol=2e-4)
    assert expected.std() > 0.01  # not a constant image: the comparison has content
    mapping = spec_variable_map(G)
    # G always updates u (train and eval); BN statistics only in training.
    assert any(n.endswith("/u") for n in new_state)
    assert any(n.endswith("/mean") for n in new_state) == training
    for name, value in new_state.items():
        np.testing.assert_allclose(mapping[name].numpy(), value.reshape(mapping[name].shape),
                                   rtol=1e-3, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("update_sn", [True, False])
def test_discriminator_matches_oracle_at_release_layout(rng, update_sn):
    G = sagan_tf.Generator("test", 128, z_dim=8, gf_dim=2, num_classes=5).ensure_built()
    D = sagan_tf.Discriminator("test", 128, df_dim=4, num_classes=5).ensure_built()
    params = _randomise(G, D, rng)
    before = {n: v.numpy() for n, v in spec_variable_map(D).items()}
    x = rng.uniform(-1, 1, size=(3, 128, 128, 3)).astype(np.float32)
    y = np.array([3, 0, 3])
    out = D(x, y, update_sn=update_sn).numpy()
    expected, h, new_state = ref.discriminator_forward(params, x, y, 4, [1, 2, 4, 8, 16], 2,
                                                       update_sn=update_sn, return_features=True)
    np.testing.assert_allclose(out, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())
    after = spec_variable_map(D)
    if update_sn:
        assert len(new_state) == sum(n.endswith("/u") for n in before)
        for name, value in new_state.items():
            np.testing.assert_allclose(after[name].numpy(), value, rtol=1e-3, atol=1e-5)
    else:
        for name, value in before.items():  # update_sn=False changes no u (nor anything else)
            np.testing.assert_array_equal(after[name].numpy(), value, err_msg=name)


def test_projection_term(rng):
    """logit = linear(h) + <h, embed(y)>: the label changes only the projection term."""
    D = sagan_tf.Discriminator("baseline", 32, df_dim=2, num_classes=4).ensure_built()
    x = rng.uniform(-1, 1, size=(2, 32, 32, 3)).astype(np.float32)
    h = D.features(x, update_sn=False).numpy().astype(np.float64)
    emb = D.d_embedding.embedding_map.numpy()
    w_bar_t, _, _ = ref.spectral_norm(emb.T, D.d_embedding.u.numpy())
    lin_w, _, _ = ref.spectral_norm(D.d_sn_linear.matrix.numpy(), D.d_sn_linear.u.numpy())
    for labels in ([0, 1], [3, 3]):
        logits = D(x, np.array(labels), update_sn=False).numpy()
        bias = D.d_sn_linear.bias.numpy()
        expected = h @ lin_w + bias + np.sum(h * w_bar_t.T[labels], axis=1, keepdims=True)
        # The logit is a cancellation of the terms: held to their scale.
        terms = np.abs(h) @ np.abs(lin_w) + np.abs(bias) + np.sum(
            np.abs(h * w_bar_t.T[labels]), axis=1, keepdims=True)
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=scaled_atol(terms, 1e-4))


def test_eval_mode_uses_moving_statistics(rng):
    """With u held fixed, an image's eval-mode output does not depend on the rest of
    its batch; in training mode (batch statistics) it does."""
    G = sagan_tf.Generator("test", 32, z_dim=8, gf_dim=2, num_classes=3).ensure_built()
    z = rng.normal(size=(4, 8)).astype(np.float32)
    y = np.array([0, 1, 2, 1])
    full = G(z, y, training=False, update_sn=False).numpy()
    alone = G(z[:1], y[:1], training=False, update_sn=False).numpy()
    other = G(np.concatenate([z[:1], -z[1:] * 3]), np.array([0, 2, 2, 0]),
              training=False, update_sn=False).numpy()
    np.testing.assert_allclose(alone[0], full[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(other[0], full[0], rtol=1e-5, atol=1e-6)
    train_full = G(z, y, training=True, update_sn=False).numpy()
    train_other = G(np.concatenate([z[:1], -z[1:] * 3]), np.array([0, 2, 2, 0]),
                    training=True, update_sn=False).numpy()
    assert np.abs(train_full[0] - train_other[0]).max() > 1e-4


def test_update_sn_false_changes_no_u(rng):
    G = sagan_tf.Generator("test", 32, z_dim=8, gf_dim=2, num_classes=3).ensure_built()
    D = sagan_tf.Discriminator("test", 32, df_dim=2, num_classes=3).ensure_built()
    us = [v for v in G.variables + D.variables if v.path.endswith("/u")]
    before = [v.numpy() for v in us]
    images = G(rng.normal(size=(2, 8)).astype(np.float32), np.array([0, 1]), update_sn=False)
    D(images, np.array([0, 1]), update_sn=False)
    for v, b in zip(us, before):
        np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)
    G(rng.normal(size=(2, 8)).astype(np.float32), np.array([0, 1]))  # default: release behaviour
    assert any(np.abs(v.numpy() - b).max() > 0 for v, b in zip(us, before))


@pytest.mark.parametrize("loss_type", losses.LOSS_TYPES)
def test_losses(rng, loss_type):
    real, fake = rng.normal(size=(6, 1)) * 2, rng.normal(size=(6, 1)) * 2
    d, dr, df = (t.numpy() for t in losses.discriminator_loss(loss_type, real, fake))
    g = losses.generator_loss(loss_type, fake).numpy()
    if loss_type == "hinge_loss":
        er, ef = np.maximum(0, 1 - real).mean(), np.maximum(0, 1 + fake).mean()
    else:
        er, ef = np.log1p(np.exp(-real)).mean(), np.log1p(np.exp(fake)).mean()
    np.testing.assert_allclose([d, dr, df, g], [er + ef, er, ef, -fake.mean()], rtol=1e-5,
                               atol=scaled_atol([real, fake], 1e-6))
    with pytest.raises(ValueError, match="unknown loss_type"):
        losses.generator_loss("wgan", fake)


def test_distributed_state_stays_identical_across_replicas(strategy2, rng):
    """Under 2 replicas with different data, u and BN statistics written in the
    replica step hold identical values on both replicas (aggregation='mean')."""
    with strategy2.scope():
        G = sagan_tf.Generator("test", 32, z_dim=8, gf_dim=2, num_classes=3).ensure_built()
        D = sagan_tf.Discriminator("test", 32, df_dim=2, num_classes=3).ensure_built()

    @tf.function
    def step(z, y):
        def replica_fn(z, y):
            images = G(z, y, training=True)
            return D(images, y, update_sn=True)
        return strategy2.run(replica_fn, args=(z, y))

    def per_replica(seed):
        r = np.random.default_rng(seed)
        z = r.normal(size=(2, 4, 8)).astype(np.float32) * np.array([1, 3])[:, None, None]
        y = r.integers(0, 3, size=(2, 4)).astype(np.int32)
        values = [strategy2.experimental_distribute_values_from_function(
            lambda ctx, a=a: tf.constant(a[ctx.replica_id_in_sync_group])) for a in (z, y)]
        return values, z

    before = {v.path: v.numpy() for v in G.variables + D.variables if not v.trainable}
    for seed in range(3):
        (z, y), z_np = per_replica(seed)
        step(z, y)
    state = [v for v in G.variables + D.variables if not v.trainable]
    for v in state:
        replicas = v.value.values if hasattr(v.value, "values") else None
        assert replicas is not None and len(replicas) == 2, v.path
        np.testing.assert_array_equal(replicas[0].numpy(), replicas[1].numpy(), err_msg=v.path)
        assert np.abs(replicas[0].numpy() - before[v.path]).max() > 0, v.path


@pytest.mark.parametrize("jit", [False, True])
def test_upsample_value_and_gradient(rng, jit):
    """Nearest 2x upsampling: pixel (i, j) <- (i // 2, j // 2); its custom
    gradient sums each 2x2 block (numpy), also under XLA."""
    from sagan_tf.models.networks import _upsample_2x
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    dy = rng.standard_normal((2, 6, 10, 4)).astype(np.float32)

    @tf.function(jit_compile=jit, autograph=False)
    def value_and_grad(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = _upsample_2x(x)
        return y, tape.gradient(y, x, output_gradients=dy)

    y, dx = value_and_grad(tf.constant(x), tf.constant(dy))
    np.testing.assert_array_equal(y.numpy(), x.repeat(2, axis=1).repeat(2, axis=2))
    want = dy.reshape(2, 3, 2, 5, 2, 4).sum(axis=(2, 4), dtype=np.float64)
    np.testing.assert_allclose(dx.numpy(), want, rtol=1e-6, atol=1e-6)


def test_upsample_keeps_static_spatial_shape_with_unknown_batch():
    """The attention block reshapes with the static H and W (sampling traces
    G with an unknown batch size)."""
    from sagan_tf.models.networks import _upsample_2x
    fn = tf.function(_upsample_2x, autograph=False).get_concrete_function(
        tf.TensorSpec([None, 4, 5, 3]))
    assert fn.output_shapes.as_list() == [None, 8, 10, 3]
