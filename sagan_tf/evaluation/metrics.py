"""Classifier loading, Inception score / FID / KID / intra-FID, class accuracy.

The real statistics they compare with (computed once, cached on disk) are in
:mod:`sagan_tf.evaluation.real_statistics`.

NUMERICS §8: generated images (in [-1, 1]) are resized bilinearly to the
classifier's input size (299x299 for the TF-GAN Inception) and fed to the
classifier, whose ``pool_3`` activations give FID/KID and whose ``logits``
give the Inception score. The formulas are TF-GAN's own
(:mod:`sagan_tf.tfgan`); FID's trace term of two dense covariances is TF-GAN's
``trace_sqrt_product``, and where a side has no more rows than features its
exact low-rank form (:mod:`sagan_tf.evaluation.frechet`).

The classifier
--------------
Default: the TF-GAN Inception on TF-Hub, :data:`INCEPTION_TFHUB` (outputs
``pool_3`` [B, 2048] and ``logits`` [B, 1008]), loaded with
``tensorflow_hub.load``. ``path`` may instead name a local copy: a TF2
SavedModel or a TF-Hub module directory (for clusters without internet), or
any stand-in with the same interface (e.g. the demo classifier written by
:mod:`sagan_tf.evaluation.demo_classifier`):

* either the loaded object is callable on one float32 image batch
  ``[B, H, W, 3]`` in [-1, 1], or it has a signature (``serving_default``
  or ``default``, else the only one) with a single image input;
* the call returns a dict with ``pool_3`` (``[B, F]``, or ``[B, 1, 1, F]``
  which is flattened) and ``logits`` (``[B, K]``).

TF-GAN's ``classifier_fn_from_tfhub`` cannot be used on Keras 3 (it flattens
with ``tf.compat.v1.layers.flatten``), so :class:`Classifier` is this
project's own classifier function.

Input size, in order of precedence: an ``input_size`` attribute of the loaded
object (int or scalar variable), the static height/width of its input
signature, else :data:`INCEPTION_INPUT_SIZE` (299).

Memory of the accumulators (float32): ``n x 2048 x 4`` bytes for ``pool_3``
(410 MB for 50,000 samples) plus ``n x K x 4`` for logits (202 MB for
K = 1008). FID compares the generated ``pool_3`` with the real statistics'
float64 mean and covariance (32 MB; :mod:`sagan_tf.evaluation.real_statistics`)
in :mod:`sagan_tf.evaluation.frechet`; KID and the manifold metrics use the
kept real rows (as many as the generated ones).
"""
import logging
import os

import numpy as np
import tensorflow as tf

from sagan_tf import tfgan
from sagan_tf.evaluation import frechet

__all__ = [
    "INCEPTION_TFHUB",
    "INCEPTION_INPUT_SIZE",
    "POOL_KEY",
    "LOGITS_KEY",
    "ClassifierError",
    "Classifier",
    "load_classifier",
    "resize_images",
    "inception_score",
    "frechet_distance",
    "kernel_distance",
    "intra_fid",
    "class_accuracy",
    "ActivationAccumulator",
]

log = logging.getLogger(__name__)

#: TF-Hub handle of the TF-GAN Inception (2015-12-05 graph) used by the release.
INCEPTION_TFHUB = "https://tfhub.dev/tensorflow/tfgan/eval/inception/1"
#: Input size of the TF-GAN Inception (NUMERICS §8).
INCEPTION_INPUT_SIZE = 299
#: Output holding the features for FID/KID.
POOL_KEY = "pool_3"
#: Output holding the class logits for the Inception score.
LOGITS_KEY = "logits"
_SIGNATURE_PREFERENCE = ("serving_default", "default")


class ClassifierError(ValueError):
    """A classifier could not be loaded or does not have the Inception interface."""


def _is_remote_handle(handle):
    """True for URL-like TF-Hub handles (http(s)://, gs://), False for local paths."""
    return "://" in handle and not handle.startswith("file://")


def resize_images(images, size):
    """Resizes ``[B, H, W, C]`` images bilinearly to ``size x size``.

    Uses TF1's ``resize_bilinear`` semantics (``align_corners=False``,
    ``half_pixel_centers=False``), i.e. what the 2018 release and TF-GAN's
    ``preprocess_image`` did. Values stay in the input range ([-1, 1]) because
    bilinear interpolation is a convex combination. A no-op when the images
    already have that size.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    if images.shape[1] == size and images.shape[2] == size:
        return images
    return tf.raw_ops.ResizeBilinear(
        images=images, size=tf.constant([size, size], tf.int32),
        align_corners=False, half_pixel_centers=False)


def _to_int(value):
    """Converts an int / numpy scalar / scalar tensor or variable to a Python int."""
    if isinstance(value, (tf.Variable, tf.Tensor)):
        value = value.numpy()
    return int(np.asarray(value).reshape(()))


def _input_spec_of(fn):
    """Returns the image ``TensorSpec`` of a (restored) function, or None."""
    try:
        if hasattr(fn, "structured_input_signature"):     # a ConcreteFunction
            args, kwargs = fn.structured_input_signature
        else:                                              # a restored tf.function
            concretes = getattr(fn, "concrete_functions", None) or []
            if not concretes:
                return None
            args, kwargs = concretes[0].structured_input_signature
        specs = [s for s in tf.nest.flatten((args, kwargs))
                 if isinstance(s, tf.TensorSpec)]
        return specs[0] if len(specs) == 1 else None
    except Exception:  # pylint: disable=broad-except
        return None


class Classifier:
    """The evaluation classifier: ``images in [-1, 1] -> {pool_3, logits}``.

    Attributes:
      source: the TF-Hub handle or local path it was loaded from.
      input_size: the square input size images are resized to.
      feature_dim: size of ``pool_3`` (after flattening).
      num_logits: number of logits.
    """

    def __init__(self, raw_fn, source, input_size, obj=None):
        """Wraps ``raw_fn`` (one image batch -> dict); use :func:`load_classifier`."""
        self._raw_fn = raw_fn
        self._obj = obj  # keeps the loaded object (and its variables) alive
        self.source = source
        self.input_size = int(input_size)
        self.feature_dim = None
        self.num_logits = None

    def __call__(self, images):
        """Resizes ``images`` (float32 ``[B, H, W, 3]`` in [-1, 1]) and runs the classifier.

        Returns:
          ``{"pool_3": float32 [B, F], "logits": float32 [B, K]}``.
        """
        images = resize_images(images, self.input_size)
        out = self._raw_fn(images)
        pool = tf.cast(out[POOL_KEY], tf.float32)
        logits = tf.cast(out[LOGITS_KEY], tf.float32)
        batch = tf.shape(images)[0]
        pool = tf.reshape(pool, tf.stack([batch, -1]))
        return {POOL_KEY: pool, LOGITS_KEY: logits}

    def _validate(self):
        """Runs one probe batch; raises :class:`ClassifierError` on a wrong interface."""
        probe = tf.zeros([2, self.input_size, self.input_size, 3], tf.float32)
        try:
            out = self._raw_fn(probe)
        except Exception as e:  # pylint: disable=broad-except
            raise ClassifierError(
                f"classifier {self.source!r} could not be called on a float32 image "
                f"batch of shape {probe.shape}: {type(e).__name__}: {e}") from e
        if not isinstance(out, dict):
            raise ClassifierError(
                f"classifier {self.source!r} returned {type(out).__name__}, expected a "
                f"dict with outputs {POOL_KEY!r} and {LOGITS_KEY!r}")
        found = {k: tuple(v.shape) for k, v in out.items() if hasattr(v, "shape")}
        missing = [k for k in (POOL_KEY, LOGITS_KEY) if k not in out]
        bad_rank = []
        if not missing:
            if len(out[LOGITS_KEY].shape) != 2:
                bad_rank.append(f"{LOGITS_KEY} must be [B, K]")
            pool_shape = out[POOL_KEY].shape
            if len(pool_shape) == 4 and tuple(pool_shape[1:3]) != (1, 1):
                bad_rank.append(f"{POOL_KEY} must be [B, F] or [B, 1, 1, F]")
            elif len(pool_shape) not in (2, 4):
                bad_rank.append(f"{POOL_KEY} must be [B, F] or [B, 1, 1, F]")
        if missing or bad_rank:
            what = (f"missing output(s) {missing}" if missing else "; ".join(bad_rank))
            raise ClassifierError(
                f"classifier {self.source!r} does not have the Inception interface "
                f"({what}); outputs found: {found}; expected {POOL_KEY!r} [B, F] "
                f"and {LOGITS_KEY!r} [B, K]")
        self.feature_dim = int(np.prod(out[POOL_KEY].shape[1:]))
        self.num_logits = int(out[LOGITS_KEY].shape[1])

    def __repr__(self):
        return (f"Classifier(source={self.source!r}, input_size={self.input_size}, "
                f"feature_dim={self.feature_dim}, num_logits={self.num_logits})")


def load_classifier(path=None):
    """Loads the evaluation classifier and checks its interface.

    Args:
      path: None for the TF-GAN Inception on TF-Hub (:data:`INCEPTION_TFHUB`),
        another TF-Hub handle (URL), or a local SavedModel / TF-Hub module
        directory (``--inception_path``).

    Returns:
      A validated :class:`Classifier`.

    Raises:
      FileNotFoundError: a local ``path`` does not exist.
      ClassifierError: it cannot be loaded, or it does not expose a callable
        returning ``pool_3`` and ``logits`` (the message names the path and
        the outputs found).
    """
    import tensorflow_hub as hub  # pylint: disable=import-outside-toplevel

    handle = INCEPTION_TFHUB if path is None else str(path)
    if not _is_remote_handle(handle):
        local = os.path.abspath(os.path.expanduser(handle.replace("file://", "", 1)))
        if not os.path.exists(local):
            raise FileNotFoundError(
                f"classifier path {handle!r} does not exist (--inception_path must be "
                f"a local SavedModel or TF-Hub module directory)")
        if not os.path.isdir(local) or not any(
                os.path.exists(os.path.join(local, f))
                for f in ("saved_model.pb", "saved_model.pbtxt")):
            contents = (sorted(os.listdir(local))[:10] if os.path.isdir(local)
                        else "not a directory")
            raise ClassifierError(
                f"classifier path {handle!r} is not a SavedModel / TF-Hub module "
                f"directory (no saved_model.pb; contents: {contents})")
        handle = local
    try:
        obj = hub.load(handle)
    except Exception as e:  # pylint: disable=broad-except
        hint = (" (no network access? copy the module and pass --inception_path)"
                if _is_remote_handle(handle) else "")
        raise ClassifierError(
            f"could not load classifier {handle!r}{hint}: {type(e).__name__}: {e}") from e

    signatures = dict(getattr(obj, "signatures", {}) or {})
    if callable(obj):
        raw_fn = obj
        spec = _input_spec_of(getattr(obj, "__call__", None))
    elif signatures:
        name = next((n for n in _SIGNATURE_PREFERENCE if n in signatures),
                    sorted(signatures)[0])
        sig = signatures[name]
        _, kwargs = sig.structured_input_signature
        if len(kwargs) != 1:
            raise ClassifierError(
                f"classifier {handle!r}: signature {name!r} must take one image input, "
                f"it takes {sorted(kwargs)}")
        input_name = next(iter(kwargs))
        spec = kwargs[input_name]

        def raw_fn(images, _sig=sig, _name=input_name):
            return _sig(**{_name: images})
    else:
        raise ClassifierError(
            f"classifier {handle!r} is neither callable nor has a signature; "
            f"attributes: {sorted(a for a in dir(obj) if not a.startswith('_'))}")

    if hasattr(obj, "input_size"):
        input_size = _to_int(obj.input_size)
    elif (spec is not None and spec.shape.rank == 4 and spec.shape[1] is not None
          and spec.shape[1] == spec.shape[2]):
        input_size = int(spec.shape[1])
    else:
        input_size = INCEPTION_INPUT_SIZE
    classifier = Classifier(raw_fn, handle, input_size, obj=obj)
    classifier._validate()  # pylint: disable=protected-access
    log.info("Loaded %r", classifier)
    return classifier


# ---------------------------------------------------------------------------
# Metrics (TF-GAN's formulas through the loader).
# ---------------------------------------------------------------------------

def inception_score(logits):
    """Inception score of ``logits`` [N, K], one split (as the release).

    ``tfgan.eval.classifier_score_from_logits``; computed in float64 inside.
    """
    return float(tfgan.classifier_score_from_logits(tf.convert_to_tensor(logits)))


def frechet_distance(real, generated):
    """FID between two feature sets, each activations ``[N, F]`` or
    :class:`sagan_tf.evaluation.frechet.Moments` (e.g. cached real moments).

    TF-GAN's formula in float64 (:func:`sagan_tf.evaluation.frechet.frechet_distance`):
    two dense covariances meet in TF-GAN's ``trace_sqrt_product``; a set of
    ``N <= F`` rows enters through its exact low-rank form.
    """
    return frechet.frechet_distance(_moments(real), _moments(generated))


def _moments(features):
    """``features`` as :class:`~sagan_tf.evaluation.frechet.Moments` (unchanged if already)."""
    if isinstance(features, frechet.Moments):
        return features
    return frechet.Moments.of_activations(np.asarray(features))


def kernel_distance(real_activations, generated_activations, max_block_size=1024):
    """KID (unbiased, block estimator) between two activation sets, in float64.

    ``tfgan.eval.kernel_classifier_distance_from_activations``. Both sets must
    be in random order (they are: shuffled records, random labels).
    """
    return float(tfgan.kernel_classifier_distance_from_activations(
        tf.convert_to_tensor(real_activations), tf.convert_to_tensor(generated_activations),
        max_block_size=max_block_size, dtype=tf.float64))


def intra_fid(real_activations, real_labels, generated_activations, generated_labels,
              num_classes):
    """Intra-FID: the mean over classes of the FID between the generated and the
    real activations of that class (Miyato & Koyama 2018; the SAGAN paper's Table 2).

    Args:
      real_activations, generated_activations: ``[N, F]`` / ``[M, F]``.
      real_labels, generated_labels: int ``[N]`` / ``[M]``, the class of each row
        (for generated rows: the class G was conditioned on).
      num_classes: classes ``0..num_classes-1`` are considered.

    Returns:
      ``(mean, per_class, skipped)``: the mean FID over the classes that have at
      least 2 real and 2 generated rows (None if there is none), ``{class: FID}``
      of those classes, and ``{class: (real rows, generated rows)}`` of the
      classes left out for having fewer. Each FID is :func:`frechet_distance`:
      with fewer rows than features (e.g. 50 per class, 2048 features) the
      exact low-rank trace term, an ``n x n`` SVD per class.
    """
    real_by_class = _rows_by_class(real_activations, real_labels, num_classes)
    generated_by_class = _rows_by_class(generated_activations, generated_labels, num_classes)
    classes, skipped = [], {}
    for c, (real_c, gen_c) in enumerate(zip(real_by_class, generated_by_class)):
        if len(real_c) < 2 or len(gen_c) < 2:
            skipped[c] = (len(real_c), len(gen_c))
        else:
            classes.append(c)
    distances = frechet.frechet_distances([real_by_class[c] for c in classes],
                                          [generated_by_class[c] for c in classes])
    per_class = dict(zip(classes, distances))
    mean = float(np.mean(distances)) if per_class else None
    return mean, per_class, skipped


def _rows_by_class(activations, labels, num_classes):
    """``[rows of class c for c in range(num_classes)]`` (views of one sorted copy)."""
    labels = np.asarray(labels).reshape(-1)
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=int(num_classes))[:int(num_classes)]
    rows = np.asarray(activations)[order]
    return np.split(rows, np.cumsum(counts))[:int(num_classes)]


def class_accuracy(logits, labels):
    """Fraction of rows whose argmax of ``logits [N, K]`` is ``labels [N]``.

    For generated samples: how often the classifier recognises the class G was
    conditioned on. Meaningful only when the classifier's K classes are the
    data's classes (the demo classifier; not the 1008-way Inception on ImageNet).
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels).reshape(-1)
    if len(logits) != len(labels) or not len(labels):
        raise ValueError(f"need as many labels as logits rows, got {len(labels)} and "
                         f"{len(logits)}")
    return float(np.mean(np.argmax(logits, axis=1) == labels))


# ---------------------------------------------------------------------------
# Bounded-memory accumulation.
# ---------------------------------------------------------------------------

class ActivationAccumulator:
    """Collects exactly ``capacity`` rows of ``pool_3`` (and optionally logits).

    The arrays are preallocated (float32) at the first :meth:`add`, when the
    feature sizes are known, so memory is bounded by ``capacity x (F + K) x 4``
    bytes whatever the batch size; a last batch that overflows is truncated.
    """

    def __init__(self, capacity, keep_logits=True):
        """``capacity``: number of rows to keep; ``keep_logits``: also store logits."""
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self.keep_logits = keep_logits
        self.count = 0
        self.pool = None
        self.logits = None

    @property
    def full(self):
        """True once ``capacity`` rows have been collected."""
        return self.count >= self.capacity

    def add(self, pool, logits=None):
        """Appends a batch; returns the number of rows actually stored."""
        pool = np.asarray(pool, np.float32)
        pool = pool.reshape(pool.shape[0], -1)
        if self.pool is None:
            self.pool = np.empty((self.capacity, pool.shape[1]), np.float32)
        n = min(pool.shape[0], self.capacity - self.count)
        if n <= 0:
            return 0
        self.pool[self.count:self.count + n] = pool[:n]
        if self.keep_logits:
            if logits is None:
                raise ValueError("keep_logits=True but no logits given")
            logits = np.asarray(logits, np.float32)
            if self.logits is None:
                self.logits = np.empty((self.capacity, logits.shape[1]), np.float32)
            self.logits[self.count:self.count + n] = logits[:n]
        self.count += n
        return n

    def result(self):
        """Returns ``(pool [count, F], logits [count, K] or None)``."""
        if self.count == 0:
            raise ValueError("no activations were added")
        logits = self.logits[:self.count] if self.keep_logits else None
        return self.pool[:self.count], logits
