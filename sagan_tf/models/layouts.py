"""Where the blocks of the SAGAN networks go, per arch and image size (NUMERICS §4).

At `image_size=128` the layouts are exactly the release's `test`, `baseline`
and `test_64` networks. Other sizes (a power of two >= 32) add or drop
residual blocks at the high-resolution end:

Generator (4x4 start, one upsampling block per doubling; channels x gf):
  128: 16(8) 8(16) 4(32) 2(64) 1(128)       <- the release
   64: 16(8) 8(16) 4(32) 2(64)
   32: 16(8) 8(16) 4(32)
  256: 16(8) 8(16) 4(32) 2(64) 1(128) 1(256)
Discriminator (one downsampling block per halving, then a 16x block without
downsampling; channels x df, output resolution in brackets):
  128: 1(64)* 2(32) 4(16) 8(8) 16(4) 16(4)  <- the release (* = optimized block)
   64: 2(32)* 4(16) 8(8) 16(4) 16(4)
   32: 4(16)* 8(8) 16(4) 16(4)
  256: 1(128)* 1(64) 2(32) 4(16) 8(8) 16(4) 16(4)
Attention (`test`: at the 32x32 feature map; `test_64`: at 64x64) goes after
the generator block whose output has resolution min(R, image_size), and after
the discriminator block whose output has resolution min(R, image_size / 2);
so at 32x32 the discriminator attends at 16x16, and `test_64` at 64x64 attends
at 64 (G) and 32 (D). `baseline` has no attention.

Beyond the release, `attention_resolutions` places the block after each G / D
block whose output has one of the given sizes (the paper's feat8 ... feat64;
`()` none), and the block names follow the release's pattern (see
:func:`attention_placements`); :class:`sagan_tf.models.spec.NetworkSpec` reads
these choices from a config.json. The models themselves are in :mod:`sagan_tf.models.networks`.
"""
import math

import numpy as np

# The architectures and block types (sagan_tf/options.py), re-exported here.
from sagan_tf.options import ARCHS, ATTENTION_TYPES, BLOCK_TYPES, RESIDUAL_TYPES

__all__ = ["ARCHS", "ATTENTION_TYPES", "RESIDUAL_TYPES", "BLOCK_TYPES", "generator_layout",
           "discriminator_layout", "parse_resolutions", "attention_placements"]

# Layer name stem of the block placed at the attention positions, per type.
_BLOCK_STEM = {"release": "non_local", "slide": "non_local", "residual": "residual",
               "resnet_block": "res_block"}
_ATTENTION_RESOLUTION = {"test": 32, "test_64": 64, "baseline": None}
# Channel multipliers from the lowest resolution (8x8 for G, 4x4 for D) upwards.
_G_MULTIPLIERS = (16, 8, 4, 2, 1)
_D_MULTIPLIERS = (16, 8, 4, 2, 1)


def _num_blocks(image_size):
    n = math.log2(image_size / 4) if image_size > 0 else -1
    if image_size < 32 or n != int(n):
        raise ValueError(f"image_size must be a power of two >= 32, got {image_size}")
    return int(n)


def _check_arch(arch):
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {ARCHS}")


def generator_layout(arch, image_size):
    """`(multipliers, resolutions, attention_after)` of the generator blocks.

    `multipliers[i]` x gf channels, `resolutions[i]` output size of block i+1;
    `attention_after` is the 0-based block index the attention follows, or None.
    """
    _check_arch(arch)
    n = _num_blocks(image_size)
    mults = [(_G_MULTIPLIERS[i] if i < len(_G_MULTIPLIERS) else 1) for i in range(n)]
    res = [8 * 2 ** i for i in range(n)]
    att_res = _ATTENTION_RESOLUTION[arch]
    after = None if att_res is None else res.index(min(att_res, image_size))
    return mults, res, after


def discriminator_layout(arch, image_size):
    """`(multipliers, resolutions, attention_after)` of the downsampling blocks.

    Block 0 is the optimized block; the extra non-downsampling 16x block at
    4x4 follows the listed blocks. Attention follows block `attention_after`.
    """
    _check_arch(arch)
    n = _num_blocks(image_size)
    mults = [(_D_MULTIPLIERS[i] if i < len(_D_MULTIPLIERS) else 1) for i in range(n)][::-1]
    res = [image_size // 2 ** (i + 1) for i in range(n)]
    att_res = _ATTENTION_RESOLUTION[arch]
    after = None if att_res is None else res.index(min(att_res, image_size // 2))
    return mults, res, after


def parse_resolutions(value):
    """Feature-map sizes from a flag / config value.

    None or "" -> None (the arch's placement); "none" or [] -> () (no block);
    "16,32" or [16, 32] -> (16, 32). Raises ValueError on anything else.
    """
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, str):
        if value.strip().lower() == "none":
            return ()
        parts = [p.strip() for p in value.split(",")]
        if not all(p.isdigit() for p in parts):
            raise ValueError(f"attention resolutions must be comma-separated sizes "
                             f"(e.g. 16,32) or 'none', got {value!r}")
        value = [int(p) for p in parts]
    try:
        values = tuple(value)
    except TypeError:
        raise ValueError(f"attention resolutions must be a list of sizes, got {value!r}") from None
    if not all(isinstance(r, (int, np.integer)) and not isinstance(r, bool) and r > 0
               for r in values):
        raise ValueError(f"attention resolutions must be positive integers, got {value!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"attention resolutions repeat a size: {value!r}")
    return tuple(sorted(int(r) for r in values))


def _placements(network, block_resolutions, arch_after, attention_resolutions, attention):
    """`[(block index, layer name)]` of the attention / comparison blocks.

    `attention_resolutions` None: the arch's single placement `arch_after`;
    otherwise one block after the first block whose output has each size.
    """
    if attention not in BLOCK_TYPES:
        raise ValueError(f"unknown attention type {attention!r}; expected one of {BLOCK_TYPES}")
    stem = f"{network[0]}_{_BLOCK_STEM[attention]}"
    resolutions = parse_resolutions(attention_resolutions)
    if resolutions is None:
        return [] if arch_after is None else [(arch_after, stem)]
    for r in resolutions:
        if r not in block_resolutions:
            raise ValueError(
                f"no {r}x{r} feature map in the {network} to place attention at; its blocks "
                f"output {sorted(set(block_resolutions))}")
    if len(resolutions) == 1:
        return [(block_resolutions.index(resolutions[0]), stem)]
    return [(block_resolutions.index(r), f"{stem}_{r}") for r in resolutions]


def attention_placements(network, arch, image_size, attention_resolutions=None,
                         attention="release"):
    """`[(block index, layer name)]` of `network`'s ("generator" | "discriminator")
    attention / comparison blocks; ValueError naming the problem if impossible."""
    layout = generator_layout if network == "generator" else discriminator_layout
    _, res, after = layout(arch, image_size)
    return _placements(network, res, after, attention_resolutions, attention)
