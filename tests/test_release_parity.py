"""The port's training iteration against the release's, as TF1 ran it.

Reference: the release's algorithm as a ``tf.compat.v1`` graph on ref
variables (``sagan_tf/parity/tf1_release_graph.py``), in a process of its
own, on oneDNN's kernels. Noise floor: the same graph on the other kernels it
could have run on (Eigen's; oneDNN's capped at AVX and at SSE4.1), each in a
process of its own, the largest distance of any. Same initial weights (the
port's, copied by the release's names), same inputs at every step; 128x128,
small widths, 4 iterations (``sagan_tf.parity.comparison``).
``tools/parity/release_parity.py`` prints the figures; docs/NUMERICS.md §1.2
has them.
"""
import json
import os
import signal
import subprocess
import sys

import pytest

from sagan_tf.parity import comparison

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module", params=["test", "baseline"])
def reports(request):
    """``{"release": report, "exact": report}`` for one architecture."""
    config = dict(comparison.DEFAULT_CASE, arch=request.param)
    inputs = comparison.make_inputs(config, iterations=4)
    weights, port_release = comparison.run_port(config, inputs, "release")
    # The TF1 processes run while the port's exact mode is computed here.
    runs = comparison.ReleaseRuns(config, weights, inputs)
    _, port_exact = comparison.run_port(config, inputs, "exact", weights)
    ref, floor = runs.results()
    return {"release": comparison.compare(port_release, ref, floor),
            "exact": comparison.compare(port_exact, ref, floor),
            "arch": request.param}


def test_default_iteration_is_within_the_releases_noise_floor(reports):
    """Default (--sn_gradient release): every first-iteration gradient of G
    and D, the weights after 4 iterations and the per-step losses are as
    close to the TF1 ref-variable graph as that graph is to itself on other
    kernels."""
    report = reports["release"]
    assert len(report["gradients"]) == {"test": 103, "baseline": 93}[reports["arch"]]
    assert comparison.within_noise(report) == []


def test_exact_gradient_is_not_the_release(reports):
    """--sn_gradient exact (the exact gradient of W / sigma(W), what resource
    variables give) fails the same criterion: it is not what the release ran.
    The residual-stream convolutions are far outside the noise floor."""
    report = reports["exact"]
    failures = comparison.within_noise(report)
    assert failures
    worst = max(r["port"] / max(r["noise"], 1e-12) for name, r in report["gradients"].items()
                if name.endswith("snconv3/w"))
    assert worst > 20
    assert report["apart"]["port"] > reports["release"]["apart"]["port"]


def test_reference_imports_none_of_the_port():
    """The reference is independent of what it checks: importing the TF1 graph
    and its session (as the reference process does) loads no other sagan_tf
    module."""
    code = ("import json, sys; import sagan_tf.parity.tf1_release_session; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('sagan_tf'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == [
        "sagan_tf", "sagan_tf.parity", "sagan_tf.parity.tf1_release_graph",
        "sagan_tf.parity.tf1_release_session"]


def test_a_failing_release_run_stops_the_others_and_names_itself(monkeypatch):
    """One release-graph process that cannot start fails the comparison with
    its command and stderr, and the other runs of the case are stopped."""
    # Python itself cannot start in the reference's process.
    monkeypatch.setattr(comparison, "REFERENCE_KERNELS", {"PYTHONHOME": os.devnull})
    config = dict(comparison.DEFAULT_CASE, arch="test")
    inputs = comparison.make_inputs(config, iterations=1)
    weights = {"model/unused": inputs["z_g"][0]}
    runs = comparison.ReleaseRuns(config, weights, inputs)
    with pytest.raises(RuntimeError, match=r"(?s)tf1_release_session .*failed:.*encodings"):
        runs.results(timeout=120)
    # Killed (they would otherwise be importing TensorFlow for seconds yet).
    assert [run._proc.returncode for run in runs._floor.values()] == [-signal.SIGKILL] * 3
