"""Panels of x-y curves as a PNG, in the learning curve's style (Pillow only).

Used by the truncation sweep (Inception score against FID, one point per
truncation) and the collapse-curve figure (summaries against training step).
:mod:`sagan_tf.evaluation.learning_curve` draws the evaluation metrics against step with
the same axes, ticks and colours.
"""
import math

import numpy as np

from sagan_tf.evaluation.learning_curve import (_AXIS, _GRID, _LINE, _MARGIN, _PANEL, _fmt,
                                                _nice_ticks)

__all__ = ["Panel", "plot_panels", "COLOURS", "MAX_NAMED"]

#: At most this many series of a panel are named (those ending highest).
MAX_NAMED = 5

#: Series colours in order (the first is the learning curve's).
COLOURS = (_LINE, (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


class Panel:
    """One panel: ``series`` is a list of ``(name, [(x, y), ...])`` drawn as lines
    with markers (named in the corner: the :data:`MAX_NAMED` ending highest);
    ``point_labels`` (optional) a list per series of texts drawn
    beside its points; ``x_label`` names the x axis; ``log_y`` draws y on a
    log10 scale (positive values only)."""

    def __init__(self, title, x_label, series, point_labels=None, log_y=False):
        self.title, self.x_label, self.series = title, x_label, list(series)
        self.point_labels = point_labels
        self.log_y = log_y


def _range(values, pad_fraction=0.1):
    lo, hi = min(values), max(values)
    pad = (hi - lo) * pad_fraction or abs(hi) * pad_fraction or 1.0
    return lo - pad, hi + pad


def _draw_panel(draw, panel, origin, fonts):
    """Draws ``panel`` with its top-left corner at ``origin``; returns the pixel
    centres of each series' markers."""
    font, big = fonts
    ox, oy = origin
    left, top = ox + _MARGIN[0], oy + _MARGIN[1]
    right, bottom = ox + _PANEL[0] - _MARGIN[2], oy + _PANEL[1] - _MARGIN[3]
    ty = (lambda v: math.log10(max(v, 1e-30))) if panel.log_y else (lambda v: v)
    xs = [x for _, pts in panel.series for x, _ in pts]
    ys = [ty(y) for _, pts in panel.series for _, y in pts]
    x_lo, x_hi = _range(xs, 0.05)
    y_lo, y_hi = _range(ys)

    def to_px(x, y):
        px = left + (x - x_lo) / max(x_hi - x_lo, 1e-12) * (right - left)
        py = bottom - (y - y_lo) / max(y_hi - y_lo, 1e-12) * (bottom - top)
        return int(round(px)), int(round(py))

    for t in (t for t in _nice_ticks(y_lo, y_hi) if y_lo <= t <= y_hi):
        _, y = to_px(x_lo, t)
        draw.line([(left, y), (right, y)], fill=_GRID)
        draw.text((left - 6, y), _fmt(10 ** t if panel.log_y else t), fill=_AXIS, font=font,
                  anchor="rm")
    for t in (t for t in _nice_ticks(x_lo, x_hi) if x_lo <= t <= x_hi):
        x, _ = to_px(t, y_lo)
        draw.line([(x, top), (x, bottom)], fill=_GRID)
        draw.text((x, bottom + 4), _fmt(t), fill=_AXIS, font=font, anchor="mt")
    draw.rectangle([left, top, right, bottom], outline=_AXIS)
    draw.text((left, oy + 12), panel.title, fill=(0, 0, 0), font=big)
    draw.text(((left + right) // 2, bottom + 22), panel.x_label, fill=_AXIS, font=font,
              anchor="mt")
    # Many series: name only the MAX_NAMED ending highest (the ones to watch).
    ends = sorted(range(len(panel.series)), key=lambda i: -(panel.series[i][1] or [(0, 0)])[-1][1])
    named = ends[:MAX_NAMED]
    points = []
    for i, (name, pts) in enumerate(panel.series):
        colour = COLOURS[i % len(COLOURS)]
        xy = [to_px(x, ty(y)) for x, y in pts]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for j, (x, y) in enumerate(xy):
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
            if panel.point_labels:
                draw.text((x + 6, y - 6), panel.point_labels[i][j], fill=colour, font=font,
                          anchor="ld")
        if name and len(panel.series) > 1 and i in named:
            draw.text((right - 4, top + 4 + 14 * named.index(i)), name, fill=colour, font=font,
                      anchor="ra")
        points.append(xy)
    return points


def plot_panels(panels, title=None, columns=2):
    """Draws ``panels`` (:class:`Panel`) in a grid of ``columns``.

    Returns ``(image uint8 [H, W, 3], points)``: ``points[p][s]`` lists the
    ``(x, y)`` pixel centres of panel p's series s, in the order given.
    """
    from PIL import Image, ImageDraw, ImageFont  # pylint: disable=import-outside-toplevel
    panels = [p for p in panels if any(pts for _, pts in p.series)]
    if not panels:
        raise ValueError("nothing to plot: every panel is empty")
    columns = min(columns, len(panels))
    rows = math.ceil(len(panels) / columns)
    head = 36 if title else 0
    image = Image.new("RGB", (_PANEL[0] * columns, _PANEL[1] * rows + head), "white")
    draw = ImageDraw.Draw(image)
    fonts = (ImageFont.load_default(size=13), ImageFont.load_default(size=16))
    if title:
        draw.text((10, 10), title, fill=(0, 0, 0), font=fonts[1])
    points = [_draw_panel(draw, p, ((i % columns) * _PANEL[0], head + (i // columns) * _PANEL[1]),
                          fonts) for i, p in enumerate(panels)]
    return np.asarray(image), points
