"""sagan_tf.evaluation.frechet: the Frechet distance from moments, exact with low-rank
covariances, against TF-GAN's full computation and an independent scipy reference."""
import numpy as np
import pytest
import scipy.linalg

from sagan_tf import tfgan
from sagan_tf.evaluation import frechet, metrics


def _features(rng, n, d, shift=0.0):
    """Correlated, non-centred features [n, d] (float64)."""
    mix = rng.normal(size=(d, d)) / np.sqrt(d) + np.eye(d)
    return rng.normal(size=(n, d)) @ mix + shift + rng.normal(size=d)


def _tfgan_fid(a, b):
    """TF-GAN's FID from activations (float64 in, float64 out: no cast to float32)."""
    return float(tfgan.frechet_classifier_distance_from_activations(
        np.asarray(a, np.float64), np.asarray(b, np.float64)))


def _scipy_fid(mean1, cov1, mean2, cov2):
    """Independent reference: scipy's general matrix square root of S1 S2."""
    covmean = np.real(scipy.linalg.sqrtm(cov1 @ cov2))
    return float(np.sum((mean1 - mean2) ** 2) + np.trace(cov1 + cov2 - 2 * covmean))


@pytest.mark.parametrize("n1,n2,d", [(20, 30, 64), (64, 64, 64), (40, 64, 64),
                                     (150, 120, 64), (30, 200, 64)])
def test_low_rank_identity_matches_tfgan_full_computation(rng, n1, n2, d):
    """n < d, n = d and n > d on either side: the moments' FID (low-rank wherever a
    side has n <= d) equals TF-GAN's d x d computation within 1e-6."""
    a, b = _features(rng, n1, d), _features(rng, n2, d, shift=0.3)
    first, second = frechet.Moments.of_activations(a), frechet.Moments.of_activations(b)
    assert first.low_rank == (n1 <= d) and second.low_rank == (n2 <= d)
    ours = frechet.frechet_distance(first, second)
    assert ours == pytest.approx(_tfgan_fid(a, b), rel=1e-6)
    assert metrics.frechet_distance(a, b) == pytest.approx(ours, rel=1e-12)


def test_nuclear_norm_form_of_the_trace_term(rng):
    """tr sqrt(S1 S2) = ||A B^T||_* / sqrt((n1-1)(n2-1)) for centred A, B; scipy's
    sqrtm of the dense product as the independent reference."""
    a, b = _features(rng, 12, 40), _features(rng, 9, 40)
    ac, bc = a - a.mean(0), b - b.mean(0)
    nuclear = np.linalg.svd(ac @ bc.T, compute_uv=False).sum() / np.sqrt(11 * 8)
    first, second = frechet.Moments.of_activations(a), frechet.Moments.of_activations(b)
    dense = np.trace(np.real(scipy.linalg.sqrtm(np.cov(a.T) @ np.cov(b.T))))
    assert frechet.trace_sqrt_product(first, second) == pytest.approx(nuclear, rel=1e-10)
    assert frechet.trace_sqrt_product(first, second) == pytest.approx(dense, rel=1e-6)


@pytest.mark.parametrize("n_real,n_gen", [(300, 25), (300, 64), (25, 300)])
def test_dense_covariance_against_low_rank_activations(rng, n_real, n_gen):
    """One side a dense d x d covariance (streamed real moments), the other low-rank
    activations: tr sqrt(B S1 B^T) over n2 x n2, equal to scipy and to TF-GAN."""
    d = 64
    real, gen = _features(rng, n_real, d), _features(rng, n_gen, d, shift=-0.2)
    dense = frechet.Moments.of_activations(real, dense=True)
    low = frechet.Moments.of_activations(gen)
    ref = _scipy_fid(real.mean(0), np.cov(real.T), gen.mean(0), np.cov(gen.T))
    for x, y in ((dense, low), (low, dense)):
        assert frechet.frechet_distance(x, y) == pytest.approx(ref, rel=1e-6)
    assert frechet.frechet_distance(dense, low) == pytest.approx(_tfgan_fid(real, gen), rel=1e-6)
    both_dense = frechet.Moments.of_activations(gen, dense=True)
    assert frechet.frechet_distance(dense, both_dense) == pytest.approx(ref, rel=1e-6)


def test_streamed_moments_equal_those_of_the_stored_activations(rng):
    """Batches of any size (incl. one row and a large offset) -> np.mean / np.cov."""
    x = (_features(rng, 257, 24) + 1e3).astype(np.float32)
    acc = frechet.MomentAccumulator(block_rows=64)  # blocks across the batch borders
    for lo, hi in ((0, 1), (1, 100), (100, 100), (100, 200), (200, 257)):
        acc.add(x[lo:hi])
    m = acc.moments()
    assert m.count == 257 and not m.low_rank
    np.testing.assert_allclose(m.mean, x.astype(np.float64).mean(0), rtol=1e-13)
    np.testing.assert_allclose(m.covariance, np.cov(x.astype(np.float64).T), rtol=1e-9,
                               atol=1e-9)
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet.MomentAccumulator().moments()


def test_intra_fid_low_rank_per_class_matches_tfgan(rng):
    """Per-class FIDs of 20 rows against 30 at d = 256 (rank-deficient both sides)
    equal TF-GAN's full per-class FID."""
    d, classes = 256, 3
    real_labels, gen_labels = np.repeat(np.arange(classes), 30), np.repeat(np.arange(classes), 20)
    real = np.concatenate([_features(rng, 30, d, shift=c) for c in range(classes)])
    gen = np.concatenate([_features(rng, 20, d, shift=c + 0.5) for c in range(classes)])
    mean, per_class, skipped = metrics.intra_fid(real, real_labels, gen, gen_labels, classes)
    assert not skipped
    for c in range(classes):
        want = _tfgan_fid(real[real_labels == c], gen[gen_labels == c])
        assert per_class[c] == pytest.approx(want, rel=1e-6)
    assert mean == pytest.approx(np.mean(list(per_class.values())), rel=1e-12)
