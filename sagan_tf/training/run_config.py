"""A run's ``config.json`` from the trainer's side: written from a
:class:`~sagan_tf.training.config.TrainConfig` (atomically), read back as one,
and checked when a trainer restarts in the same run directory.

Readers that only need the file's documented JSON (evaluation, the tools) use
:func:`sagan_tf.runs.rundir.read_config` instead.
"""
import dataclasses
import json
import os

import tensorflow as tf

from sagan_tf.fileio import atomic_write
from sagan_tf.runs.rundir import CONFIG_FILENAME
from sagan_tf.training.config import ConfigError, TrainConfig

__all__ = ["ARCHITECTURE_FIELDS", "save_config", "load_config", "resume_config"]

#: Config fields that fix the checkpointed variables (their shapes, or whether
#: the averaged generator exists): a resumed run must agree with the stored
#: config.json on these.
ARCHITECTURE_FIELDS = ("image_size", "z_dim", "gf_dim", "df_dim", "number_classes",
                       "generator_type", "discriminator_type", "attention",
                       "g_attention_resolutions", "d_attention_resolutions", "g_spectral_norm",
                       "g_ema_decay")


def save_config(config, logdir, extra=None):
    """Writes ``<logdir>/config.json`` (a :class:`~sagan_tf.training.config.TrainConfig`,
    plus the ``extra`` keys: facts of the run that are not flags, such as the
    trainer's ``records_pixel_pipeline``; reading ignores them) atomically (temp
    file + rename).

    Atomic so that an evaluation job polling the directory never reads half a
    file.
    """
    tf.io.gfile.makedirs(logdir)
    path = os.path.join(logdir, CONFIG_FILENAME)
    text = json.dumps({**(extra or {}), **config.to_dict()}, indent=2, sort_keys=True) + "\n"
    if "://" in logdir:  # gs:// etc.: no local rename; gfile writes whole objects.
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(text)
        return path
    return atomic_write(path, text)


def load_config(logdir):
    """Reads ``<logdir>/config.json`` into a :class:`~sagan_tf.training.config.TrainConfig`.

    Raises:
      FileNotFoundError: if there is no config.json in ``logdir``.
    """
    path = os.path.join(logdir, CONFIG_FILENAME)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"no {CONFIG_FILENAME} in {logdir!r} (not a training logdir?)")
    with tf.io.gfile.GFile(path, "r") as f:
        return TrainConfig.from_dict(json.load(f))


def resume_config(config):
    """The config a (re)started trainer runs with: ``config``, its ``seed`` taken
    from the stored config.json when not given, else drawn at random.

    Raises:
      ConfigError: the logdir holds checkpoints of another architecture
        (naming every differing flag).
    """
    logdir = config.logdir
    if tf.io.gfile.exists(os.path.join(logdir, CONFIG_FILENAME)):
        stored = load_config(logdir)
        diff = [f"--{k}: stored {getattr(stored, k)!r}, given {getattr(config, k)!r}"
                for k in ARCHITECTURE_FIELDS if getattr(stored, k) != getattr(config, k)]
        if diff and tf.train.latest_checkpoint(logdir):
            raise ConfigError(f"{logdir} holds a run with a different architecture "
                              f"({'; '.join(diff)}); use another --checkpoint_dir")
        if config.seed is None:
            config = dataclasses.replace(config, seed=stored.seed)
    if config.seed is None:
        config = dataclasses.replace(config, seed=int.from_bytes(os.urandom(4), "little") >> 1)
    return config
