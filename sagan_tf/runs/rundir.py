"""A run directory: where it is, its config.json, its checkpoints, restoring its networks.

The one home of what training, evaluation, sampling, the tools and the TF1
converter's output (:mod:`sagan_tf.runs.legacy`) share about a run directory
(the layout of docs/ARCHITECTURE.md):

* where it is: ``<checkpoint_dir>/imagenet_<batch_size>`` (the release's
  layout), the directory itself, or its only ``imagenet_*`` run
  (:func:`find_run_dir`); which checkpoint to read (:func:`find_checkpoint`;
  complete checkpoints only, :mod:`sagan_tf.runs.checkpoints`);
* ``config.json`` as the plain JSON object of the documented file format
  (:func:`read_config`), so that readers do not depend on the trainer's config
  class (the trainer writes it: :mod:`sagan_tf.training.run_config`);
* the networks a config describes (:meth:`sagan_tf.models.spec.NetworkSpec.from_config_json`,
  :func:`resolve_architecture` for the evaluator's explicit options) and
  restoring them from a checkpoint with the architecture check
  (:func:`load_checkpoint` -> :class:`LoadedCheckpoint`).
"""
import dataclasses
import glob
import os

import tensorflow as tf

from sagan_tf.fileio import read_json_object
from sagan_tf.models.networks import Discriminator, Generator, build_networks
from sagan_tf.models.spec import NetworkSpec
from sagan_tf.runs import checkpoints

__all__ = [
    "CONFIG_FILENAME", "ARCH_FLAGS", "CheckpointMismatchError",
    "LoadedCheckpoint", "find_run_dir", "find_checkpoint",
    "read_config", "resolve_architecture", "restore_network", "generator_child", "weights_label",
    "load_checkpoint", "use_standing_statistics",
]

CONFIG_FILENAME = "config.json"
#: Evaluator's architecture option -> keys it may have in config.json (first wins).
ARCH_FLAGS = {
    "generator_type": ("generator_type",),
    "image_size": ("image_size",),
    "z_dim": ("z_dim",),
    "gf_dim": ("gf_dim",),
    "num_classes": ("number_classes", "num_classes"),
}

#: The checkpoint does not hold the network that config.json describes
#: (:class:`sagan_tf.runs.checkpoints.CheckpointMismatchError`, a ``ValueError``).
CheckpointMismatchError = checkpoints.CheckpointMismatchError


# ----------------------------------------------------------------------------
# Where the run and its checkpoint are.

def find_run_dir(checkpoint_dir, batch_size=None):
    """The run directory (logdir) a reader of ``--checkpoint_dir`` means.

    ``<checkpoint_dir>/imagenet_<batch_size>`` when ``batch_size`` is given and
    it exists; else ``checkpoint_dir`` itself when it holds a checkpoint state
    file or config.json; else, without ``batch_size``, its only
    ``imagenet_*`` run. Used by the evaluator and the tools, which read
    training directories and never write into them.

    Raises:
      FileNotFoundError / ValueError: one line naming the directory, what it
        holds and the flag that fixes it.
    """
    checkpoint_dir = str(checkpoint_dir)
    candidate = (os.path.join(checkpoint_dir, f"imagenet_{int(batch_size)}")
                 if batch_size else None)
    if candidate and os.path.isdir(candidate):
        return candidate
    if any(os.path.exists(os.path.join(checkpoint_dir, f))
           for f in (checkpoints.STATE_FILENAME, CONFIG_FILENAME)):
        return checkpoint_dir
    if not os.path.isdir(checkpoint_dir):
        raise FileNotFoundError(f"--checkpoint_dir {checkpoint_dir!r} does not exist (give "
                                "the --checkpoint_dir of train_imagenet.py)")
    runs = sorted(os.path.basename(d) for d in glob.glob(
        os.path.join(glob.escape(checkpoint_dir), "imagenet_*")) if os.path.isdir(d))
    sizes = " or ".join(r[len("imagenet_"):] for r in runs)
    if candidate:
        held = (f"it holds {', '.join(runs)}: pass --batch_size {sizes} (the run's "
                "per-replica batch size) or leave --batch_size out" if runs else
                "it holds no training run (no config.json or checkpoint in it nor an "
                "imagenet_<batch_size> subdirectory)")
        raise FileNotFoundError(f"{candidate} does not exist (--checkpoint_dir "
                                f"{checkpoint_dir!r} with --batch_size {batch_size}); {held}")
    if len(runs) == 1:
        return os.path.join(checkpoint_dir, runs[0])
    if runs:
        raise ValueError(f"--checkpoint_dir {checkpoint_dir!r} holds several runs "
                         f"({', '.join(runs)}); pass --batch_size {sizes} to pick one, or "
                         "point --checkpoint_dir at one of them")
    raise FileNotFoundError(f"--checkpoint_dir {checkpoint_dir!r} holds no training run (no "
                            "config.json or checkpoint in it nor an imagenet_<batch_size> "
                            "subdirectory; give the --checkpoint_dir of train_imagenet.py)")


def find_checkpoint(logdir, checkpoint_path=None):
    """The checkpoint prefix to restore: ``checkpoint_path`` or the newest in ``logdir``."""
    if checkpoint_path:
        if os.path.isdir(checkpoint_path):
            latest = checkpoints.latest_complete_checkpoint(checkpoint_path)
            if latest is None:
                raise FileNotFoundError(f"--checkpoint_path {checkpoint_path!r} is a directory "
                                        "without a checkpoint")
            return latest
        if not tf.io.gfile.exists(checkpoint_path + ".index"):
            raise FileNotFoundError(f"--checkpoint_path {checkpoint_path!r}: no such checkpoint "
                                    f"(no {checkpoint_path}.index)")
        return checkpoint_path
    # The newest *complete* checkpoint (sagan_tf.runs.checkpoints): a save cut short
    # (killed trainer, full disk) is never picked.
    latest = checkpoints.latest_complete_checkpoint(logdir)
    listed = checkpoints.listed_checkpoints(logdir)
    if latest is None and listed:
        raise FileNotFoundError(
            f"no complete checkpoint in {logdir!r}: " + "; ".join(
                f"{os.path.basename(p)}: {checkpoints.checkpoint_problem(p)}" for p in listed))
    if latest is None:
        # No state file: the highest-numbered complete ckpt-N.
        numbered = []
        for index in glob.glob(os.path.join(logdir, "ckpt-*.index")):
            number = index[:-len(".index")].rsplit("-", 1)[1]
            if number.isdigit() and checkpoints.checkpoint_problem(index[:-len(".index")]) is None:
                numbered.append((int(number), index[:-len(".index")]))
        if not numbered:
            raise FileNotFoundError(f"no checkpoint in {logdir!r} (no 'checkpoint' state file "
                                    "and no ckpt-N.index); has training saved one yet?")
        latest = max(numbered)[1]
    return latest


# ----------------------------------------------------------------------------
# config.json.

def read_config(logdir, required=True):
    """``(config dict, path)`` of ``<logdir>/config.json``, read as plain JSON
    (the documented file format of docs/ARCHITECTURE.md).

    Without the file: ``FileNotFoundError`` (the architecture of the checkpoint
    is unknown), or ``(None, path)`` when not ``required`` (the evaluator may
    start before the trainer wrote it).
    """
    path = os.path.join(logdir, CONFIG_FILENAME)
    if not os.path.exists(path):
        if not required:
            return None, path
        raise FileNotFoundError(f"no {CONFIG_FILENAME} in {logdir!r}: the architecture of the "
                                "checkpoint is unknown (training and "
                                "tools/convert_tf1_checkpoint.py write it)")
    return read_json_object(path), path


# ----------------------------------------------------------------------------
# The networks a config describes.

def resolve_architecture(config, config_path, **given):
    """Merges the generator architecture of config.json with explicit options.

    Args:
      config: dict from config.json or None.
      config_path: its path (for messages).
      **given: ``generator_type``, ``image_size``, ``z_dim``, ``gf_dim``,
        ``num_classes``; None means "take from config.json".

    Returns:
      dict with the five keys of :data:`ARCH_FLAGS`.

    Raises:
      ValueError: a given value disagrees with config.json (naming both), or a
        value is neither given nor in config.json.
    """
    arch = {}
    missing = []
    for flag, keys in ARCH_FLAGS.items():
        value = given.get(flag)
        stored_key = next((k for k in keys if config and k in config), None)
        stored = config[stored_key] if stored_key else None
        if value is not None and stored is not None:
            same = (str(value) == str(stored)) if flag == "generator_type" else (
                int(value) == int(stored))
            if not same:
                raise ValueError(
                    f"--{flag}={value} disagrees with {stored_key}={stored} in {config_path}, "
                    f"the configuration the checkpoints were trained with; drop --{flag} "
                    f"or point --checkpoint_dir at the right run")
        chosen = value if value is not None else stored
        if chosen is None:
            missing.append(flag)
        else:
            arch[flag] = str(chosen) if flag == "generator_type" else int(chosen)
    if missing:
        where = (f"not in {config_path}" if config is not None
                 else f"there is no {config_path}")
        raise ValueError(
            f"generator architecture unknown: {', '.join('--' + m for m in missing)} "
            f"not given and {where}")
    return arch


# ----------------------------------------------------------------------------
# Restoring.

def restore_network(name, model, checkpoint_path, describe):
    """Restores ``model`` as child ``name`` of the checkpoint, checking it matches:
    every variable of ``model`` has its stored shape (the first that does not is
    named), and no variable is missing on either side. ``describe`` says where
    the model's architecture came from (for the messages)."""
    reader = tf.train.load_checkpoint(checkpoint_path)
    if not checkpoints.count_variables(reader, name):
        raise CheckpointMismatchError(f"checkpoint {checkpoint_path} has no {name}")
    try:
        checkpoints.restore_checked(tf.train.Checkpoint(**{name: model}), checkpoint_path,
                                    what=name, partial=True)
    except CheckpointMismatchError as e:
        raise CheckpointMismatchError(f"{e}; the {name} was built from {describe}") from e
    except (ValueError, AssertionError, tf.errors.OpError) as e:
        raise CheckpointMismatchError(
            f"could not restore the {name} built from {describe} from {checkpoint_path}: "
            f"{e}") from e


def generator_child(checkpoint_path, generator_weights="auto"):
    """The checkpoint child G is restored from, for ``--generator_weights``:
    ``generator`` (``raw``: the trained weights) or ``generator_ema`` (``ema``:
    the averaged weights of a run trained with ``--g_ema_decay``; ``auto``:
    those when the checkpoint has them, else the trained ones).

    Raises:
      ValueError: an unknown choice.
      CheckpointMismatchError: ``ema`` and the checkpoint has no averaged G.
    """
    from sagan_tf.models import ema  # pylint: disable=import-outside-toplevel
    if generator_weights not in ema.GENERATOR_WEIGHTS:
        raise ValueError(f"--generator_weights must be one of {ema.GENERATOR_WEIGHTS}, "
                         f"got {generator_weights!r}")
    if generator_weights == "raw":
        return "generator"
    try:
        has_average = checkpoints.count_variables(checkpoint_path, ema.CHECKPOINT_CHILD)
    except tf.errors.NotFoundError:
        raise  # gone (e.g. deleted by the trainer's CheckpointManager)
    except checkpoints.READ_ERRORS as e:  # truncated, or being deleted
        raise checkpoints.unreadable(checkpoint_path, e) from e
    if has_average:
        return ema.CHECKPOINT_CHILD
    if generator_weights == "ema":
        raise CheckpointMismatchError(
            f"--generator_weights ema: checkpoint {checkpoint_path} has no averaged generator "
            "(its run was trained without --g_ema_decay); use --generator_weights raw")
    return "generator"


def weights_label(child):
    """``"ema"`` or ``"raw"``: the ``generator_weights`` of outputs, for a child name."""
    return "raw" if child == "generator" else "ema"


@dataclasses.dataclass
class LoadedCheckpoint:
    """A restored generator (and optionally discriminator) with its provenance."""
    generator: Generator
    discriminator: object  # Discriminator or None
    config: dict
    config_path: str
    checkpoint_path: str
    step: int
    bn_statistics: str = "moving averages (the release)"  # see use_standing_statistics
    generator_weights: str = "raw"  # "ema": G's averaged weights (see generator_child)

    @property
    def image_size(self):
        return self.generator.image_size

    @property
    def num_classes(self):
        return self.generator.num_classes

    @property
    def z_dim(self):
        return self.generator.z_dim


def load_checkpoint(checkpoint_dir=None, checkpoint_path=None, batch_size=None,
                    discriminator=False, attention_query_block_size=None,
                    generator_weights="auto"):
    """Builds the networks from config.json and restores them.

    Args:
      checkpoint_dir: logdir, its parent, or a converted-checkpoint directory.
        May be None when ``checkpoint_path`` is given (config.json is then
        looked up beside the checkpoint).
      checkpoint_path: a specific checkpoint prefix (default: the newest).
      batch_size: picks ``imagenet_<batch_size>`` under ``checkpoint_dir``.
      discriminator: also restore the discriminator.
      attention_query_block_size: build the networks with the memory-efficient
        attention path (same results).
      generator_weights: ``auto`` | ``raw`` | ``ema`` (:func:`generator_child`).

    Returns:
      a :class:`LoadedCheckpoint`.
    """
    if checkpoint_dir:
        logdir = find_run_dir(checkpoint_dir, batch_size)
    elif checkpoint_path:
        logdir = (checkpoint_path if os.path.isdir(checkpoint_path)
                  else os.path.dirname(os.path.abspath(checkpoint_path)))
    else:
        raise ValueError("pass --checkpoint_dir (or --checkpoint_path)")
    config, config_path = read_config(logdir)
    path = find_checkpoint(logdir, checkpoint_path)
    spec = NetworkSpec.from_config_json(config, config_path, attention_query_block_size)
    G, D = build_networks(spec, discriminator)
    child = generator_child(path, generator_weights)
    restore_network(child, G, path, f"{config_path} ({spec.describe('generator')})")
    if discriminator:
        restore_network("discriminator", D, path,
                        f"{config_path} ({spec.describe('discriminator')})")
    return LoadedCheckpoint(G, D, config, config_path, path, checkpoints.checkpoint_step(path),
                            generator_weights=weights_label(child))


def use_standing_statistics(loaded, num_batches, batch_size=None, seed=0):
    """Gives ``loaded.generator`` standing batch-norm statistics over ``num_batches``
    batches (in memory only; 0: keep the moving averages) of ``batch_size``
    (default: the training ``batch_size`` of config.json, else 64), drawn from
    ``seed``. Sets and returns ``loaded.bn_statistics``, the label to print."""
    from sagan_tf.models import standing_statistics  # pylint: disable=import-outside-toplevel
    num_batches = int(num_batches or 0)
    if num_batches < 0:
        raise ValueError(f"--standing_stats_batches must be >= 0, got {num_batches}")
    batch_size = int(batch_size or (loaded.config or {}).get("batch_size") or 64)
    if num_batches:
        standing_statistics.accumulate_standing_statistics(loaded.generator, num_batches,
                                                           batch_size, seed=seed)
    loaded.bn_statistics = standing_statistics.describe(num_batches, batch_size)
    return loaded.bn_statistics
