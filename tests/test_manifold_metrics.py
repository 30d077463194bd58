"""sagan_tf.evaluation.manifold_metrics against a full-distance-matrix numpy oracle and known cases."""
import numpy as np
import pytest

from sagan_tf.evaluation import manifold_metrics as mm


def _oracle(real, fake, k_pr, k_dc):
    """The four metrics from the papers' definitions with whole distance matrices (float64)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)

    def dist(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    d_rr, d_ff, d_fr = dist(real, real), dist(fake, fake), dist(fake, real)

    def radius(d, k):  # k-th nearest other point: sort the row, skip the point's own 0
        return np.sort(d, axis=1)[:, k]

    r_real_pr, r_real_dc, r_fake = radius(d_rr, k_pr), radius(d_rr, k_dc), radius(d_ff, k_pr)
    precision = np.mean([any(d_fr[j, i] <= r_real_pr[i] for i in range(len(real)))
                         for j in range(len(fake))])
    recall = np.mean([any(d_fr[j, i] <= r_fake[j] for j in range(len(fake)))
                      for i in range(len(real))])
    density = sum(d_fr[j, i] <= r_real_dc[i] for j in range(len(fake))
                  for i in range(len(real))) / (k_dc * len(fake))
    coverage = np.mean([d_fr[:, i].min() <= r_real_dc[i] for i in range(len(real))])
    return dict(precision=precision, recall=recall, density=density, coverage=coverage)


@pytest.mark.parametrize("block", [1 << 24, 37])  # one block, and many uneven blocks
def test_matches_full_matrix_oracle(block):
    rng = np.random.default_rng(0)
    real = rng.normal(size=(120, 8)).astype(np.float32)
    fake = (rng.normal(size=(90, 8)) * 1.3 + 0.4).astype(np.float32)
    got = mm.manifold_metrics(real, fake, max_block_elements=block)
    want = _oracle(real, fake, 3, 5)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    # A shifted, wider generated set: many of its points lie outside the real
    # manifold (precision well below 1) while it still covers most real points.
    assert 0.1 < got["precision"] < 0.8 < got["recall"]


def test_other_ks_match_the_oracle():
    rng = np.random.default_rng(1)
    real = rng.uniform(size=(60, 5)).astype(np.float32)
    fake = rng.uniform(size=(70, 5)).astype(np.float32) ** 2
    got = mm.manifold_metrics(real, fake, k_pr=1, k_dc=7, max_block_elements=100)
    want = _oracle(real, fake, 1, 7)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_knn_radii_match_sorted_distances():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    d = np.sqrt(((x[:, None].astype(np.float64) - x[None]) ** 2).sum(-1))
    radii = mm.knn_radii(x, [1, 3, 5], max_block_elements=64)
    for k in (1, 3, 5):
        np.testing.assert_allclose(radii[k], np.sort(d, axis=1)[:, k], rtol=1e-5, atol=1e-5)


def test_identical_sets():
    x = np.random.default_rng(3).normal(size=(80, 6)).astype(np.float32)
    got = mm.manifold_metrics(x, x.copy())
    assert got["precision"] == 1.0 and got["recall"] == 1.0 and got["coverage"] == 1.0
    # Each real ball holds its own centre and its k nearest neighbours.
    assert got["density"] == pytest.approx((5 + 1) / 5)


def test_disjoint_far_apart_sets():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(40, 6)).astype(np.float32)
    fake = rng.normal(size=(50, 6)).astype(np.float32) + 100.0
    got = mm.manifold_metrics(real, fake)
    assert got == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_a_set_and_its_subset():
    x = np.random.default_rng(5).normal(size=(100, 6)).astype(np.float32)
    sub = x[::4]
    got = mm.manifold_metrics(x, sub)            # generated = a quarter of the real set
    assert got["precision"] == 1.0               # every generated point is a real point
    # The quarter's own real points are covered by themselves; the rest only when near.
    assert 0.25 <= got["coverage"] < 1.0 and got["recall"] < 1.0
    got = mm.manifold_metrics(sub, x)            # real = the quarter: everything is recalled
    assert got["recall"] == 1.0 and got["coverage"] == 1.0 and got["precision"] < 1.0


def test_bad_inputs_are_named():
    x = np.zeros((10, 4), np.float32)
    with pytest.raises(ValueError, match="differ in dimension"):
        mm.manifold_metrics(x, np.zeros((10, 5), np.float32))
    with pytest.raises(ValueError, match="need more than 5 points, got 4"):
        mm.manifold_metrics(np.ones((4, 4), np.float32), x)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        mm.manifold_metrics(np.zeros(4, np.float32), x)


def test_evaluation_entries_state_count_and_ks():
    rng = np.random.default_rng(6)
    real, fake = rng.normal(size=(30, 3)), rng.normal(size=(25, 3))
    got = mm.evaluation_entries(real, fake, num_samples=20)
    assert got["manifold_num_samples"] == 20
    assert (got["precision_recall_k"], got["density_coverage_k"]) == (3, 5)
    want = _oracle(real[:20], fake[:20], 3, 5)
    assert all(got[k] == pytest.approx(want[k], abs=1e-12) for k in want)
    assert mm.evaluation_entries(real, fake, num_samples=5) == {}  # too few for k=5


def test_sample_count():
    assert mm.sample_count(0, 500, 300) == 300
    assert mm.sample_count(100, 500, 300) == 100
    assert mm.sample_count(10000, 500, 300) == 300
