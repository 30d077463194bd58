"""A trained generator as a SavedModel for serving (tools/export_generator.py).

``serving_default`` / ``serve``: ``(z float32 [B, z_dim], labels int32 [B]) ->
{"images": uint8 [B, S, S, 3]}``, eval mode without spectral-norm updates; the
SavedModel needs only TensorFlow to load.

``sample`` (signature and function): ``(labels int32 [B], truncation float32 [],
seed int32 [2]) -> {"images", "z" float32 [B, z_dim]}`` draws z inside the
graph (stateless, so a seed gives the same images): ``truncation <= 0``:
``z ~ N(0, 1)`` (the paper); ``psi > 0``: BigGAN's truncation trick, every
component redrawn until ``|z| <= psi`` (:mod:`sagan_tf.sampling.truncation`).
"""
import json
import os
import shutil
import tempfile

import tensorflow as tf

from sagan_tf.fileio import current_umask
from sagan_tf.sampling.truncation import truncated_normal_tf

__all__ = ["GeneratorExportModule", "export_generator"]


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
        self.sample = tf.function(self._sample, input_signature=[
            tf.TensorSpec([None], tf.int32, name="labels"),
            tf.TensorSpec([], tf.float32, name="truncation"),
            tf.TensorSpec([2], tf.int32, name="seed")])

    def _serve(self, z, labels):
        x = self._generator.value(z, labels, training=False, update_sn=False)
        x = tf.clip_by_value(tf.round((x + 1.0) * 127.5), 0.0, 255.0)
        return {"images": tf.cast(x, tf.uint8)}

    def _sample(self, labels, truncation, seed):
        shape = tf.stack([tf.shape(labels)[0], self.z_dim])

        def draw(shape, i):
            return tf.random.stateless_normal(
                shape, tf.random.experimental.stateless_fold_in(seed, i))
        z = truncated_normal_tf(draw, shape, truncation)
        return {**self._serve(z, labels), "z": z}


def export_generator(loaded, export_dir, overwrite=False):
    """Writes a SavedModel of ``loaded.generator`` (a :class:`sagan_tf.runs.rundir.LoadedCheckpoint`) to ``export_dir`` (atomically).

    The ``serving_default`` signature is ``(z, labels) -> {"images"}`` (see
    :class:`GeneratorExportModule`); ``tf.saved_model.load(export_dir).serve``
    is the same function. The ``sample`` signature draws z itself
    (``labels, truncation, seed -> {"images", "z"}``). ``config.json`` of the run is copied to
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
        tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve,
                                                     "sample": module.sample})
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
