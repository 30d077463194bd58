"""Using a trained generator: loading, sample grids, interpolations, attention maps, export.

The library behind ``tools/sample.py``, ``tools/visualize_attention.py`` and
``tools/export_generator.py`` (the tools only parse flags).

Loading
  :func:`load_checkpoint` takes a training log directory
  (``<checkpoint_dir>/imagenet_<batch_size>`` with ``config.json`` and
  ``ckpt-N``), its parent ``<checkpoint_dir>``, or a directory written by
  ``tools/convert_tf1_checkpoint.py``, builds the generator (and, on request,
  the discriminator) from ``config.json`` and restores it. A checkpoint whose
  generator does not match the configured architecture fails with
  :class:`CheckpointMismatchError`.

Sampling is side-effect free
  Every network call here uses eval mode (``training=False``: moving batch-norm
  statistics) and ``update_sn=False``: the spectral-norm ``u`` vectors are left
  untouched, so sampling never changes the restored state and the same call
  gives the same images. (The release's generator also ran one power iteration
  and wrote ``u`` at eval time; with a trained ``u`` that iteration has
  converged, and one more changes the outputs negligibly.)

Standing statistics
  :func:`use_standing_statistics` replaces G's moving batch-norm statistics by
  standing statistics (:mod:`sagan_tf.standing_statistics`, a documented
  deviation) in memory before sampling; ``LoadedCheckpoint.bn_statistics``
  says which statistics the samples used, and the tools print it.

Reproducibility
  All randomness comes from ``numpy.random.default_rng(seed)``; PNGs and
  ``.npz`` files are written byte-identically for the same arguments (the
  ``.npz`` zip entries carry a fixed timestamp). Outputs are written atomically
  (temporary file in the target directory, then rename); parent directories
  are created.

Class interpolation
  The generator is conditioned only through the per-class ``gamma``/``beta``
  rows of its conditional batch norms. Interpolating "between two classes"
  interpolates those rows linearly (as BigGAN/SAGAN figures do): a copy of the
  generator is built whose class tables hold the mixed rows, and the real
  ``Generator.call`` runs on it, so no network code is duplicated.

Attention maps (the paper's figure)
  For the release block, ``attention_map`` gives ``[B, N, N/4]``: each query
  position of the ``H x W`` feature map attends over the ``H/2 x W/2`` grid of
  2x2-max-pooled keys; for the slide variant ``[B, N, N]`` over the full grid.
  A query pixel of the image is mapped to the feature-map cell containing it;
  its row of weights is reshaped to the key grid and upsampled to the image
  size, keeping its sum at 1 (nearest: each key cell spread evenly over its
  pixels; bilinear: resized, clipped at 0 and renormalised). Colouring
  (divide by the maximum; a jet-like colormap blended with an opacity that
  grows with the weight) happens only for the picture. The memory-efficient
  attention path
  (``attention_query_block_size``) computes the same block output and the
  same maps.
"""
import dataclasses
import glob
import io
import json
import os
import shutil
import tempfile
import weakref
import zipfile

import numpy as np
import tensorflow as tf

from sagan_tf import checkpoints
from sagan_tf.fileio import atomic_write, current_umask, read_json_object
from sagan_tf.networks import Discriminator, Generator, network_options

__all__ = [
    "CONFIG_FILENAME", "SAMPLE_MODES", "CheckpointMismatchError", "LoadedCheckpoint",
    "find_logdir", "find_checkpoint", "read_config", "generator_kwargs", "discriminator_kwargs",
    "load_checkpoint", "generate", "to_uint8", "sample_latents", "slerp", "lerp", "make_grid",
    "class_grid", "random_grid", "latent_interpolation_grid", "class_interpolation_grid",
    "class_interpolation_generator", "sample_arrays", "sample_to_file", "write_png",
    "write_npz", "read_image", "generator_replay", "generator_attention_input",
    "discriminator_attention_input", "default_query_points", "parse_query_points",
    "query_attention_maps", "colorize", "attention_figure", "attention_figure_rows",
    "GeneratorExportModule", "export_generator",
]

CONFIG_FILENAME = "config.json"
_NPZ_DATE = (1980, 1, 1, 0, 0, 0)  # fixed zip timestamp: byte-identical .npz files


#: The checkpoint does not hold the network that config.json describes
#: (:class:`sagan_tf.checkpoints.CheckpointMismatchError`, a ``ValueError``).
CheckpointMismatchError = checkpoints.CheckpointMismatchError


# ----------------------------------------------------------------------------
# Locating and loading checkpoints.

def find_logdir(checkpoint_dir, batch_size=None):
    """The directory holding ``config.json`` and the checkpoints.

    Accepts the logdir itself, or ``<checkpoint_dir>`` with one
    ``imagenet_<batch_size>`` subdirectory (``batch_size`` picks one when there
    are several).
    """
    if not checkpoint_dir:
        raise ValueError("--checkpoint_dir is required (a training log directory, its parent "
                         "--checkpoint_dir of train_imagenet.py, or a converted checkpoint)")
    return checkpoints.find_run_dir(checkpoint_dir, batch_size)


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
    # The newest *complete* checkpoint (sagan_tf.checkpoints): a save cut short
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


def read_config(logdir):
    """``(config dict, path)`` of ``<logdir>/config.json``."""
    path = os.path.join(logdir, CONFIG_FILENAME)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {CONFIG_FILENAME} in {logdir!r}: the architecture of the "
                                "checkpoint is unknown (training and "
                                "tools/convert_tf1_checkpoint.py write it)")
    return read_json_object(path), path


def _get(config, path, *keys, default=None, required=True):
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    if required and default is None:
        raise ValueError(f"{path} has no {keys[0]!r}")
    return default


def generator_kwargs(config, path=CONFIG_FILENAME, attention_query_block_size=None):
    """`Generator` constructor arguments from a config.json dict."""
    options = network_options(config, "generator")  # the paper's ablations, if any
    return dict(arch=str(_get(config, path, "generator_type", default="test")),
                image_size=int(_get(config, path, "image_size")),
                z_dim=int(_get(config, path, "z_dim")),
                gf_dim=int(_get(config, path, "gf_dim")),
                num_classes=int(_get(config, path, "number_classes", "num_classes")),
                attention=str(_get(config, path, "attention", default="release")),
                attention_query_block_size=attention_query_block_size,
                attention_resolutions=options["attention_resolutions"],
                spectral_norm=options["spectral_norm"])


def discriminator_kwargs(config, path=CONFIG_FILENAME, attention_query_block_size=None):
    """`Discriminator` constructor arguments from a config.json dict."""
    options = network_options(config, "discriminator")
    return dict(arch=str(_get(config, path, "discriminator_type", default="test")),
                image_size=int(_get(config, path, "image_size")),
                df_dim=int(_get(config, path, "df_dim")),
                num_classes=int(_get(config, path, "number_classes", "num_classes")),
                attention=str(_get(config, path, "attention", default="release")),
                attention_query_block_size=attention_query_block_size,
                attention_resolutions=options["attention_resolutions"])


def _stored_variable_count(reader, name):
    """Number of variables in the checkpoint's object graph under root child ``name``
    (:func:`sagan_tf.checkpoints.count_variables`); None if there is no such child."""
    return checkpoints.count_variables(reader, name)


def _restore(name, model, checkpoint_path, describe):
    """Restores ``model`` as child ``name`` of the checkpoint, checking it matches:
    every variable of ``model`` has its stored shape (the first that does not is
    named), and no variable is missing on either side."""
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

    @property
    def image_size(self):
        return self.generator.image_size

    @property
    def num_classes(self):
        return self.generator.num_classes

    @property
    def z_dim(self):
        return self.generator.z_dim


def use_standing_statistics(loaded, num_batches, batch_size=None, seed=0):
    """Gives ``loaded.generator`` standing batch-norm statistics over ``num_batches``
    batches (in memory only; 0: keep the moving averages) of ``batch_size``
    (default: the training ``batch_size`` of config.json, else 64), drawn from
    ``seed``. Sets and returns ``loaded.bn_statistics``, the label to print."""
    from sagan_tf import standing_statistics  # pylint: disable=import-outside-toplevel
    num_batches = int(num_batches or 0)
    if num_batches < 0:
        raise ValueError(f"--standing_stats_batches must be >= 0, got {num_batches}")
    batch_size = int(batch_size or (loaded.config or {}).get("batch_size") or 64)
    if num_batches:
        standing_statistics.accumulate_standing_statistics(loaded.generator, num_batches,
                                                           batch_size, seed=seed)
    loaded.bn_statistics = standing_statistics.describe(num_batches, batch_size)
    return loaded.bn_statistics


def _checkpoint_step(path):
    return checkpoints.checkpoint_step(path)


def load_checkpoint(checkpoint_dir=None, checkpoint_path=None, batch_size=None,
                    discriminator=False, attention_query_block_size=None):
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

    Returns:
      a :class:`LoadedCheckpoint`.
    """
    if checkpoint_dir:
        logdir = find_logdir(checkpoint_dir, batch_size)
    elif checkpoint_path:
        logdir = (checkpoint_path if os.path.isdir(checkpoint_path)
                  else os.path.dirname(os.path.abspath(checkpoint_path)))
    else:
        raise ValueError("pass --checkpoint_dir (or --checkpoint_path)")
    config, config_path = read_config(logdir)
    path = find_checkpoint(logdir, checkpoint_path)
    g_kwargs = generator_kwargs(config, config_path, attention_query_block_size)
    G = Generator(**g_kwargs).ensure_built()
    arch = ", ".join(f"{k}={v}" for k, v in g_kwargs.items() if k != "attention_query_block_size")
    describe = f"{config_path} ({arch})"
    _restore("generator", G, path, describe)
    D = None
    if discriminator:
        d_kwargs = discriminator_kwargs(config, config_path, attention_query_block_size)
        D = Discriminator(**d_kwargs).ensure_built()
        _restore("discriminator", D, path, f"{config_path} ({d_kwargs['arch']}, "
                 f"df_dim={d_kwargs['df_dim']})")
    return LoadedCheckpoint(G, D, config, config_path, path, _checkpoint_step(path))


# ----------------------------------------------------------------------------
# Generation.

_GENERATE_FNS = weakref.WeakKeyDictionary()


def _generate_fn(G):
    """A compiled, side-effect-free ``G(z, labels)`` (eval mode, no ``u`` update)."""
    fn = _GENERATE_FNS.get(G)
    if fn is None:
        G_ref = weakref.ref(G)  # no strong reference from the cache value to its key

        @tf.function(input_signature=[tf.TensorSpec([None, G.z_dim], tf.float32),
                                      tf.TensorSpec([None], tf.int32)])
        def fn(z, labels):
            return G_ref()(z, labels, training=False, update_sn=False)
        _GENERATE_FNS[G] = fn
    return fn


def generate(G, z, labels, batch_size=100):
    """Images ``float32 [N, S, S, 3]`` in [-1, 1] for ``z [N, z_dim]``, ``labels [N]``."""
    z = np.asarray(z, np.float32)
    labels = np.asarray(labels, np.int32)
    if z.ndim != 2 or z.shape[1] != G.z_dim:
        raise ValueError(f"z must have shape [N, {G.z_dim}], got {z.shape}")
    if labels.shape != (z.shape[0],):
        raise ValueError(f"labels must have shape [{z.shape[0]}], got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= G.num_classes):
        raise ValueError(f"labels must be in [0, {G.num_classes}), got {labels.min()}.."
                         f"{labels.max()}")
    fn = _generate_fn(G)
    out = [fn(tf.constant(z[i:i + batch_size]), tf.constant(labels[i:i + batch_size])).numpy()
           for i in range(0, len(z), max(1, int(batch_size)))]
    if not out:
        return np.zeros((0, G.image_size, G.image_size, 3), np.float32)
    return np.concatenate(out)


def to_uint8(images):
    """[-1, 1] floats -> uint8 ``round((x + 1) * 127.5)`` clipped to [0, 255]
    (the same mapping as the exported serving signature)."""
    x = np.round((np.asarray(images, np.float32) + np.float32(1)) * np.float32(127.5))
    return np.clip(x, 0, 255).astype(np.uint8)


def sample_latents(rng, n, z_dim):
    """``z ~ N(0, 1)``, float32 ``[n, z_dim]``, from a numpy Generator."""
    return rng.standard_normal((n, z_dim)).astype(np.float32)


def lerp(z0, z1, t):
    return (1.0 - t) * z0 + t * z1


def slerp(z0, z1, t):
    """Spherical interpolation (falls back to linear for (anti)parallel vectors)."""
    z0, z1 = np.asarray(z0, np.float64), np.asarray(z1, np.float64)
    cos = np.dot(z0, z1) / max(np.linalg.norm(z0) * np.linalg.norm(z1), 1e-12)
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if np.sin(omega) < 1e-6:
        return lerp(z0, z1, t)
    return (np.sin((1.0 - t) * omega) * z0 + np.sin(t * omega) * z1) / np.sin(omega)


def _interpolate(z0, z1, num_steps, method):
    if method not in ("slerp", "linear"):
        raise ValueError(f"interpolation must be 'slerp' or 'linear', got {method!r}")
    f = slerp if method == "slerp" else lerp
    return np.stack([f(z0, z1, t) for t in np.linspace(0.0, 1.0, num_steps)]).astype(np.float32)


def make_grid(images, num_rows, num_columns, padding=2, pad_value=255, zoom=1):
    """Tiles uint8 ``[num_rows * num_columns, S, S, 3]`` into one image.

    Size: ``num_rows * S * zoom + (num_rows + 1) * padding`` high, likewise wide
    (``zoom``: nearest-neighbour magnification of each tile).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"make_grid takes uint8 images, got {images.dtype}")
    if len(images) != num_rows * num_columns:
        raise ValueError(f"{len(images)} images do not fill a {num_rows}x{num_columns} grid")
    zoom = max(1, int(zoom))
    if zoom > 1:
        images = images.repeat(zoom, axis=1).repeat(zoom, axis=2)
    h, w = images.shape[1:3]
    grid = np.full((num_rows * h + (num_rows + 1) * padding,
                    num_columns * w + (num_columns + 1) * padding, 3), pad_value, np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, num_columns)
        y, x = padding + r * (h + padding), padding + c * (w + padding)
        grid[y:y + h, x:x + w] = img
    return grid


def _check_classes(classes, num_classes, flag="--classes"):
    classes = [int(c) for c in classes]
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"{flag}: classes {bad} out of range [0, {num_classes})")
    return classes


def class_grid(G, classes, num_columns, seed=0, batch_size=100, **grid_kwargs):
    """One row per class of ``classes``, ``num_columns`` samples each (independent z)."""
    classes = _check_classes(classes, G.num_classes)
    if not classes or num_columns < 1:
        raise ValueError("need at least one class and one column")
    rng = np.random.default_rng(seed)
    z = sample_latents(rng, len(classes) * num_columns, G.z_dim)
    labels = np.repeat(np.asarray(classes, np.int32), num_columns)
    images = to_uint8(generate(G, z, labels, batch_size))
    return make_grid(images, len(classes), num_columns, **grid_kwargs)


def random_grid(G, num_rows, num_columns, seed=0, batch_size=100, **grid_kwargs):
    """A grid of samples with random classes (uniform) and random z."""
    if num_rows < 1 or num_columns < 1:
        raise ValueError("num_rows and num_columns must be >= 1")
    rng = np.random.default_rng(seed)
    n = num_rows * num_columns
    labels = rng.integers(0, G.num_classes, n).astype(np.int32)
    z = sample_latents(rng, n, G.z_dim)
    images = to_uint8(generate(G, z, labels, batch_size))
    return make_grid(images, num_rows, num_columns, **grid_kwargs)


def latent_interpolation_grid(G, classes, num_steps, seed=0, method="slerp", batch_size=100,
                              **grid_kwargs):
    """Row r: class ``classes[r]``, z interpolated from z0_r to z1_r in ``num_steps``."""
    classes = _check_classes(classes, G.num_classes)
    if not classes or num_steps < 2:
        raise ValueError("need at least one class and num_steps >= 2")
    rng = np.random.default_rng(seed)
    z = np.concatenate([_interpolate(*sample_latents(rng, 2, G.z_dim), num_steps, method)
                        for _ in classes])
    labels = np.repeat(np.asarray(classes, np.int32), num_steps)
    images = to_uint8(generate(G, z, labels, batch_size))
    return make_grid(images, len(classes), num_steps, **grid_kwargs)


def class_interpolation_generator(G, class_a, class_b, num_steps):
    """A copy of ``G`` with ``num_steps`` "classes": class t mixes a -> b at t/(num_steps-1).

    Every conditional batch norm's ``gamma``/``beta`` rows are
    ``(1 - t) * row[a] + t * row[b]``; all other variables are copied. At
    ``t = 0`` / ``1`` the copy reproduces class a / b exactly.
    """
    class_a, class_b = _check_classes([class_a, class_b], G.num_classes)
    config = G.get_config()
    query_block = None
    if G.g_non_local is not None:
        query_block = G.g_non_local.query_block_size
    G2 = Generator(**{**config, "num_classes": int(num_steps)},
                   attention_query_block_size=query_block, name=G.name).ensure_built()

    def key(v):
        return v.path.split("/", 1)[1]

    # The class tables: gamma/beta of every conditional batch norm (identified by
    # layer, not by shape: num_steps may equal num_classes).
    class_tables = {key(v) for block in G2.blocks for cbn in (block.cbn_0, block.cbn_1)
                    for v in (cbn.gamma, cbn.beta)}
    src = {key(v): v for v in G.variables}
    ts = np.linspace(0.0, 1.0, num_steps, dtype=np.float32)[:, None]
    for v in G2.variables:
        value = src[key(v)].numpy()
        if key(v) in class_tables:
            value = ((1.0 - ts) * value[class_a] + ts * value[class_b]).astype(value.dtype)
        v.assign(value)
    return G2


def class_interpolation_grid(G, class_a, class_b, num_steps, num_rows, seed=0, batch_size=100,
                             **grid_kwargs):
    """Row r: one z, class conditioning interpolated from ``class_a`` to ``class_b``."""
    if num_steps < 2 or num_rows < 1:
        raise ValueError("need num_steps >= 2 and num_rows >= 1")
    G2 = class_interpolation_generator(G, class_a, class_b, num_steps)
    rng = np.random.default_rng(seed)
    z = np.repeat(sample_latents(rng, num_rows, G.z_dim), num_steps, axis=0)
    labels = np.tile(np.arange(num_steps, dtype=np.int32), num_rows)
    images = to_uint8(generate(G2, z, labels, batch_size))
    return make_grid(images, num_rows, num_steps, **grid_kwargs)


def sample_arrays(G, num_samples, seed=0, classes=None, batch_size=100):
    """``{"images": uint8 [N,S,S,3], "labels": int32 [N], "z": float32 [N,z_dim]}``.

    Labels uniform over ``classes`` (default: all classes), as the release's
    evaluation drew them.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    rng = np.random.default_rng(seed)
    pool = np.asarray(_check_classes(classes, G.num_classes) if classes
                      else np.arange(G.num_classes), np.int32)
    labels = pool[rng.integers(0, len(pool), num_samples)].astype(np.int32)
    z = sample_latents(rng, num_samples, G.z_dim)
    images = to_uint8(generate(G, z, labels, batch_size))
    return {"images": images, "labels": labels, "z": z}


SAMPLE_MODES = ("grid", "interpolate_z", "interpolate_class", "npz")


def sample_to_file(G, mode, output, classes=None, num_rows=4, num_columns=8, num_steps=8,
                   interpolation="slerp", num_samples=10000, seed=0, batch_size=100, zoom=1,
                   padding=2):
    """What ``tools/sample.py`` does: one output file for ``mode``.

    - "grid": one row per class of ``classes`` with ``num_columns`` samples,
      or (no classes) ``num_rows x num_columns`` samples of random classes.
    - "interpolate_z": one row per class (``classes``, default ``num_rows``
      random classes), z interpolated between two random z in ``num_steps``.
    - "interpolate_class": ``classes = [a, b]``; ``num_rows`` rows, each one z
      with the class conditioning interpolated from a to b in ``num_steps``.
    - "npz": ``num_samples`` samples (labels uniform over ``classes``, default
      all) as ``images`` uint8, ``labels`` int32, ``z`` float32.

    Returns ``(output path, array written)`` (grid image or the dict).
    """
    if mode not in SAMPLE_MODES:
        raise ValueError(f"--mode must be one of {SAMPLE_MODES}, got {mode!r}")
    grid_kwargs = dict(padding=padding, zoom=zoom)
    if mode == "npz":
        arrays = sample_arrays(G, num_samples, seed, classes, batch_size)
        return write_npz(output, arrays), arrays
    if mode == "grid":
        image = (class_grid(G, classes, num_columns, seed, batch_size, **grid_kwargs) if classes
                 else random_grid(G, num_rows, num_columns, seed, batch_size, **grid_kwargs))
    elif mode == "interpolate_z":
        if not classes:
            # Class choice from its own stream, so the z pairs do not depend on it.
            classes = np.random.default_rng([seed, 1]).integers(0, G.num_classes, num_rows).tolist()
        image = latent_interpolation_grid(G, classes, num_steps, seed, interpolation, batch_size,
                                          **grid_kwargs)
    else:
        if not classes or len(classes) != 2:
            raise ValueError(f"--mode interpolate_class needs exactly two --classes (from, to), "
                             f"got {classes}")
        image = class_interpolation_grid(G, classes[0], classes[1], num_steps, num_rows, seed,
                                         batch_size, **grid_kwargs)
    return write_png(output, image), image


# ----------------------------------------------------------------------------
# Files.

def write_png(path, image):
    """Writes uint8 ``[H, W, 3]`` as PNG, atomically."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG")
    return atomic_write(path, buf.getvalue())


def write_npz(path, arrays):
    """Writes a ``.npz`` (``np.load`` readable) byte-identically for the same arrays."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(name + ".npy", date_time=_NPZ_DATE)
            info.external_attr = 0o644 << 16
            array_buf = io.BytesIO()
            np.lib.format.write_array(array_buf, np.ascontiguousarray(arrays[name]),
                                      allow_pickle=False)
            zf.writestr(info, array_buf.getvalue())
    return atomic_write(path, buf.getvalue())


def read_image(path, image_size):
    """An image file as float32 ``[1, S, S, 3]`` in [-1, 1] (resized bilinearly if needed)."""
    from PIL import Image
    if not os.path.exists(path):
        raise FileNotFoundError(f"--image {path!r} does not exist")
    with Image.open(path) as img:
        img = img.convert("RGB")
        if img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.BILINEAR)
        x = np.asarray(img, np.float32)
    return (x * (2.0 / 255.0) - 1.0)[None]


# ----------------------------------------------------------------------------
# Attention maps.

def _require_attention(model, attr):
    block = getattr(model, attr)
    if block is None:
        others = [b.name for _, b in model.extra_blocks]
        if others:  # several attention blocks, or the Residual comparison block
            raise ValueError(f"the {model.name} has no single {attr} block (it has "
                             f"{', '.join(others)}); attention maps need exactly one")
        raise ValueError(f"the {model.name} ({model.arch}) has no attention block")
    return block


def generator_replay(G, z, labels):
    """Replays ``Generator.call`` (eval mode, no ``u`` update) step by step.

    Returns ``(attention_input [B, H, W, C], images [B, S, S, 3])``; the images
    equal ``G(z, labels, training=False, update_sn=False)`` (tested, so this
    replay cannot drift from networks.py unnoticed).
    """
    _require_attention(G, "g_non_local")
    labels = tf.cast(labels, tf.int32)
    h = G.g_snh0(tf.convert_to_tensor(z, tf.float32), update_sn=False)
    h = tf.reshape(h, [-1, 4, 4, G.gf_dim * 16])
    attention_input = None
    for i, block in enumerate(G.blocks):
        h = block(h, labels, training=False, update_sn=False)
        if i == G.attention_after:
            attention_input = h
            h = G.g_non_local(h, update_sn=False)
    h = tf.nn.relu(G.g_bn(h, training=False))
    h = G.g_snconv_last(h, update_sn=False)
    return attention_input, tf.cast(tf.tanh(h), tf.float32)


def generator_attention_input(G, z, labels):
    """Input ``[B, H, W, C]`` of G's attention block for ``z``, ``labels``."""
    return generator_replay(G, z, labels)[0]


def discriminator_attention_input(D, images):
    """Input ``[B, H, W, C]`` of D's attention block for images in [-1, 1]."""
    _require_attention(D, "d_non_local")
    h = tf.convert_to_tensor(images, tf.float32)
    for block in D.blocks[:D.attention_after + 1]:
        h = block(h, update_sn=False)
    return h


def default_query_points(image_size):
    """Five query pixels ``(row, col)``: the centre and the centres of the four quadrants."""
    s = image_size
    return [(s // 2, s // 2), (s // 4, s // 4), (s // 4, 3 * s // 4), (3 * s // 4, s // 4),
            (3 * s // 4, 3 * s // 4)]


def parse_query_points(values):
    """``["8,8", "16,24 4,4"]`` -> ``[(8, 8), (16, 24), (4, 4)]``; None/empty -> None."""
    points = []
    for value in values or ():
        for item in value.split():
            parts = item.split(",")
            try:
                if len(parts) != 2:
                    raise ValueError
                points.append((int(parts[0]), int(parts[1])))
            except ValueError:
                raise ValueError(f"--queries: expected 'row,col' integers, got {item!r}") from None
    return points or None


def query_attention_maps(block, x, query_points, image_size, upsample="nearest"):
    """Attention of each query point over the image.

    Args:
      block: a ``SelfAttention`` or ``SlideSelfAttention`` (built).
      x: its input ``[B, H, W, C]``.
      query_points: ``(row, col)`` pixels of the ``image_size`` image.
      upsample: "nearest" or "bilinear".

    Returns:
      float64 ``[B, Q, S, S]``; each ``[b, q]`` map is >= 0 and sums to 1.
    """
    if upsample not in ("nearest", "bilinear"):
        raise ValueError(f"upsample must be 'nearest' or 'bilinear', got {upsample!r}")
    height, width = int(x.shape[1]), int(x.shape[2])
    weights = block.attention_map(x, update_sn=False).numpy().astype(np.float64)  # [B, N, M]
    num_keys = weights.shape[-1]
    if num_keys == height * width:
        kh, kw = height, width
    elif num_keys * 4 == height * width:
        kh, kw = height // 2, width // 2
    else:
        raise ValueError(f"attention map with {num_keys} keys for a {height}x{width} input")
    if image_size % kh or image_size % kw:
        raise ValueError(f"image size {image_size} is not a multiple of the key grid {kh}x{kw}")
    out = np.zeros((weights.shape[0], len(query_points), image_size, image_size))
    for q, (row, col) in enumerate(query_points):
        if not (0 <= row < image_size and 0 <= col < image_size):
            raise ValueError(f"query point ({row}, {col}) outside the "
                             f"{image_size}x{image_size} image")
        index = (row * height // image_size) * width + col * width // image_size
        m = weights[:, index].reshape(-1, kh, kw)
        if upsample == "nearest":
            fy, fx = image_size // kh, image_size // kw
            up = m.repeat(fy, axis=1).repeat(fx, axis=2) / (fy * fx)
        else:
            up = tf.image.resize(m[..., None], [image_size, image_size],
                                 method="bilinear").numpy()[..., 0].astype(np.float64)
            up = np.maximum(up, 0.0)
            up /= up.sum(axis=(1, 2), keepdims=True)
        out[:, q] = up
    return out


def colorize(values):
    """A jet-like colormap: values in [0, 1] ``[...]`` -> float RGB in [0, 1] ``[..., 3]``."""
    t = np.clip(np.asarray(values, np.float64), 0.0, 1.0)[..., None]
    centres = np.array([3.0, 2.0, 1.0])  # red, green, blue peaks at t = 3/4, 1/2, 1/4
    return np.clip(1.5 - np.abs(4.0 * t - centres), 0.0, 1.0)


_MARKER_COLOURS = np.array([[0, 255, 0], [255, 0, 255], [0, 255, 255], [255, 255, 0],
                            [255, 128, 0], [255, 255, 255], [128, 0, 255], [255, 0, 0]], np.uint8)


def _mark(panel, row, col, colour, radius):
    """Draws a filled square with a black border at display pixel (row, col)."""
    h, w = panel.shape[:2]
    y0, y1 = max(0, row - radius - 1), min(h, row + radius + 2)
    x0, x1 = max(0, col - radius - 1), min(w, col + radius + 2)
    panel[y0:y1, x0:x1] = 0
    panel[max(0, row - radius):min(h, row + radius + 1),
          max(0, col - radius):min(w, col + radius + 1)] = colour


def attention_figure(image, maps, query_points, zoom=1, alpha=0.6, padding=2):
    """One figure row: the image with all query points, then one overlay per query.

    Args:
      image: uint8 ``[S, S, 3]``.
      maps: ``[Q, S, S]`` attention maps (each summing to 1).
      query_points: ``Q`` ``(row, col)`` pixels.
      zoom: nearest magnification of each panel.
      alpha: opacity of the colour map where the weight peaks (the opacity
        scales with weight / max weight).

    Returns:
      uint8 ``[S * zoom, (Q + 1) * S * zoom + (Q + 2) * padding, 3]`` (no
      vertical padding; :func:`make_grid`-style stacking adds it).
    """
    zoom = max(1, int(zoom))
    img = np.asarray(image, np.uint8).repeat(zoom, 0).repeat(zoom, 1)
    size = img.shape[0]
    radius = max(1, size // 48)
    panels = []
    first = img.copy()
    centres = [(r * zoom + zoom // 2, c * zoom + zoom // 2) for r, c in query_points]
    for q, (r, c) in enumerate(centres):
        _mark(first, r, c, _MARKER_COLOURS[q % len(_MARKER_COLOURS)], radius)
    panels.append(first)
    for q, m in enumerate(maps):
        m = np.asarray(m, np.float64).repeat(zoom, 0).repeat(zoom, 1)
        peak = m.max()
        level = (m / peak if peak > 0 else m)[..., None]
        # Colour and opacity both follow the weight: unattended pixels show the image.
        weight = alpha * level
        colour = colorize(level[..., 0]) * 255.0
        panel = np.round((1.0 - weight) * img + weight * colour).clip(0, 255).astype(np.uint8)
        _mark(panel, *centres[q], _MARKER_COLOURS[q % len(_MARKER_COLOURS)], radius)
        panels.append(panel)
    row = make_grid(np.stack(panels), 1, len(panels), padding=padding, zoom=1)
    return row[padding:padding + size]


def attention_figure_rows(loaded, labels, seed=0, query_points=None, network="generator",
                          image=None, zoom=None, alpha=0.6, upsample="nearest", padding=2):
    """The whole attention figure and its maps.

    Args:
      loaded: a :class:`LoadedCheckpoint` (with a discriminator for
        ``network`` "discriminator"/"both").
      labels: class of each generated image (one figure row per image and
        network).
      seed: draws the z of the generated images.
      query_points: ``(row, col)`` pixels (default :func:`default_query_points`).
      network: "generator", "discriminator" or "both".
      image: optional float ``[1, S, S, 3]`` in [-1, 1] to analyse instead of
        generated images (discriminator only).
      zoom: panel magnification; default ``max(1, 128 // S)``.

    Returns:
      ``(figure uint8 [H, W, 3], maps dict network -> [B, Q, S, S])``.
    """
    G, D = loaded.generator, loaded.discriminator
    size = G.image_size
    if network not in ("generator", "discriminator", "both"):
        raise ValueError(f"--network must be generator, discriminator or both, got {network!r}")
    if image is not None and network != "discriminator":
        raise ValueError("--image is analysed by the discriminator only; pass "
                         "--network discriminator (the generator's attention needs a generated "
                         "image)")
    if network != "generator" and D is None:
        raise ValueError("the discriminator was not loaded")
    query_points = list(query_points or default_query_points(size))
    zoom = max(1, 128 // size) if not zoom else int(zoom)
    maps = {}
    if image is not None:
        images = np.asarray(image, np.float32)
        z = labels = None
    else:
        labels = np.asarray(_check_classes(labels, G.num_classes, "--labels"), np.int32)
        z = sample_latents(np.random.default_rng(seed), len(labels), G.z_dim)
        x, images = generator_replay(G, z, labels)
        images = images.numpy()
        if network in ("generator", "both"):
            maps["generator"] = query_attention_maps(_require_attention(G, "g_non_local"), x,
                                                     query_points, size, upsample)
    if network in ("discriminator", "both"):
        x = discriminator_attention_input(D, images)
        maps["discriminator"] = query_attention_maps(_require_attention(D, "d_non_local"), x,
                                                     query_points, size, upsample)
    pictures = to_uint8(images)
    rows = []
    for b in range(len(pictures)):
        for name in ("generator", "discriminator"):
            if name in maps:
                rows.append(attention_figure(pictures[b], maps[name][b], query_points, zoom,
                                             alpha, padding))
    width = rows[0].shape[1]
    figure = np.full((sum(r.shape[0] for r in rows) + (len(rows) + 1) * padding, width, 3),
                     255, np.uint8)
    y = padding
    for r in rows:
        figure[y:y + r.shape[0]] = r
        y += r.shape[0] + padding
    return figure, maps


# ----------------------------------------------------------------------------
# Export.

class _Untracked:
    """Holds an object without making it a tracked dependency."""

    def __init__(self, value):
        self.value = value


class GeneratorExportModule(tf.Module):
    """A generator wrapped for ``tf.saved_model.save``.

    ``serve(z float32 [B, z_dim], labels int32 [B]) -> {"images": uint8 [B, S, S, 3]}``
    (eval mode, no ``u`` update; ``round((x + 1) * 127.5)`` clipped to [0, 255]).
    """

    def __init__(self, generator, config=None):
        super().__init__(name="sagan_generator")
        # The Keras model itself is not made a child of this module: Keras 3
        # would add its own (single-input) serving function for it on save.
        # Its variables are tracked explicitly instead, as one flat list, so
        # none can be hidden by a Keras container (the Keras-3-list pitfall);
        # `export_generator` checks that every one of them was saved.
        self._generator = _Untracked(generator)
        self.generator_variables = list(generator.variables)
        # Readable after loading: `loaded.z_dim.numpy()` etc.
        self.image_size = tf.Variable(generator.image_size, dtype=tf.int32, trainable=False)
        self.z_dim = tf.Variable(generator.z_dim, dtype=tf.int32, trainable=False)
        self.num_classes = tf.Variable(generator.num_classes, dtype=tf.int32, trainable=False)
        self.serve = tf.function(self._serve, input_signature=[
            tf.TensorSpec([None, generator.z_dim], tf.float32, name="z"),
            tf.TensorSpec([None], tf.int32, name="labels")])

    def _serve(self, z, labels):
        x = self._generator.value(z, labels, training=False, update_sn=False)
        x = tf.clip_by_value(tf.round((x + 1.0) * 127.5), 0.0, 255.0)
        return {"images": tf.cast(x, tf.uint8)}


def export_generator(loaded, export_dir, overwrite=False):
    """Writes a SavedModel of ``loaded.generator`` to ``export_dir`` (atomically).

    The ``serving_default`` signature is ``(z, labels) -> {"images"}`` (see
    :class:`GeneratorExportModule`); ``tf.saved_model.load(export_dir).serve``
    is the same function. ``config.json`` of the run is copied to
    ``<export_dir>/assets.extra/sagan_config.json``. Returns ``export_dir``.
    """
    export_dir = os.path.abspath(export_dir)
    if os.path.exists(export_dir) and (not os.path.isdir(export_dir) or os.listdir(export_dir)):
        if not overwrite:
            raise FileExistsError(f"--export_dir {export_dir} exists and is not empty "
                                  "(pass --overwrite to replace it)")
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp_export_", dir=parent)
    try:
        module = GeneratorExportModule(loaded.generator)
        tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve})
        saved = [k for k in tf.train.load_checkpoint(os.path.join(tmp, "variables", "variables"))
                 .get_variable_to_shape_map() if k.startswith("generator_variables/")]
        if len(saved) != len(loaded.generator.variables):
            raise RuntimeError(f"the SavedModel holds {len(saved)} generator variables, the "
                               f"generator has {len(loaded.generator.variables)}")
        extra = os.path.join(tmp, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        info = {**loaded.config, "exported_from": loaded.checkpoint_path, "step": loaded.step}
        with open(os.path.join(extra, "sagan_config.json"), "w") as f:
            json.dump(info, f, indent=2, sort_keys=True, default=str)
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's 0700 -> the usual permissions
        if os.path.exists(export_dir):
            if os.path.isdir(export_dir):
                shutil.rmtree(export_dir)
            else:
                os.remove(export_dir)
        os.replace(tmp, export_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return export_dir
