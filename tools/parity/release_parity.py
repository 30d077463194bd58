r"""Prints how far the port's training iteration is from the release's, beside the release's noise.

The reference is the release's algorithm as TF1 executed it
(``sagan_tf/parity/tf1_release_graph.py``: a ``tf.compat.v1`` graph on ref
variables) on oneDNN's kernels; its noise floor is the same graph on Eigen's
and on oneDNN's capped at AVX and at SSE4.1, the largest distance of any.
Each runs in a process of its own, the port in this one, from the same
weights and inputs (``sagan_tf.parity.comparison``).

Reported per architecture and ``--sn_gradient`` mode:

- first-iteration gradients of G (G step) and D (D step), per variable:
  ``max|port - ref| / max|ref|`` beside the noise floor's
  ``max|noise - ref| / max|ref|`` (the largest per variable class);
- after ``--iterations`` G-then-D iterations: the fraction of trainable
  weights more than ``0.1 * lr`` away from the reference, for the port and
  for the noise floor;
- the per-step losses' largest relative difference, for both;
- whether the port is within the noise floor (``comparison.within_noise``).

Example (the figures of docs/NUMERICS.md)::

    python tools/parity/release_parity.py --arch test --arch baseline \
        --sn_gradient release --sn_gradient exact

``tests/test_release_parity.py`` runs the same comparison with bounds.
"""
import argparse
import json
import sys

from sagan_tf import cli
from sagan_tf.parity import comparison


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", choices=["test", "baseline"])
    parser.add_argument("--sn_gradient", action="append", choices=["release", "exact"])
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--graph_optimization", default="auto", choices=["auto", "full", "light"],
                        help="Grappler settings of the port's compiled iterations")
    parser.add_argument("--json", help="also write the full reports here")
    for key, value in comparison.DEFAULT_CASE.items():
        parser.add_argument(f"--{key}", type=int, default=value)
    return parser.parse_args(argv)


def print_report(arch, mode, report, iterations):
    """The report of one case: per variable class, then weights, losses and the verdict."""
    print(f"== {arch}, --sn_gradient {mode}: first-iteration gradients, "
          "max|x - tf1| / max|tf1| (largest per class)")
    for cls, c in sorted(comparison.summarize(report).items()):
        print(f"  {cls:28s} n={c['count']:2d}  port {c['port']:.2e}  "
              f"floor {c['noise']:.2e}")
    print(f"  after {iterations} iterations, weights > {comparison.APART_FRACTION_OF_LR}*lr "
          f"apart: port {report['apart']['port']:.1%}, floor {report['apart']['noise']:.1%} ("
          + ", ".join(f"{k} {v:.1%}" for k, v in report["apart"]["floor"].items()) + ")")
    print(f"  losses, largest relative difference: port {report['loss']['port']:.2e}, "
          f"floor {report['loss']['noise']:.2e} ("
          + ", ".join(f"{k} {v:.2e}" for k, v in report["loss"]["floor"].items()) + ")")
    failures = comparison.within_noise(report)
    print("  within the release's noise floor" if not failures else
          f"  NOT within the noise floor ({len(failures)}): " + "; ".join(failures[:5]),
          flush=True)


def main(argv=None):
    args = parse_args(argv)
    cli.quiet_tensorflow()
    reports = {}
    for arch in args.arch or ["test", "baseline"]:
        config = dict({k: getattr(args, k) for k in comparison.DEFAULT_CASE}, arch=arch)
        inputs = comparison.make_inputs(config, args.iterations)
        weights = release = None
        for mode in args.sn_gradient or ["release", "exact"]:
            weights, port = comparison.run_port(config, inputs, mode, weights,
                                                graph_optimization=args.graph_optimization)
            if release is None:  # the reference does not depend on the port's mode
                release = comparison.ReleaseRuns(config, weights, inputs).results()
            ref, floor = release
            report = comparison.compare(port, ref, floor)
            reports[f"{arch}/{mode}"] = report
            print_report(arch, mode, report, args.iterations)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(reports, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
