"""The metrics step of one evaluation: generated samples + real statistics -> numbers.

:class:`GeneratedSamples` is what the evaluator's sampling step gives
(:meth:`sagan_tf.evaluation.evaluator.Evaluator.sample`);
:func:`compute_metrics` turns it and the real statistics
(:mod:`sagan_tf.evaluation.real_statistics`) into the JSON line's metric
entries, each metric timed (``metric_seconds``).
"""
import dataclasses
import logging
import time
from typing import Optional

import numpy as np

from sagan_tf.evaluation import manifold_metrics as manifold_metrics_lib, metrics, real_statistics

__all__ = ["GeneratedSamples", "MetricChoices", "compute_metrics"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class GeneratedSamples:
    """The classifier's view of one evaluation's samples.

    ``pool [n, F]``, ``logits [n, K]``, ``labels [n]`` (the classes G was
    conditioned on); ``grid``: the first 16 images ``[16, S, S, 3]`` (None when
    fewer); ``class_pool [C * m, F]`` with ``class_labels`` (``m`` samples of
    each class, for intra-FID; None when off); ``seconds``: time per part.
    """
    pool: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    grid: Optional[np.ndarray]
    class_pool: Optional[np.ndarray] = None
    class_labels: Optional[np.ndarray] = None
    seconds: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class MetricChoices:
    """Which optional metrics an evaluation computes (from the options)."""
    class_accuracy: bool
    num_classes: int
    intra_fid_samples_per_class: int = 0
    manifold_metrics: bool = True
    manifold_num_samples: int = manifold_metrics_lib.DEFAULT_NUM_SAMPLES


def _timed(seconds, name, fn, *args):
    """``fn(*args)``, its wall time added to ``seconds[name]``."""
    start = time.perf_counter()
    value = fn(*args)
    seconds[name] = round(seconds.get(name, 0.0) + time.perf_counter() - start, 3)
    return value


def compute_metrics(samples, real, choices, real_by_class=None):
    """The metric entries of the JSON line.

    Args:
      samples: :class:`GeneratedSamples`.
      real: :func:`sagan_tf.evaluation.real_statistics.real_statistics`'s dict
        (moments for FID, ``pool_3`` rows for KID and the manifold metrics).
      choices: :class:`MetricChoices`.
      real_by_class: the per-class real ``{"pool_3", "labels"}`` (intra-FID).

    Returns:
      ``{"inception_score", "fid", "kid", ["class_accuracy",] ["intra_fid", ...,]
      [manifold entries,] "metric_seconds": {metric: seconds}}``.
    """
    seconds = dict(samples.seconds)
    result = {
        "inception_score": _timed(seconds, "inception_score", metrics.inception_score,
                                  samples.logits),
        "fid": _timed(seconds, "fid", metrics.frechet_distance,
                      real_statistics.moments_of(real), samples.pool),
        "kid": _timed(seconds, "kid", metrics.kernel_distance, real[metrics.POOL_KEY],
                      samples.pool),
    }
    if choices.class_accuracy:
        result["class_accuracy"] = metrics.class_accuracy(samples.logits, samples.labels)
    if choices.intra_fid_samples_per_class:
        mean, per_class, skipped = _timed(
            seconds, "intra_fid", metrics.intra_fid, real_by_class[metrics.POOL_KEY],
            real_by_class["labels"], samples.class_pool, samples.class_labels,
            choices.num_classes)
        result["intra_fid"] = mean
        result["intra_fid_samples_per_class"] = int(choices.intra_fid_samples_per_class)
        result["intra_fid_num_classes"] = len(per_class)
        if skipped:
            log.warning("Intra-FID left out %d class(es) with fewer than 2 real or "
                        "generated samples: %s", len(skipped), sorted(skipped)[:20])
    if choices.manifold_metrics:
        result.update(_timed(seconds, "manifold_metrics",
                             manifold_metrics_lib.evaluation_entries, real[metrics.POOL_KEY],
                             samples.pool, choices.manifold_num_samples))
    result["metric_seconds"] = seconds
    return result
