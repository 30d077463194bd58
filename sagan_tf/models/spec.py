"""The networks of a run as one typed value (no TensorFlow import).

:class:`NetworkSpec` holds what a run fixes about its generator and
discriminator. Training takes it from its config
(:meth:`sagan_tf.training.config.TrainConfig.network_spec`); readers of a run
directory take it from ``config.json`` (:meth:`NetworkSpec.from_config_json`,
the one place where older files' keys are accepted: ``num_classes`` for
``number_classes``, missing ablation keys as the release's networks).
:func:`sagan_tf.models.networks.build_networks` builds G and D from it.
"""
import dataclasses
from typing import Optional

from sagan_tf.models.layouts import parse_resolutions

__all__ = ["NetworkSpec"]


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    """The constructor arguments of ``Generator`` and ``Discriminator`` a run fixes.

    Fields are named as the training flags (``--generator_type``,
    ``--number_classes``, ...). ``df_dim`` may be None when only the
    generator is built (an evaluation of an old run directory);
    ``*_attention_resolutions``: None (the arch's placement), ``()`` (no
    block) or the sizes; ``attention_query_block_size``: None for one-shot
    attention (the same numbers either way).
    """
    image_size: int
    z_dim: int
    gf_dim: int
    number_classes: int
    df_dim: Optional[int] = None
    generator_type: str = "test"
    discriminator_type: str = "test"
    attention: str = "release"
    g_attention_resolutions: Optional[tuple] = None
    d_attention_resolutions: Optional[tuple] = None
    g_spectral_norm: bool = True
    sn_gradient: str = "release"
    attention_query_block_size: Optional[int] = None

    @classmethod
    def from_config_json(cls, config, path="config.json", attention_query_block_size=None):
        """The spec a ``config.json`` dict describes (``path`` names it in errors).

        Raises:
          ValueError: a required key (image_size, z_dim, gf_dim, number_classes)
            is missing, naming the file and the key.
        """
        config = config or {}

        def get(*keys, default=None, required=False):
            for key in keys:
                if config.get(key) is not None:
                    return config[key]
            if required:
                raise ValueError(f"{path} has no {keys[0]!r}")
            return default
        df_dim = get("df_dim")
        g_spectral_norm = get("g_spectral_norm", default=True)
        return cls(
            image_size=int(get("image_size", required=True)),
            z_dim=int(get("z_dim", required=True)),
            gf_dim=int(get("gf_dim", required=True)),
            number_classes=int(get("number_classes", "num_classes", required=True)),
            df_dim=None if df_dim is None else int(df_dim),
            generator_type=str(get("generator_type", default="test")),
            discriminator_type=str(get("discriminator_type", default="test")),
            attention=str(get("attention", default="release")),
            g_attention_resolutions=parse_resolutions(config.get("g_attention_resolutions")),
            d_attention_resolutions=parse_resolutions(config.get("d_attention_resolutions")),
            g_spectral_norm=bool(g_spectral_norm),
            attention_query_block_size=attention_query_block_size)

    def describe(self, network="generator"):
        """One line naming ``network``'s architecture (for checkpoint-mismatch messages)."""
        if network == "generator":
            return (f"{self.generator_type}, image_size={self.image_size}, z_dim={self.z_dim}, "
                    f"gf_dim={self.gf_dim}, number_classes={self.number_classes}, "
                    f"attention={self.attention}, "
                    f"attention_resolutions={self.g_attention_resolutions}, "
                    f"spectral_norm={self.g_spectral_norm}")
        return f"{self.discriminator_type}, df_dim={self.df_dim}"
