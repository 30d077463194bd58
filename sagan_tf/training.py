"""The SAGAN training loop (SPEC §6, §9): one module, one loop.

Layout (in the spirit of NVlabs stylegan2-ada's ``training_loop.py``):

* :class:`TrainConfig` -- every flag of the release's ``train_imagenet.py``
  (same names and defaults) plus a few of this port's; ``validate()`` names
  the offending flag; written to ``<logdir>/config.json``.
* :class:`Trainer` -- the state (G, D, two Adam optimizers, the global step,
  the random generator) in one ``tf.train.Checkpoint`` and the compiled
  training iteration ``train_step``.
* :func:`train` -- the loop: restore, step, log, summarise, checkpoint,
  write a sample grid at the end.

One training iteration (SPEC §6) is, per replica::

    repeat g_step times:                       # G step
        z, y' fresh;  fake = G(z, y', training=True)        # G's BN stats + u updated
        g_loss = L_G(D(fake, y', update_sn=False))          # D's u untouched
        Adam_G on G.trainable_variables
    repeat d_step times:                       # D step
        real batch (x, y), z, y' fresh
        fake = G(z, y', training=True)                      # G's BN stats + u updated again
        logits = D(concat(x, fake), concat(y, y'), update_sn=True)   # D's u updated once
        d_loss = L_D(logits[:B], logits[B:])
        Adam_D on D.trainable_variables
    step += 1

Determinism: all random inputs of an iteration (z and fake labels of every G
and D step) are drawn *outside* the compiled step from the checkpointed
``tf.random.Generator``, at the global batch size, and split across replicas
by replica id. One iteration is therefore a pure function of (state, real
batches, noise), and a run that is stopped and resumed draws exactly the
noise an uninterrupted run would have drawn.
"""
import dataclasses
import datetime
import json
import math
import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from sagan_tf import losses
from sagan_tf.distribute import STRATEGY_KINDS, make_strategy
from sagan_tf.networks import ARCHS, Discriminator, Generator

__all__ = ["ConfigError", "TrainConfig", "Trainer", "train", "load_config", "save_config",
           "write_scalar", "write_image", "CONFIG_FILENAME", "SUMMARY_SCALARS",
           "SUMMARY_IMAGES"]

CONFIG_FILENAME = "config.json"
#: Scalar summary tags written every ``save_summaries_steps`` (plus one
#: ``sigma_ratio/<variable path>`` per attention layer).
SUMMARY_SCALARS = ("d_loss", "d_loss_real", "d_loss_fake", "g_loss", "logit_real",
                   "logit_fake", "d_learning_rate", "g_learning_rate",
                   "steps_per_second", "images_per_second")
#: Image summary tags (TF-GAN ``image_grid`` of up to 16 images).
SUMMARY_IMAGES = ("input_images", "generated_images")
#: Config fields that fix the shapes of the checkpointed variables: a resumed
#: run must agree with the stored config.json on these.
_ARCHITECTURE_FIELDS = ("image_size", "z_dim", "gf_dim", "df_dim", "number_classes",
                        "generator_type", "discriminator_type")


# ----------------------------------------------------------------------------
# Configuration.

class ConfigError(ValueError):
    """A bad flag or a flag that does not fit the data / logdir; names the flag."""


@dataclasses.dataclass
class TrainConfig:
    """Training flags. Names and defaults of the release's ``train_imagenet.py``
    (SPEC §9) come first, then this port's additions."""
    # --- The release's flags (SPEC §9).
    data_dir: str = None                     # directory of *.tfrecords (SPEC §7)
    checkpoint_dir: str = "checkpoint"       # logdir = <checkpoint_dir>/imagenet_<batch_size>
    batch_size: int = 64                     # per replica ("per GPU tower")
    num_towers: int = 4                      # informational: replicas come from the strategy
    shuffle_buffer_size: int = 100000
    save_summaries_steps: int = 200          # 0 disables summaries
    save_checkpoint_secs: float = 1200       # 0: checkpoint only at the end
    d_step: int = 1                          # D steps per iteration
    g_step: int = 1                          # G steps per iteration
    discriminator_learning_rate: float = 4e-4
    generator_learning_rate: float = 1e-4
    beta1: float = 0.0
    beta2: float = 0.999
    image_size: int = 128
    z_dim: int = 128
    gf_dim: int = 64
    df_dim: int = 64
    number_classes: int = 1000
    loss_type: str = "hinge_loss"
    generator_type: str = "test"
    discriminator_type: str = "test"
    # --- This port's additions.
    max_steps: int = 2_000_000               # the release stopped at 2M steps
    seed: int = None                         # None: drawn at the first start, stored in config.json
    strategy: str = "mirrored"               # see sagan_tf.distribute.STRATEGY_KINDS
    num_cpu_replicas: int = 0                # CPU-only: logical CPU replicas for "mirrored"
    tpu: str = None                          # TPU name/address for strategy="tpu"
    shuffle: bool = True                     # False: records in file order (reproducible runs)
    skip_corrupt_records: bool = False
    log_every_steps: int = 100               # console progress line; 0 disables
    keep_checkpoint_max: int = 5

    @property
    def logdir(self):
        """``<checkpoint_dir>/imagenet_<batch_size>`` (the release's layout)."""
        return os.path.join(self.checkpoint_dir, f"imagenet_{self.batch_size}")

    def validate(self):
        """Checks every flag; raises :class:`ConfigError` (a ``ValueError``) naming
        the offending one.

        Does not touch the file system (see :func:`train` for ``data_dir``).
        """
        def need(ok, flag, what):
            if not ok:
                raise ConfigError(f"--{flag} {what}, got {getattr(self, flag)!r}")

        def is_int(x):
            return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

        for flag in ("batch_size", "d_step", "g_step", "image_size", "z_dim", "gf_dim",
                     "df_dim", "number_classes", "shuffle_buffer_size", "keep_checkpoint_max"):
            need(is_int(getattr(self, flag)) and getattr(self, flag) >= 1, flag,
                 "must be an integer >= 1")
        for flag in ("num_towers", "save_summaries_steps", "max_steps", "num_cpu_replicas",
                     "log_every_steps"):
            need(is_int(getattr(self, flag)) and getattr(self, flag) >= 0, flag,
                 "must be an integer >= 0")
        need(self.seed is None or is_int(self.seed), "seed", "must be an integer or None")
        need(isinstance(self.save_checkpoint_secs, (int, float)) and
             self.save_checkpoint_secs >= 0, "save_checkpoint_secs", "must be >= 0")
        for flag in ("discriminator_learning_rate", "generator_learning_rate"):
            v = getattr(self, flag)
            need(isinstance(v, (int, float)) and math.isfinite(v) and v > 0, flag,
                 "must be a finite number > 0")
        for flag in ("beta1", "beta2"):
            v = getattr(self, flag)
            need(isinstance(v, (int, float)) and 0 <= v < 1, flag, "must be in [0, 1)")
        need(self.loss_type in losses.LOSS_TYPES, "loss_type",
             f"must be one of {losses.LOSS_TYPES}")
        need(self.generator_type in ARCHS, "generator_type", f"must be one of {ARCHS}")
        need(self.discriminator_type in ARCHS, "discriminator_type", f"must be one of {ARCHS}")
        n = math.log2(self.image_size)
        need(self.image_size >= 32 and n == int(n), "image_size",
             "must be a power of two >= 32 (128 is the release)")
        need(self.strategy in STRATEGY_KINDS, "strategy", f"must be one of {STRATEGY_KINDS}")
        need(self.num_cpu_replicas <= 1 or self.strategy == "mirrored", "num_cpu_replicas",
             "only applies to --strategy mirrored")
        need(isinstance(self.checkpoint_dir, str) and self.checkpoint_dir != "",
             "checkpoint_dir", "must be a non-empty path")
        need(self.data_dir is None or isinstance(self.data_dir, str), "data_dir",
             "must be a path")
        return self

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        """Builds a config from a dict; unknown keys are ignored (newer/older files)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def save_config(config, logdir):
    """Writes ``<logdir>/config.json`` atomically (temp file + rename).

    Atomic so that an evaluation job polling the directory never reads half a
    file.
    """
    tf.io.gfile.makedirs(logdir)
    path = os.path.join(logdir, CONFIG_FILENAME)
    text = json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n"
    if "://" in logdir:  # gs:// etc.: no local rename; gfile writes whole objects.
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(text)
        return path
    fd, tmp = tempfile.mkstemp(prefix=".config.", suffix=".json.tmp", dir=logdir)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def load_config(logdir):
    """Reads ``<logdir>/config.json`` into a :class:`TrainConfig`.

    Raises:
      FileNotFoundError: if there is no config.json in ``logdir``.
    """
    path = os.path.join(logdir, CONFIG_FILENAME)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"no {CONFIG_FILENAME} in {logdir!r} (not a training logdir?)")
    with tf.io.gfile.GFile(path, "r") as f:
        return TrainConfig.from_dict(json.load(f))


# ----------------------------------------------------------------------------
# The trainer: state and one compiled training iteration.

def _dense(grads):
    """Converts ``IndexedSlices`` gradients to dense tensors.

    Class-indexed gathers (conditional-BN gamma/beta, the projection
    embedding) give ``IndexedSlices`` with one slice per example, so a class
    that occurs twice in the batch appears twice. TF1's Adam (the release)
    summed duplicate indices first, i.e. applied the dense gradient. Keras 3's
    Adam does not: it squares the slices one by one for the second moment
    (sum of squares instead of square of the sum), a different update whenever
    a label repeats, which at 64 images of 1000 classes is nearly every batch.
    Dense gradients restore the release's update; they also avoid one sparse
    all-reduce branch per such variable under a strategy. The tables have at
    most ``number_classes`` rows, so this costs little.
    """
    return [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]


class Trainer:
    """Networks, optimisers, step counter and random generator of one run.

    Everything checkpointed lives in ``self.checkpoint`` (children
    ``generator, discriminator, g_optimizer, d_optimizer, step, rng``; the
    layout of docs/ARCHITECTURE.md). Constructing a Trainer does no file I/O.

    Args:
      config: a :class:`TrainConfig`; ``config.seed`` must be set (``train``
        fills it in).
      strategy: the ``tf.distribute.Strategy``; default: ``make_strategy`` from
        the config.
    """

    def __init__(self, config, strategy=None):
        config.validate()
        if config.seed is None:
            raise ValueError("Trainer needs config.seed (train() draws one when it is None)")
        self.config = config
        self.strategy = strategy or make_strategy(config.strategy, config.num_cpu_replicas,
                                                  config.tpu)
        self.num_replicas = self.strategy.num_replicas_in_sync
        self.global_batch_size = config.batch_size * self.num_replicas

        # Same seed -> same initial weights (Keras initialisers draw from the
        # global seed that set_random_seed resets).
        keras.utils.set_random_seed(int(config.seed))
        with self.strategy.scope():
            self.generator = Generator(
                arch=config.generator_type, image_size=config.image_size, z_dim=config.z_dim,
                gf_dim=config.gf_dim, num_classes=config.number_classes)
            self.discriminator = Discriminator(
                arch=config.discriminator_type, image_size=config.image_size,
                df_dim=config.df_dim, num_classes=config.number_classes)
            self.generator.ensure_built()
            self.discriminator.ensure_built()
            # epsilon 1e-8 is TF1's AdamOptimizer default (Keras' is 1e-7).
            self.g_optimizer = keras.optimizers.Adam(
                config.generator_learning_rate, beta_1=config.beta1, beta_2=config.beta2,
                epsilon=1e-8, name="g_optimizer")
            self.d_optimizer = keras.optimizers.Adam(
                config.discriminator_learning_rate, beta_1=config.beta1, beta_2=config.beta2,
                epsilon=1e-8, name="d_optimizer")
            # Slots exist before the first step, so a restore fills them
            # directly and the compiled step never creates variables.
            self.g_optimizer.build(self.generator.trainable_variables)
            self.d_optimizer.build(self.discriminator.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        # Outside the scope: one stream on the host, sampled in cross-replica
        # context at the global batch size (every worker of a multi-worker
        # run holds an identical copy and draws identical numbers).
        self.rng = tf.random.Generator.from_seed(int(config.seed))
        self.checkpoint = tf.train.Checkpoint(
            generator=self.generator, discriminator=self.discriminator,
            g_optimizer=self.g_optimizer, d_optimizer=self.d_optimizer,
            step=self.step, rng=self.rng)
        self._compiled_step = tf.function(self._step, autograph=False)
        self._compiled_sample = None
        self.sigma_ratio_variables = [
            v for v in self.generator.variables + self.discriminator.variables
            if v.path.endswith("sigma_ratio")]

    # -- Inputs -------------------------------------------------------------

    def sample_noise(self):
        """Draws the random inputs of one iteration at the global batch size.

        Returns ``{"g": [(z, y_fake)] * g_step, "d": [(z, y_fake)] * d_step}``
        with ``z [global_batch, z_dim]`` ~ N(0, 1) and ``y_fake
        [global_batch]`` int32 uniform in ``[0, number_classes)``; drawn in
        this order from ``self.rng`` (G steps first, as they run).
        """
        cfg, n = self.config, self.global_batch_size

        def draw():
            z = self.rng.normal([n, cfg.z_dim], dtype=tf.float32)
            y = self.rng.uniform([n], minval=0, maxval=cfg.number_classes, dtype=tf.int32)
            return z, y
        return {"g": [draw() for _ in range(cfg.g_step)],
                "d": [draw() for _ in range(cfg.d_step)]}

    def distribute(self, global_values):
        """Splits a nest of global-batch tensors across replicas along axis 0.

        Replica ``r`` gets rows ``[r*B, (r+1)*B)``, ``B = batch_size``: exact
        and deterministic, for any strategy (``replica_id_in_sync_group`` is
        the global replica id, also across workers). With mirrored strategies
        each slice is copied onto its replica's device, where the dataset's
        batches also live: the step then sees one input placement, whatever
        the inputs' origin (else a new placement re-optimises the graph).
        """
        b = self.config.batch_size
        devices = None
        if isinstance(self.strategy, (tf.distribute.MirroredStrategy,
                                      tf.distribute.MultiWorkerMirroredStrategy)):
            devices = self.strategy.extended.worker_devices  # this worker's replicas

        def value_fn(ctx):
            r = ctx.replica_id_in_sync_group
            if devices is None:
                return tf.nest.map_structure(lambda t: t[r * b:(r + 1) * b], global_values)
            with tf.device(devices[r % len(devices)]):
                return tf.nest.map_structure(lambda t: tf.identity(t[r * b:(r + 1) * b]),
                                             global_values)
        return self.strategy.experimental_distribute_values_from_function(value_fn)

    def make_inputs(self, real_batches, noise):
        """Assembles the distributed inputs of one iteration.

        Args:
          real_batches: ``d_step`` per-replica ``(images, labels)`` batches
            (e.g. from ``next()`` on a distributed dataset iterator).
          noise: the distributed result of ``distribute(sample_noise())``.

        Returns:
          ``{"g": [(z, y_fake)] * g_step, "d": [(images, labels, z, y_fake)] * d_step}``.
        """
        if len(real_batches) != self.config.d_step:
            raise ValueError(f"need d_step={self.config.d_step} real batches, "
                             f"got {len(real_batches)}")
        return {"g": list(noise["g"]),
                "d": [(x, y, z, yf) for (x, y), (z, yf) in zip(real_batches, noise["d"])]}

    def make_inputs_from_global(self, images, labels, noise=None):
        """Hand-made inputs (tests, tools): global-batch tensors split over replicas.

        Args:
          images, labels: ``d_step`` lists (or one tensor when ``d_step == 1``)
            of global-batch real images ``[N, S, S, 3]`` and labels ``[N]``.
          noise: ``sample_noise()``-shaped global noise; default: drawn from ``self.rng``.
        """
        if not isinstance(images, (list, tuple)):
            images, labels = [images], [labels]
        noise = self.sample_noise() if noise is None else noise
        real = [(tf.convert_to_tensor(x, tf.float32), tf.cast(y, tf.int32))
                for x, y in zip(images, labels)]
        dist = self.distribute({"real": real, "noise": noise})
        return self.make_inputs(list(dist["real"]), dist["noise"])

    # -- The training iteration ----------------------------------------------

    def _replica_step(self, inputs):
        """One SPEC §6 iteration on one replica. Returns per-replica metrics."""
        cfg = self.config
        G, D = self.generator, self.discriminator
        # The optimisers sum gradients over replicas (all-reduce SUM); scaling
        # each replica's loss by 1/num_replicas makes that sum the average of
        # the tower gradients, as the release did.
        scale = 1.0 / tf.distribute.get_replica_context().num_replicas_in_sync

        g_loss = None
        for z, y_fake in inputs["g"]:
            # The release's G step also drew (and read) a real batch, but the
            # generator loss does not depend on it; it is not drawn here.
            with tf.GradientTape() as tape:
                fake = G(z, y_fake, training=True)                     # G: BN stats, u updated
                logits_fake = D(fake, y_fake, update_sn=False)         # D: u untouched
                g_loss = losses.generator_loss(cfg.loss_type, logits_fake)
                scaled = g_loss * scale
            grads = _dense(tape.gradient(scaled, G.trainable_variables))
            self.g_optimizer.apply_gradients(zip(grads, G.trainable_variables))

        for real_images, real_labels, z, y_fake in inputs["d"]:
            # G runs in training mode again (release): its BN moving stats and
            # u are updated a second time in this iteration. No gradient to G.
            fake = tf.stop_gradient(G(z, y_fake, training=True))
            n_real = tf.shape(real_images)[0]
            with tf.GradientTape() as tape:
                # One D call on real+fake: D has no batch-dependent layer, so
                # this equals D(real) (updating u) followed by D(fake) with the
                # same normalised weights, the release's behaviour.
                logits = D(tf.concat([real_images, fake], 0),
                           tf.concat([tf.cast(real_labels, tf.int32), y_fake], 0),
                           update_sn=True)
                logits_real, logits_fake = logits[:n_real], logits[n_real:]
                d_loss, d_loss_real, d_loss_fake = losses.discriminator_loss(
                    cfg.loss_type, logits_real, logits_fake)
                scaled = d_loss * scale
            grads = _dense(tape.gradient(scaled, D.trainable_variables))
            self.d_optimizer.apply_gradients(zip(grads, D.trainable_variables))

        metrics = {"d_loss": d_loss, "d_loss_real": d_loss_real, "d_loss_fake": d_loss_fake,
                   "g_loss": g_loss, "logit_real": tf.reduce_mean(logits_real),
                   "logit_fake": tf.reduce_mean(logits_fake)}
        return metrics, real_images, fake

    def _step(self, inputs):
        metrics, real, fake = self.strategy.run(self._replica_step, args=(inputs,))
        metrics = {k: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
                   for k, v in metrics.items()}
        self.step.assign_add(1)
        # Replica 0's images of the last D step, for the image summaries.
        return (metrics, self.strategy.experimental_local_results(real)[0],
                self.strategy.experimental_local_results(fake)[0])

    def train_step(self, inputs):
        """Runs one compiled training iteration on distributed ``inputs``.

        Returns ``(metrics, input_images, generated_images)``: scalar metrics
        averaged over replicas (``d_loss, d_loss_real, d_loss_fake, g_loss,
        logit_real, logit_fake``) and replica 0's real and generated images of
        the last D step.
        """
        return self._compiled_step(inputs)

    # -- Sampling ---------------------------------------------------------------

    def generate(self, z, labels):
        """Images ``G(z, labels)`` in eval mode (moving BN statistics), no state change.

        Uses ``update_sn=False``: the release's eval graph also wrote G's
        ``u``, but a preview grid should not perturb the training state.
        Eager in cross-replica context; on TPUs through ``strategy.run``.
        """
        z = tf.convert_to_tensor(z, tf.float32)
        labels = tf.cast(labels, tf.int32)
        if not isinstance(self.strategy, tf.distribute.TPUStrategy):
            return self.generator(z, labels, training=False, update_sn=False)
        if self._compiled_sample is None:
            def replica_fn(z, y):
                return self.generator(z, y, training=False, update_sn=False)

            @tf.function
            def sample(z, y):
                out = self.strategy.run(replica_fn, args=(z, y))
                return self.strategy.experimental_local_results(out)[0]
            self._compiled_sample = sample
        return self._compiled_sample(z, labels)

    def sample_grid(self, num_rows=10, num_cols=8, seed=0):
        """A uint8 ``[rows*S, cols*S, 3]`` grid: row ``i`` = class ``i`` (``i < num_rows``).

        Noise comes from its own ``seed`` (not from the training generator).
        """
        rows = min(num_rows, self.config.number_classes)
        z = np.random.default_rng(seed).standard_normal(
            (rows * num_cols, self.config.z_dim)).astype(np.float32)
        labels = np.repeat(np.arange(rows, dtype=np.int32), num_cols)
        images = self.generate(z, labels).numpy()
        s = self.config.image_size
        grid = images.reshape(rows, num_cols, s, s, 3).transpose(0, 2, 1, 3, 4)
        grid = grid.reshape(rows * s, num_cols * s, 3)
        return np.clip(np.round((grid + 1.0) * 127.5), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------
# Summaries.

def _grid_shape(n):
    """(rows, cols) with rows*cols == n, as square as possible."""
    rows = int(math.isqrt(n))
    while n % rows:
        rows -= 1
    return rows, n // rows


def _image_grid(images, image_size, max_images=16):
    """TF-GAN ``image_grid`` of up to 16 images ``[-1, 1]`` -> ``[1, H, W, 3]`` in [0, 1]."""
    from sagan_tf import tfgan  # lazy: loads TF-GAN's eval module on first use
    n = min(max_images, int(images.shape[0]))
    grid = tfgan.image_grid(images[:n], grid_shape=_grid_shape(n),
                            image_shape=(image_size, image_size), num_channels=3)
    return tf.clip_by_value((grid + 1.0) / 2.0, 0.0, 1.0)


# TensorBoard's summary ops (tf.summary.scalar / image) live in the
# `tensorboard` package, which TF 2.21 does not install. These two write the
# very same events (TensorBoard's v2 formats, identified by the plugin name in
# the metadata) with TF's own low-level `tf.summary.write`, so training needs
# no extra package; `tensorboard --logdir` shows them as usual.

def _plugin_metadata(plugin_name):
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin_name))


def write_scalar(name, value, step=None):
    """Writes a TensorBoard scalar (as ``tf.summary.scalar``) to the default writer."""
    return tf.summary.write(name, tf.cast(value, tf.float32), step=step,
                            metadata=_plugin_metadata("scalars"))


def write_image(name, images, step=None):
    """Writes TensorBoard images (as ``tf.summary.image``): float ``[k, H, W, C]`` in [0, 1]."""
    images = tf.image.convert_image_dtype(tf.convert_to_tensor(images), tf.uint8, saturate=True)
    encoded = tf.map_fn(tf.image.encode_png, images, fn_output_signature=tf.string)
    shape = tf.shape(images)
    # TensorBoard's image format: [width, height, png_0, png_1, ...] as strings.
    tensor = tf.concat([tf.stack([tf.as_string(shape[2]), tf.as_string(shape[1])]), encoded], 0)
    return tf.summary.write(name, tensor, step=step, metadata=_plugin_metadata("images"))


def _is_chief(strategy):
    """True on the worker that writes summaries, config and checkpoints."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in (resolver.cluster_spec().as_dict() or {})
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def _to_float(v):
    """A Python float from a scalar tensor or (Keras/mirrored) variable."""
    return float(np.asarray(tf.convert_to_tensor(getattr(v, "value", v))))


def _format_seconds(s):
    return str(datetime.timedelta(seconds=int(max(0, s))))


# ----------------------------------------------------------------------------
# Input pipeline.

def _distributed_iterator(config, strategy, start_step):
    """Iterator over per-replica ``(images, labels)`` batches, positioned for ``start_step``.

    With ``shuffle=False`` the stream is deterministic, so a resumed run skips
    the batches already consumed (``start_step * d_step`` per replica) and sees
    exactly what an uninterrupted run would have seen. (The skipped batches are
    read and decoded again, so resuming a long unshuffled run takes a while.)
    With shuffling, a resumed run reseeds the shuffles from ``(seed, step)``:
    it gets a fresh order rather than replaying the first one (a shuffle
    buffer of 100,000 images is not checkpointed).
    """
    from sagan_tf import data
    seed = int(config.seed)
    if start_step and config.shuffle:
        seed = int((seed * 1_000_003 + start_step) % (2 ** 31 - 1))
    kwargs = dict(shuffle=config.shuffle, shuffle_buffer_size=config.shuffle_buffer_size,
                  seed=seed, skip_corrupt_records=config.skip_corrupt_records)
    if config.shuffle or start_step == 0:
        return iter(data.distributed_dataset(strategy, config.data_dir, config.image_size,
                                             config.batch_size, config.number_classes,
                                             **kwargs))
    # Resumed unshuffled run: the same pipeline as data.distributed_dataset,
    # advanced past the consumed batches. Each input pipeline feeds its local
    # replicas round-robin, one batch each per D step.
    def dataset_fn(ctx):
        local_replicas = ctx.num_replicas_in_sync // ctx.num_input_pipelines
        ds = data.make_dataset(config.data_dir, config.image_size, config.batch_size,
                               config.number_classes, input_context=ctx,
                               check_image_size=False, **kwargs)
        return ds.skip(start_step * config.d_step * local_replicas)
    return iter(strategy.distribute_datasets_from_function(dataset_fn))


def _check_data_dir(config):
    """Fails early, naming the flag, when ``--data_dir`` cannot feed this config."""
    from sagan_tf import data
    if not config.data_dir:
        raise ConfigError("--data_dir is required (a directory of *.tfrecords files)")
    try:
        files = data.list_record_files(config.data_dir)
    except FileNotFoundError as e:
        raise ConfigError(f"--data_dir {config.data_dir!r}: {e}") from e
    stored = data.peek_image_size(files)
    if stored != config.image_size:
        raise ConfigError(f"--image_size is {config.image_size} but the records in --data_dir "
                         f"{config.data_dir!r} hold {stored}x{stored} images")


# ----------------------------------------------------------------------------
# The loop.

def train(config, strategy=None, log=print):
    """Trains until ``config.max_steps``; returns a summary dict.

    Restores the latest checkpoint of ``config.logdir`` if there is one
    ("Resumed from <path> at step N"), else starts from scratch. Writes
    ``config.json``, TensorBoard summaries every ``save_summaries_steps`` (and
    at the first step of a run), checkpoints every ``save_checkpoint_secs``
    and at the end, and ``samples_<step>.png`` at the end.

    Args:
      config: :class:`TrainConfig`.
      strategy: a ``tf.distribute.Strategy``; default: from the config.
      log: function printing one line (progress and status messages).

    Returns:
      dict with ``step``, ``steps_run``, ``logdir``, ``checkpoint``,
      ``samples``, ``resumed_from``, ``metrics`` (last step's, floats),
      ``wall_time_s``, ``train_time_s``, ``steps_per_second``,
      ``images_per_second``, ``num_replicas``, ``global_batch_size``.
    """
    t_start = time.time()
    config.validate()
    _check_data_dir(config)
    logdir = config.logdir
    if tf.io.gfile.exists(os.path.join(logdir, CONFIG_FILENAME)):
        stored = load_config(logdir)
        diff = [f"--{k}: stored {getattr(stored, k)!r}, given {getattr(config, k)!r}"
                for k in _ARCHITECTURE_FIELDS if getattr(stored, k) != getattr(config, k)]
        if diff and tf.train.latest_checkpoint(logdir):
            raise ConfigError(f"{logdir} holds a run with a different architecture "
                             f"({'; '.join(diff)}); use another --checkpoint_dir")
        if config.seed is None:
            config = dataclasses.replace(config, seed=stored.seed)
    if config.seed is None:
        config = dataclasses.replace(config, seed=int.from_bytes(os.urandom(4), "little") >> 1)

    trainer = Trainer(config, strategy)
    strategy = trainer.strategy
    chief = _is_chief(strategy)
    # Non-chief workers of a multi-worker run save into a scratch directory
    # (every worker must take part in saving) which is deleted afterwards.
    ckpt_dir = logdir if chief else os.path.join(
        logdir, f"worker_tmp_{strategy.cluster_resolver.task_id}")
    if chief:
        save_config(config, logdir)
    manager = tf.train.CheckpointManager(trainer.checkpoint, ckpt_dir,
                                         max_to_keep=config.keep_checkpoint_max)
    resumed_from = None
    if manager.latest_checkpoint:
        trainer.checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        resumed_from = manager.latest_checkpoint
        log(f"Resumed from {resumed_from} at step {int(trainer.step.numpy())}")
    else:
        log("Starting from scratch")
    start_step = int(trainer.step.numpy())
    log(f"Replicas: {trainer.num_replicas}; global batch = {config.batch_size} per replica "
        f"x {trainer.num_replicas} = {trainer.global_batch_size} "
        f"(--num_towers={config.num_towers} is informational)")

    writer = (tf.summary.create_file_writer(logdir) if chief and config.save_summaries_steps
              else tf.summary.create_noop_writer())
    iterator = _distributed_iterator(config, strategy, start_step)

    step = start_step
    metrics = {}
    last_ckpt_time = time.time()
    last_ckpt_step = start_step if resumed_from else None
    t_loop = time.time()
    t_first = None  # end of the first step: it includes tracing, excluded from throughput
    last_log = last_summary = (t_loop, step)
    while step < config.max_steps:
        real = [next(iterator) for _ in range(config.d_step)]
        noise = trainer.distribute(trainer.sample_noise())
        out, input_images, generated_images = trainer.train_step(trainer.make_inputs(real, noise))
        step += 1
        first = t_first is None
        summarise = config.save_summaries_steps and (first or step % config.save_summaries_steps == 0)
        show = config.log_every_steps and (first or step % config.log_every_steps == 0
                                           or step == config.max_steps)
        if summarise or show or step == config.max_steps:
            metrics = {k: float(v) for k, v in out.items()}  # waits for the step to finish
        now = time.time()
        if first:
            t_first = now

        if summarise:
            rate = (step - last_summary[1]) / max(now - last_summary[0], 1e-9)
            last_summary = (now, step)
            with writer.as_default(step=step):
                for k, v in metrics.items():
                    write_scalar(k, v)
                write_scalar("d_learning_rate", _to_float(trainer.d_optimizer.learning_rate))
                write_scalar("g_learning_rate", _to_float(trainer.g_optimizer.learning_rate))
                for v in trainer.sigma_ratio_variables:
                    write_scalar(f"sigma_ratio/{v.path}", _to_float(v))
                write_scalar("steps_per_second", rate)
                write_scalar("images_per_second", rate * trainer.global_batch_size)
                write_image("input_images", _image_grid(input_images, config.image_size))
                write_image("generated_images",
                            _image_grid(generated_images, config.image_size))
            writer.flush()

        if show:
            sec_per_step = (now - last_log[0]) / max(step - last_log[1], 1)
            last_log = (now, step)
            speed = (f"first step {sec_per_step:.1f} s (includes tracing)" if first else
                     f"{sec_per_step:.3f} s/step  "
                     f"{trainer.global_batch_size / sec_per_step:.1f} img/s  "
                     f"ETA {_format_seconds(sec_per_step * (config.max_steps - step))}")
            log(f"step {step}/{config.max_steps}  d_loss {metrics['d_loss']:.4f} "
                f"(real {metrics['d_loss_real']:.4f} fake {metrics['d_loss_fake']:.4f})  "
                f"g_loss {metrics['g_loss']:.4f}  logits {metrics['logit_real']:+.3f}/"
                f"{metrics['logit_fake']:+.3f}  {speed}")

        if (config.save_checkpoint_secs
                and now - last_ckpt_time >= config.save_checkpoint_secs):
            manager.save(checkpoint_number=step)
            last_ckpt_time, last_ckpt_step = time.time(), step
    t_end = time.time()

    if last_ckpt_step != step or manager.latest_checkpoint is None:
        manager.save(checkpoint_number=step)
    writer.flush()
    samples_path = None
    if chief:
        from PIL import Image
        samples_path = os.path.join(logdir, f"samples_{step}.png")
        grid = trainer.sample_grid()
        with tf.io.gfile.GFile(samples_path, "wb") as f:
            Image.fromarray(grid).save(f, format="PNG")
        log(f"Wrote {samples_path}")
    else:
        tf.io.gfile.rmtree(ckpt_dir)

    steps_run = step - start_step
    # Steady-state speed: steps after the first (which includes tracing).
    steady = (steps_run - 1) / (t_end - t_first) if steps_run > 1 and t_end > t_first else 0.0
    result = {
        "step": step, "steps_run": steps_run, "logdir": logdir,
        "checkpoint": manager.latest_checkpoint if chief else None,
        "samples": samples_path, "resumed_from": resumed_from, "metrics": metrics,
        "wall_time_s": time.time() - t_start, "train_time_s": t_end - t_loop,
        "first_step_s": (t_first - t_loop) if t_first else 0.0,
        "steps_per_second": steady,
        "images_per_second": steady * trainer.global_batch_size,
        "num_replicas": trainer.num_replicas,
        "global_batch_size": trainer.global_batch_size,
        "config": config, "trainer": trainer,
    }
    log(f"Done: step {step}, {steps_run} steps in {_format_seconds(t_end - t_loop)} "
        f"({result['images_per_second']:.1f} img/s after the first step); "
        f"checkpoint {result['checkpoint']}")
    return result
