#!/usr/bin/env python3
"""Plots a training run's collapse/ summaries (sigma per layer, gradient norms, D's share
of positive real logits) against step, as a PNG.

Example (the collapse figure of docs/MONITORING.md):
  python tools/plot_collapse_curves.py --logdir runs/collapse/imagenet_32 \\
      --output docs/images/demo_collapse_curves.png

--logdir is the run directory holding the TensorBoard event files (<checkpoint_dir>/
imagenet_<batch_size>). Drawn with Pillow (no plotting library needed).
"""

from absl import flags

from sagan_tf import cli

flags.DEFINE_string("logdir", None, "Run directory with the event files.")
flags.DEFINE_string("output", None, "Output PNG.")
flags.DEFINE_string("title", None, "Title line (default: --logdir).")
flags.mark_flags_as_required(["logdir", "output"])
FLAGS = flags.FLAGS


def main(argv):
    cli.start(argv)
    from sagan_tf.evaluation import collapse_plot
    from sagan_tf.sampling import samples as sampling
    image, scalars = collapse_plot.plot_collapse_curves(FLAGS.logdir, FLAGS.title)
    path = sampling.write_png(FLAGS.output, image)
    steps = [s for s, _ in scalars.get("collapse/d_grad_norm", [])]
    print(f"wrote {path}: collapse summaries at {len(steps)} steps"
          + (f" ({steps[0]}..{steps[-1]})" if steps else ""))
    return 0


if __name__ == "__main__":
    cli.run(main)
