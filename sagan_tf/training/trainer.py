"""The trainer: the state of one run and its compiled training iteration.

:class:`Trainer` holds G, D, two Adam optimizers, the global step and the
random generator in one ``tf.train.Checkpoint`` (the layout of
docs/ARCHITECTURE.md) and runs the training iteration: :meth:`Trainer.train_iterations`
runs k of them in one compiled call (k = 1 the ordinary case);
:meth:`Trainer.parity_iteration` runs one on noise the caller drew (the
release-parity comparison). The loop around them is
:func:`sagan_tf.training.loop.train`.

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
and D step) are drawn from the checkpointed ``tf.random.Generator`` at the
global batch size, inside the compiled call (on TPUs just before it), and
split across replicas by replica id. One iteration is therefore a pure
function of (state, real batches, generator state), and a run that is
stopped and resumed draws exactly the noise an uninterrupted run would have
drawn.
"""
import keras
import numpy as np
import tensorflow as tf

from sagan_tf.data import record_format
from sagan_tf.models import ema, state_writes
from sagan_tf.models.networks import build_networks
from sagan_tf.models.pass_state import PassState, PowerIterations
from sagan_tf.training import collapse_summaries, compilation, devices, optimizers, passes
from sagan_tf.training.distribute import make_strategy_and_plan
from sagan_tf.training.optimizers import ReleaseAdam, ReplicaSafeLossScaleOptimizer

__all__ = ["Trainer"]


class Trainer:
    """Networks, optimisers, step counter and random generator of one run.

    Everything checkpointed lives in ``self.checkpoint`` (children
    ``generator, discriminator, g_optimizer, d_optimizer, step, rng``, and
    ``generator_ema`` with ``config.g_ema_decay``; the layout of
    docs/ARCHITECTURE.md). Constructing a Trainer does no file I/O.

    Args:
      config: a :class:`TrainConfig`; ``config.seed`` must be set (``train``
        fills it in).
      strategy: the ``tf.distribute.Strategy``; default: ``make_strategy_and_plan``
        from the config (``device_plan`` says which devices and why).
    """

    def __init__(self, config, strategy=None):
        config.validate()
        if config.seed is None:
            raise ValueError("Trainer needs config.seed (train() draws one when it is None)")
        self.config = config
        # The devices (sagan_tf/training/devices.py): plan None when a strategy is given.
        self.strategy, self.device_plan = strategy, None
        if strategy is None:
            self.strategy, self.device_plan = make_strategy_and_plan(
                config.strategy, config.num_cpu_replicas, config.tpu, config.num_towers,
                config.allow_cpu, config.cross_device_ops)
        devices.set_tf32(config.allow_tf32)  # off: the release's float32 (no TF32)
        self.num_replicas = self.strategy.num_replicas_in_sync
        self.global_batch_size = config.batch_size * self.num_replicas

        # Same seed -> same initial weights (Keras initialisers draw from the
        # global seed that set_random_seed resets).
        keras.utils.set_random_seed(int(config.seed))
        self.generator, self.discriminator = self._build_networks(config)
        # Optional averaged generator (sagan_tf/models/ema.py), starting at G's weights.
        self.generator_ema = None
        if config.g_ema_decay:
            self.generator_ema = self._build_networks(config, discriminator=False)[0]
            with self.strategy.scope():
                ema.copy_weights(self.generator_ema, self.generator)
        with self.strategy.scope():
            self.g_optimizer, self.d_optimizer = self._build_optimizers(config)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        # Outside the scope: one stream on the host, sampled in cross-replica
        # context at the global batch size (every worker of a multi-worker
        # run holds an identical copy and draws identical numbers).
        self.rng = tf.random.Generator.from_seed(int(config.seed))
        self.checkpoint = tf.train.Checkpoint(
            generator=self.generator, discriminator=self.discriminator,
            g_optimizer=self.g_optimizer, d_optimizer=self.d_optimizer,
            step=self.step, rng=self.rng,
            **({ema.CHECKPOINT_CHILD: self.generator_ema} if self.generator_ema else {}))
        # XLA: each replica's G and D forward/backward passes are compiled
        # (see _run_pass); the variable writes and apply_gradients stay outside.
        self._jit_passes = {}
        self._vector_metric_names = {}  # metric key -> names of its vector's elements
        self._deferred_variables = {}
        # Grappler's settings for the iteration (sagan_tf/training/compilation.py):
        # "auto" is the lighter set on CPUs; every call carries the same ones.
        self.graph_optimization = compilation.resolve_graph_optimization(
            config.graph_optimization, self.strategy)
        self._call_config = (compilation.rewrite_options(compilation.LIGHT_GRAPPLER)
                             if self.graph_optimization == "light" else None)
        #: :meth:`parity_iteration`'s compiled function (its trace, for tests and tools).
        self.compiled_parity_iteration = self._compiled(self._step_on_inputs)
        self._compiled_iterations = {}  # train_iterations', one per (k, check)
        self._compiled_sample = None
        self.sigma_ratio_variables = [
            v for v in self.generator.variables + self.discriminator.variables
            if v.path.endswith("sigma_ratio")]

    def _compiled(self, fn):
        """``fn`` as a ``tf.function`` called under the trainer's Grappler settings."""
        return compilation.CompiledFunction(tf.function(fn, autograph=False), self._call_config)

    def _build_networks(self, config, discriminator=True):
        """G and D of ``config`` (D None without ``discriminator``), built (all
        variables created) in the strategy's scope."""
        # Mixed precision: the layers take the global dtype policy when they
        # are created; it is restored afterwards (the models keep theirs).
        # Weights, spectral norm, BN moments, softmax, logits and losses stay
        # float32 (sagan_tf.models.layers / attention / networks).
        previous_policy = keras.config.dtype_policy()
        if config.mixed_precision != "none":
            keras.config.set_dtype_policy(config.mixed_precision)
        try:
            with self.strategy.scope():
                return build_networks(config.network_spec(), discriminator)
        finally:
            keras.config.set_dtype_policy(previous_policy)

    def _build_optimizers(self, config):
        """The two Adam optimizers (in the strategy's scope), with their slots built."""
        # epsilon 1e-8 is TF1's AdamOptimizer default (Keras' is 1e-7);
        # ReleaseAdam runs TF1's fused Adam kernel (sagan_tf/training/optimizers.py).
        g_optimizer = ReleaseAdam(
            config.generator_learning_rate, beta_1=config.beta1, beta_2=config.beta2,
            epsilon=1e-8, name="g_optimizer")
        d_optimizer = ReleaseAdam(
            config.discriminator_learning_rate, beta_1=config.beta1, beta_2=config.beta2,
            epsilon=1e-8, name="d_optimizer")
        if config.mixed_precision == "mixed_float16":
            # Dynamic loss scaling; apply_gradients unscales and skips a step
            # whose gradients are non-finite on any replica.
            g_optimizer = ReplicaSafeLossScaleOptimizer(
                g_optimizer, name="g_loss_scale_optimizer")
            d_optimizer = ReplicaSafeLossScaleOptimizer(
                d_optimizer, name="d_loss_scale_optimizer")
        # Slots exist before the first step, so a restore fills them
        # directly and the compiled step never creates variables.
        g_optimizer.build(self.generator.trainable_variables)
        d_optimizer.build(self.discriminator.trainable_variables)
        return g_optimizer, d_optimizer

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

    def _run_pass(self, name, fn, sigmas, power_iterations, *args):
        """Runs ``fn(self, state, power_iterations, *args)`` (a pass of
        :mod:`sagan_tf.training.passes`); with ``config.xla``, as one
        XLA-compiled function (without shared power iterations).

        The pass's state writes (SN ``u``, BN moving statistics) are deferred
        (``PassState(defer_writes=True)``) and made after it by
        ``state_writes.write``: the ``u`` locally on each replica, the BN
        statistics averaged over replicas in one grouped reduction. With XLA
        the compiled function returns the new values and they are assigned
        here, outside XLA, in replica context (a mirrored variable's assign
        needs a ``merge_call``, which XLA cannot compile). Same values as
        assigning in place: within one pass each state variable is read
        once, before its only write. The SN layers' sigmas go into
        ``sigmas`` (None: not recorded).
        """
        if not self.config.xla:
            state = PassState(defer_writes=True, sigmas=sigmas)
            out = fn(self, state, power_iterations, *args)
            state_writes.write(state.writes)
            return out
        if name not in self._jit_passes:
            def deferred(*a):
                state = PassState(defer_writes=True, sigmas=None if sigmas is None else {})
                out = fn(self, state, None, *a)
                self._deferred_variables[name] = [v for v, _ in state.writes]
                return out, [value for _, value in state.writes], state.sigmas or {}
            self._jit_passes[name] = tf.function(deferred, jit_compile=True, autograph=False)
        out, values, pass_sigmas = self._jit_passes[name](*args)
        state_writes.write(list(zip(self._deferred_variables[name], values)))
        if sigmas is not None:  # out of the compiled pass, to the step's record
            sigmas.update(pass_sigmas)
        return out

    def _shared_power_iterations(self):
        """Where D's power iterations of the G steps are kept for the first D
        step (same weights, same u, the same numbers): a new
        :class:`~sagan_tf.models.pass_state.PowerIterations`; None with XLA,
        whose passes are compiled separately."""
        return None if self.config.xla else PowerIterations()

    def _replica_step(self, inputs):
        """One NUMERICS §6 iteration on one replica. Returns per-replica metrics."""
        G, D = self.generator, self.discriminator
        g_loss = None
        sigmas = {} if self.config.collapse_summaries else None  # each SN layer's last sigma
        shared = self._shared_power_iterations()
        for z, y_fake in inputs["g"]:
            g_loss, g_grads = self._run_pass("g", passes.generator_pass, sigmas, shared, z, y_fake)
            g_scale = optimizers.loss_scale(self.g_optimizer)  # read before the apply
            self.g_optimizer.apply_gradients(zip(g_grads, G.trainable_variables))

        for real_images, real_labels, z, y_fake in inputs["d"]:
            if real_images.dtype == tf.uint8:  # records as stored: scaled here, on the device
                real_images = record_format.to_unit_range(real_images)
            (d_loss, d_loss_real, d_loss_fake, logits_real, logits_fake, fake), d_grads = (
                self._run_pass("d", passes.discriminator_pass, sigmas, shared,
                               real_images, real_labels, z, y_fake))
            shared = None  # D's weights change now
            d_scale = optimizers.loss_scale(self.d_optimizer)
            self.d_optimizer.apply_gradients(zip(d_grads, D.trainable_variables))

        metrics = {"d_loss": d_loss, "d_loss_real": d_loss_real, "d_loss_fake": d_loss_fake,
                   "g_loss": g_loss, "logit_real": tf.reduce_mean(logits_real),
                   "logit_fake": tf.reduce_mean(logits_fake)}
        if self.config.collapse_summaries:  # read-only extra outputs of the same step
            scalars, vectors = collapse_summaries.step_metrics(
                g_grads, d_grads, logits_real, sigmas,
                tf.distribute.get_replica_context().num_replicas_in_sync, g_scale, d_scale)
            metrics.update(scalars)
            for key, (names, vector) in vectors.items():
                self._vector_metric_names[key] = names  # the same at every trace
                metrics[key] = vector
        return metrics, real_images, fake

    def _step_on_inputs(self, inputs):
        metrics, real, fake = self.strategy.run(self._replica_step, args=(inputs,))
        return self._finish_step(metrics, real, fake)

    def _step_drawing_noise(self, real_batches):
        """One iteration on per-replica real batches, drawing the noise inside.

        The same numbers as ``distribute(sample_noise())`` outside (the same
        generator ops in the same order, sliced by replica id), without the
        eager ops and the extra input placement per iteration.
        """
        noise = self.sample_noise()
        b = self.config.batch_size

        def replica_fn(real, noise):
            r = tf.distribute.get_replica_context().replica_id_in_sync_group
            local = tf.nest.map_structure(lambda t: t[r * b:(r + 1) * b], noise)
            return self._replica_step(self.make_inputs(real, local))
        metrics, real, fake = self.strategy.run(replica_fn, args=(list(real_batches), noise))
        return self._finish_step(metrics, real, fake)

    def _finish_step(self, metrics, real, fake):
        # One cross-replica mean for all the metrics (the same means): the
        # scalars stacked, then the vectors' elements (named per element).
        scalar_names = sorted(k for k in metrics if k not in self._vector_metric_names)
        vector_keys = sorted(k for k in metrics if k in self._vector_metric_names)

        def pack(m):
            parts = [tf.stack([m[k] for k in scalar_names])] + [m[k] for k in vector_keys]
            return parts[0] if len(parts) == 1 else tf.concat(parts, 0)
        stacked = self.strategy.run(pack, args=(metrics,))
        means = tf.unstack(self.strategy.reduce(tf.distribute.ReduceOp.MEAN, stacked, axis=None))
        names = scalar_names + [n for k in vector_keys for n in self._vector_metric_names[k]]
        metrics = dict(zip(names, means))
        self.step.assign_add(1)
        if self.generator_ema is not None:
            ema.update_average(self.generator_ema, self.generator, self.config.g_ema_decay,
                               self.step)
        # Replica 0's images of the last D step, for the image summaries.
        return (metrics, self.strategy.experimental_local_results(real)[0],
                self.strategy.experimental_local_results(fake)[0])

    def train_iterations(self, real_batches, check=None):
        """Runs ``k = len(real_batches)`` training iterations in one compiled call
        (k = 1 the ordinary case), each drawing its noise from ``self.rng``.

        The k iterations are unrolled in one ``tf.function`` (one host round
        trip per call; tracing takes k times as long, once) and give the same
        numbers, bit for bit, as k calls of one. On TPUs each iteration's
        noise is drawn and distributed outside and the iterations run one by
        one (:meth:`parity_iteration`), the same numbers.

        Args:
          real_batches: ``k`` lists of ``d_step`` per-replica ``(images,
            labels)`` batches (``next()`` on a distributed dataset iterator,
            or :meth:`distribute`); images float32 in [-1, 1] or uint8 as stored.
          check: None, or ``check(metrics) -> boolean tensor`` run after each
            iteration in the same call (the loop's non-finite check,
            :meth:`sagan_tf.training.faults.NonFiniteGuard.state_check`).

        Returns:
          ``([(metrics, check result or None)] * k, real_images,
          generated_images)``: each iteration's scalar metrics averaged over
          replicas (``d_loss, d_loss_real, d_loss_fake, g_loss, logit_real,
          logit_fake`` and, with ``collapse_summaries``, ``collapse/...``),
          and replica 0's real and generated images of the last D step of
          the last iteration.
        """
        batches = [list(real) for real in real_batches]
        if isinstance(self.strategy, tf.distribute.TPUStrategy):
            results = []
            for real in batches:
                noise = self.distribute(self.sample_noise())
                metrics, real_images, fake = self.parity_iteration(self.make_inputs(real, noise))
                results.append((metrics, None if check is None else check(metrics)))
            return results, real_images, fake
        results, (real_images, fake) = self.compiled_iterations(len(batches), check)(batches)
        return results, real_images, fake

    def compiled_iterations(self, k=1, check=None):
        """The compiled function :meth:`train_iterations` calls for ``k``
        iterations and ``check`` (a :class:`~sagan_tf.training.compilation.CompiledFunction`
        taking ``k`` lists of real batches): its trace, graph and tracing count
        are what the speed tools and tests inspect."""
        key = (k, check)
        if key not in self._compiled_iterations:
            def iterations(batches):
                results, images = [], None
                for real in batches:
                    metrics, real_images, fake = self._step_drawing_noise(real)
                    results.append((metrics, None if check is None else check(metrics)))
                    images = (real_images, fake)
                return results, images
            self._compiled_iterations[key] = self._compiled(iterations)
        return self._compiled_iterations[key]

    def parity_iteration(self, inputs):
        """One compiled training iteration on ``inputs`` whose noise the caller
        drew (:meth:`make_inputs`, :meth:`make_inputs_from_global`).

        For the release-parity comparison (it feeds the release graph's
        noise) and the tests that run two trainers on the same noise;
        training runs :meth:`train_iterations`, which draws the noise
        itself (the same numbers as ``make_inputs(real,
        distribute(sample_noise()))`` here). Returns ``(metrics,
        input_images, generated_images)`` as one iteration of
        :meth:`train_iterations`.
        """
        return self.compiled_parity_iteration(inputs)

    # -- Sampling ---------------------------------------------------------------

    @property
    def sampling_generator(self):
        """The generator samples and evaluations use: ``generator_ema`` if kept, else G."""
        return self.generator if self.generator_ema is None else self.generator_ema

    def generate(self, z, labels):
        """Images ``G(z, labels)`` in eval mode (moving BN statistics), no state change.

        ``G`` is :attr:`sampling_generator`: the averaged generator when the run
        keeps one, else the trained one.

        Uses ``update_sn=False``: the release's eval graph also wrote G's
        ``u``, but a preview grid should not perturb the training state.
        Eager in cross-replica context; on TPUs through ``strategy.run``.
        """
        z = tf.convert_to_tensor(z, tf.float32)
        labels = tf.cast(labels, tf.int32)
        if not isinstance(self.strategy, tf.distribute.TPUStrategy):
            return self.sampling_generator(z, labels, training=False, update_sn=False)
        if self._compiled_sample is None:
            def replica_fn(z, y):
                return self.sampling_generator(z, y, training=False, update_sn=False)

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
