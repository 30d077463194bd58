"""One evaluation of a checkpoint (NUMERICS §8): sample -> metrics -> report.

:meth:`Evaluator.evaluate` runs the three steps, each a method:

1. :meth:`Evaluator.sample` -- after :meth:`Evaluator.prepare_generator` has
   restored the generator from a checkpoint of the release's layout
   (``<checkpoint_dir>/imagenet_<batch_size>/ckpt-N``; the architecture from
   the ``config.json`` beside it, options given explicitly must agree) --
   generates ``eval_sample_size`` samples in eval mode (moving BN statistics),
   ``z ~ N(0, 1)``, labels uniform over the classes, in batches of
   ``dcgan_generator_batch_size`` (generator, resize and classifier in one
   ``tf.function``), and with ``intra_fid_samples_per_class = n > 0`` also
   ``n`` samples of every class;
2. :meth:`Evaluator.compute_metrics` -- against the real statistics of the
   reference records (:mod:`sagan_tf.evaluation.real_statistics`: float64
   moments over ``num_real_samples`` shuffled records, or the whole split,
   of ``--real_split`` in ``--real_data_dir`` (default: every record file of
   the training ``data_dir``), computed once and cached) --
   :func:`sagan_tf.evaluation.measurements.compute_metrics`: Inception score
   (one split), FID from the moments, KID, class accuracy (when the
   classifier's logits are the data's classes), intra-FID (the mean over
   classes of the FID between the ``n`` samples of a class and up to ``n``
   real records of it; exact low-rank form, :mod:`sagan_tf.evaluation.frechet`),
   precision/recall/density/coverage (:mod:`sagan_tf.evaluation.manifold_metrics`,
   not the paper's protocol), each timed;
3. :meth:`Evaluator.report` -- the TensorBoard summaries ``eval/incscore``,
   ``eval/fid``, ``eval/kid``, ``eval/class_accuracy``, ``eval/intra_fid``,
   ``eval/precision``, ``eval/recall``, ``eval/density``, ``eval/coverage``,
   ``eval/bn_statistics``, ``eval/latents`` and ``eval/generator_weights``
   (text), ``eval/generated_images`` and ``eval/real_images`` (4x4 grids)
   under the eval directory (default ``<checkpoint_dir>/eval``), and one JSON
   line ``{"step", "inception_score", "fid", "kid", ["class_accuracy",]
   ["intra_fid", "intra_fid_samples_per_class", "intra_fid_num_classes",]
   ["precision", "recall", "density", "coverage", "manifold_num_samples",
   "precision_recall_k", "density_coverage_k",] "metric_seconds", "truncation",
   "bn_statistics", "generator_weights", "num_samples", "seconds",
   "checkpoint"}``; ``metric_seconds`` gives the seconds of each part
   (``sampling``, ``real_statistics``, each metric).

With ``truncation = psi`` (not the paper's protocol, off by default) z is
drawn with BigGAN's truncation trick (:mod:`sagan_tf.sampling.truncation`): the JSON
line's ``truncation`` is psi (null: ``z ~ N(0, 1)``), and the summaries and
``evaluated.json`` go to ``<eval dir>/truncation_<psi>`` (the real
statistics stay cached in the eval dir).

G samples with its moving batch-norm statistics (the release), or with
``standing_stats_batches = N > 0`` with standing statistics
(:mod:`sagan_tf.models.standing_statistics`, a documented deviation) recomputed after
each restore over N batches of the training batch size; ``bn_statistics`` in
the JSON line says which.

Which checkpoints are evaluated -- one, or each new one exactly once, as
the trainer writes them -- is :mod:`sagan_tf.evaluation.evaluation_loop`.
"""
import dataclasses
import json
import logging
import math
import os
import sys
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from sagan_tf import summaries
from sagan_tf.evaluation import (manifold_metrics as manifold_metrics_lib, measurements, metrics,
                                 real_statistics)
from sagan_tf.fileio import absolute_path
from sagan_tf.runs import checkpoints, rundir
from sagan_tf.sampling import truncation

__all__ = ["EvalOptions", "Evaluator"]

log = logging.getLogger(__name__)

GRID_SHAPE = (4, 4)


@dataclasses.dataclass
class EvalOptions:
    """Options of an evaluation run (the flags of ``eval_imagenet.py``, NUMERICS §9).

    Architecture options (``generator_type``, ``image_size``, ``z_dim``,
    ``gf_dim``, ``num_classes``) default to None = "take from config.json";
    a value given must agree with config.json.
    """
    checkpoint_dir: Optional[str] = None
    batch_size: Optional[int] = None         # None: the only imagenet_* run of checkpoint_dir
    eval_dir: Optional[str] = None
    eval_sample_size: int = 50000
    dcgan_generator_batch_size: int = 100
    num_real_samples: Optional[int] = None    # None: eval_sample_size; 0: the whole split
    data_dir: Optional[str] = None
    real_data_dir: Optional[str] = None       # None: data_dir
    real_split: Optional[str] = None          # None: every record file; "validation": validation-*
    inception_path: Optional[str] = None
    checkpoint_path: Optional[str] = None
    eval_interval_secs: float = 300.0
    timeout: Optional[float] = None
    max_evals: Optional[int] = None
    generator_type: Optional[str] = None
    image_size: Optional[int] = None
    z_dim: Optional[int] = None
    gf_dim: Optional[int] = None
    num_classes: Optional[int] = None
    seed: Optional[int] = None
    shuffle_buffer_size: int = 100000
    intra_fid_samples_per_class: int = 0      # 0: no intra-FID
    standing_stats_batches: int = 0           # 0: moving BN statistics (the release)
    standing_stats_batch_size: Optional[int] = None  # None: training batch_size of config.json
    generator_weights: str = "auto"           # auto | raw | ema (rundir.generator_child)
    manifold_metrics: bool = True             # precision/recall/density/coverage (not the paper's)
    manifold_num_samples: int = manifold_metrics_lib.DEFAULT_NUM_SAMPLES  # 0: FID's count
    truncation: Optional[float] = None        # psi > 0: truncated z (not the paper's protocol)

    @property
    def logdir(self):
        """Directory holding the checkpoints and config.json."""
        if self.checkpoint_path:
            return os.path.dirname(absolute_path(self.checkpoint_path))
        if not self.checkpoint_dir:
            raise ValueError("--checkpoint_dir (or --checkpoint_path) is required")
        return rundir.find_run_dir(self.checkpoint_dir, self.batch_size)

    @property
    def resolved_eval_dir(self):
        """``eval_dir``, default ``<checkpoint_dir>/eval`` (NUMERICS §9)."""
        if self.eval_dir:
            return self.eval_dir
        if self.checkpoint_dir:
            return os.path.join(self.checkpoint_dir, "eval")
        return os.path.join(os.path.dirname(self.logdir), "eval")


class Evaluator:
    """Holds the generator, the classifier and the real statistics between evaluations.

    Building it resolves the architecture (config.json + options), builds the
    generator, loads the classifier and opens the summary writer; the real
    activations are computed (or read from the cache) at the first evaluation.
    """

    def __init__(self, options, classifier=None, out=None):
        """``options``: :class:`EvalOptions`; ``classifier``: a preloaded
        :class:`sagan_tf.evaluation.metrics.Classifier` (else loaded from
        ``options.inception_path``); ``out``: stream for the JSON lines (stdout)."""
        # pylint: disable-next=import-outside-toplevel
        from sagan_tf.models.networks import build_networks
        from sagan_tf.models.spec import NetworkSpec  # pylint: disable=import-outside-toplevel

        self.options = options
        self.logdir = options.logdir
        # Real activations are cached in the eval dir; a truncated evaluation's
        # summaries and evaluated.json go to their own truncation_<psi> below it.
        self.truncation = truncation.check_truncation(options.truncation)
        self.cache_dir = options.resolved_eval_dir
        self.eval_dir = (self.cache_dir if self.truncation is None else os.path.join(
            self.cache_dir, f"truncation_{self.truncation:g}"))
        self.out = out if out is not None else sys.stdout
        if options.eval_sample_size < 2:
            raise ValueError(f"--eval_sample_size must be >= 2, got {options.eval_sample_size}")
        if options.intra_fid_samples_per_class < 0:
            raise ValueError("--intra_fid_samples_per_class must be >= 0 (0: off), got "
                             f"{options.intra_fid_samples_per_class}")
        if options.standing_stats_batches < 0:
            raise ValueError("--standing_stats_batches must be >= 0 (0: moving averages), "
                             f"got {options.standing_stats_batches}")
        if options.manifold_num_samples < 0:
            raise ValueError("--manifold_num_samples must be >= 0 (0: as many as FID), got "
                             f"{options.manifold_num_samples}")
        if options.dcgan_generator_batch_size < 1:
            raise ValueError("--dcgan_generator_batch_size must be >= 1, got "
                             f"{options.dcgan_generator_batch_size}")
        if options.checkpoint_path is None and not tf.io.gfile.isdir(self.logdir):
            raise FileNotFoundError(
                f"checkpoint directory {self.logdir} does not exist (--checkpoint_dir "
                f"{options.checkpoint_dir!r} with --batch_size {options.batch_size})")
        self.config, self.config_path = rundir.read_config(self.logdir, required=False)
        self.arch = rundir.resolve_architecture(
            self.config, self.config_path,
            **{k: getattr(options, k) for k in rundir.ARCH_FLAGS})
        self.data_dir = options.data_dir or (self.config or {}).get("data_dir")
        self.real_data_dir = options.real_data_dir or self.data_dir
        if options.num_real_samples is not None and options.num_real_samples < 0:
            raise ValueError("--num_real_samples must be >= 0 (0: the whole split), got "
                             f"{options.num_real_samples}")
        # None: every record of the split, once.
        self.num_real = (None if options.num_real_samples == 0 else
                         int(options.num_real_samples or options.eval_sample_size))

        # Cheap checks first: the classifier is loaded before the generator is built.
        self.classifier = classifier or metrics.load_classifier(options.inception_path)
        # config.json's networks (attention placement, SN: the ablations) with the
        # architecture the options resolved.
        self.generator = build_networks(NetworkSpec.from_config_json(
            {**(self.config or {}), **self.arch, "number_classes": self.arch["num_classes"]},
            self.config_path), discriminator=False)[0]
        self._rng = (tf.random.Generator.from_seed(options.seed) if options.seed is not None
                     else tf.random.Generator.from_non_deterministic_state())
        self._real = None
        self._real_by_class = None
        self._writer = None
        self._batch = int(options.dcgan_generator_batch_size)
        self._step_fn = tf.function(self._generate_and_classify)
        self._class_step_fn = tf.function(self._generate_and_classify_labels)
        # Class accuracy needs the classifier's classes to be the data's.
        self.reports_class_accuracy = self.classifier.num_logits == self.arch["num_classes"]
        if not self.reports_class_accuracy:
            log.info("Class accuracy not reported: the classifier has %s logits, the data "
                     "%d classes", self.classifier.num_logits, self.arch["num_classes"])
        self.standing_stats_batch_size = int(
            options.standing_stats_batch_size or (self.config or {}).get("batch_size")
            or self._batch)
        from sagan_tf.models import standing_statistics  # pylint: disable=import-outside-toplevel
        self.bn_statistics = standing_statistics.describe(options.standing_stats_batches,
                                                          self.standing_stats_batch_size)

    # -- pieces -------------------------------------------------------------

    def _generate_and_classify(self):
        """One batch: z ~ N(0,1), uniform labels -> G (eval mode) -> classifier."""
        z = self._latents([self._batch, self.arch["z_dim"]])
        labels = self._rng.uniform([self._batch], 0, self.arch["num_classes"], dtype=tf.int32)
        images, pool, logits = self._classify_generated(z, labels)
        return images, labels, pool, logits

    def _generate_and_classify_labels(self, labels):
        """As :meth:`_generate_and_classify`, for given ``labels``."""
        z = self._latents([tf.shape(labels)[0], self.arch["z_dim"]])
        return self._classify_generated(z, labels)

    def _latents(self, shape):
        """z ~ N(0, 1) (the release), or truncated with ``options.truncation``."""
        if self.truncation is None:
            return self._rng.normal(shape)
        return truncation.truncated_normal_tf(lambda s, _: self._rng.normal(s), shape,
                                              self.truncation)

    def _classify_generated(self, z, labels):
        images = self.generator(z, labels, training=False)
        out = self.classifier(images)
        return images, out[metrics.POOL_KEY], out[metrics.LOGITS_KEY]

    @property
    def writer(self):
        """The summary writer of the eval directory (created on first use)."""
        if self._writer is None:
            tf.io.gfile.makedirs(self.eval_dir)
            self._writer = tf.summary.create_file_writer(self.eval_dir)
        return self._writer

    def real_statistics(self):
        """The real moments (``mean``, ``covariance``, ``count``), ``pool_3`` rows
        for KID and the manifold metrics, and 16 ``images`` of the reference
        records (:func:`sagan_tf.evaluation.real_statistics.real_statistics`:
        read from its cache when present, else computed and cached)."""
        if self._real is None:
            self._real = real_statistics.real_statistics(
                self.classifier, self._real_records_dir(), self.cache_dir, self.num_real,
                self.arch["image_size"], self.arch["num_classes"], self._batch,
                self.options.shuffle_buffer_size, self.options.seed,
                num_grid_images=GRID_SHAPE[0] * GRID_SHAPE[1],
                num_activations=int(self.options.eval_sample_size),
                split=self.options.real_split)
        return self._real

    def _real_records_dir(self):
        """The directory of the reference records, or a ``ValueError`` naming the flags."""
        if not self.real_data_dir:
            raise ValueError("no records for the real statistics: give --data_dir or "
                             f"--real_data_dir (data_dir is not in {self.config_path} either)")
        return self.real_data_dir

    def real_class_statistics(self):
        """``{"pool_3": [N, F], "labels": [N]}``: up to ``intra_fid_samples_per_class``
        real records of each class, read from / written to the
        :class:`sagan_tf.evaluation.real_statistics.RealClassActivationCache`. Classes with fewer
        records are logged (and use the records they have)."""
        if self._real_by_class is not None:
            return self._real_by_class
        per_class = int(self.options.intra_fid_samples_per_class)
        num_classes = self.arch["num_classes"]
        real = real_statistics.real_class_statistics(
            self.classifier, self._real_records_dir(), self.cache_dir, per_class,
            self.arch["image_size"], num_classes, self._batch, self.options.shuffle_buffer_size,
            self.options.seed, split=self.options.real_split)
        counts = np.bincount(real["labels"], minlength=num_classes)
        short = {int(c): int(counts[c]) for c in np.flatnonzero(counts < per_class)}
        if short:
            log.warning("Intra-FID: %d class(es) have fewer than %d real records in %s "
                        "(class: records): %s%s; their FID uses the records there are "
                        "(classes with fewer than 2 are left out)", len(short), per_class,
                        self.real_data_dir, dict(list(short.items())[:20]),
                        " ..." if len(short) > 20 else "")
        self._real_by_class = real
        return real

    def _sample_classes(self):
        """``(pool [C * m, F], labels [C * m])``: ``m = intra_fid_samples_per_class``
        samples generated for every class (intra-FID)."""
        per_class = int(self.options.intra_fid_samples_per_class)
        labels = np.repeat(np.arange(self.arch["num_classes"], dtype=np.int32), per_class)
        acc = metrics.ActivationAccumulator(len(labels), keep_logits=False)
        for i in range(0, len(labels), self._batch):
            chunk = labels[i:i + self._batch]
            if len(chunk) < self._batch:  # one traced shape: pad the last batch
                chunk = np.concatenate([chunk, np.zeros(self._batch - len(chunk), np.int32)])
            _, pool, _ = self._class_step_fn(tf.constant(chunk))
            acc.add(pool.numpy())
        return acc.result()[0], labels

    def restore(self, checkpoint_path):
        """Restores the generator's variables from ``checkpoint_path``; returns its step.

        Raises:
          checkpoints.CheckpointNotFoundError: the checkpoint does not exist
            (a ``FileNotFoundError``).
          checkpoints.CheckpointReadError: its files cannot be read back
            (truncated, corrupt, deleted while read).
          ValueError: the checkpoint's generator does not match the architecture.
        """
        if not tf.io.gfile.exists(checkpoint_path + ".index"):
            raise checkpoints.CheckpointNotFoundError(
                f"checkpoint {checkpoint_path} not found (no {checkpoint_path}.index)")
        # Every generator variable's shape is checked against the stored tensor
        # first: a mismatch names the first differing variable.
        try:
            child = rundir.generator_child(checkpoint_path, self.options.generator_weights)
            checkpoints.restore_checked(tf.train.Checkpoint(**{child: self.generator}),
                                        checkpoint_path, what=child, partial=True)
        except checkpoints.CheckpointMismatchError as e:
            raise ValueError(f"{e} (see {self.config_path})") from e
        except checkpoints.NOT_READ_ERRORS:
            raise  # out of memory, CUDA: not the checkpoint's fault
        except checkpoints.READ_ERRORS as e:
            text = (str(getattr(e, "message", "") or e).strip().splitlines() or [""])[0]
            raise checkpoints.CheckpointReadError(
                f"cannot read checkpoint {checkpoint_path}: {type(e).__name__}: "
                f"{text[:300]}") from e
        self.generator_weights = rundir.weights_label(child)
        return checkpoints.checkpoint_step(checkpoint_path)

    def _write_summaries(self, step, result, generated_grid_images):
        """Scalars and the two 4x4 image grids, at ``step``."""
        size = self.arch["image_size"]
        real_images = self.real_statistics()["images"]
        with self.writer.as_default(step=step):
            summaries.write_scalar("eval/incscore", result["inception_score"])
            summaries.write_scalar("eval/fid", result["fid"])
            summaries.write_scalar("eval/kid", result["kid"])
            for tag, key in (("eval/class_accuracy", "class_accuracy"),
                             ("eval/intra_fid", "intra_fid"), ("eval/precision", "precision"),
                             ("eval/recall", "recall"), ("eval/density", "density"),
                             ("eval/coverage", "coverage")):
                if result.get(key) is not None:
                    summaries.write_scalar(tag, result[key])
            summaries.write_text("eval/bn_statistics", result["bn_statistics"])
            summaries.write_text("eval/latents", truncation.describe(self.truncation))
            summaries.write_text("eval/generator_weights", result["generator_weights"])
            n = GRID_SHAPE[0] * GRID_SHAPE[1]
            for name, imgs in (("eval/generated_images", generated_grid_images),
                               ("eval/real_images", real_images)):
                if imgs is None or len(imgs) < n:
                    log.warning("Not enough images for the %s grid", name)
                    continue
                grid = summaries.image_grid(imgs, size, GRID_SHAPE)
                summaries.write_image(name, grid, value_range=(-1, 1))
        self.writer.flush()

    # -- one evaluation: sample -> metrics -> report ----------------------------

    def prepare_generator(self, checkpoint_path):
        """Restores ``checkpoint_path`` and, with ``standing_stats_batches``, recomputes
        the batch-norm statistics; returns the checkpoint's step."""
        step = self.restore(checkpoint_path)
        if self.options.standing_stats_batches:
            from sagan_tf.models import \
                standing_statistics  # pylint: disable=import-outside-toplevel
            standing_statistics.accumulate_standing_statistics(
                self.generator, self.options.standing_stats_batches,
                self.standing_stats_batch_size,
                seed=self.options.seed if self.options.seed is not None else 0)
        return step

    def sample(self):
        """Generates and classifies ``eval_sample_size`` samples (uniform labels) and,
        with intra-FID, ``intra_fid_samples_per_class`` of every class.

        Returns:
          :class:`sagan_tf.evaluation.measurements.GeneratedSamples`.
        """
        start = time.perf_counter()
        n = int(self.options.eval_sample_size)
        acc = metrics.ActivationAccumulator(n, keep_logits=True)
        labels = np.empty(math.ceil(n / self._batch) * self._batch, np.int32)
        grid_needed = GRID_SHAPE[0] * GRID_SHAPE[1]
        grid = []
        for i in range(math.ceil(n / self._batch)):
            images, batch_labels, pool, logits = self._step_fn()
            if sum(len(g) for g in grid) < grid_needed:
                grid.append(images.numpy()[:grid_needed])
            labels[i * self._batch:(i + 1) * self._batch] = batch_labels.numpy()
            acc.add(pool.numpy(), logits.numpy())
        pool, logits = acc.result()
        grid = np.concatenate(grid, 0) if grid else None
        samples = measurements.GeneratedSamples(
            pool, logits, labels[:acc.count], grid if grid is not None and len(grid) >= grid_needed
            else None, seconds={"sampling": round(time.perf_counter() - start, 3)})
        if self.options.intra_fid_samples_per_class:
            start = time.perf_counter()
            samples.class_pool, samples.class_labels = self._sample_classes()
            samples.seconds["intra_fid_sampling"] = round(time.perf_counter() - start, 3)
        return samples

    def compute_metrics(self, samples):
        """The metric entries of :func:`sagan_tf.evaluation.measurements.compute_metrics`
        against this evaluator's real statistics (the per-class ones computed on
        first use, timed as ``real_class_statistics``)."""
        start = time.perf_counter()
        real_by_class = (self.real_class_statistics()
                         if self.options.intra_fid_samples_per_class else None)
        class_seconds = round(time.perf_counter() - start, 3)
        choices = measurements.MetricChoices(
            class_accuracy=self.reports_class_accuracy, num_classes=self.arch["num_classes"],
            intra_fid_samples_per_class=int(self.options.intra_fid_samples_per_class),
            manifold_metrics=self.options.manifold_metrics,
            manifold_num_samples=self.options.manifold_num_samples)
        result = measurements.compute_metrics(samples, self.real_statistics(), choices,
                                              real_by_class)
        if real_by_class is not None:
            result["metric_seconds"]["real_class_statistics"] = class_seconds
        return result

    def report(self, step, result, samples):
        """Writes the TensorBoard summaries at ``step`` and prints the JSON line."""
        self._write_summaries(step, result, samples.grid)
        log.info("Step %d: %d samples generated and classified in %.2fs (%.1f samples/s)",
                 step, len(samples.pool), samples.seconds["sampling"],
                 len(samples.pool) / max(samples.seconds["sampling"], 1e-9))
        print(json.dumps(result), file=self.out, flush=True)

    def evaluate(self, checkpoint_path):
        """Evaluates one checkpoint: sample, compute the metrics, report; returns the dict."""
        start = time.time()
        self.real_statistics()  # a data problem shows before the checkpoint is read
        real_seconds = round(time.time() - start, 3)
        step = self.prepare_generator(checkpoint_path)
        samples = self.sample()
        samples.seconds["real_statistics"] = real_seconds
        result = {"step": int(step), **self.compute_metrics(samples),
                  "truncation": self.truncation, "bn_statistics": self.bn_statistics,
                  "generator_weights": self.generator_weights,
                  "num_samples": int(len(samples.pool))}
        result["seconds"] = round(time.time() - start, 3)
        result["checkpoint"] = absolute_path(checkpoint_path)
        self.report(step, result, samples)
        return result
