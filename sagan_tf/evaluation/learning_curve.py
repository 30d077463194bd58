"""Learning curves: evaluation results (eval_imagenet.py) against training steps, as a PNG.

Reads the evaluator's results -- ``<eval_dir>/evaluated.json`` or a file of its
JSON lines -- and draws one panel per metric (class accuracy, Inception score,
FID, intra-FID; those present) with Pillow only, so no plotting library
is needed. Used by ``tools/plot_learning_curve.py``.
"""
import json
import math
import os

import numpy as np

__all__ = ["read_results", "plot_learning_curve", "METRICS"]

#: (JSON key, panel title) in panel order. (KID is left out: with the demo
#: classifier's unnormalised features its scale says little.)
METRICS = (("class_accuracy", "class accuracy (generated, by the classifier)"),
           ("inception_score", "Inception score"),
           ("fid", "FID"),
           ("intra_fid", "intra-FID"))

_PANEL = (560, 300)    # width, height of one panel
_MARGIN = (70, 40, 20, 45)  # left, top, right, bottom inside a panel
_LINE = (31, 119, 180)
_AXIS = (60, 60, 60)
_GRID = (225, 225, 225)


def read_results(path):
    """Evaluation results, one dict per step, sorted by step (the last one of a step wins).

    ``path``: an ``evaluated.json`` written by the evaluator, a directory holding one
    (an eval dir), or a text file of the evaluator's JSON lines (other lines ignored).
    """
    if os.path.isdir(path):
        path = os.path.join(path, "evaluated.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist (give the evaluator's eval directory, "
                                "e.g. runs/demo/eval, its evaluated.json, or its JSON lines)")
    with open(path) as f:
        text = f.read()
    try:
        doc = json.loads(text)
        entries = doc.get("evaluated", []) if isinstance(doc, dict) else doc
    except ValueError:  # JSON lines
        entries = [json.loads(line) for line in text.splitlines()
                   if line.strip().startswith("{")]
    by_step = {}
    for e in entries:
        if isinstance(e, dict) and "step" in e:
            by_step[int(e["step"])] = e
    if not by_step:
        raise ValueError(f"{path} holds no evaluation results (JSON objects with a 'step')")
    return [by_step[s] for s in sorted(by_step)]


def _nice_ticks(lo, hi, count=5):
    """About ``count`` round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * step:
            step *= m
            break
    start = math.floor(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 0.5:
        ticks.append(round(t, 10))
        t += step
    return ticks


def _fmt(v):
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


def plot_learning_curve(results, title=None, columns=2):
    """Draws the metrics of ``results`` (from :func:`read_results`) against step.

    Returns ``(image uint8 [H, W, 3], points)`` where ``points[key]`` lists the
    ``(x, y)`` pixel centres of that metric's markers, in step order.
    """
    from PIL import Image, ImageDraw, ImageFont  # pylint: disable=import-outside-toplevel
    steps = [r["step"] for r in results]
    panels = [(k, t) for k, t in METRICS
              if any(r.get(k) is not None for r in results)]
    if not panels:
        raise ValueError("the results hold none of the metrics "
                         f"{[k for k, _ in METRICS]}")
    rows = math.ceil(len(panels) / columns)
    head = 36 if title else 0
    width, height = _PANEL[0] * columns, _PANEL[1] * rows + head
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    big = ImageFont.load_default(size=16)
    if title:
        draw.text((10, 10), title, fill=(0, 0, 0), font=big)
    x_ticks = _nice_ticks(0, max(steps))
    x_lo, x_hi = 0, max(x_ticks[-1], max(steps))
    points = {}
    for i, (key, label) in enumerate(panels):
        ox = (i % columns) * _PANEL[0]
        oy = head + (i // columns) * _PANEL[1]
        left, top = ox + _MARGIN[0], oy + _MARGIN[1]
        right, bottom = ox + _PANEL[0] - _MARGIN[2], oy + _PANEL[1] - _MARGIN[3]
        pairs = [(s, float(r[key])) for s, r in zip(steps, results) if r.get(key) is not None]
        values = [v for _, v in pairs]
        lo, hi = min(values), max(values)
        if key == "class_accuracy":
            lo, hi = 0.0, 1.0
        else:
            pad = (hi - lo) * 0.1 or abs(hi) * 0.1 or 1.0
            lo, hi = lo - pad, hi + pad
            if min(values) >= 0:
                lo = max(lo, 0.0)
        y_ticks = [t for t in _nice_ticks(lo, hi) if lo - 1e-12 <= t <= hi + 1e-12]

        def to_px(s, v, lo=lo, hi=hi, left=left, right=right, top=top, bottom=bottom):
            x = left + (s - x_lo) / max(x_hi - x_lo, 1e-12) * (right - left)
            y = bottom - (v - lo) / max(hi - lo, 1e-12) * (bottom - top)
            return int(round(x)), int(round(y))

        for t in y_ticks:
            _, y = to_px(x_lo, t)
            draw.line([(left, y), (right, y)], fill=_GRID)
            draw.text((left - 6, y), _fmt(t), fill=_AXIS, font=font, anchor="rm")
        for t in x_ticks:
            x, _ = to_px(t, lo)
            draw.line([(x, top), (x, bottom)], fill=_GRID)
            draw.text((x, bottom + 4), f"{int(t)}", fill=_AXIS, font=font, anchor="mt")
        draw.rectangle([left, top, right, bottom], outline=_AXIS)
        draw.text((left, oy + 12), label, fill=(0, 0, 0), font=big)
        draw.text(((left + right) // 2, bottom + 22), "training step", fill=_AXIS, font=font,
                  anchor="mt")
        xy = [to_px(s, v) for s, v in pairs]
        if len(xy) > 1:
            draw.line(xy, fill=_LINE, width=2)
        for x, y in xy:
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=_LINE)
        s_last, v_last = pairs[-1]
        draw.text((right, oy + 14), f"step {s_last}: {_fmt(v_last)}", fill=_LINE,
                  font=font, anchor="ra")
        points[key] = xy
    return np.asarray(image), points
