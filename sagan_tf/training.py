"""The SAGAN training loop (NUMERICS §6, §9): one module, one loop.

Layout (in the spirit of NVlabs stylegan2-ada's ``training_loop.py``):

* :class:`TrainConfig` -- every flag of the release's ``train_imagenet.py``
  (same names and defaults) plus a few of this port's; ``validate()`` names
  the offending flag; written to ``<logdir>/config.json``.
* :class:`Trainer` -- the state (G, D, two Adam optimizers, the global step,
  the random generator) in one ``tf.train.Checkpoint`` and the compiled
  training iteration ``train_step``.
* :func:`train` -- the loop: restore, step, log, summarise, checkpoint,
  write a sample grid at the end.

One training iteration (NUMERICS §6) is, per replica::

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
import contextlib
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

from sagan_tf import layers, losses
from sagan_tf import checkpoints, rundir_lock
from sagan_tf.distribute import STRATEGY_KINDS, make_strategy
from sagan_tf.networks import (ARCHS, BLOCK_TYPES, Discriminator, Generator,
                               attention_placements, parse_resolutions)
from sagan_tf.optimizers import ReleaseAdam

__all__ = ["ConfigError", "TrainingError", "TrainingDivergedError", "TrainConfig", "Trainer", "train", "load_config", "save_config",
           "write_scalar", "write_image", "CONFIG_FILENAME", "SUMMARY_SCALARS",
           "SKIPPED_RECORDS_SCALAR",
           "SUMMARY_IMAGES"]

CONFIG_FILENAME = "config.json"
#: Accepted values of ``TrainConfig.mixed_precision`` (Keras global dtype policies).
MIXED_PRECISION_POLICIES = ("none", "mixed_bfloat16", "mixed_float16")
#: Scalar summary tags written every ``save_summaries_steps`` (plus one
#: ``sigma_ratio/<variable path>`` per attention layer).
SUMMARY_SCALARS = ("d_loss", "d_loss_real", "d_loss_fake", "g_loss", "logit_real",
                   "logit_fake", "d_learning_rate", "g_learning_rate",
                   "steps_per_second", "images_per_second")
#: Scalar summary of the records ``--skip_corrupt_records`` dropped so far
#: (written with the others when that flag is on).
SKIPPED_RECORDS_SCALAR = "skipped_corrupt_records"
#: Image summary tags (TF-GAN ``image_grid`` of up to 16 images).
SUMMARY_IMAGES = ("input_images", "generated_images")
#: Config fields that fix the shapes of the checkpointed variables: a resumed
#: run must agree with the stored config.json on these.
_ARCHITECTURE_FIELDS = ("image_size", "z_dim", "gf_dim", "df_dim", "number_classes",
                        "generator_type", "discriminator_type", "attention",
                        "g_attention_resolutions", "d_attention_resolutions", "g_spectral_norm")


# ----------------------------------------------------------------------------
# Configuration.

class ConfigError(ValueError):
    """A bad flag or a flag that does not fit the data / logdir; names the flag."""


class TrainingError(RuntimeError):
    """Training stopped on a fault (bad input data, a checkpoint that cannot be
    written or restored); the message says what and where. Checkpoints written
    before are intact."""


class TrainingDivergedError(TrainingError):
    """A non-finite loss or weight (``--on_nan=stop``); names the step and the loss."""


#: Values of ``--on_nan``.
ON_NAN_CHOICES = ("stop", "skip_step")
#: A D real-minus-fake mean logit gap above this is logged as a collapse sign.
COLLAPSE_LOGIT_GAP = 10.0


@dataclasses.dataclass
class TrainConfig:
    """Training flags. Names and defaults of the release's ``train_imagenet.py``
    (NUMERICS §9) come first, then this port's additions."""
    # --- The release's flags (NUMERICS §9).
    data_dir: str = None                     # directory of *.tfrecords (NUMERICS §7)
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
    save_checkpoint_steps: int = 0           # >0: also checkpoint every this many steps
    on_nan: str = "stop"                     # non-finite loss/weight: stop | skip_step
    sn_gradient: str = "release"             # SN backward: release (TF1 ref variables) | exact
    standing_stats_batches: int = 0          # >0: also an end-of-run grid with standing BN stats
    # --- Performance options (docs/PERFORMANCE.md); none changes what is computed.
    xla: bool = False                        # XLA-compile each replica's forward/backward passes
    mixed_precision: str = "none"            # none | mixed_bfloat16 | mixed_float16
    attention: str = "release"               # release (NUMERICS §3) | slide (paper-slide variant)
    attention_query_block_size: int = 0      # >0: memory-efficient attention, queries in blocks
    # --- The paper's ablations (docs/REPRODUCING.md); the defaults are the release.
    g_attention_resolutions: list = None     # None: generator_type's; [] none; [8, 16]: there
    d_attention_resolutions: list = None     # as above, for discriminator_type
    g_spectral_norm: bool = True             # False: plain layers in G ("SN on D only")

    def __post_init__(self):
        # Flags give "16,32" / "none" / ""; config.json a list or null: one form.
        for flag in ("g_attention_resolutions", "d_attention_resolutions"):
            value = getattr(self, flag)
            try:
                value = parse_resolutions(value)
            except ValueError as e:
                raise ConfigError(f"--{flag}: {e}") from None
            setattr(self, flag, None if value is None else list(value))

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
        need(isinstance(self.xla, bool), "xla", "must be a boolean")
        need(self.mixed_precision in MIXED_PRECISION_POLICIES, "mixed_precision",
             f"must be one of {MIXED_PRECISION_POLICIES}")
        need(self.attention in BLOCK_TYPES, "attention", f"must be one of {BLOCK_TYPES}")
        need(isinstance(self.g_spectral_norm, bool), "g_spectral_norm", "must be a boolean")
        for flag, network, arch in (
                ("g_attention_resolutions", "generator", self.generator_type),
                ("d_attention_resolutions", "discriminator", self.discriminator_type)):
            try:
                attention_placements(network, arch, self.image_size, getattr(self, flag),
                                     self.attention)
            except ValueError as e:
                raise ConfigError(f"--{flag} {getattr(self, flag)!r}: {e}") from None
        need(is_int(self.attention_query_block_size) and self.attention_query_block_size >= 0,
             "attention_query_block_size", "must be an integer >= 0 (0: one-shot attention)")
        need(isinstance(self.checkpoint_dir, str) and self.checkpoint_dir != "",
             "checkpoint_dir", "must be a non-empty path")
        need(self.data_dir is None or isinstance(self.data_dir, str), "data_dir",
             "must be a path")
        need(is_int(self.save_checkpoint_steps) and self.save_checkpoint_steps >= 0,
             "save_checkpoint_steps", "must be an integer >= 0")
        need(self.on_nan in ON_NAN_CHOICES, "on_nan", f"must be one of {ON_NAN_CHOICES}")
        need(self.sn_gradient in layers.SN_GRADIENTS, "sn_gradient",
             f"must be one of {layers.SN_GRADIENTS}")
        need(is_int(self.standing_stats_batches) and self.standing_stats_batches >= 0,
             "standing_stats_batches", "must be an integer >= 0 (0: moving averages only)")
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
        # mkstemp creates 0600; give the file the usual permissions (umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
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
        block = config.attention_query_block_size or None
        # Mixed precision: the layers take the global dtype policy when they
        # are created; it is restored afterwards (the models keep theirs).
        # Weights, spectral norm, BN moments, softmax, logits and losses stay
        # float32 (sagan_tf.layers / attention / networks).
        previous_policy = keras.config.dtype_policy()
        if config.mixed_precision != "none":
            keras.config.set_dtype_policy(config.mixed_precision)
        try:
            with self.strategy.scope():
                self.generator = Generator(
                    arch=config.generator_type, image_size=config.image_size,
                    z_dim=config.z_dim, gf_dim=config.gf_dim, num_classes=config.number_classes,
                    attention=config.attention, attention_query_block_size=block,
                    attention_resolutions=config.g_attention_resolutions,
                    spectral_norm=config.g_spectral_norm, sn_gradient=config.sn_gradient)
                self.discriminator = Discriminator(
                    arch=config.discriminator_type, image_size=config.image_size,
                    df_dim=config.df_dim, num_classes=config.number_classes,
                    attention=config.attention, attention_query_block_size=block,
                    attention_resolutions=config.d_attention_resolutions,
                    sn_gradient=config.sn_gradient)
                self.generator.ensure_built()
                self.discriminator.ensure_built()
        finally:
            keras.config.set_dtype_policy(previous_policy)
        with self.strategy.scope():
            # epsilon 1e-8 is TF1's AdamOptimizer default (Keras' is 1e-7);
            # ReleaseAdam runs TF1's fused Adam kernel (sagan_tf/optimizers.py).
            self.g_optimizer = ReleaseAdam(
                config.generator_learning_rate, beta_1=config.beta1, beta_2=config.beta2,
                epsilon=1e-8, name="g_optimizer")
            self.d_optimizer = ReleaseAdam(
                config.discriminator_learning_rate, beta_1=config.beta1, beta_2=config.beta2,
                epsilon=1e-8, name="d_optimizer")
            if config.mixed_precision == "mixed_float16":
                # Dynamic loss scaling; apply_gradients unscales and skips
                # non-finite steps.
                self.g_optimizer = keras.optimizers.LossScaleOptimizer(
                    self.g_optimizer, name="g_loss_scale_optimizer")
                self.d_optimizer = keras.optimizers.LossScaleOptimizer(
                    self.d_optimizer, name="d_loss_scale_optimizer")
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
        # XLA: each replica's G and D forward/backward passes are compiled
        # (see _run_pass); the variable writes and apply_gradients stay outside.
        self._jit_passes = {}
        self._deferred_variables = {}
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

    def _g_pass(self, z, y_fake):
        """Forward/backward of one G step: ``(g_loss, grads of G)``; writes G's state."""
        G, D = self.generator, self.discriminator
        # The optimisers sum gradients over replicas (all-reduce SUM); scaling
        # each replica's loss by 1/num_replicas makes that sum the average of
        # the tower gradients, as the release did.
        scale = 1.0 / tf.distribute.get_replica_context().num_replicas_in_sync
        # The release's G step also drew (and read) a real batch, but the
        # generator loss does not depend on it; it is not drawn here.
        with tf.GradientTape() as tape:
            fake = G(z, y_fake, training=True)                     # G: BN stats, u updated
            logits_fake = D(fake, y_fake, update_sn=False)         # D: u untouched
            g_loss = losses.generator_loss(self.config.loss_type, logits_fake)
            scaled = self._scale_loss(self.g_optimizer, g_loss * scale)
        return g_loss, _dense(tape.gradient(scaled, G.trainable_variables))

    def _d_pass(self, real_images, real_labels, z, y_fake):
        """Forward/backward of one D step: ``(outputs, grads of D)``; writes G's and D's state."""
        G, D = self.generator, self.discriminator
        scale = 1.0 / tf.distribute.get_replica_context().num_replicas_in_sync
        # G runs in training mode again (release): its BN moving stats and
        # u are updated a second time in this iteration. No gradient to G.
        fake = tf.stop_gradient(G(z, y_fake, training=True))
        n_real = tf.shape(real_images)[0]
        with tf.GradientTape() as tape:
            # One D call on real+fake: D has no batch-dependent layer, so
            # this equals D(real) (updating u) followed by D(fake) with the
            # same normalised weights, the release's behaviour.
            logits = D(tf.concat([tf.cast(real_images, fake.dtype), fake], 0),
                       tf.concat([tf.cast(real_labels, tf.int32), y_fake], 0),
                       update_sn=True)
            logits_real, logits_fake = logits[:n_real], logits[n_real:]
            d_loss, d_loss_real, d_loss_fake = losses.discriminator_loss(
                self.config.loss_type, logits_real, logits_fake)
            scaled = self._scale_loss(self.d_optimizer, d_loss * scale)
        grads = _dense(tape.gradient(scaled, D.trainable_variables))
        return (d_loss, d_loss_real, d_loss_fake, logits_real, logits_fake, fake), grads

    @staticmethod
    def _scale_loss(optimizer, loss):
        """Loss scaling of ``mixed_float16`` (``LossScaleOptimizer``); identity otherwise."""
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            return optimizer.scale_loss(loss)
        return loss

    def _run_pass(self, name, fn, *args):
        """Runs ``fn(*args)``; with ``config.xla``, as one XLA-compiled function.

        The compiled function computes the pass with every state write (SN
        ``u``, BN moving statistics) deferred (``layers.record_state_updates``)
        and returns the new values; they are assigned here, outside XLA, in
        replica context (a mirrored variable's assign needs a ``merge_call``,
        which XLA cannot compile). Same values, same order of reads and
        writes as the eager-assign path: within one pass each state variable
        is read once, before its only write.
        """
        if not self.config.xla:
            return fn(*args)
        if name not in self._jit_passes:
            def deferred(*a):
                with layers.record_state_updates() as updates:
                    out = fn(*a)
                self._deferred_variables[name] = [v for v, _ in updates]
                return out, [value for _, value in updates]
            self._jit_passes[name] = tf.function(deferred, jit_compile=True, autograph=False)
        out, values = self._jit_passes[name](*args)
        for var, value in zip(self._deferred_variables[name], values):
            var.assign(value)
        return out

    def _replica_step(self, inputs):
        """One NUMERICS §6 iteration on one replica. Returns per-replica metrics."""
        G, D = self.generator, self.discriminator
        g_loss = None
        for z, y_fake in inputs["g"]:
            g_loss, grads = self._run_pass("g", self._g_pass, z, y_fake)
            self.g_optimizer.apply_gradients(zip(grads, G.trainable_variables))

        for real_images, real_labels, z, y_fake in inputs["d"]:
            (d_loss, d_loss_real, d_loss_fake, logits_real, logits_fake, fake), grads = (
                self._run_pass("d", self._d_pass, real_images, real_labels, z, y_fake))
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

def _distributed_iterator(config, strategy, start_step, skipped_counter=None):
    """Iterator over per-replica ``(images, labels)`` batches, positioned for ``start_step``.

    With ``shuffle=False`` the stream is deterministic, so a resumed run starts
    past the batches already consumed (``start_step * d_step`` per replica) and
    sees exactly what an uninterrupted run would have seen. The start is
    computed from the files' record counts (``data.make_dataset``'s
    ``start_record``), so resuming at step 1M costs what resuming at step 1
    does.
    With shuffling, a resumed run reseeds the shuffles from ``(seed, step)``:
    it gets a fresh order rather than replaying the first one (a shuffle
    buffer of 100,000 images is not checkpointed).
    ``skipped_counter``: a :class:`sagan_tf.data.SkippedRecordCounter` counting
    what ``skip_corrupt_records`` drops.
    """
    from sagan_tf import data
    seed = int(config.seed)
    if start_step and config.shuffle:
        seed = int((seed * 1_000_003 + start_step) % (2 ** 31 - 1))
    kwargs = dict(shuffle=config.shuffle, shuffle_buffer_size=config.shuffle_buffer_size,
                  seed=seed, skip_corrupt_records=config.skip_corrupt_records,
                  skipped_counter=skipped_counter)
    if config.shuffle or start_step == 0:
        return iter(data.distributed_dataset(strategy, config.data_dir, config.image_size,
                                             config.batch_size, config.number_classes,
                                             **kwargs))
    # Resumed unshuffled run: the same pipeline as data.distributed_dataset,
    # advanced past the consumed batches. Each input pipeline feeds its local
    # replicas round-robin, one batch each per D step.
    def dataset_fn(ctx):
        local_replicas = ctx.num_replicas_in_sync // ctx.num_input_pipelines
        batches = start_step * config.d_step * local_replicas
        return data.make_dataset(config.data_dir, config.image_size, config.batch_size,
                                 config.number_classes, input_context=ctx,
                                 check_image_size=False,
                                 start_record=batches * config.batch_size, **kwargs)
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
# Faults: preemption signals, non-finite steps, unwritable logdir.
#
# Preemption: SIGTERM / SIGINT set a flag (the handler does nothing else);
# the loop checks it between iterations, saves a checkpoint of the current
# step and returns. This is simpler than
# tf.distribute.experimental.PreemptionCheckpointHandler (which needs a
# cluster resolver / coordination service and is built for multi-worker GPU
# and TPU jobs) and works the same on one CPU or 8 GPUs; an iteration in
# flight finishes first (seconds at most). A second signal restores the
# previous handler, so pressing Ctrl-C twice interrupts at once -- safe, as
# checkpoint files are written atomically (sagan_tf.checkpoints).

class _StopSignals:
    """Context manager: SIGTERM/SIGINT -> ``self.signal`` (its name) between steps."""

    SIGNALS = ("SIGTERM", "SIGINT")

    def __init__(self, log=print):
        self.signal = None
        self._log = log
        self._previous = {}

    def _handle(self, signum, frame):  # pylint: disable=unused-argument
        import signal
        name = signal.Signals(signum).name
        if self.signal is None:
            self.signal = name
            self._log(f"Received {name}: saving a checkpoint after the current step, then "
                      "exiting (send it again to exit at once)")
        for sig, handler in self._previous.items():  # a second signal acts as usual
            signal.signal(sig, handler)

    def __enter__(self):
        import signal
        import threading
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name)
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        import signal
        for sig, handler in self._previous.items():
            try:
                signal.signal(sig, handler)
            except (ValueError, TypeError):
                pass
        return False


#: Test seam (documented in docs/ARCHITECTURE.md): ``SAGAN_TF_TEST_NAN_AT_STEPS=6,9``
#: makes the noise of the first attempt at global steps 6 and 9 NaN, so those
#: iterations write NaN into G, D and the optimizer state like a real blow-up.
#: Unset in normal use.
NAN_FAULT_ENV = "SAGAN_TF_TEST_NAN_AT_STEPS"
#: ``--on_nan=skip_step`` gives up after this many consecutive bad iterations.
MAX_CONSECUTIVE_SKIPS = 10
_LOSS_NAMES = ("d_loss", "d_loss_real", "d_loss_fake", "g_loss")


def _state_variables(trainer):
    """``[(name, variable)]`` of everything the step changes (the checkpointed
    state less the random generator)."""
    out, seen = [], set()
    groups = (("", trainer.generator.variables), ("", trainer.discriminator.variables),
              ("g_optimizer/", trainer.g_optimizer.variables),
              ("d_optimizer/", trainer.d_optimizer.variables))
    for prefix, variables in groups:
        for v in variables:
            if id(v) not in seen:
                seen.add(id(v))
                out.append((prefix + getattr(v, "path", v.name), v))
    out.append(("step", trainer.step))
    return out


def _components(strategy, v):
    """Per-device copies of a (mirrored) variable; ``[v]`` where there are none."""
    inner = getattr(v, "value", v) if not isinstance(v, tf.Variable) else v
    if isinstance(strategy, (tf.distribute.MirroredStrategy,
                             tf.distribute.MultiWorkerMirroredStrategy)):
        return list(strategy.experimental_local_results(inner))
    return [inner]


class _NonFiniteGuard:
    """Checks each iteration for non-finite losses and weights; with
    ``skip_step`` also undoes a bad iteration exactly.

    Exact undo: before every iteration all state variables (G and D weights,
    spectral-norm ``u``, batch-norm moving statistics, both optimizers' slots
    and iteration counters, the global step) are copied on-device into shadow
    variables, per replica copy; a bad iteration is undone by copying them
    back. That costs one extra copy of the state in device memory and one
    device-to-device copy per iteration (a few ms for the release's 128x128
    networks on a GPU; nothing when ``--on_nan=stop``). Checking gradients
    before applying them would not be exact: the forward passes already wrote
    the ``u`` vectors and BN statistics. The random generator and the input
    iterator are *not* rewound: the retried iteration draws fresh noise and a
    fresh batch (the same inputs would blow up again).
    """

    def __init__(self, trainer, on_nan):
        self.trainer, self.on_nan = trainer, on_nan
        strategy = trainer.strategy
        self.named = [(name, c) for name, v in _state_variables(trainer)
                      for c in _components(strategy, v)]
        floats = [c for _, c in self.named if c.dtype.is_floating]

        def all_finite(losses):
            checks = [tf.reduce_all(tf.math.is_finite(x)) for x in losses]
            checks += [tf.reduce_all(tf.math.is_finite(c.read_value())) for c in floats]
            return tf.reduce_all(tf.stack(checks))
        self._all_finite = tf.function(all_finite, autograph=False)
        self._shadows = None
        if on_nan == "skip_step":
            self._shadows = []
            for _, c in self.named:
                with tf.device(c.device):
                    self._shadows.append(tf.Variable(tf.zeros(c.shape, c.dtype),
                                                     trainable=False, name="shadow"))
            pairs = list(zip([c for _, c in self.named], self._shadows))

            def snapshot():
                for c, s in pairs:
                    s.assign(c.read_value())
                return tf.constant(True)

            def undo():
                for c, s in pairs:
                    c.assign(s.read_value())
                return tf.constant(True)
            self._snapshot = tf.function(snapshot, autograph=False)
            self._undo = tf.function(undo, autograph=False)
        self._inject = {int(x) for x in os.environ.get(NAN_FAULT_ENV, "").split(",")
                        if x.strip().isdigit()}

    def noise(self, noise, step):
        """The test seam: NaN noise for the first attempt at ``step`` if requested."""
        if step not in self._inject:
            return noise
        self._inject.discard(step)
        nan = tf.constant(float("nan"))
        return {"g": [(z * nan, y) for z, y in noise["g"]], "d": list(noise["d"])}

    def before_step(self):
        if self._shadows is not None:
            self._snapshot()

    def check(self, out):
        """None if the iteration's losses and the new state are finite, else a
        description naming the non-finite losses (or the first bad variable)."""
        losses = [out[k] for k in _LOSS_NAMES if k in out]
        if bool(self._all_finite(losses)):
            return None
        bad = [f"{k}={float(out[k])}" for k in _LOSS_NAMES
               if k in out and not math.isfinite(float(out[k]))]
        if bad:
            return "non-finite " + ", ".join(bad)
        for name, c in self.named:
            if c.dtype.is_floating and not bool(tf.reduce_all(tf.math.is_finite(c))):
                return f"non-finite weight {name} (the losses were finite)"
        return "non-finite values"

    def undo(self):
        self._undo()


def _check_logdir_writable(logdir):
    """Fails early, naming the directory, when checkpoints cannot be written there."""
    try:
        tf.io.gfile.makedirs(logdir)
        if "://" not in logdir:
            fd, probe = tempfile.mkstemp(prefix=".write_test.", dir=logdir)
            os.close(fd)
            os.remove(probe)
    except (OSError, tf.errors.OpError) as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--checkpoint_dir: cannot write checkpoints to {logdir}: "
                          f"{detail}") from e


def _first_line(e):
    text = str(getattr(e, "message", None) or e).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("[[") and "Traceback" not in line:
            return line
    return type(e).__name__


# ----------------------------------------------------------------------------
# The loop.

def train(config, strategy=None, log=print):
    """Trains until ``config.max_steps``; returns a summary dict.

    Restores the newest complete checkpoint of ``config.logdir`` if there is
    one ("Resumed from <path> at step N"; an incomplete or unreadable newer one
    is reported and skipped, see :func:`sagan_tf.checkpoints.restore_newest`),
    else starts from scratch. Writes ``config.json``, TensorBoard summaries
    every ``save_summaries_steps`` (and at the first step of a run),
    checkpoints every ``save_checkpoint_secs`` / ``save_checkpoint_steps`` and
    at the end, and ``samples_<step>.png`` at the end (plus
    ``samples_<step>_standing_stats.png`` with ``standing_stats_batches``).
    The chief holds the run directory's lock (:mod:`sagan_tf.rundir_lock`)
    from before it writes anything until it returns; a live holder makes it
    raise :class:`TrainingError` naming that holder (host, PID, since when).

    Faults: SIGTERM/SIGINT (in the main thread) end the run after the current
    iteration with a checkpoint of that step (``result["stopped_by"]``). A
    non-finite loss or weight raises :class:`TrainingDivergedError` without
    saving (``on_nan="stop"``) or undoes that iteration exactly
    (``"skip_step"``). Unreadable input records and failed checkpoint saves
    raise :class:`TrainingError` (after saving the last good state, where
    possible); a checkpoint of another architecture, an unwritable logdir or
    a bad flag raise :class:`ConfigError`.

    Args:
      config: :class:`TrainConfig`.
      strategy: a ``tf.distribute.Strategy``; default: from the config.
      log: function printing one line (progress and status messages).

    Returns:
      dict with ``step``, ``steps_run``, ``logdir``, ``checkpoint``,
      ``samples``, ``samples_standing_stats`` (path or None), ``resumed_from``, ``metrics`` (last step's, floats),
      ``wall_time_s``, ``train_time_s``, ``steps_per_second``,
      ``images_per_second``, ``num_replicas``, ``global_batch_size``,
      ``stopped_by`` (signal name or None), ``skipped_steps``,
      ``skipped_corrupt_records`` (records ``--skip_corrupt_records`` dropped
      in this run; also in the progress line and the
      ``skipped_corrupt_records`` summary).
    """
    with _StopSignals(log) as stop, contextlib.ExitStack() as cleanup:
        return _train(config, strategy, log, stop, cleanup)


def _write_sample_grids(trainer, logdir, step, log):
    """The end-of-run grids: ``samples_<step>.png`` with G's moving batch-norm
    statistics (the release's sampling) and, with ``standing_stats_batches`` N,
    ``samples_<step>_standing_stats.png`` with standing statistics over N batches
    of ``batch_size`` (:mod:`sagan_tf.standing_statistics`; the networks are
    restored afterwards, so they stay equal to the checkpoint just saved).
    Returns the two paths (the second None without standing statistics)."""
    from PIL import Image
    from sagan_tf import standing_statistics

    def write(path, grid, how):
        with tf.io.gfile.GFile(path, "wb") as f:
            Image.fromarray(grid).save(f, format="PNG")
        log(f"Wrote {path} (G's batch norms: {how})")

    config = trainer.config
    samples_path = os.path.join(logdir, f"samples_{step}.png")
    write(samples_path, trainer.sample_grid(), standing_statistics.describe(0, 0))
    num_batches = config.standing_stats_batches
    if not num_batches:
        return samples_path, None
    if isinstance(trainer.strategy, tf.distribute.TPUStrategy):
        log("Standing-statistics grid skipped: not supported on TPUs")
        return samples_path, None
    standing_path = os.path.join(logdir, f"samples_{step}_standing_stats.png")
    with standing_statistics.standing_statistics(trainer.generator, num_batches,
                                                 config.batch_size, seed=0):
        grid = trainer.sample_grid()
    write(standing_path, grid, standing_statistics.describe(num_batches, config.batch_size))
    return samples_path, standing_path


def _train(config, strategy, log, stop, cleanup):
    """:func:`train` with the signal flag ``stop``; ``cleanup`` (an ExitStack)
    releases the run-directory lock when training ends, however it ends."""
    t_start = time.time()
    config.validate()
    _check_data_dir(config)
    _check_logdir_writable(config.logdir)
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
    if chief:  # one writer per run directory (sagan_tf/rundir_lock.py)
        try:
            lock = rundir_lock.acquire(logdir, log)
        except rundir_lock.RunDirLockedError as e:
            raise TrainingError(str(e)) from e
        if lock is not None:
            cleanup.callback(lock.release)
    # Non-chief workers of a multi-worker run save into a scratch directory
    # (every worker must take part in saving) which is deleted afterwards.
    ckpt_dir = logdir if chief else os.path.join(
        logdir, f"worker_tmp_{strategy.cluster_resolver.task_id}")
    if chief:
        save_config(config, logdir)
    manager = tf.train.CheckpointManager(trainer.checkpoint, ckpt_dir,
                                         max_to_keep=config.keep_checkpoint_max)
    # The newest complete checkpoint whose data reads back; each variable's
    # shape is checked against the stored tensor before anything is restored.
    try:
        # Every worker restores the chief's checkpoint (logdir): a non-chief's
        # scratch ckpt_dir is deleted at the end, so resuming from it would
        # start that worker from scratch while the chief resumes.
        resumed_from = checkpoints.restore_newest(trainer.checkpoint, logdir, log)
    except checkpoints.CheckpointMismatchError as e:
        raise ConfigError(f"{e}; use the run's flags or another --checkpoint_dir") from e
    except checkpoints.NoRestorableCheckpointError as e:
        raise TrainingError(str(e)) from e
    if resumed_from:
        log(f"Resumed from {resumed_from} at step {int(trainer.step.numpy())}")
    else:
        log("Starting from scratch")
    start_step = int(trainer.step.numpy())
    log(f"Replicas: {trainer.num_replicas}; global batch = {config.batch_size} per replica "
        f"x {trainer.num_replicas} = {trainer.global_batch_size} "
        f"(--num_towers={config.num_towers} is informational)")

    writer = (tf.summary.create_file_writer(logdir) if chief and config.save_summaries_steps
              else tf.summary.create_noop_writer())
    from sagan_tf.data import SkippedRecordCounter
    skipped_records = SkippedRecordCounter() if config.skip_corrupt_records else None
    iterator = _distributed_iterator(config, strategy, start_step, skipped_records)

    step = start_step
    metrics = {}
    last_ckpt_time = time.time()
    last_ckpt_step = start_step if resumed_from else None
    t_loop = time.time()
    t_first = None  # end of the first step: it includes tracing, excluded from throughput
    last_log = last_summary = (t_loop, step)
    guard = _NonFiniteGuard(trainer, config.on_nan)
    skipped_steps = consecutive_skips = 0

    def save_now():
        nonlocal last_ckpt_time, last_ckpt_step
        try:
            path = checkpoints.save(manager, step)
        except checkpoints.CheckpointSaveError as e:
            raise TrainingError(str(e)) from e
        last_ckpt_time, last_ckpt_step = time.time(), step
        return path

    while step < config.max_steps:
        if stop.signal:  # SIGTERM/SIGINT: checkpoint below, then return
            break
        try:
            real = [next(iterator) for _ in range(config.d_step)]
        except tf.errors.OpError as e:  # unreadable records: keep what was trained
            kept = "nothing trained in this run"
            if step > start_step:
                saved = save_now() if last_ckpt_step != step else manager.latest_checkpoint
                kept = f"saved the state of step {step} in {saved}"
            raise TrainingError(f"input data error at step {step + 1} (--data_dir "
                                f"{config.data_dir}): {_first_line(e)}; {kept}") from e
        noise = trainer.distribute(guard.noise(trainer.sample_noise(), step + 1))
        guard.before_step()
        out, input_images, generated_images = trainer.train_step(trainer.make_inputs(real, noise))
        problem = guard.check(out)
        if problem:
            last_good = checkpoints.latest_complete_checkpoint(ckpt_dir)
            if config.on_nan == "stop":
                raise TrainingDivergedError(
                    f"training diverged at step {step + 1}: {problem}. Stopped without saving; "
                    f"the last good checkpoint {last_good or '(none)'} is untouched (lower the "
                    f"learning rates, or --on_nan=skip_step to skip such steps)")
            guard.undo()
            skipped_steps += 1
            consecutive_skips += 1
            log(f"WARNING: step {step + 1}: {problem}; step skipped (--on_nan=skip_step): "
                f"state restored to step {step}, its batch and noise discarded "
                f"({skipped_steps} skipped so far)")
            if consecutive_skips >= MAX_CONSECUTIVE_SKIPS:
                raise TrainingDivergedError(
                    f"training diverged at step {step + 1}: {consecutive_skips} consecutive "
                    f"iterations were non-finite ({problem}); stopped. The last good "
                    f"checkpoint {last_good or '(none)'} is untouched")
            continue
        consecutive_skips = 0
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
                if skipped_records is not None:
                    write_scalar(SKIPPED_RECORDS_SCALAR, skipped_records.records)
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
            skipped = (f"  skipped {skipped_records.records} corrupt record(s)"
                       if skipped_records is not None and skipped_records.records else "")
            log(f"step {step}/{config.max_steps}  d_loss {metrics['d_loss']:.4f} "
                f"(real {metrics['d_loss_real']:.4f} fake {metrics['d_loss_fake']:.4f})  "
                f"g_loss {metrics['g_loss']:.4f}  logits {metrics['logit_real']:+.3f}/"
                f"{metrics['logit_fake']:+.3f}  {speed}{skipped}")

            # GAN collapse signals are reported, never acted on.
            gap = metrics["logit_real"] - metrics["logit_fake"]
            if gap > COLLAPSE_LOGIT_GAP or metrics["d_loss"] < 1e-3:
                log(f"WARNING: step {step}: D separates real from fake almost perfectly "
                    f"(logit gap {gap:+.2f}, d_loss {metrics['d_loss']:.4f}): a sign of "
                    "D overpowering G / mode collapse; training continues")

        if ((config.save_checkpoint_secs
                and now - last_ckpt_time >= config.save_checkpoint_secs)
                or (config.save_checkpoint_steps
                    and step % config.save_checkpoint_steps == 0)):
            save_now()
    t_end = time.time()

    if last_ckpt_step != step or manager.latest_checkpoint is None:
        save_now()
    if stop.signal:
        log(f"Stopped by {stop.signal} at step {step}: checkpoint "
            f"{os.path.basename(manager.latest_checkpoint)} saved in {ckpt_dir}; rerun the "
            "same command to resume")
    if skipped_steps:
        log(f"{skipped_steps} non-finite step(s) were skipped (--on_nan=skip_step)")
    if skipped_records is not None and skipped_records.records:
        log(f"{skipped_records.records} corrupt record(s) skipped in this run "
            f"({skipped_records.files} read(s) of a damaged file stopped early; "
            "--skip_corrupt_records)")
    writer.flush()
    samples_path = standing_samples_path = None
    if chief:
        samples_path, standing_samples_path = _write_sample_grids(trainer, logdir, step, log)
    else:
        tf.io.gfile.rmtree(ckpt_dir)

    steps_run = step - start_step
    # Steady-state speed: steps after the first (which includes tracing).
    steady = (steps_run - 1) / (t_end - t_first) if steps_run > 1 and t_end > t_first else 0.0
    result = {
        "step": step, "steps_run": steps_run, "logdir": logdir,
        "checkpoint": manager.latest_checkpoint if chief else None,
        "samples": samples_path, "samples_standing_stats": standing_samples_path,
        "resumed_from": resumed_from, "metrics": metrics,
        "wall_time_s": time.time() - t_start, "train_time_s": t_end - t_loop,
        "first_step_s": (t_first - t_loop) if t_first else 0.0,
        "steps_per_second": steady,
        "images_per_second": steady * trainer.global_batch_size,
        "num_replicas": trainer.num_replicas,
        "global_batch_size": trainer.global_batch_size,
        "config": config, "trainer": trainer,
        "stopped_by": stop.signal, "skipped_steps": skipped_steps,
        "skipped_corrupt_records": skipped_records.records if skipped_records else 0,
    }
    log(f"Done: step {step}, {steps_run} steps in {_format_seconds(t_end - t_loop)} "
        f"({result['images_per_second']:.1f} img/s after the first step); "
        f"checkpoint {result['checkpoint']}")
    return result
