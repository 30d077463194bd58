"""The paper's attention figure: where chosen query points attend (tools/visualize_attention.py).

For the release block, ``attention_map`` gives ``[B, N, N/4]``: each query
position of the ``H x W`` feature map attends over the ``H/2 x W/2`` grid of
2x2-max-pooled keys; for the slide variant ``[B, N, N]`` over the full grid.
A query pixel of the image is mapped to the feature-map cell containing it;
its row of weights is reshaped to the key grid and upsampled to the image
size, keeping its sum at 1 (nearest: each key cell spread evenly over its
pixels; bilinear: resized, clipped at 0 and renormalised). Colouring
(divide by the maximum; a jet-like colormap blended with an opacity that
grows with the weight) happens only for the picture. The memory-efficient
attention path (``attention_query_block_size``) computes the same block
output and the same maps. Like :mod:`sagan_tf.sampling.samples`, nothing here changes
the networks' state (eval mode, ``update_sn=False``).
"""
import numpy as np
import tensorflow as tf

from sagan_tf.sampling.samples import check_classes, make_grid, sample_latents, to_uint8

__all__ = [
    "generator_replay", "generator_attention_input", "discriminator_attention_input",
    "default_query_points", "parse_query_points", "query_attention_maps", "colorize",
    "attention_figure", "attention_figure_rows",
]


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
      loaded: a :class:`sagan_tf.runs.rundir.LoadedCheckpoint` (with a discriminator for
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
        labels = np.asarray(check_classes(labels, G.num_classes, "--labels"), np.int32)
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
