"""Training configuration: every flag of the release's ``train_imagenet.py`` and this port's.

:class:`TrainConfig` holds the flags (the release's names and defaults,
NUMERICS §9, then this port's additions); :meth:`TrainConfig.validate` checks
them and raises :class:`ConfigError` naming the offending flag. No TensorFlow import:
the entry script reads the defaults before TensorFlow loads (the flags'
choices are :mod:`sagan_tf.options`). The trainer
writes it to ``<logdir>/config.json`` (:func:`sagan_tf.training.run_config.save_config`,
read back with :func:`sagan_tf.training.run_config.load_config`).
"""
import dataclasses
import math
import os

import numpy as np

from sagan_tf.models.layouts import attention_placements, parse_resolutions
from sagan_tf.models.spec import NetworkSpec
from sagan_tf.options import (ARCHS, BLOCK_TYPES, GRAPH_OPTIMIZATIONS, LOSS_TYPES,
                              CROSS_DEVICE_OPS, MIXED_PRECISION_POLICIES, ON_NAN_CHOICES,
                              SN_GRADIENTS, STRATEGY_KINDS)

__all__ = ["ConfigError", "TrainConfig", "MIXED_PRECISION_POLICIES", "ON_NAN_CHOICES"]


class ConfigError(ValueError):
    """A bad flag or a flag that does not fit the data / logdir; names the flag."""


@dataclasses.dataclass
class TrainConfig:
    """Training flags. Names and defaults of the release's ``train_imagenet.py``
    (NUMERICS §9) come first, then this port's additions."""
    # --- The release's flags (NUMERICS §9).
    data_dir: str = None                     # directory of *.tfrecords (NUMERICS §7)
    checkpoint_dir: str = "checkpoint"       # logdir = <checkpoint_dir>/imagenet_<batch_size>
    batch_size: int = 64                     # per replica ("per GPU tower")
    num_towers: int = 4                      # GPUs: the first N (0: all visible; sagan_tf/training/devices.py)
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
    strategy: str = "mirrored"               # see sagan_tf.training.distribute.STRATEGY_KINDS
    cross_device_ops: str = "auto"           # mirrored all-reduce: auto (NCCL on GPUs) | nccl | ...
    num_cpu_replicas: int = 0                # CPU-only: logical CPU replicas for "mirrored"
    tpu: str = None                          # TPU name/address for strategy="tpu"
    allow_cpu: bool = False                  # train on the CPU although an NVIDIA driver is present
    shuffle: bool = True                     # False: records in file order (reproducible runs)
    skip_corrupt_records: bool = False
    allow_incomplete_records: bool = False   # train on converter shards without/against manifest
    log_every_steps: int = 100               # console progress line; 0 disables
    keep_checkpoint_max: int = 5
    save_checkpoint_steps: int = 0           # >0: also checkpoint every this many steps
    on_nan: str = "stop"                     # non-finite loss/weight: stop | skip_step
    sn_gradient: str = "release"             # SN backward: release (TF1 ref variables) | exact
    standing_stats_batches: int = 0          # >0: also an end-of-run grid with standing BN stats
    g_ema_decay: float = 0.0                 # >0: keep an averaged G (sagan_tf/models/ema.py); 0: off
    collapse_summaries: bool = True          # collapse/ scalars (sagan_tf/training/collapse_summaries.py)
    # --- Performance options (docs/PERFORMANCE.md); only allow_tf32 changes rounding.
    allow_tf32: bool = False                 # TF32 matmuls/convolutions on GPUs that have it
    xla: bool = False                        # XLA-compile each replica's forward/backward passes
    iterations_per_loop: int = 1             # k > 1: k iterations per compiled call (same numbers)
    mixed_precision: str = "none"            # none | mixed_bfloat16 | mixed_float16
    graph_optimization: str = "auto"         # Grappler: auto | full | light (rounding only)
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
        if self.cross_device_ops not in CROSS_DEVICE_OPS:  # --strategy: make_strategy checks it
            raise ConfigError(f"--cross_device_ops must be one of {CROSS_DEVICE_OPS}, got "
                              f"{self.cross_device_ops!r}")

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
        need(self.loss_type in LOSS_TYPES, "loss_type", f"must be one of {LOSS_TYPES}")
        need(self.generator_type in ARCHS, "generator_type", f"must be one of {ARCHS}")
        need(self.discriminator_type in ARCHS, "discriminator_type", f"must be one of {ARCHS}")
        n = math.log2(self.image_size)
        need(self.image_size >= 32 and n == int(n), "image_size",
             "must be a power of two >= 32 (128 is the release)")
        need(self.strategy in STRATEGY_KINDS, "strategy", f"must be one of {STRATEGY_KINDS}")
        need(self.num_cpu_replicas <= 1 or self.strategy == "mirrored", "num_cpu_replicas",
             "only applies to --strategy mirrored")
        for flag in ("xla", "allow_cpu", "allow_tf32"):
            need(isinstance(getattr(self, flag), bool), flag, "must be a boolean")
        need(self.mixed_precision in MIXED_PRECISION_POLICIES, "mixed_precision",
             f"must be one of {MIXED_PRECISION_POLICIES}")
        need(self.graph_optimization in GRAPH_OPTIMIZATIONS, "graph_optimization",
             f"must be one of {GRAPH_OPTIMIZATIONS}")
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
        need(is_int(self.iterations_per_loop) and self.iterations_per_loop >= 1,
             "iterations_per_loop", "must be an integer >= 1")
        need(self.iterations_per_loop == 1 or self.on_nan == "stop", "iterations_per_loop",
             "> 1 needs --on_nan stop (skip_step undoes single iterations)")
        need(self.iterations_per_loop == 1 or self.strategy != "tpu", "iterations_per_loop",
             "> 1 is not supported with --strategy tpu")
        need(self.sn_gradient in SN_GRADIENTS, "sn_gradient", f"must be one of {SN_GRADIENTS}")
        need(is_int(self.standing_stats_batches) and self.standing_stats_batches >= 0,
             "standing_stats_batches", "must be an integer >= 0 (0: moving averages only)")
        need(isinstance(self.g_ema_decay, (int, float)) and not isinstance(self.g_ema_decay, bool)
             and 0.0 <= self.g_ema_decay < 1.0, "g_ema_decay",
             "must be a number in [0, 1) (0: no averaged generator)")
        return self

    def network_spec(self):
        """The :class:`~sagan_tf.models.spec.NetworkSpec` of these flags (the networks
        :func:`sagan_tf.models.networks.build_networks` builds for training)."""
        return NetworkSpec(
            image_size=self.image_size, z_dim=self.z_dim, gf_dim=self.gf_dim,
            number_classes=self.number_classes, df_dim=self.df_dim,
            generator_type=self.generator_type, discriminator_type=self.discriminator_type,
            attention=self.attention,
            g_attention_resolutions=parse_resolutions(self.g_attention_resolutions),
            d_attention_resolutions=parse_resolutions(self.d_attention_resolutions),
            g_spectral_norm=self.g_spectral_norm, sn_gradient=self.sn_gradient,
            attention_query_block_size=self.attention_query_block_size or None)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        """Builds a config from a dict; unknown keys are ignored (newer/older files)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
