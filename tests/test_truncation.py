"""sagan_tf.sampling.truncation: the truncated z samplers against scipy's truncated normal."""
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from sagan_tf.sampling import samples as sampling, truncation
from sagan_tf.evaluation.xy_plot import Panel, plot_panels

# Kolmogorov-Smirnov: P(sqrt(n) * D > 1.95) ~ 0.001 for a sample of the distribution.
KS_BOUND = 1.95


def _ks_against_truncnorm(values, psi):
    values = np.sort(np.asarray(values, np.float64))
    return stats.kstest(values, stats.truncnorm(-psi, psi).cdf).statistic * np.sqrt(len(values))


@pytest.mark.parametrize("psi", [0.3, 1.0, 2.0])
def test_numpy_sampler_is_the_truncated_normal(psi):
    z = truncation.truncated_normal(np.random.default_rng(0), (3000, 6), psi)
    assert z.dtype == np.float32 and z.shape == (3000, 6)
    assert np.abs(z).max() <= psi
    for column in z.T:  # every component is a truncated standard normal
        assert _ks_against_truncnorm(column, psi) < KS_BOUND
    # The bound can fail: a narrower distribution, or (when the tails hold enough
    # mass) normals clipped instead of redrawn, are far outside it.
    assert _ks_against_truncnorm(z[:, 0] * 0.8, psi) > 1.5 * KS_BOUND
    if psi <= 1:
        plain = np.random.default_rng(0).standard_normal(3000)
        assert _ks_against_truncnorm(np.clip(plain, -psi, psi), psi) > 4 * KS_BOUND


def test_tf_sampler_is_the_truncated_normal_and_off_is_draw_zero():
    seed = tf.constant([3, 4])

    def draw(shape, i):
        return tf.random.stateless_normal(shape, tf.random.experimental.stateless_fold_in(seed, i))

    fn = tf.function(lambda psi: truncation.truncated_normal_tf(draw, [4000, 3], psi))
    z = fn(tf.constant(0.5)).numpy()
    assert np.abs(z).max() <= 0.5
    for column in z.T:
        assert _ks_against_truncnorm(column, 0.5) < KS_BOUND
    np.testing.assert_array_equal(fn(tf.constant(0.5)).numpy(), z)  # stateless: repeatable
    np.testing.assert_array_equal(fn(tf.constant(0.0)).numpy(), draw([4000, 3], 0).numpy())


def test_seeded_determinism():
    a = truncation.truncated_normal(np.random.default_rng(7), (50, 8), 0.5)
    b = truncation.truncated_normal(np.random.default_rng(7), (50, 8), 0.5)
    c = truncation.truncated_normal(np.random.default_rng(8), (50, 8), 0.5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_off_is_the_release_sampling_bit_for_bit():
    want = np.random.default_rng(5).standard_normal((40, 16)).astype(np.float32)
    for off in (None, 0, 0.0):
        got = sampling.sample_latents(np.random.default_rng(5), 40, 16, off)
        np.testing.assert_array_equal(got, want)
        assert got.tobytes() == want.tobytes()
    # Components already inside are kept: truncation only redraws the others.
    z = sampling.sample_latents(np.random.default_rng(5), 40, 16, 1.0)
    inside = np.abs(want) <= 1.0
    np.testing.assert_array_equal(z[inside], want[inside])


def test_names_and_bad_values():
    assert truncation.check_truncation(None) is None and truncation.check_truncation(0) is None
    assert truncation.with_suffix("out/grid.png", 0.5) == "out/grid_truncation0.5.png"
    assert truncation.with_suffix("out/grid.png", None) == "out/grid.png"
    assert "0.5" in truncation.describe(0.5) and truncation.describe(None) == "z ~ N(0, 1)"
    with pytest.raises(ValueError, match="--truncation must be > 0"):
        truncation.check_truncation(-1)


def test_plot_panels_places_points_by_value():
    image, points = plot_panels([Panel("t", "x", [("a", [(0, 0), (1, 1), (2, 4)])],
                                       point_labels=[["p", "q", "r"]])])
    assert image.ndim == 3 and image.dtype == np.uint8
    xs = [p[0] for p in points[0][0]]
    ys = [p[1] for p in points[0][0]]
    assert xs == sorted(xs) and ys == sorted(ys, reverse=True)  # pixel y grows downwards
    # Equal steps in x are equal steps in pixels.
    assert abs((xs[1] - xs[0]) - (xs[2] - xs[1])) <= 1
    with pytest.raises(ValueError, match="every panel is empty"):
        plot_panels([Panel("t", "x", [("a", [])])])
