"""The paper's ablations (docs/REPRODUCING.md): attention at any feature-map size,
the Table 1 "Residual" comparison blocks, G without spectral norm (Figure 3).

Placements are checked by variable names and shapes and by forward passes
against a numpy oracle that places each block from the sizes alone (G block i
outputs 4 * 2^i, D block i outputs S / 2^i); the defaults against golden
values recorded from the networks before these options existed. End to end:
the trainer trains each option a few steps, evaluation and the sampling tool
rebuild the networks from config.json. 32x32 images, 4-8 channels.
"""
import hashlib
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import numpy_reference as ref
from tolerances import dot_atol, scaled_atol
import sagan_tf
from sagan_tf.sampling import attention_maps, samples as sampling
from sagan_tf.evaluation import evaluator as evaluation, evaluation_loop
from sagan_tf.data import record_format
from sagan_tf.runs import rundir
from sagan_tf.models.layers import SpectralNormConv2D, SpectralNormDense, SpectralNormEmbedding
from sagan_tf.runs.legacy import spec_variable_map
from sagan_tf.models.layouts import parse_resolutions
from sagan_tf.models.networks import build_networks
from sagan_tf.models.spec import NetworkSpec
from sagan_tf.models.networks import count_parameters
from sagan_tf.training.config import ConfigError, TrainConfig
from sagan_tf.training.run_config import load_config
from sagan_tf.training.loop import train
from test_metrics import save_standin_classifier

S, Z, CLASSES = 32, 8, 3

# ----------------------------------------------------------------------------
# Defaults: today's networks.

# Recorded from the networks before the ablation options were added (commit
# 57cd47f): per arch and image size, G + D built with keras.utils.set_random_seed(0),
# Generator(arch, size, z_dim=16, gf_dim=4, num_classes=5), Discriminator(arch,
# size, df_dim=8, num_classes=5): number of variables, sha256 of the
# "path:shape" lines (first 16 hex digits), sum and sum of squares of all
# initial values.
_GOLDEN = {
    ("test", 32): (117, "024b3f7043d68f46", 1678.19700391902, 4802.37180189181),
    ("test", 64): (143, "6d95b191937fb7b8", 1814.1736332245055, 5036.602743113035),
    ("baseline", 32): (99, "a7039cf9bca6547c", 1612.5583952557936, 4656.747056582595),
    ("baseline", 64): (125, "1d85639f26897c6c", 1749.35482619502, 4893.340656238166),
    ("test_64", 32): (117, "024b3f7043d68f46", 1678.19700391902, 4802.37180189181),
    ("test_64", 64): (143, "7b2bea79d0b5f6a9", 1834.4578328758362, 5004.95349193819),
}


def _signature(G, D):
    variables = G.variables + D.variables
    lines = "\n".join(f"{v.path}:{tuple(v.shape)}" for v in variables)
    values = np.concatenate([v.numpy().ravel().astype(np.float64) for v in variables])
    return (len(variables), hashlib.sha256(lines.encode()).hexdigest()[:16],
            float(values.sum()), float((values ** 2).sum()))


@pytest.mark.parametrize("arch,size,how", [
    ("test", 32, "defaults"), ("baseline", 32, "defaults"), ("test_64", 64, "defaults"),
    ("test_64", 64, "old_config"), ("test", 32, "old_config")])
def test_default_networks_are_the_ones_before_the_options(arch, size, how):
    """Same variables, order, shapes and initial values as before the options:
    with the constructors' defaults, and rebuilt from a config.json without the
    new keys (sampling's kwargs, evaluation's options)."""
    keras.utils.set_random_seed(0)
    if how == "defaults":
        G = sagan_tf.Generator(arch, size, z_dim=16, gf_dim=4, num_classes=5)
        D = sagan_tf.Discriminator(arch, size, df_dim=8, num_classes=5)
    else:
        old = {"generator_type": arch, "discriminator_type": arch, "image_size": size,
               "z_dim": 16, "gf_dim": 4, "df_dim": 8, "number_classes": 5}
        spec = NetworkSpec.from_config_json(old)
        assert (spec.attention, spec.g_attention_resolutions, spec.d_attention_resolutions,
                spec.g_spectral_norm) == ("release", None, None, True)
        G, D = build_networks(spec)
    G.ensure_built(), D.ensure_built()
    n, digest, s1, s2 = _signature(G, D)
    want = _GOLDEN[(arch, size)]
    assert (n, digest) == want[:2]
    assert (s1, s2) == pytest.approx(want[2:], rel=1e-9)


def test_old_config_json_loads_as_the_release_defaults(tmp_path):
    config = TrainConfig(data_dir="d", checkpoint_dir=str(tmp_path), seed=1)
    stored = config.to_dict()
    assert (stored["g_attention_resolutions"], stored["d_attention_resolutions"],
            stored["g_spectral_norm"]) == (None, None, True)
    old = {k: v for k, v in stored.items()
           if k not in ("g_attention_resolutions", "d_attention_resolutions", "g_spectral_norm")}
    os.makedirs(config.logdir)
    with open(os.path.join(config.logdir, "config.json"), "w") as f:
        json.dump(old, f)
    assert load_config(config.logdir) == config


def test_parse_resolutions_and_bad_flags_are_named():
    assert parse_resolutions(None) is None and parse_resolutions("") is None
    assert parse_resolutions("none") == () and parse_resolutions([]) == ()
    assert parse_resolutions("32, 8") == (8, 32) and parse_resolutions([16]) == (16,)
    for bad in ("16;32", "a", [0], [16, 16], "8,8", 3.5):
        with pytest.raises(ValueError):
            parse_resolutions(bad)
    config = TrainConfig(g_attention_resolutions="16,32", d_attention_resolutions="none")
    assert config.g_attention_resolutions == [16, 32] and config.d_attention_resolutions == []
    with pytest.raises(ConfigError, match="--g_attention_resolutions"):
        TrainConfig(g_attention_resolutions="16x")
    # 128x128 D blocks output 64 ... 4: no 128 (nor 2) to attend at; G outputs 8 ... 128.
    with pytest.raises(ConfigError, match="--d_attention_resolutions.*no 128x128 feature map"):
        TrainConfig(d_attention_resolutions="128").validate()
    with pytest.raises(ConfigError, match="--g_attention_resolutions.*no 4x4"):
        TrainConfig(g_attention_resolutions="4").validate()
    with pytest.raises(ConfigError, match="--attention"):
        TrainConfig(attention="bottleneck").validate()
    with pytest.raises(ConfigError, match="--g_spectral_norm"):
        TrainConfig(g_spectral_norm="no").validate()
    TrainConfig(g_attention_resolutions="8,128", d_attention_resolutions="4,64",
                attention="residual", g_spectral_norm=False).validate()


# ----------------------------------------------------------------------------
# Placements against the numpy oracle.

class _Oracle(ref._Net):
    """numpy_reference's network pieces plus the comparison blocks; `sn=False`
    reads kernels as they are (no `u`)."""

    def __init__(self, params, sn=True):
        super().__init__(params, update_sn=False)
        self.sn = sn

    def w_bar(self, scope, wname):
        if not self.sn:
            assert f"{scope}/u" not in self.p, scope
            return self.p[f"{scope}/{wname}"]
        return super().w_bar(scope, wname)

    def residual(self, x, scope):
        """x + sigma_ratio * conv1x1(relu(conv1x1(x))), C -> 5C/8 -> C, no biases."""
        h = relu(self.snconv(x, f"{scope}/sn_conv_hidden", bias=False))
        return x + self.p[f"{scope}/sigma_ratio"] * self.snconv(h, f"{scope}/sn_conv_out",
                                                                 bias=False)

    def g_block(self, x, y, scope, upsample=True):
        up = ref.upsample2 if upsample else (lambda t: t)
        h = relu(self.cbn(x, y, f"{scope}/cbn_0", True))
        h = self.snconv(up(h), f"{scope}/snconv1")
        h = relu(self.cbn(h, y, f"{scope}/cbn_1", True))
        h = self.snconv(h, f"{scope}/snconv2")
        return self.snconv(up(x), f"{scope}/snconv3") + h

    def d_block(self, x, scope, downsample=True):
        h = self.snconv(relu(x), f"{scope}/sn_conv1")
        h = self.snconv(relu(h), f"{scope}/sn_conv2")
        if not downsample:  # same width here: identity shortcut
            return x + h
        return ref.avgpool2(self.snconv(x, f"{scope}/sn_conv3")) + ref.avgpool2(h)

    def extra(self, kind, h, scope, y=None):
        if kind in ("release", "slide"):
            return self.attention(h, scope) if kind == "release" else self.slide_attention(h, scope)
        if kind == "residual":
            return self.residual(h, scope)
        return self.g_block(h, y, scope, upsample=False) if y is not None else self.d_block(
            h, scope, downsample=False)


relu = ref.relu
_STEM = {"release": "non_local", "residual": "residual", "resnet_block": "res_block"}


def _names(net, kind, resolutions):
    stem = f"{net}_{_STEM[kind]}"
    if len(resolutions) == 1:
        return {resolutions[0]: stem}
    return {r: f"{stem}_{r}" for r in resolutions}


def oracle_generator(params, z, y, gf_dim, kind, resolutions, sn=True):
    """32x32 G (blocks 16x, 8x, 4x gf) in training mode; a `kind` block after
    each block whose output size is in `resolutions`."""
    net = _Oracle(params, sn)
    names = _names("g", kind, resolutions)
    h = net.snlinear(np.asarray(z, np.float64), "model/g_snh0").reshape(-1, 4, 4, 16 * gf_dim)
    for i in (1, 2, 3):
        h = net.g_block(h, y, f"model/g_block{i}")
        if h.shape[1] in names:
            assert h.shape[1] == 4 * 2 ** i
            h = net.extra(kind, h, f"model/{names[h.shape[1]]}", y)
    h = relu(net.final_bn(h, "model/g_bn", True))
    return np.tanh(net.snconv(h, "model/g_snconv_last"))


def oracle_discriminator(params, x, y, df_dim, kind, resolutions):
    """32x32 D (optimized block 4x, blocks 8x, 16x down, 16x same) logits."""
    net = _Oracle(params)
    names = _names("d", kind, resolutions)
    h = np.asarray(x, np.float64)
    s = "model/d_optimized_block1"
    h = (net.snconv(ref.avgpool2(h), f"{s}/sn_conv3") +
         ref.avgpool2(net.snconv(relu(net.snconv(h, f"{s}/sn_conv1")), f"{s}/sn_conv2")))
    if h.shape[1] in names:
        h = net.extra(kind, h, f"model/{names[h.shape[1]]}")
    for i in (2, 3):
        h = net.d_block(h, f"model/d_block{i}")
        if h.shape[1] in names:
            assert h.shape[1] == S // 2 ** i
            h = net.extra(kind, h, f"model/{names[h.shape[1]]}")
    h = net.d_block(h, "model/d_block4", downsample=False)
    h = relu(h).sum(axis=(1, 2))
    logits = net.snlinear(h, "model/d_sn_linear")
    return logits + np.sum(h * net.sn_embedding(y, "model/d_embedding"), axis=1, keepdims=True)


def _randomise(*models, rng):
    mapping = spec_variable_map(*models)
    params = ref.random_params({n: tuple(v.shape) for n, v in mapping.items()}, rng)
    for name, var in mapping.items():
        var.assign(params[name].astype(np.float32))
    return {n: v.numpy().astype(np.float64) for n, v in mapping.items()}


# (kind, G sizes, D sizes, G spectral norm); the paper's feat8/16/32 at 32x32
# (D's largest map is 16x16 there), several blocks at once, none.
PLACEMENTS = [
    ("release", (8,), (8,), True),
    ("release", (16,), (16,), False),
    ("release", (8, 32), (4, 16), True),
    ("release", (), (), False),
    ("residual", (8,), (16,), True),
    ("residual", (16, 32), (4, 8), False),
    ("resnet_block", (32,), (8,), True),
    ("resnet_block", (8, 16), (16, 4), False),
]


@pytest.mark.parametrize("kind,g_res,d_res,sn", PLACEMENTS)
def test_block_at_the_requested_resolution_matches_oracle(rng, kind, g_res, d_res, sn):
    gf, df = 4, 4
    G = sagan_tf.Generator("test", S, z_dim=Z, gf_dim=gf, num_classes=CLASSES, attention=kind,
                           attention_resolutions=g_res, spectral_norm=sn).ensure_built()
    D = sagan_tf.Discriminator("test", S, df_dim=df, num_classes=CLASSES, attention=kind,
                               attention_resolutions=d_res).ensure_built()
    # Names: the release's (g_non_local, ...) for one block, a size suffix for several.
    g_names, d_names = _names("g", kind, g_res), _names("d", kind, d_res)
    assert [layer.name for _, layer in G.extra_blocks] == [g_names[r] for r in g_res]
    assert [layer.name for _, layer in D.extra_blocks] == [
        d_names[r] for r in sorted(d_res, reverse=True)]  # D: input (largest) side first
    assert (G.g_non_local is not None) == (kind == "release" and len(g_res) == 1)
    # Shapes: the width of the feature map at that size (G: 16, 8, 4 x gf at 8, 16, 32;
    # D: 4, 8, 16 x df at 16, 8, 4).
    g_width, d_width = {8: 16 * gf, 16: 8 * gf, 32: 4 * gf}, {16: 4 * df, 8: 8 * df, 4: 16 * df}
    m = spec_variable_map(G, D)
    for net, names, width in (("g", g_names, g_width), ("d", d_names, d_width)):
        for r, name in names.items():
            c = width[r]
            own = {k.split("/", 2)[2]: tuple(v.shape) for k, v in m.items()
                   if k.startswith(f"model/{name}/")}
            if kind == "release":
                assert own["sn_conv_theta/w"] == (1, 1, c, c // 8)
                assert own["sn_conv_attn/w"] == (1, 1, c // 2, c)
            elif kind == "residual":
                assert own["sn_conv_hidden/w"] == (1, 1, c, 5 * c // 8)
                assert own["sn_conv_out/w"] == (1, 1, 5 * c // 8, c)
                assert own["sigma_ratio"] == ()
            elif net == "g":
                assert own["snconv1/w"] == (3, 3, c, c) and own["snconv3/w"] == (1, 1, c, c)
                assert own["cbn_0/gamma"] == (CLASSES, c)
            else:
                assert own["sn_conv1/w"] == (3, 3, c, c) and "sn_conv3/w" not in own
    # SN off in G only: G has no u, D keeps all of its.
    g_u = [k for k in spec_variable_map(G) if k.endswith("/u")]
    assert (len(g_u) > 0) == sn
    assert all(f"model/{k}/u" in m for k in ("d_sn_linear", "d_embedding", "d_block2/sn_conv1"))

    params = _randomise(G, D, rng=rng)
    z = rng.normal(size=(3, Z)).astype(np.float32)
    y = np.array([2, 0, 1])
    np.testing.assert_allclose(
        G(z, y, training=True, update_sn=False).numpy(),
        oracle_generator(params, z, y, gf, kind, g_res, sn=sn), rtol=2e-3, atol=2e-4)
    x = rng.uniform(-1, 1, size=(3, S, S, 3)).astype(np.float32)
    want = oracle_discriminator(params, x, y, df, kind, d_res)
    np.testing.assert_allclose(D(x, y, update_sn=False).numpy(), want, rtol=2e-3,
                               atol=2e-3 * np.abs(want).max())


@pytest.mark.parametrize("network,resolution", [("generator", 16), ("discriminator", 8)])
def test_residual_block_has_the_attention_blocks_parameter_count(network, resolution):
    """The paper compares "with the same number of parameters"."""
    counts = {}
    for kind in ("release", "residual", "resnet_block"):
        if network == "generator":
            model = sagan_tf.Generator("test", S, z_dim=Z, gf_dim=8, num_classes=CLASSES,
                                       attention=kind, attention_resolutions=[resolution])
        else:
            model = sagan_tf.Discriminator("test", S, df_dim=8, num_classes=CLASSES,
                                           attention=kind, attention_resolutions=[resolution])
        [(_, block)] = model.ensure_built().extra_blocks
        counts[kind] = count_parameters(block)
    c = 8 * 8  # both at 8 x width 8
    assert counts["release"] == counts["residual"] == c * c // 8 * 2 + c * c // 2 * 2 + 1
    assert counts["resnet_block"] > 10 * counts["release"]  # 3x3 convs (+ class tables in G)


def test_blocks_in_a_compiled_training_pass(rng):
    """Several blocks of each kind and G without SN inside tf.function (as the
    trainer's step): same outputs and gradients as eagerly, and every block's
    gate gets a gradient."""
    for kind in ("release", "residual", "resnet_block"):
        G = sagan_tf.Generator("test", S, z_dim=Z, gf_dim=4, num_classes=CLASSES, attention=kind,
                               attention_resolutions=[8, 32], spectral_norm=False).ensure_built()
        D = sagan_tf.Discriminator("test", S, df_dim=4, num_classes=CLASSES, attention=kind,
                                   attention_resolutions=[4, 16]).ensure_built()
        for _, block in G.extra_blocks + D.extra_blocks:
            if hasattr(block, "sigma_ratio"):
                block.sigma_ratio.assign(0.5)
        z = tf.constant(rng.normal(size=(2, Z)), tf.float32)
        y = tf.constant([0, 2])

        def loss_and_grads(z, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(D(G(z, y, training=True, update_sn=False), y,
                                        update_sn=False))
            variables = G.trainable_variables + D.trainable_variables
            return loss, tape.gradient(loss, variables)

        eager_loss, eager_grads = loss_and_grads(z, y)
        loss, grads = tf.function(loss_and_grads, autograph=False)(z, y)
        # The loss is a mean of signed logits: held to their scale too.
        logits = D(G(z, y, training=True, update_sn=False), y, update_sn=False).numpy()
        np.testing.assert_allclose(loss.numpy(), eager_loss.numpy(), rtol=1e-5,
                                   atol=scaled_atol(logits, 1e-5))
        for v, g, e in zip(G.trainable_variables + D.trainable_variables, grads, eager_grads):
            np.testing.assert_allclose(tf.convert_to_tensor(g).numpy(),
                                       tf.convert_to_tensor(e).numpy(), rtol=1e-4, atol=1e-6,
                                       err_msg=v.path)
            if v.path.endswith("sigma_ratio"):
                assert float(tf.abs(g)) > 0, v.path


def test_plain_layers_without_spectral_norm(rng):
    """use_sn=False: the layers' own variables minus u, outputs of the plain ops."""
    x = rng.normal(size=(2, 5, 5, 3)).astype(np.float32)
    conv = SpectralNormConv2D(4, 3, use_sn=False)
    out = conv(x).numpy()
    assert [v.name for v in conv.variables] == ["w", "biases"]
    np.testing.assert_allclose(out, ref.conv2d_same(x, conv.w.numpy(), conv.biases.numpy()),
                               rtol=1e-5, atol=1e-5)
    dense = SpectralNormDense(3, use_sn=False)
    v = rng.normal(size=(2, 6)).astype(np.float32)
    out = dense(v).numpy()
    matrix, bias = dense.matrix.numpy(), dense.bias.numpy()
    np.testing.assert_allclose(out, v @ matrix + bias, rtol=1e-5, atol=dot_atol(v, matrix, bias))
    assert [w.name for w in dense.variables] == ["Matrix", "bias"]
    emb = SpectralNormEmbedding(4, 3, use_sn=False)
    np.testing.assert_array_equal(emb(np.array([3, 1])).numpy(), emb.embedding_map.numpy()[[3, 1]])
    assert [w.name for w in emb.variables] == ["embedding_map"]
    assert conv.get_config()["use_sn"] is False
    with pytest.raises(ValueError, match="no spectral norm"):
        conv.sigma()
    # With SN, the same layer class still normalises (the release's default).
    sn = SpectralNormConv2D(4, 3)
    sn(x)
    assert sn.get_config()["use_sn"] is True and [v.name for v in sn.variables][-1] == "u"


def test_generator_without_sn_has_the_release_names_minus_u():
    with_sn = sagan_tf.Generator("test", S, z_dim=Z, gf_dim=4, num_classes=CLASSES).ensure_built()
    plain = sagan_tf.Generator("test", S, z_dim=Z, gf_dim=4, num_classes=CLASSES,
                               spectral_norm=False).ensure_built()
    names = [v.path for v in with_sn.variables]
    assert [v.path for v in plain.variables] == [n for n in names if not n.endswith("/u")]
    assert len(names) - len(plain.variables) == 15  # snh0, 3 blocks x 3 convs, 4 attention, last
    assert plain.get_config()["spectral_norm"] is False


# ----------------------------------------------------------------------------
# End to end: train, evaluate, restore in the sampling tool.

def _write_records(directory, n=16, seed=0):
    r = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    record_format.write_records(os.path.join(directory, "part-0.tfrecords"),
                       r.integers(0, 256, (n, S, S, 3), dtype=np.uint8), r.integers(0, CLASSES, n))
    return str(directory)


@pytest.fixture(scope="module")
def standin_classifier(tmp_path_factory):
    return save_standin_classifier(tmp_path_factory.mktemp("cls") / "standin",
                                   num_logits=CLASSES)


@pytest.fixture
def eager_functions():
    """Runs the training step eagerly: saves its 10-20 s trace; tests/test_training.py
    covers the compiled step, test_blocks_in_a_compiled_training_pass the new
    blocks in a graph."""
    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(False)


# The paper's rows at demo size: feat-k placements (several at once) with G
# without SN and 1:1 learning rates ("SN on D only"); the Residual block; the
# network-type residual block with TTUR.
E2E = [
    dict(g_attention_resolutions="8,32", d_attention_resolutions="16", g_spectral_norm=False,
         generator_learning_rate=1e-4, discriminator_learning_rate=1e-4),
    dict(attention="residual", g_attention_resolutions="16", d_attention_resolutions="8"),
    dict(attention="resnet_block", g_attention_resolutions="8", d_attention_resolutions="4,16"),
]


@pytest.mark.parametrize("flags", E2E, ids=["attention_8_32_noGSN", "residual_16", "resnet_block"])
def test_trains_evaluates_and_restores_from_config_json(tmp_path, flags, standin_classifier,
                                                        eager_functions):
    data_dir = _write_records(tmp_path / "data")
    config = TrainConfig(image_size=S, gf_dim=4, df_dim=4, z_dim=Z, number_classes=CLASSES,
                         batch_size=4, seed=0, shuffle=False, save_summaries_steps=0,
                         log_every_steps=0, save_checkpoint_secs=0, max_steps=2,
                         data_dir=data_dir, checkpoint_dir=str(tmp_path / "ckpt"), **flags)
    result = train(config, tf.distribute.get_strategy(), log=lambda line: None)
    assert result["step"] == 2 and np.isfinite(list(result["metrics"].values())).all()
    trainer = result["trainer"]
    stored = json.load(open(os.path.join(config.logdir, "config.json")))
    for key in ("attention", "g_attention_resolutions", "d_attention_resolutions",
                "g_spectral_norm"):
        assert stored[key] == getattr(config, key), key
    assert load_config(config.logdir) == config
    # The blocks are in the trained networks; their gates (init 0) have moved.
    blocks = [b for _, b in trainer.generator.extra_blocks + trainer.discriminator.extra_blocks]
    assert len(blocks) == sum(len(flags[k].split(","))
                              for k in ("g_attention_resolutions", "d_attention_resolutions"))
    gates = [b.sigma_ratio.numpy() for b in blocks if hasattr(b, "sigma_ratio")]
    assert len(gates) == (0 if flags.get("attention") == "resnet_block" else len(blocks))
    assert all(g != 0 for g in gates)

    # The sampling tool's library rebuilds both networks from config.json alone.
    loaded = rundir.load_checkpoint(checkpoint_dir=config.checkpoint_dir,
                                      batch_size=config.batch_size, discriminator=True)
    assert loaded.step == 2
    for mine, theirs in ((loaded.generator, trainer.generator),
                         (loaded.discriminator, trainer.discriminator)):
        assert [v.path for v in mine.variables] == [v.path for v in theirs.variables]
        for a, b in zip(mine.variables, theirs.variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    path, _ = sampling.sample_to_file(loaded.generator, "grid", str(tmp_path / "grid.png"),
                                      num_rows=2, num_columns=2, seed=0)
    assert os.path.getsize(path) > 0
    # Class interpolation rebuilds G from its get_config(): the options carry over.
    G2 = sampling.class_interpolation_generator(loaded.generator, 0, 2, 3)
    assert [v.path for v in G2.variables] == [v.path for v in loaded.generator.variables]

    # Evaluation rebuilds the generator from config.json too.
    options = evaluation.EvalOptions(
        checkpoint_dir=config.checkpoint_dir, batch_size=config.batch_size,
        inception_path=standin_classifier, eval_sample_size=8, dcgan_generator_batch_size=8,
        num_real_samples=8, eval_interval_secs=0, seed=1)
    ev = evaluation.Evaluator(options)
    assert [v.path for v in ev.generator.variables] == [v.path for v in loaded.generator.variables]
    res = evaluation_loop.evaluate_checkpoint(options, evaluator=ev)
    assert res["step"] == 2 and np.isfinite(res["fid"]) and res["inception_score"] >= 1.0


def test_train_imagenet_flags(tmp_path):
    """The documented flags reach config.json through train_imagenet.py (one tiny
    step), and an impossible placement is one clear line naming the flag."""
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    data_dir = _write_records(tmp_path / "data", n=8)
    base = [sys.executable, os.path.join(repo, "train_imagenet.py"), f"--data_dir={data_dir}",
            f"--image_size={S}", "--gf_dim=4", "--df_dim=4", f"--z_dim={Z}",
            f"--number_classes={CLASSES}", "--batch_size=2", "--seed=1", "--max_steps=1",
            "--save_summaries_steps=0", "--log_every_steps=0", "--shuffle_buffer_size=8"]
    good = subprocess.Popen(
        base + [f"--checkpoint_dir={tmp_path / 'good'}", "--attention=residual",
                "--g_attention_resolutions=16", "--d_attention_resolutions=8",
                "--nog_spectral_norm", "--generator_learning_rate=1e-4",
                "--discriminator_learning_rate=1e-4"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    bad = subprocess.run(base + [f"--checkpoint_dir={tmp_path / 'bad'}",
                                 "--d_attention_resolutions=32"],
                         env=env, capture_output=True, text=True, timeout=300)
    out, _ = good.communicate(timeout=300)
    assert good.returncode == 0, out
    stored = json.load(open(tmp_path / "good" / "imagenet_2" / "config.json"))
    assert (stored["attention"], stored["g_attention_resolutions"],
            stored["d_attention_resolutions"], stored["g_spectral_norm"],
            stored["generator_learning_rate"], stored["discriminator_learning_rate"]) == (
                "residual", [16], [8], False, 1e-4, 1e-4)
    assert bad.returncode == 2, bad.stderr
    assert ("train_imagenet.py: error: --d_attention_resolutions [32]: no 32x32 feature map in "
            "the discriminator") in bad.stderr and "Traceback" not in bad.stderr
    assert not os.path.exists(tmp_path / "bad")


def test_attention_maps_need_a_single_attention_block():
    G = sagan_tf.Generator("test", S, z_dim=Z, gf_dim=4, num_classes=CLASSES,
                           attention_resolutions=[8, 16]).ensure_built()
    with pytest.raises(ValueError, match="has g_non_local_8, g_non_local_16.*exactly one"):
        attention_maps.generator_attention_input(G, np.zeros((1, Z), np.float32), [0])
    D = sagan_tf.Discriminator("test", S, df_dim=4, num_classes=CLASSES, attention="residual",
                               attention_resolutions=[8]).ensure_built()
    with pytest.raises(ValueError, match="has d_residual"):
        attention_maps.discriminator_attention_input(D, np.zeros((1, S, S, 3), np.float32))
