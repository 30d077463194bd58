"""Using a trained generator: generation, sample grids, interpolations, image files.

The library behind ``tools/sample.py`` (the tool only parses flags). The
generator comes from :func:`sagan_tf.runs.rundir.load_checkpoint` (a training run
or a directory written by ``tools/convert_tf1_checkpoint.py``); attention-map
figures are in :mod:`sagan_tf.sampling.attention_maps`, the SavedModel export in
:mod:`sagan_tf.sampling.export`.

Sampling is side-effect free
  Every network call here uses eval mode (``training=False``: moving batch-norm
  statistics) and ``update_sn=False``: the spectral-norm ``u`` vectors are left
  untouched, so sampling never changes the restored state and the same call
  gives the same images. (The release's generator also ran one power iteration
  and wrote ``u`` at eval time; with a trained ``u`` that iteration has
  converged, and one more changes the outputs negligibly.)

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
"""
import io
import os
import weakref
import zipfile

import numpy as np
import tensorflow as tf

from sagan_tf.fileio import atomic_write
from sagan_tf.models.networks import Generator
from sagan_tf.sampling.truncation import truncated_normal, with_suffix

__all__ = [
    "SAMPLE_MODES", "generate", "to_uint8", "sample_latents", "slerp", "lerp", "make_grid",
    "class_grid", "random_grid", "latent_interpolation_grid", "class_interpolation_grid",
    "class_interpolation_generator", "sample_arrays", "sample_to_file", "write_png",
    "write_npz", "read_image", "check_classes", "write_end_of_run_grids",
]

_NPZ_DATE = (1980, 1, 1, 0, 0, 0)  # fixed zip timestamp: byte-identical .npz files


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


def sample_latents(rng, n, z_dim, truncation=None):
    """``z ~ N(0, 1)``, float32 ``[n, z_dim]``, from a numpy Generator; with
    ``truncation = psi`` each component redrawn until ``|z| <= psi``
    (:mod:`sagan_tf.sampling.truncation`; not the paper's protocol)."""
    return truncated_normal(rng, (n, z_dim), truncation)


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


def check_classes(classes, num_classes, flag="--classes"):
    """``classes`` as ints; ``ValueError`` naming ``flag`` if one is out of range."""
    classes = [int(c) for c in classes]
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"{flag}: classes {bad} out of range [0, {num_classes})")
    return classes


def class_grid(G, classes, num_columns, seed=0, batch_size=100, truncation=None,
               **grid_kwargs):
    """One row per class of ``classes``, ``num_columns`` samples each (independent z)."""
    classes = check_classes(classes, G.num_classes)
    if not classes or num_columns < 1:
        raise ValueError("need at least one class and one column")
    rng = np.random.default_rng(seed)
    z = sample_latents(rng, len(classes) * num_columns, G.z_dim, truncation)
    labels = np.repeat(np.asarray(classes, np.int32), num_columns)
    images = to_uint8(generate(G, z, labels, batch_size))
    return make_grid(images, len(classes), num_columns, **grid_kwargs)


def random_grid(G, num_rows, num_columns, seed=0, batch_size=100, truncation=None,
                **grid_kwargs):
    """A grid of samples with random classes (uniform) and random z."""
    if num_rows < 1 or num_columns < 1:
        raise ValueError("num_rows and num_columns must be >= 1")
    rng = np.random.default_rng(seed)
    n = num_rows * num_columns
    labels = rng.integers(0, G.num_classes, n).astype(np.int32)
    z = sample_latents(rng, n, G.z_dim, truncation)
    images = to_uint8(generate(G, z, labels, batch_size))
    return make_grid(images, num_rows, num_columns, **grid_kwargs)


def latent_interpolation_grid(G, classes, num_steps, seed=0, method="slerp", batch_size=100,
                              truncation=None, **grid_kwargs):
    """Row r: class ``classes[r]``, z interpolated from z0_r to z1_r in ``num_steps``."""
    classes = check_classes(classes, G.num_classes)
    if not classes or num_steps < 2:
        raise ValueError("need at least one class and num_steps >= 2")
    rng = np.random.default_rng(seed)
    z = np.concatenate([_interpolate(*sample_latents(rng, 2, G.z_dim, truncation), num_steps,
                                     method)
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
    class_a, class_b = check_classes([class_a, class_b], G.num_classes)
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
                             truncation=None, **grid_kwargs):
    """Row r: one z, class conditioning interpolated from ``class_a`` to ``class_b``."""
    if num_steps < 2 or num_rows < 1:
        raise ValueError("need num_steps >= 2 and num_rows >= 1")
    G2 = class_interpolation_generator(G, class_a, class_b, num_steps)
    rng = np.random.default_rng(seed)
    z = np.repeat(sample_latents(rng, num_rows, G.z_dim, truncation), num_steps, axis=0)
    labels = np.tile(np.arange(num_steps, dtype=np.int32), num_rows)
    images = to_uint8(generate(G2, z, labels, batch_size))
    return make_grid(images, num_rows, num_steps, **grid_kwargs)


def sample_arrays(G, num_samples, seed=0, classes=None, batch_size=100, truncation=None):
    """``{"images": uint8 [N,S,S,3], "labels": int32 [N], "z": float32 [N,z_dim]}``.

    Labels uniform over ``classes`` (default: all classes), as the release's
    evaluation drew them.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    rng = np.random.default_rng(seed)
    pool = np.asarray(check_classes(classes, G.num_classes) if classes
                      else np.arange(G.num_classes), np.int32)
    labels = pool[rng.integers(0, len(pool), num_samples)].astype(np.int32)
    z = sample_latents(rng, num_samples, G.z_dim, truncation)
    images = to_uint8(generate(G, z, labels, batch_size))
    return {"images": images, "labels": labels, "z": z}


SAMPLE_MODES = ("grid", "interpolate_z", "interpolate_class", "npz")


def sample_to_file(G, mode, output, classes=None, num_rows=4, num_columns=8, num_steps=8,
                   interpolation="slerp", num_samples=10000, seed=0, batch_size=100, zoom=1,
                   padding=2, truncation=None):
    """What ``tools/sample.py`` does: one output file for ``mode``.

    - "grid": one row per class of ``classes`` with ``num_columns`` samples,
      or (no classes) ``num_rows x num_columns`` samples of random classes.
    - "interpolate_z": one row per class (``classes``, default ``num_rows``
      random classes), z interpolated between two random z in ``num_steps``.
    - "interpolate_class": ``classes = [a, b]``; ``num_rows`` rows, each one z
      with the class conditioning interpolated from a to b in ``num_steps``.
    - "npz": ``num_samples`` samples (labels uniform over ``classes``, default
      all) as ``images`` uint8, ``labels`` int32, ``z`` float32.

    With ``truncation = psi`` (:mod:`sagan_tf.sampling.truncation`) every z is truncated,
    the file name gets ``_truncation<psi>`` before its extension and the
    ``.npz`` a ``truncation`` entry.

    Returns ``(output path, array written)`` (grid image or the dict).
    """
    if mode not in SAMPLE_MODES:
        raise ValueError(f"--mode must be one of {SAMPLE_MODES}, got {mode!r}")
    output = with_suffix(output, truncation)
    grid_kwargs = dict(padding=padding, zoom=zoom, truncation=truncation)
    if mode == "npz":
        arrays = sample_arrays(G, num_samples, seed, classes, batch_size, truncation)
        if truncation:
            arrays["truncation"] = np.float32(truncation)
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


def write_end_of_run_grids(trainer, logdir, step, log):
    """The training loop's end-of-run grids: ``samples_<step>.png`` with G's
    moving batch-norm statistics (the release's sampling) and, with
    ``standing_stats_batches`` N,
    ``samples_<step>_standing_stats.png`` with standing statistics over N batches
    of ``batch_size`` (:mod:`sagan_tf.models.standing_statistics`; the networks are
    restored afterwards, so they stay equal to the checkpoint just saved).
    Returns the two paths (the second None without standing statistics)."""
    from PIL import Image  # pylint: disable=import-outside-toplevel

    from sagan_tf.models import standing_statistics  # pylint: disable=import-outside-toplevel

    def write(path, grid, how):
        with tf.io.gfile.GFile(path, "wb") as f:
            Image.fromarray(grid).save(f, format="PNG")
        log(f"Wrote {path} ({weights}G's batch norms: {how})")

    config = trainer.config
    weights = ("" if trainer.generator_ema is None else
               f"G's averaged weights, --g_ema_decay {config.g_ema_decay}; ")
    samples_path = os.path.join(logdir, f"samples_{step}.png")
    write(samples_path, trainer.sample_grid(), standing_statistics.describe(0, 0))
    num_batches = config.standing_stats_batches
    if not num_batches:
        return samples_path, None
    if isinstance(trainer.strategy, tf.distribute.TPUStrategy):
        log("Standing-statistics grid skipped: not supported on TPUs")
        return samples_path, None
    standing_path = os.path.join(logdir, f"samples_{step}_standing_stats.png")
    with standing_statistics.standing_statistics(trainer.sampling_generator, num_batches,
                                                 config.batch_size, seed=0):
        grid = trainer.sample_grid()
    write(standing_path, grid, standing_statistics.describe(num_batches, config.batch_size))
    return samples_path, standing_path
