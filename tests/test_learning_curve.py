"""sagan_tf.evaluation.learning_curve and tools/plot_learning_curve.py."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sagan_tf.evaluation import learning_curve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = [{"step": 1000, "inception_score": 3.0, "fid": 90.0, "intra_fid": 200.0,
            "class_accuracy": 0.5, "kid": 0.1},
           {"step": 500, "inception_score": 2.0, "fid": 150.0, "intra_fid": 300.0,
            "class_accuracy": 0.2, "kid": 0.3},
           {"step": 1500, "inception_score": 4.0, "fid": 40.0, "intra_fid": 100.0,
            "class_accuracy": 0.9, "kid": 0.05}]


def test_read_results_from_record_dir_and_json_lines(tmp_path):
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    stale = dict(RESULTS[0], fid=999.0)  # a step evaluated twice: the last entry wins
    (eval_dir / "evaluated.json").write_text(json.dumps({"evaluated": [stale] + RESULTS}))
    for source in (str(eval_dir), str(eval_dir / "evaluated.json")):
        got = learning_curve.read_results(source)
        assert [r["step"] for r in got] == [500, 1000, 1500]
        assert got[1]["fid"] == 90.0
    lines = tmp_path / "eval.log"
    lines.write_text("I1129 some log line\n" + "\n".join(json.dumps(r) for r in RESULTS) + "\n")
    assert [r["step"] for r in learning_curve.read_results(str(lines))] == [500, 1000, 1500]
    (tmp_path / "empty.log").write_text("nothing here\n")
    with pytest.raises(ValueError, match="no evaluation results"):
        learning_curve.read_results(str(tmp_path / "empty.log"))


def test_points_follow_the_values():
    results = sorted(RESULTS, key=lambda r: r["step"])
    image, points = learning_curve.plot_learning_curve(results, title="t")
    assert image.dtype == np.uint8 and image.shape[2] == 3
    assert sorted(points) == sorted(k for k, _ in learning_curve.METRICS)
    for key, xy in points.items():
        xs, ys = zip(*xy)
        assert list(xs) == sorted(xs) and len(set(xs)) == 3  # steps left to right
        values = [r[key] for r in results]
        # Larger value -> higher on the image (smaller row), equal spacing in steps.
        assert np.argsort(ys).tolist() == np.argsort(values)[::-1].tolist(), key
        assert xs[2] - xs[1] == pytest.approx(xs[1] - xs[0], abs=1)
        for x, y in xy:  # a marker is drawn there
            assert tuple(image[y, x]) == learning_curve._LINE, key
    # Class accuracy is drawn on a fixed [0, 1] axis: 0.5 lies midway between 0.2 and 0.9
    # in proportion.
    ys = [y for _, y in points["class_accuracy"]]
    assert (ys[0] - ys[1]) / (ys[1] - ys[2]) == pytest.approx(0.3 / 0.4, rel=0.05)


def test_tool_writes_png(tmp_path):
    lines = tmp_path / "eval.log"
    lines.write_text("\n".join(json.dumps(dict(r, bn_statistics="standing")) for r in RESULTS))
    out = tmp_path / "curve.png"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "plot_learning_curve.py"),
                           f"--results={lines}", f"--output={out}"],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr
    assert "3 evaluations, steps 500..1500" in proc.stdout
    assert Image.open(out).size[0] > 500
    with pytest.raises(FileNotFoundError, match="missing.json"):
        learning_curve.read_results(str(tmp_path / "missing.json"))
