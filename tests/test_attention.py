"""Self-attention blocks against the numpy oracle of NUMERICS §3."""
import numpy as np
import pytest
import tensorflow as tf

import numpy_reference as ref
from sagan_tf.models.attention import SelfAttention, SlideSelfAttention, attend

CONVS = {"release": ("sn_conv_theta", "sn_conv_phi", "sn_conv_g", "sn_conv_attn"),
         "slide": ("sn_conv_f", "sn_conv_g", "sn_conv_h")}


def _random_block(cls, rng, x_shape, sigma_ratio=0.7, **kwargs):
    block = cls(name="att", **kwargs)
    block.build(x_shape)
    params = {"att/sigma_ratio": np.float64(sigma_ratio)}
    block.sigma_ratio.assign(sigma_ratio)
    for sub in block._layers:
        sub.build(sub_input_shape(block, sub, x_shape))
        w = rng.normal(size=sub.w.shape) / np.sqrt(sub.w.shape[2])
        u = rng.normal(size=sub.u.shape)
        sub.w.assign(w.astype(np.float32)), sub.u.assign(u.astype(np.float32))
        params[f"att/{sub.name}/w"], params[f"att/{sub.name}/u"] = w, u
    return block, params


def sub_input_shape(block, sub, x_shape):
    if sub.name == "sn_conv_attn":
        return x_shape[:-1] + (x_shape[-1] // 2,)
    return x_shape


@pytest.mark.parametrize("variant", ["release", "slide"])
@pytest.mark.parametrize("update_sn", [True, False])
def test_attention_matches_oracle(rng, variant, update_sn):
    cls = SelfAttention if variant == "release" else SlideSelfAttention
    shape = (2, 8, 8, 16)
    block, params = _random_block(cls, rng, shape)
    assert sorted(s.name for s in block._layers) == sorted(CONVS[variant])
    x = rng.normal(size=shape).astype(np.float32)
    y = block(x, update_sn=update_sn).numpy()
    net = ref._Net(params, update_sn=update_sn)
    fn = net.attention if variant == "release" else net.slide_attention
    expected = fn(x.astype(np.float64), "att")
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    for sub in block._layers:
        key = f"att/{sub.name}/u"
        np.testing.assert_allclose(sub.u.numpy(), net.new_state.get(key, params[key]),
                                   rtol=1e-5, atol=1e-6)
    # The contribution is not negligible, so the comparison tests the attention path.
    assert np.abs(y - x).mean() > 1e-2


@pytest.mark.parametrize("cls", [SelfAttention, SlideSelfAttention])
def test_identity_at_init(rng, cls):
    block = cls()
    x = rng.normal(size=(2, 8, 8, 16)).astype(np.float32)
    np.testing.assert_array_equal(block(x).numpy(), x)
    assert block.sigma_ratio.numpy() == 0.0
    assert block.sigma_ratio.path.endswith("sigma_ratio")


def test_release_attention_map_shape_and_rows_sum_to_one(rng):
    block, _ = _random_block(SelfAttention, rng, (1, 8, 8, 16))
    attn = block.attention_map(rng.normal(size=(1, 8, 8, 16)).astype(np.float32)).numpy()
    assert attn.shape == (1, 64, 16)
    np.testing.assert_allclose(attn.sum(-1), 1.0, rtol=1e-5)


def test_channels_must_be_divisible_by_8():
    with pytest.raises(ValueError, match="divisible by 8"):
        SelfAttention()(np.zeros((1, 4, 4, 12), np.float32))


@pytest.mark.parametrize("cls", [SelfAttention, SlideSelfAttention])
@pytest.mark.parametrize("update_sn", [True, False])
def test_blocked_attention_equals_default(rng, cls, update_sn):
    """The memory-efficient (query-blocked, recomputed) path: same outputs and gradients."""
    shape = (2, 8, 8, 16)
    x = tf.constant(rng.normal(size=shape).astype(np.float32))
    results = []
    for block_size in (None, 24):  # 24 does not divide N=64: ragged last block too
        block, _ = _random_block(cls, np.random.default_rng(7), shape, query_block_size=block_size)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = block(x, update_sn=update_sn)
            loss = tf.reduce_sum(y * tf.sin(y))
        grads = tape.gradient(loss, [x] + block.trainable_variables)
        results.append((y.numpy(), [g.numpy() for g in grads],
                        [s.u.numpy() for s in block._layers]))
    (y0, g0, u0), (y1, g1, u1) = results
    np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-5)
    for a, b in zip(g0, g1):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    for a, b in zip(u0, u1):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)


def test_attend_blocked_matches_numpy(rng):
    q, k, v = (rng.normal(size=s).astype(np.float32) for s in [(2, 10, 3), (2, 5, 3), (2, 5, 4)])
    expected = ref.softmax(q.astype(np.float64) @ k.transpose(0, 2, 1)) @ v
    np.testing.assert_allclose(attend(q, k, v, query_block_size=3).numpy(), expected,
                               rtol=1e-5, atol=1e-6)
