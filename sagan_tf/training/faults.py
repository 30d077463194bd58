"""Faults of a training run: stop signals, non-finite steps, unwritable logdir.

Preemption: SIGTERM / SIGINT set a flag (the handler does nothing else);
the loop checks it between iterations, saves a checkpoint of the current
step and returns (:class:`StopSignals`). This is simpler than
``tf.distribute.experimental.PreemptionCheckpointHandler`` (which needs a
cluster resolver / coordination service and is built for multi-worker GPU
and TPU jobs) and works the same on one CPU or 8 GPUs; an iteration in
flight finishes first (seconds at most). A second signal restores the
previous handler, so pressing Ctrl-C twice interrupts at once -- safe, as
checkpoint files are written atomically (:mod:`sagan_tf.runs.checkpoints`).

Divergence: :class:`NonFiniteGuard` checks every iteration's losses and state
and, with ``--on_nan=skip_step``, undoes a bad iteration exactly.

Errors: :class:`TrainingError` (bad input data, a checkpoint that cannot be
written or restored), :class:`TrainingDivergedError`; a bad flag or an
unwritable logdir is a :class:`sagan_tf.training.config.ConfigError`
(:func:`check_logdir_writable`).
"""
import math
import os
import tempfile

import tensorflow as tf

from sagan_tf.runs import checkpoints
from sagan_tf.training.config import ConfigError

__all__ = ["TrainingError", "TrainingDivergedError", "StopSignals", "NonFiniteGuard",
           "MAX_CONSECUTIVE_SKIPS", "MAX_UNSETTLED_CHECKS",
           "check_logdir_writable", "diverged", "first_line"]


class TrainingError(RuntimeError):
    """Training stopped on a fault (bad input data, a checkpoint that cannot be
    written or restored); the message says what and where. Checkpoints written
    before are intact."""


class TrainingDivergedError(TrainingError):
    """A non-finite loss or weight (``--on_nan=stop``); names the step and the loss."""


class StopSignals:
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


#: ``--on_nan=skip_step`` gives up after this many consecutive bad iterations.
MAX_CONSECUTIVE_SKIPS = 10
#: ``--on_nan=stop`` reads the iterations' checks at most this many iterations
#: late (and before every summary, progress line and checkpoint, and at the end).
MAX_UNSETTLED_CHECKS = 50
_LOSS_NAMES = ("d_loss", "d_loss_real", "d_loss_fake", "g_loss")


def _state_variables(trainer):
    """``[(name, variable)]`` of everything the step changes (the checkpointed
    state less the random generator)."""
    out, seen = [], set()
    groups = (("", trainer.generator.variables), ("", trainer.discriminator.variables),
              ("g_optimizer/", trainer.g_optimizer.variables),
              ("d_optimizer/", trainer.d_optimizer.variables),
              ("generator_ema/", trainer.generator_ema.variables if trainer.generator_ema
               else []))
    for prefix, variables in groups:
        for v in variables:
            if id(v) not in seen:
                seen.add(id(v))
                out.append((prefix + getattr(v, "path", v.name), v))
    out.append(("step", trainer.step))
    return out


def _unwrapped(v):
    """The TensorFlow variable (possibly distributed) behind a Keras variable."""
    return getattr(v, "value", v) if not isinstance(v, tf.Variable) else v


def _components(strategy, v):
    """Per-device copies of a (mirrored) variable; ``[v]`` where there are none."""
    inner = _unwrapped(v)
    if isinstance(strategy, (tf.distribute.MirroredStrategy,
                             tf.distribute.MultiWorkerMirroredStrategy)):
        return list(strategy.experimental_local_results(inner))
    return [inner]


def _sums_are_finite(tensors):
    """A boolean tensor: False when some element of ``tensors`` (tensors or
    variables) is NaN or infinite, True when none is -- or, rarely, False when
    all are finite but their sum overflows (:meth:`NonFiniteGuard.check`
    settles that case element by element on the host).

    A NaN or an infinity makes its tensor's sum, and the sum of sums, NaN or
    infinite. Two ops per tensor (read, sum) and one ``AddN``, instead of a
    finiteness map, a reduction and a stack per tensor.
    """
    sums = []
    for t in tensors:
        total = tf.reduce_sum(t)
        sums.append(total if total.dtype == tf.float32 else tf.cast(total, tf.float32))
    return tf.math.is_finite(tf.add_n(sums))


class NonFiniteGuard:
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

    No host round trip per iteration with ``--on_nan=stop``: each
    iteration's check is a tensor computed in the compiled call; the loop
    keeps them (:meth:`defer`) and reads them (:meth:`settle`) before it
    writes anything -- summaries, progress lines, checkpoints -- and at
    least every :data:`MAX_UNSETTLED_CHECKS` iterations. Nothing non-finite
    is checkpointed, and the error still names the first bad iteration.
    ``skip_step`` reads every check at once (it undoes the iteration).
    """

    def __init__(self, trainer, on_nan):
        self.trainer, self.on_nan = trainer, on_nan
        strategy = trainer.strategy
        state = _state_variables(trainer)
        self.named = [(name, c) for name, v in state for c in _components(strategy, v)]
        # What a checkpoint saves: each variable as read in cross-replica
        # context (a mirrored variable's primary copy; the copies are equal).
        floats = [inner for inner in (_unwrapped(v) for _, v in state)
                  if inner.dtype.is_floating]

        def all_finite(losses):
            return _sums_are_finite(list(losses) + floats)
        self._all_finite_body = all_finite
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
        self._pending = []  # (step, metrics, all_finite) not yet read (on_nan="stop")

    def before_step(self):
        if self._shadows is not None:
            self._snapshot()

    def state_check(self, metrics):
        """The check as ops (for ``Trainer.train_iterations``, which runs it in the
        compiled iteration): a boolean tensor, True when the losses in
        ``metrics`` are finite and, with ``skip_step``, every floating state
        variable too (False can also mean that their sums overflowed;
        :meth:`check` tells). With ``stop`` the state is checked when the
        checks are read (:meth:`settle`), not in every iteration."""
        losses = [metrics[k] for k in _LOSS_NAMES if k in metrics]
        if self.on_nan == "stop":
            return _sums_are_finite(losses)
        return self._all_finite_body(losses)

    def defer(self, step, metrics, all_finite):
        """With ``on_nan="stop"``, keeps iteration ``step``'s check (its
        ``metrics`` and ``all_finite`` tensors) for :meth:`settle` and returns
        True; otherwise returns False (the caller checks now)."""
        if self.on_nan != "stop":
            return False
        self._pending.append((step, metrics, all_finite))
        return True

    def must_settle(self):
        """True when :data:`MAX_UNSETTLED_CHECKS` checks are waiting."""
        return len(self._pending) >= MAX_UNSETTLED_CHECKS

    def settle(self):
        """Reads the deferred checks, then checks the current state: ``(step,
        problem)`` of the first iteration with a non-finite loss or state
        (a state found non-finite only now is reported at the last deferred
        step, with the steps since the last finite one), or None. Forgets
        the checks it read."""
        pending, self._pending = self._pending, []
        if not pending:
            return None
        if not bool(tf.reduce_all(tf.stack([f for _, _, f in pending]))):
            for step, metrics, all_finite in pending:
                problem = self.check(metrics, all_finite)
                if problem:
                    return step, problem
        first, last, metrics = pending[0][0], pending[-1][0], pending[-1][1]
        problem = self.check(metrics)  # the losses again (finite) and the state now
        if problem and first < last:
            problem += f"; the state was finite after step {first - 1}"
        return (last, problem) if problem else None

    def check(self, out, all_finite=None):
        """None if the iteration's losses and the new state are finite, else a
        description naming the non-finite losses (or the first bad variable).
        ``all_finite``: :meth:`state_check`'s result when the iteration computed
        it, else it is computed here."""
        if all_finite is None:
            all_finite = self._all_finite([out[k] for k in _LOSS_NAMES if k in out])
        if bool(all_finite):
            return None
        bad = [f"{k}={float(out[k])}" for k in _LOSS_NAMES
               if k in out and not math.isfinite(float(out[k]))]
        if bad:
            return "non-finite " + ", ".join(bad)
        for name, c in self.named:
            if c.dtype.is_floating and not bool(tf.reduce_all(tf.math.is_finite(c))):
                return f"non-finite weight {name} (the losses were finite)"
        return None  # all finite: the in-graph sums overflowed

    def undo(self):
        self._undo()


def diverged(step, problem, ckpt_dir, on_nan):
    """The :class:`TrainingDivergedError` of a non-finite iteration ``step``
    (``problem``: :meth:`NonFiniteGuard.check`'s description), naming the
    newest complete checkpoint in ``ckpt_dir``."""
    last_good = checkpoints.latest_complete_checkpoint(ckpt_dir)
    if on_nan == "stop":
        return TrainingDivergedError(
            f"training diverged at step {step}: {problem}. Stopped without saving; "
            f"the last good checkpoint {last_good or '(none)'} is untouched (lower the "
            f"learning rates, or --on_nan=skip_step to skip such steps)")
    return TrainingDivergedError(
        f"training diverged at step {step}: {MAX_CONSECUTIVE_SKIPS} consecutive "
        f"iterations were non-finite ({problem}); stopped. The last good "
        f"checkpoint {last_good or '(none)'} is untouched")


def check_logdir_writable(logdir):
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


def first_line(e):
    """The first meaningful line of an error message (no graph context, no traceback)."""
    text = str(getattr(e, "message", None) or e).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("[[") and "Traceback" not in line:
            return line
    return type(e).__name__
