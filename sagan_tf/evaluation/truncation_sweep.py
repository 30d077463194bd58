"""Evaluates one checkpoint at several truncations and plots Inception score against FID.

The library behind ``tools/truncation_sweep.py``. Each truncation ``psi``
(:mod:`sagan_tf.sampling.truncation`; ``None``: no truncation, the paper's sampling) is
one evaluation of :class:`sagan_tf.evaluation.evaluator.Evaluator` with the same seed,
classifier and cached real activations; the results are the evaluator's JSON
lines (their ``truncation`` key names psi). The figure has one point per psi,
labelled with it, FID on x and IS on y: BigGAN's truncation curve (IS rises as
psi shrinks; FID first falls, then rises once variety is lost).
"""
import dataclasses

from sagan_tf.evaluation import evaluation_loop, evaluator as evaluation, metrics
from sagan_tf.evaluation.xy_plot import Panel, plot_panels

__all__ = ["sweep", "plot_is_against_fid"]


def sweep(options, truncations, classifier=None, out=None):
    """Evaluates ``options``' checkpoint (its ``checkpoint_path``, else the latest)
    once per entry of ``truncations`` (floats > 0, or None for no truncation).

    Returns the result dicts, in the order given.
    """
    if not truncations:
        raise ValueError("--truncations is empty: give the psi values to sweep, e.g. "
                         "0,2,1,0.5,0.25 (0: no truncation)")
    classifier = classifier or metrics.load_classifier(options.inception_path)
    results = []
    for psi in truncations:
        run_options = dataclasses.replace(options, truncation=psi)
        evaluator = evaluation.Evaluator(run_options, classifier=classifier, out=out)
        results.append(evaluation_loop.evaluate_checkpoint(run_options, evaluator=evaluator))
    return results


def _label(psi):
    return "none" if psi is None else f"psi={psi:g}"


def plot_is_against_fid(results, title=None):
    """One panel: IS (y) against FID (x), a point per result labelled with its
    truncation, joined in the order of decreasing psi (no truncation first).

    Returns ``(image uint8 [H, W, 3], points [(x, y)] in that order)``.
    """
    order = sorted(results, key=lambda r: -(r["truncation"] or float("inf")))
    pts = [(float(r["fid"]), float(r["inception_score"])) for r in order]
    panel = Panel("Inception score against FID, by truncation", "FID (lower: better)",
                  [("", pts)], point_labels=[[_label(r["truncation"]) for r in order]])
    image, points = plot_panels([panel], title=title, columns=1)
    return image, points[0][0]
