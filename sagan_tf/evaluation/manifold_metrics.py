"""Precision, recall, density and coverage of generated features against real ones.

Not part of the release's evaluation: an addition of this port, reported by
the evaluator next to FID (docs/NUMERICS.md, "Manifold metrics").

Both sets are feature vectors of the same classifier (the ``pool_3`` FID uses).
A point's *k-NN radius* in its own set is the distance to its k-th nearest
neighbour there, itself not counted; the *manifold* of a set is the union of
the closed balls around its points with those radii.

* precision (Kynkäänniemi et al. 2019, ``k_pr = 3``): the share of generated
  points inside the real manifold;
* recall (same paper, ``k_pr``): the share of real points inside the
  generated manifold;
* density (Naeem et al. 2020, ``k_dc = 5``): ``1 / (k_dc * M)`` times the
  number of (generated point, real ball) pairs with the point inside the ball,
  summed over the M generated points -- 1 on average when both sets are drawn
  from one distribution, ``(k_dc + 1) / k_dc`` for two identical sets;
* coverage (same paper, ``k_dc``): the share of real points whose ball holds
  at least one generated point.

Balls are closed (``distance <= radius``) throughout, as in Kynkäänniemi et
al.'s definition; ties have probability zero on continuous features.

Memory: distances are computed a block of rows at a time against the whole
other set (``||a||^2 + ||b||^2 - 2 a.b`` in float32, in TensorFlow, so on the
accelerator when there is one); a block holds at most ``max_block_elements``
distances (64 MiB by default). No ``N x N`` matrix is formed: 50,000 x 50,000
features of 2,048 dimensions need the two feature sets (2 x 400 MB) plus one
block.
"""
import logging

import numpy as np
import tensorflow as tf

__all__ = ["DEFAULT_K_PR", "DEFAULT_K_DC", "DEFAULT_NUM_SAMPLES", "knn_radii",
           "manifold_metrics", "sample_count",
           "evaluation_entries"]

DEFAULT_K_PR = 3          # precision / recall (Kynkäänniemi et al. 2019)
DEFAULT_K_DC = 5          # density / coverage (Naeem et al. 2020)
DEFAULT_NUM_SAMPLES = 10000  # Naeem et al.'s recommended count; FID's may be larger
MAX_BLOCK_ELEMENTS = 1 << 24

log = logging.getLogger(__name__)


@tf.function(reduce_retracing=True)
def _block_distances(block, others, others_sq):
    """Euclidean distances ``[b, N]`` of ``block [b, D]`` to ``others [N, D]``
    (``others_sq [N]``: their squared norms)."""
    block_sq = tf.reduce_sum(tf.square(block), axis=1, keepdims=True)
    sq = block_sq + others_sq[tf.newaxis, :] - 2.0 * tf.matmul(block, others, transpose_b=True)
    return tf.sqrt(tf.maximum(sq, 0.0))


@tf.function(reduce_retracing=True)
def _block_smallest(block, others, others_sq, count):
    """The ``count`` smallest distances of each row of ``block`` to ``others``,
    ascending: ``[b, count]``."""
    neg_smallest, _ = tf.math.top_k(-_block_distances(block, others, others_sq), k=count)
    return -neg_smallest


def _as_features(x, name):
    x = np.asarray(x, np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"{name} must be a non-empty [N, D] array of features, got shape "
                         f"{x.shape}")
    return x


def _block_rows(num_others, max_block_elements):
    """Rows per block so that a block of distances holds <= ``max_block_elements``."""
    return max(1, int(max_block_elements) // max(1, int(num_others)))


def knn_radii(features, ks, max_block_elements=MAX_BLOCK_ELEMENTS):
    """k-NN radii of every point of ``features [N, D]`` within the set, for each k in ``ks``.

    The point itself (distance 0) is not counted: the radius for k is the
    (k+1)-th smallest distance of the row, the row's own zero included.

    Returns:
      ``{k: float32 [N]}``.

    Raises:
      ValueError: ``N <= max(ks)`` (a point needs k other points).
    """
    features = _as_features(features, "features")
    n, k_max = len(features), max(ks)
    if n <= k_max:
        raise ValueError(f"k-NN radii with k={k_max} need more than {k_max} points, got {n}")
    others = tf.constant(features)
    others_sq = tf.reduce_sum(tf.square(others), axis=1)
    rows = _block_rows(n, max_block_elements)
    out = np.empty((n, k_max + 1), np.float32)
    for start in range(0, n, rows):
        block = others[start:start + rows]
        out[start:start + rows] = _block_smallest(block, others, others_sq,
                                                  tf.constant(k_max + 1)).numpy()
    return {k: out[:, k] for k in ks}


def manifold_metrics(real, generated, k_pr=DEFAULT_K_PR, k_dc=DEFAULT_K_DC,
                     max_block_elements=MAX_BLOCK_ELEMENTS):
    """Precision, recall (k = ``k_pr``), density and coverage (k = ``k_dc``).

    Args:
      real: float ``[N, D]`` real features.
      generated: float ``[M, D]`` generated features.
      k_pr, k_dc: neighbourhood sizes (each set needs more points than the k used on it).
      max_block_elements: the most distances held at once.

    Returns:
      ``{"precision", "recall", "density", "coverage"}`` as Python floats.
    """
    real = _as_features(real, "real features")
    generated = _as_features(generated, "generated features")
    if real.shape[1] != generated.shape[1]:
        raise ValueError(f"real and generated features differ in dimension: "
                         f"{real.shape[1]} vs {generated.shape[1]}")
    if min(k_pr, k_dc) < 1:
        raise ValueError(f"k must be >= 1, got k_pr={k_pr}, k_dc={k_dc}")
    real_radii = knn_radii(real, sorted({k_pr, k_dc}), max_block_elements)
    fake_radius = knn_radii(generated, [k_pr], max_block_elements)[k_pr]
    r_pr = tf.constant(real_radii[k_pr])
    r_dc = tf.constant(real_radii[k_dc])
    others = tf.constant(real)
    others_sq = tf.reduce_sum(tf.square(others), axis=1)

    inside_real = 0          # generated points inside the real manifold (precision)
    balls_holding = 0        # (generated point, real k_dc-ball) pairs, point inside (density)
    real_in_fake = np.zeros(len(real), bool)   # real point inside the generated manifold
    nearest_fake = np.full(len(real), np.inf, np.float32)
    rows = _block_rows(len(real), max_block_elements)
    for start in range(0, len(generated), rows):
        block = tf.constant(generated[start:start + rows])
        d = _block_distances(block, others, others_sq)             # [b, N]
        inside_real += int(tf.reduce_sum(tf.cast(
            tf.reduce_any(d <= r_pr[tf.newaxis, :], axis=1), tf.int64)))
        balls_holding += int(tf.reduce_sum(tf.cast(d <= r_dc[tf.newaxis, :], tf.int64)))
        block_radius = tf.constant(fake_radius[start:start + rows])
        real_in_fake |= tf.reduce_any(d <= block_radius[:, tf.newaxis], axis=0).numpy()
        nearest_fake = np.minimum(nearest_fake, tf.reduce_min(d, axis=0).numpy())
    m = len(generated)
    return {
        "precision": inside_real / m,
        "recall": float(np.mean(real_in_fake)),
        "density": balls_holding / (k_dc * m),
        "coverage": float(np.mean(nearest_fake <= real_radii[k_dc])),
    }


def sample_count(requested, num_real, num_generated):
    """How many samples of each set the manifold metrics use: ``requested``
    (0: all), at most what both sets hold."""
    limit = min(int(num_real), int(num_generated))
    return limit if not requested else min(int(requested), limit)



def evaluation_entries(real, generated, num_samples=DEFAULT_NUM_SAMPLES, k_pr=DEFAULT_K_PR,
                       k_dc=DEFAULT_K_DC):
    """The evaluator's JSON entries: the four metrics on the first ``n`` rows of
    ``real [N, D]`` and ``generated [M, D]`` (both already in random order),
    ``n = sample_count(num_samples, N, M)``, with ``n`` and the two k's named.

    Returns:
      ``{"precision", "recall", "density", "coverage", "manifold_num_samples",
      "precision_recall_k", "density_coverage_k"}``; empty (logged) when
      ``n <= max(k_pr, k_dc)``.
    """
    n = sample_count(num_samples, len(real), len(generated))
    if n <= max(k_pr, k_dc):
        log.warning("Precision/recall/density/coverage left out: they need more than %d "
                    "samples of each set, there are %d", max(k_pr, k_dc), n)
        return {}
    values = manifold_metrics(real[:n], generated[:n], k_pr=k_pr, k_dc=k_dc)
    return {**values, "manifold_num_samples": n, "precision_recall_k": int(k_pr),
            "density_coverage_k": int(k_dc)}
