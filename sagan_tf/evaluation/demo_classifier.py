"""A small classifier trained on demo records and saved with the Inception interface.

The offline demo (and the tests) cannot download the TF-GAN Inception, so
``train_demo_classifier`` trains a small Keras CNN on the demo records
(``sagan_tf.data.record_format``) and exports it as a SavedModel that
``sagan_tf.evaluation.metrics.load_classifier`` / ``eval_imagenet.py --inception_path``
load exactly like the Inception:

* the loaded object is callable, and has a ``serving_default`` signature,
  taking ``images`` float32 ``[B, S, S, 3]`` in [-1, 1] at its own input size
  ``S`` (``input_size``, default 32) and returning
  ``{"pool_3": [B, F], "logits": [B, num_classes]}``;
* the input size is recorded twice: in the signature's static shape and as
  the scalar variable ``input_size``; the evaluation resizes images to it.

``tools/train_demo_classifier.py`` is its command line.
"""
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from sagan_tf.data import pipeline as sdata, record_format
from sagan_tf.evaluation import metrics

__all__ = ["build_classifier_model", "ClassifierModule", "save_classifier",
           "detect_num_classes", "train_demo_classifier"]


def build_classifier_model(input_size, num_classes, width=16, feature_dim=64, seed=0):
    """A small CNN: ``images [B,S,S,3] -> (features [B, feature_dim], logits [B, K])``.

    Three conv/ReLU/pool stages, global average pooling, a dense feature layer
    (the ``pool_3`` stand-in, post-ReLU like Inception's pool_3) and a linear
    classifier. Returns a Keras 3 functional model with two outputs.
    """
    import keras  # pylint: disable=import-outside-toplevel
    keras.utils.set_random_seed(seed)
    inp = keras.Input((input_size, input_size, 3), name="images")
    h = inp
    for i, mult in enumerate((1, 2, 4)):
        h = keras.layers.Conv2D(width * mult, 3, padding="same", activation="relu",
                                name=f"conv{i + 1}")(h)
        if h.shape[1] > 1:
            h = keras.layers.MaxPooling2D(2, name=f"pool{i + 1}")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    features = keras.layers.Dense(feature_dim, activation="relu", name="pool_3")(h)
    logits = keras.layers.Dense(num_classes, name="logits")(features)
    return keras.Model(inp, [features, logits], name="demo_classifier")


class ClassifierModule(tf.Module):
    """The exported object: ``__call__(images) -> {"pool_3", "logits"}`` + ``input_size``."""

    def __init__(self, model, input_size):
        """``model``: from :func:`build_classifier_model`; ``input_size``: its S."""
        super().__init__(name="demo_classifier")
        self.model = model
        self.input_size = tf.Variable(int(input_size), trainable=False, dtype=tf.int32,
                                      name="input_size")
        spec = tf.TensorSpec([None, int(input_size), int(input_size), 3], tf.float32,
                             name="images")
        self.__call__ = tf.function(self._call, input_signature=[spec])

    def _call(self, images):
        features, logits = self.model(images, training=False)
        return {metrics.POOL_KEY: tf.identity(features), metrics.LOGITS_KEY: tf.identity(logits)}


def save_classifier(model, input_size, export_dir):
    """Exports ``model`` as a SavedModel at ``export_dir`` (atomically: written to a
    temporary sibling directory, then renamed). Returns ``export_dir``."""
    module = ClassifierModule(model, input_size)
    export_dir = os.path.abspath(export_dir)
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp_" + os.path.basename(export_dir), dir=parent)
    try:
        tf.saved_model.save(module, tmp, signatures={"serving_default": module.__call__})
        if os.path.exists(export_dir):
            shutil.rmtree(export_dir)
        os.replace(tmp, export_dir)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    return export_dir


def detect_num_classes(data_dir):
    """1 + the largest label found in the records of ``data_dir``."""
    top = -1
    for f in record_format.list_record_files(data_dir):
        for rec in record_format.iter_serialized_records(f):
            top = max(top, int(record_format.decode_example_numpy(rec)[1]))
    if top < 0:
        raise ValueError(f"no records in {data_dir}")
    return top + 1


def train_demo_classifier(data_dir, output_dir, image_size=None, num_classes=None,
                          input_size=32, steps=500, batch_size=64, learning_rate=1e-3,
                          seed=0, verbose=0, holdout_fraction=0.0, eval_every=250,
                          patience=4, log=print):
    """Trains the demo classifier on the records of ``data_dir`` and exports it.

    Args:
      data_dir: directory of ``*.tfrecords`` (NUMERICS §7 format).
      output_dir: where the SavedModel goes.
      image_size: stored image size (None: read from the first record).
      num_classes: None: detected from the labels.
      input_size: the classifier's own input size; images are resized to it
        with :func:`sagan_tf.evaluation.metrics.resize_images`, as in evaluation.
      steps, batch_size, learning_rate, seed: training settings (Adam).
      holdout_fraction: > 0: hold out this share of the records (read into
        memory), train in rounds of ``eval_every`` steps for at most ``steps``,
        keep the weights of the best held-out accuracy and stop after
        ``patience`` rounds without improvement
        (:mod:`sagan_tf.evaluation.heldout_training`). 0: train ``steps`` on everything.

    Returns:
      dict with ``output_dir``, ``input_size``, ``num_classes``, ``feature_dim``
      and the final ``train_accuracy`` (on the last training batches); with a
      held-out split also ``heldout_accuracy``, ``best_step``, ``steps``,
      ``num_train`` and ``num_heldout``.
    """
    if holdout_fraction:
        return _train_with_heldout(data_dir, output_dir, num_classes, input_size, steps,
                                   batch_size, learning_rate, seed, holdout_fraction,
                                   eval_every, patience, log)
    import keras  # pylint: disable=import-outside-toplevel
    files = record_format.list_record_files(data_dir)
    image_size = int(image_size or record_format.peek_image_size(files))
    num_classes = int(num_classes or detect_num_classes(data_dir))
    dataset = sdata.make_dataset(data_dir, image_size, batch_size, num_classes,
                                 shuffle=True, shuffle_buffer_size=10000, repeat=True,
                                 seed=seed)
    dataset = dataset.map(lambda x, y: (metrics.resize_images(x, input_size), y))
    model = build_classifier_model(input_size, num_classes, seed=seed)
    train_model = keras.Model(model.input, model.outputs[1])
    train_model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        metrics=["accuracy"])
    hist = train_model.fit(dataset, steps_per_epoch=int(steps), epochs=1, verbose=verbose)
    save_classifier(model, input_size, output_dir)
    return {"output_dir": os.path.abspath(output_dir), "input_size": int(input_size),
            "num_classes": num_classes, "feature_dim": int(model.outputs[0].shape[-1]),
            "train_accuracy": float(np.asarray(hist.history["accuracy"][-1]))}


def _train_with_heldout(data_dir, output_dir, num_classes, input_size, max_steps, batch_size,
                        learning_rate, seed, holdout_fraction, eval_every, patience, log):
    """:func:`train_demo_classifier` with a held-out split and early stopping."""
    import keras  # pylint: disable=import-outside-toplevel

    from sagan_tf.evaluation import \
        heldout_training as ht  # pylint: disable=import-outside-toplevel
    images, labels = ht.read_records(data_dir)
    num_classes = int(num_classes or labels.max() + 1)
    train_idx, held_idx = ht.split_heldout(len(labels), holdout_fraction, seed)
    x = ht.to_model_input(images)
    held_x = metrics.resize_images(tf.constant(x[held_idx]), input_size).numpy()
    dataset = (tf.data.Dataset.from_tensor_slices((x[train_idx], labels[train_idx]))
               .shuffle(len(train_idx), seed=seed).repeat().batch(batch_size, drop_remainder=True)
               .map(lambda a, b: (metrics.resize_images(a, input_size), b)))
    model = build_classifier_model(input_size, num_classes, seed=seed)
    train_model = keras.Model(model.input, model.outputs[1])
    train_model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        metrics=["accuracy"])
    result = ht.fit_with_early_stopping(train_model, dataset, held_x, labels[held_idx],
                                        int(max_steps), int(eval_every), int(patience), log)
    save_classifier(model, input_size, output_dir)
    return {"output_dir": os.path.abspath(output_dir), "input_size": int(input_size),
            "num_classes": num_classes, "feature_dim": int(model.outputs[0].shape[-1]),
            "num_train": len(train_idx), "num_heldout": len(held_idx), **result}
