"""Held-out split and early stopping for ``tools/train_demo_classifier.py`` on any records.

The evaluation's class accuracy and FID with a stand-in classifier mean
something only when the classifier generalises: on data it was not trained on
it should recognise the classes. This module holds out a share of the records,
trains in rounds of ``eval_every`` steps, measures the held-out accuracy after
each round, keeps the best weights and stops when ``patience`` rounds in a
row bring no improvement (or at ``max_steps``).
"""
import numpy as np
import tensorflow as tf

from sagan_tf.data import record_format

__all__ = ["read_records", "split_heldout", "to_model_input", "fit_with_early_stopping"]


def read_records(data_dir, max_records=None):
    """All records of ``data_dir`` (up to ``max_records``) in memory:
    ``(images uint8 [N, S, S, 3], labels int32 [N])``. For data sets that fit
    in memory (the demo, one's own small sets; 100,000 images of 64x64 are 1.2 GB)."""
    images, labels = [], []
    for path in record_format.list_record_files(data_dir):
        for serialized in record_format.iter_serialized_records(path):
            image, label = record_format.decode_example_numpy(serialized)
            images.append(image)
            labels.append(label)
            if max_records and len(images) >= max_records:
                return np.stack(images), np.asarray(labels, np.int32)
    if not images:
        raise ValueError(f"no records in {data_dir}")
    return np.stack(images), np.asarray(labels, np.int32)


def split_heldout(num_records, fraction, seed=0):
    """A random split ``(train indices, held-out indices)``: ``round(fraction * N)``
    records held out (at least 1 when ``fraction > 0``), the rest for training."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"--holdout_fraction must be in [0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(num_records)
    n_held = 0 if fraction == 0 else max(1, int(round(fraction * num_records)))
    if num_records - n_held < 1:
        raise ValueError(f"{num_records} records leave none to train on after holding out "
                         f"{n_held}")
    return np.sort(order[n_held:]), np.sort(order[:n_held])


def to_model_input(images):
    """uint8 ``[N, S, S, 3]`` -> float32 in [-1, 1], as the training data decoding."""
    return images.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)


def _accuracy(model, x, y, batch_size=256):
    correct = 0
    for i in range(0, len(x), batch_size):
        logits = model(tf.constant(x[i:i + batch_size]), training=False)
        correct += int(np.sum(np.argmax(np.asarray(logits), axis=1) == y[i:i + batch_size]))
    return correct / len(x)


def fit_with_early_stopping(model, dataset, heldout_x, heldout_y, max_steps, eval_every=250,
                            patience=4, log=print):
    """Trains the compiled Keras ``model`` (images -> logits) on the repeating
    ``dataset`` in rounds of ``eval_every`` steps, up to ``max_steps``.

    After each round the accuracy on ``heldout_x`` (float32 model inputs) /
    ``heldout_y`` is measured; the weights of the best round are restored at
    the end. Stops early after ``patience`` rounds without improvement.

    Returns:
      ``{"heldout_accuracy", "best_step", "steps", "train_accuracy"}`` (the
      training accuracy of the best round's last batches).
    """
    best = (-1.0, 0, None, 0.0)   # accuracy, step, weights, train accuracy
    steps, stale = 0, 0
    while steps < max_steps and stale < patience:
        n = min(eval_every, max_steps - steps)
        hist = model.fit(dataset, steps_per_epoch=n, epochs=1, verbose=0)
        steps += n
        acc = _accuracy(model, heldout_x, heldout_y)
        train_acc = float(np.asarray(hist.history["accuracy"][-1]))
        log(f"step {steps}: training accuracy {train_acc:.4f}, held-out accuracy {acc:.4f}")
        if acc > best[0]:
            best, stale = (acc, steps, model.get_weights(), train_acc), 0
        else:
            stale += 1
    model.set_weights(best[2])
    return {"heldout_accuracy": best[0], "best_step": best[1], "steps": steps,
            "train_accuracy": best[3]}
