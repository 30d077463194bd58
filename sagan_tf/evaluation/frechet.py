"""The Frechet distance between two feature distributions given by their moments.

FID (and each class's FID in intra-FID) is
``|m1 - m2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2)`` for the means ``m`` and
the unbiased covariances ``S`` of two sets of ``d``-dimensional features.
:class:`Moments` holds one set's mean and covariance in float64, either as a
dense ``d x d`` matrix or -- when the set has ``n <= d`` rows, so that its
covariance has rank ``<= n - 1`` -- as the ``n`` centred rows scaled by
``1 / sqrt(n - 1)`` (``S = D^T D``), which is exact and ``n x d`` in size.

The trace term, :func:`trace_sqrt_product`, then needs no ``d x d`` square
root whenever one side is low-rank:

* both low-rank (``D1`` ``n1 x d``, ``D2`` ``n2 x d``): the eigenvalues of
  ``S1 S2 = D1^T D1 D2^T D2`` are those of ``(D1 D2^T)(D1 D2^T)^T``, so
  ``tr sqrt(S1 S2)`` is the sum of the singular values of the ``n1 x n2``
  matrix ``D1 D2^T`` (its nuclear norm) -- for unscaled centred activations
  ``A``, ``B``: ``||A B^T||_* / sqrt((n1 - 1)(n2 - 1))``;
* one dense ``S1``, one low-rank ``D2``: the eigenvalues of ``S1 D2^T D2``
  are those of the ``n2 x n2`` PSD matrix ``D2 S1 D2^T``, so the term is the
  sum of the square roots of its eigenvalues;
* both dense: TF-GAN's own ``trace_sqrt_product`` (what the release ran).

Intra-FID over 1,000 classes of 50 samples at ``d = 2048`` is thereby 1,000
products of ``50 x 2048`` matrices and 1,000 SVDs of ``50 x 50`` instead of
2,000 ``2048 x 2048`` matrix square roots.
"""
import dataclasses
from typing import Optional

import numpy as np

__all__ = ["Moments", "MomentAccumulator", "trace_sqrt_product", "trace_sqrt_products",
           "frechet_distance", "frechet_distances"]


@dataclasses.dataclass(frozen=True)
class Moments:
    """Mean ``[d]`` and unbiased covariance of ``count`` feature rows, float64.

    Exactly one of ``covariance`` (dense ``[d, d]``) and ``deviations``
    (``[count, d]``: the rows minus ``mean``, divided by ``sqrt(count - 1)``,
    so ``covariance = deviations^T deviations``) is set.
    """
    mean: np.ndarray
    count: int
    covariance: Optional[np.ndarray] = None
    deviations: Optional[np.ndarray] = None

    @classmethod
    def of_activations(cls, activations, dense=None):
        """The moments of ``activations [n, d]`` (n >= 2), low-rank when ``n <= d``
        unless ``dense`` says otherwise."""
        x = np.asarray(activations, np.float64)
        n, d = x.shape
        if n < 2:
            raise ValueError(f"moments need at least 2 rows, got {n}")
        mean = x.mean(axis=0)
        deviations = (x - mean) / np.sqrt(n - 1)
        if dense is None:
            dense = n > d
        if dense:
            return cls(mean, n, covariance=deviations.T @ deviations)
        return cls(mean, n, deviations=deviations)

    @property
    def dim(self):
        """The feature size ``d``."""
        return int(self.mean.shape[0])

    @property
    def low_rank(self):
        """True when the covariance is held as ``deviations``."""
        return self.deviations is not None

    def trace(self):
        """``tr(S)``."""
        if self.low_rank:
            return float(np.sum(self.deviations * self.deviations))
        return float(np.trace(self.covariance))

    def dense_covariance(self):
        """``S`` as a ``[d, d]`` matrix."""
        if self.low_rank:
            return self.deviations.T @ self.deviations
        return self.covariance


class MomentAccumulator:
    """Streams the float64 mean and covariance of feature batches.

    Rows are shifted by the mean of the first batch (so no sum of squares of
    large numbers is formed) and gathered into blocks of ``block_rows``; each
    block updates the sums in place with one symmetric rank-k BLAS update
    (``dsyrk``), so the per-row cost is the ``d^2`` multiply-adds and not
    ``d^2`` of memory traffic per batch. Memory: ``d^2`` float64 (32 MB for
    ``d = 2048``) plus one block, whatever the count.
    """

    def __init__(self, block_rows=1024):
        self.count = 0
        self._block_rows = int(block_rows)
        self._block = None     # [block_rows, d] float64, the rows not yet summed
        self._filled = 0
        self._shift = None     # [d]
        self._sum = None       # [d]: sum of (x - shift)
        self._scatter = None   # [d, d] Fortran order, upper triangle: sum of (x-shift)(x-shift)^T

    def add(self, features):
        """Adds a batch ``[B, d]`` (any float dtype)."""
        x = np.asarray(features)
        if x.shape[0] == 0:
            return
        x = x.reshape(x.shape[0], -1)
        if self._shift is None:
            d = x.shape[1]
            self._shift = x.astype(np.float64).mean(axis=0)
            self._block = np.empty((self._block_rows, d), np.float64)
            self._sum = np.zeros(d, np.float64)
            self._scatter = np.zeros((d, d), np.float64, order="F")
        start = 0
        while start < len(x):
            take = min(self._block_rows - self._filled, len(x) - start)
            self._block[self._filled:self._filled + take] = x[start:start + take]
            self._filled += take
            start += take
            if self._filled == self._block_rows:
                self._flush()
        self.count += len(x)

    def _flush(self):
        """Adds the gathered rows to the sums (in place) and empties the block."""
        from scipy.linalg import blas  # pylint: disable=import-outside-toplevel
        rows = self._block[:self._filled]
        rows -= self._shift
        self._sum += rows.sum(axis=0)
        self._scatter = blas.dsyrk(1.0, rows, beta=1.0, c=self._scatter, trans=1,
                                   overwrite_c=1)
        self._filled = 0

    def moments(self):
        """The dense :class:`Moments` of every row added (at least 2)."""
        if self.count < 2:
            raise ValueError(f"moments need at least 2 rows, got {self.count}")
        if self._filled:
            self._flush()
        upper = np.triu(self._scatter)
        scatter = upper + np.triu(upper, 1).T
        shifted_mean = self._sum / self.count
        covariance = (scatter - self.count * np.outer(shifted_mean, shifted_mean)) / (
            self.count - 1)
        return Moments(self._shift + shifted_mean, self.count, covariance=covariance)


#: Classes whose cross products are formed in one batched matmul.
BATCH_CLASSES = 100


def nuclear_norms_of_cross(first, second):
    """``first [G, n1, d]``, ``second [G, n2, d]`` (float64) -> ``[G]``: the sum of
    the singular values of each ``first_g second_g^T`` (``n1 x n2``).

    The products run as one batched float64 matmul in TensorFlow's thread
    pool: a BLAS call per small product spends more in thread wake-ups than
    in work on a shared machine.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    cross = tf.linalg.matmul(first, second, transpose_b=True).numpy()
    return np.sum(np.linalg.svd(cross, compute_uv=False), axis=-1)


def _trace_sqrt_product_dense(first, second):
    """``tr sqrt(S1 S2)`` when at most one of the two is low-rank."""
    if first.low_rank or second.low_rank:
        dense, factor = (second, first) if first.low_rank else (first, second)
        small = factor.deviations @ dense.covariance @ factor.deviations.T
        eigenvalues = np.linalg.eigvalsh((small + small.T) / 2.0)
        return float(np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None))))
    from sagan_tf import tfgan  # pylint: disable=import-outside-toplevel
    return float(tfgan.trace_sqrt_product(first.covariance, second.covariance))


def trace_sqrt_product(first, second):
    """``tr sqrt(S1 S2)`` of two :class:`Moments` (a float; the forms: module doc)."""
    if first.dim != second.dim:
        raise ValueError(f"feature sizes differ: {first.dim} and {second.dim}")
    if first.low_rank and second.low_rank:
        return float(nuclear_norms_of_cross(first.deviations[None], second.deviations[None])[0])
    return _trace_sqrt_product_dense(first, second)


def frechet_distance(first, second):
    """The Frechet distance of two :class:`Moments`, in float64."""
    mean_term = float(np.sum(np.square(first.mean - second.mean)))
    return mean_term + first.trace() + second.trace() - 2.0 * trace_sqrt_product(first, second)


def frechet_distances(firsts, seconds):
    """The Frechet distance of each pair of activation sets ``firsts[i] [n1_i, d]``,
    ``seconds[i] [n2_i, d]`` (at least 2 rows each), float64 arithmetic.

    Pairs in which both sets have at most ``d`` rows (intra-FID's classes) are
    computed ``BATCH_CLASSES`` at a time per pair of row counts: the rows are
    copied into two reused float64 buffers, centred in place, and their
    trace terms come from :func:`nuclear_norms_of_cross`. Other pairs go
    through :func:`frechet_distance` of their :class:`Moments`.
    """
    out = [None] * len(firsts)
    groups = {}
    for i, (a, b) in enumerate(zip(firsts, seconds)):
        if len(a) <= a.shape[1] and len(b) <= b.shape[1]:
            groups.setdefault((len(a), len(b)), []).append(i)
        else:
            out[i] = frechet_distance(Moments.of_activations(a), Moments.of_activations(b))
    for (n1, n2), indices in groups.items():
        dim = firsts[indices[0]].shape[1]
        size = min(BATCH_CLASSES, len(indices))
        buffers = np.empty((size, n1, dim)), np.empty((size, n2, dim))
        for lo in range(0, len(indices), size):
            chunk = indices[lo:lo + size]
            first, second = buffers[0][:len(chunk)], buffers[1][:len(chunk)]
            for j, i in enumerate(chunk):
                first[j], second[j] = firsts[i], seconds[i]
            mean1, mean2 = first.mean(axis=1), second.mean(axis=1)
            first -= mean1[:, None]
            second -= mean2[:, None]
            distances = (np.sum(np.square(mean1 - mean2), axis=1)
                         + np.einsum("gnd,gnd->g", first, first) / (n1 - 1)
                         + np.einsum("gnd,gnd->g", second, second) / (n2 - 1)
                         - 2.0 * nuclear_norms_of_cross(first, second)
                         / np.sqrt((n1 - 1) * (n2 - 1)))
            for j, i in enumerate(chunk):
                out[i] = float(distances[j])
    return out
