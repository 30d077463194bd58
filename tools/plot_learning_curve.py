#!/usr/bin/env python3
"""Plots evaluation metrics against training steps (a PNG), from eval_imagenet.py's results.

Example (the README's demo learning curve):
  python tools/plot_learning_curve.py --results runs/demo/eval \\
      --output docs/images/demo_learning_curve.png

--results is an eval directory (its evaluated.json), an evaluated.json, or a file of the
evaluator's JSON lines. One panel per metric present: class accuracy, Inception score,
FID, intra-FID. Drawn with Pillow (no plotting library needed).
"""
from absl import flags

from sagan_tf import cli

flags.DEFINE_string("results", None, "Eval directory, evaluated.json, or a JSON-lines file.")
flags.DEFINE_string("output", None, "Output PNG.")
flags.DEFINE_string("title", None, "Title line (default: the results path, G's weights and "
                    "the batch-norm statistics the evaluation used).")
flags.mark_flags_as_required(["results", "output"])
FLAGS = flags.FLAGS


def main(argv):
    cli.start(argv)
    from sagan_tf.evaluation import learning_curve
    from sagan_tf.sampling import samples as sampling
    results = learning_curve.read_results(FLAGS.results)
    bn = sorted({str(r.get("bn_statistics", "moving averages (the release)"))
                 for r in results})
    weights = sorted({str(r.get("generator_weights", "raw")) for r in results})
    weights = {"raw": "trained weights", "ema": "averaged weights"}.get("; ".join(weights),
                                                                       "; ".join(weights))
    title = FLAGS.title or f"{FLAGS.results}  (G's {weights}; batch norms: {'; '.join(bn)})"
    image, _ = learning_curve.plot_learning_curve(results, title=title)
    path = sampling.write_png(FLAGS.output, image)
    print(f"wrote {path}: {len(results)} evaluations, steps "
          f"{results[0]['step']}..{results[-1]['step']}")
    return 0


if __name__ == "__main__":
    cli.run(main)
