#!/usr/bin/env python3
"""Evaluates one checkpoint at several truncations and plots Inception score against FID.

Example (the truncation curve of docs/SAMPLING.md):
  python tools/truncation_sweep.py --checkpoint_dir runs/demo --data_dir data/demo \\
      --inception_path data/demo_classifier --eval_sample_size 2000 \\
      --truncations 0,2,1,0.75,0.5,0.25 --output docs/images/demo_truncation.png

Takes every flag of eval_imagenet.py (one checkpoint: --checkpoint_path, else the latest of
the run). For each --truncations value psi (0: none, the paper's z ~ N(0, 1)) it runs one
evaluation with z's components redrawn until |z| <= psi (BigGAN's truncation trick; not
the paper's protocol), prints its JSON line (with "truncation": psi) and writes its
summaries to <eval_dir>/truncation_<psi>; then it draws IS against FID, one labelled point
per psi, into --output (a PNG, Pillow only).
"""

from absl import flags

from sagan_tf import cli
from sagan_tf.evaluation import eval_flags

eval_flags.define_eval_flags()

flags.DEFINE_list("truncations", ["0", "2", "1", "0.75", "0.5", "0.25"],
                  "Truncation values psi to evaluate (0: no truncation).")
flags.DEFINE_string("output", None, "Output PNG of IS against FID.")
flags.mark_flags_as_required(["output"])
FLAGS = flags.FLAGS


def _truncations(values):
    try:
        psis = [float(v) for v in values]
    except ValueError as e:
        raise ValueError(f"--truncations must be numbers (0: none), got {values}") from e
    if any(p < 0 for p in psis):
        raise ValueError(f"--truncations must be >= 0 (0: none), got {values}")
    return [p or None for p in psis]


def main(argv):
    cli.start(argv)
    if not FLAGS.checkpoint_dir and not FLAGS.checkpoint_path:
        raise ValueError("--checkpoint_dir or --checkpoint_path is required")
    if FLAGS.truncation is not None:
        raise ValueError("--truncation is for eval_imagenet.py; give the values to sweep "
                         "with --truncations")
    from sagan_tf.evaluation import truncation_sweep
    from sagan_tf.sampling import samples as sampling
    results = truncation_sweep.sweep(eval_flags.options_from_flags(),
                                     _truncations(FLAGS.truncations))
    step = results[0]["step"]
    image, _ = truncation_sweep.plot_is_against_fid(
        results, title=f"{FLAGS.checkpoint_path or FLAGS.checkpoint_dir}, step {step}, "
                       f"{results[0]['num_samples']} samples")
    path = sampling.write_png(FLAGS.output, image)
    print(f"wrote {path}: {len(results)} truncations at step {step}")
    return 0


if __name__ == "__main__":
    cli.run(main)
