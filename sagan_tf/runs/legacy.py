"""Import of checkpoints written by the original TF1 release (NUMERICS §10).

The release stored every model variable under `model/` (`model/g_block1/
cbn_0/gamma`, ...). The port's variable paths are the same names with the
Keras model name (`generator/`, `discriminator/`) in place of `model/`, so
the mapping is by name, and `spec_variable_map` is the single place that
defines it.

`convert_tf1_checkpoint` reads such a checkpoint, checks it against the
architecture given by the flags (one error listing every missing, unexpected
and mis-shaped variable), and writes a TF2 `tf.train.Checkpoint` with
children `generator` and `discriminator` (plus `step`) into a fresh
directory, with a `config.json`, so that evaluation and the tools can restore
it like a training run (`sagan_tf.runs.rundir.load_checkpoint`). The output
appears atomically: it is written into a temporary sibling directory and
renamed at the end.
"""
import json
import os
import re
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from sagan_tf.models.networks import Discriminator, Generator
from sagan_tf.runs import rundir

__all__ = ["spec_variable_map", "CheckpointMismatchError", "convert_tf1_checkpoint",
           "read_tf1_model_variables"]

# Variables of the original training graph that are not model weights.
_NON_MODEL = re.compile(r"(^|/)(Adam(_\d+)?|beta[12]_power(_\d+)?|global_step|d_step|g_step)$")


class CheckpointMismatchError(ValueError):
    """A checkpoint does not hold exactly the variables the architecture needs."""


def spec_variable_map(generator, discriminator=None):
    """`{release name: variable}` for built models, e.g. `model/g_snh0/Matrix`.

    The release's names are the port's variable paths with the leading model
    name replaced by `model`.
    """
    mapping = {}
    for model in (generator, discriminator):
        if model is None:
            continue
        for var in model.variables:
            _, rest = var.path.split("/", 1)
            name = f"model/{rest}"
            if name in mapping:
                raise RuntimeError(f"duplicate variable name {name}")
            mapping[name] = var
    return mapping


def read_tf1_model_variables(tf1_checkpoint):
    """`({name: shape}, reader)` of the model variables in a TF1 checkpoint.

    Accepts a checkpoint prefix or a directory holding a `checkpoint` file.
    """
    path = tf1_checkpoint
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"no checkpoint found in directory {path}")
        path = latest
    if not tf.io.gfile.exists(path + ".index"):
        raise FileNotFoundError(f"TF1 checkpoint {path} does not exist (no {path}.index)")
    reader = tf.train.load_checkpoint(path)
    shapes = {name: tuple(shape) for name, shape in reader.get_variable_to_shape_map().items()
              if not _NON_MODEL.search(name)}
    return shapes, reader, path


def _mismatch_report(expected, found):
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = sorted(name for name in set(expected) & set(found)
                       if tuple(expected[name]) != tuple(found[name]))
    lines = []
    if missing:
        lines.append(f"missing ({len(missing)}): " + ", ".join(missing))
    if unexpected:
        lines.append(f"unexpected ({len(unexpected)}): " + ", ".join(unexpected))
    if misshaped:
        lines.append(f"mis-shaped ({len(misshaped)}): " + ", ".join(
            f"{n} expected {list(expected[n])} found {list(found[n])}" for n in misshaped))
    return lines


def convert_tf1_checkpoint(tf1_checkpoint, output_dir, generator_type="test",
                           discriminator_type="test", image_size=128, z_dim=128, gf_dim=64,
                           df_dim=64, number_classes=1000, overwrite=False):
    """Converts a release checkpoint into a TF2 checkpoint directory.

    Returns the path of the written checkpoint (`<output_dir>/ckpt-<step>`).
    Raises `CheckpointMismatchError` listing every missing, unexpected and
    mis-shaped variable, `FileNotFoundError` for a missing input, and
    `FileExistsError` if `output_dir` exists (unless `overwrite`). Nothing is
    written unless the whole conversion succeeds.
    """
    shapes, reader, path = read_tf1_model_variables(tf1_checkpoint)
    if os.path.exists(output_dir) and os.listdir(output_dir) and not overwrite:
        raise FileExistsError(f"output directory {output_dir} exists and is not empty "
                              "(pass overwrite=True / --overwrite to replace it)")
    generator = Generator(generator_type, image_size, z_dim, gf_dim, number_classes).ensure_built()
    discriminator = Discriminator(discriminator_type, image_size, df_dim,
                                  number_classes).ensure_built()
    mapping = spec_variable_map(generator, discriminator)
    problems = _mismatch_report({n: v.shape for n, v in mapping.items()}, shapes)
    if problems:
        raise CheckpointMismatchError(
            f"TF1 checkpoint {path} does not match generator_type={generator_type} "
            f"discriminator_type={discriminator_type} image_size={image_size} z_dim={z_dim} "
            f"gf_dim={gf_dim} df_dim={df_dim} number_classes={number_classes}:\n  "
            + "\n  ".join(problems))
    for name, var in mapping.items():
        var.assign(reader.get_tensor(name).astype(np.float32))
    step = 0
    if reader.has_tensor("global_step"):
        step = int(reader.get_tensor("global_step"))

    output_dir = os.path.abspath(output_dir)
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=".convert_tmp_", dir=parent)
    try:
        ckpt = tf.train.Checkpoint(generator=generator, discriminator=discriminator,
                                   step=tf.Variable(step, dtype=tf.int64))
        manager = tf.train.CheckpointManager(ckpt, tmp_dir, max_to_keep=1)
        manager.save(checkpoint_number=step)
        config = {"generator_type": generator_type, "discriminator_type": discriminator_type,
                  "image_size": image_size, "z_dim": z_dim, "gf_dim": gf_dim, "df_dim": df_dim,
                  "number_classes": number_classes, "converted_from": path, "step": step}
        with open(os.path.join(tmp_dir, rundir.CONFIG_FILENAME), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
        # CheckpointManager stores paths relative to the directory in its state
        # file, so the directory stays valid after the rename below.
        if os.path.exists(output_dir):
            shutil.rmtree(output_dir)
        os.replace(tmp_dir, output_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return os.path.join(output_dir, f"ckpt-{step}")
