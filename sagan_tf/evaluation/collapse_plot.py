"""The collapse/ summaries of a training run (:mod:`sagan_tf.training.collapse_summaries`) as a PNG.

Reads the run's TensorBoard event files and draws, against training step:
D's per-layer sigma, G's per-layer sigma (log scale), G's and D's gradient
norms, and D's share of positive real logits next to its mean real and fake
logits. Used by ``tools/plot_collapse_curves.py``; drawn in the learning
curve's style (:mod:`sagan_tf.evaluation.xy_plot`, Pillow only).
"""
import glob
import os

import tensorflow as tf

from sagan_tf.evaluation.xy_plot import Panel, plot_panels
from sagan_tf.training.collapse_summaries import PREFIX

__all__ = ["read_scalars", "collapse_panels", "plot_collapse_curves"]


def read_scalars(logdir):
    """``{tag: [(step, value), ...]}`` (sorted by step, the last write of a step
    wins) of every scalar in the event files of ``logdir``."""
    files = sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*")))
    if not files:
        raise FileNotFoundError(f"no TensorBoard event files in {logdir} (give the run's "
                                "logdir, e.g. runs/demo/imagenet_32)")
    by_tag = {}
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                array = tf.make_ndarray(value.tensor) if value.HasField("tensor") else None
                if array is not None and array.ndim == 0 and array.dtype.kind == "f":
                    by_tag.setdefault(value.tag, {})[int(event.step)] = float(array)
    return {tag: sorted(steps.items()) for tag, steps in by_tag.items()}


def _short(tag, network):
    """``collapse/sigma/discriminator/d_block2/sn_conv1`` -> ``d_block2/sn_conv1``."""
    return tag[len(f"{PREFIX}sigma/{network}/"):]


def collapse_panels(scalars):
    """The four :class:`sagan_tf.evaluation.xy_plot.Panel` of the figure from :func:`read_scalars`."""
    sigma = {net: sorted(t for t in scalars if t.startswith(f"{PREFIX}sigma/{net}/"))
             for net in ("discriminator", "generator")}
    if not any(sigma.values()):
        raise ValueError("the run holds no collapse/ summaries (trained with "
                         "--nocollapse_summaries, or before they existed)")
    panels = [Panel(f"{'D' if net == 'discriminator' else 'G'}: largest singular value "
                    "per layer", "training step", [(_short(t, net), scalars[t]) for t in tags],
                    log_y=True) for net, tags in sigma.items()]
    panels.append(Panel("gradient norms (G, D)", "training step",
                        [(name, scalars.get(PREFIX + key, []))
                         for name, key in (("G", "g_grad_norm"), ("D", "d_grad_norm"))],
                        log_y=True))
    panels.append(Panel("D: share of real images scored positive", "training step",
                        [("", scalars.get(PREFIX + "real_positive_share", []))]))
    return panels


def plot_collapse_curves(logdir, title=None):
    """The figure of ``logdir``'s run: ``(image uint8 [H, W, 3], scalars)``."""
    scalars = read_scalars(logdir)
    image, _ = plot_panels(collapse_panels(scalars), title=title or logdir, columns=2)
    return image, scalars
