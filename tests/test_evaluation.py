"""sagan_tf.evaluation.evaluator / eval_imagenet.py: end to end on a tiny generator and classifier.

Checkpoints are written here with ``tf.train.Checkpoint(generator=G, step=...)``
and a ``tf.train.CheckpointManager`` in the layout of docs/ARCHITECTURE.md,
plus a ``config.json``, so these tests do not depend on the trainer.
"""
import glob
import json
import os
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

import sagan_tf
from sagan_tf.data import record_format
from sagan_tf.runs import checkpoints, rundir
from sagan_tf import cli
from sagan_tf.evaluation import evaluator as evaluation, evaluation_loop, metrics, real_statistics
from test_metrics import save_standin_classifier

ARCH = dict(generator_type="test", image_size=32, z_dim=16, gf_dim=4, number_classes=10)
BATCH = 64  # training batch size: names the logdir imagenet_64


def _new_generator():
    return sagan_tf.Generator(arch=ARCH["generator_type"], image_size=ARCH["image_size"],
                              z_dim=ARCH["z_dim"], gf_dim=ARCH["gf_dim"],
                              num_classes=ARCH["number_classes"]).ensure_built()


def _write_data(data_dir, num_files=2, per_file=40, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(data_dir, exist_ok=True)
    for i in range(num_files):
        imgs = rng.integers(0, 256, size=(per_file, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, ARCH["number_classes"], size=per_file)
        record_format.write_records(os.path.join(data_dir, f"train-{i:02d}.tfrecords"), imgs, labels)


def _fake_training_steps(G, steps, seed):
    """Stands in for a few training steps: BN moving statistics and weights move."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        z = tf.constant(rng.normal(size=(8, ARCH["z_dim"])), tf.float32)
        G(z, tf.constant(rng.integers(0, 10, size=8), tf.int32), training=True)
    for v in G.trainable_variables:
        v.assign_add(tf.constant(rng.normal(scale=0.01, size=v.shape), v.dtype))


class Run:
    """A checkpoint directory with config.json, data and a classifier.

    ``G`` is shared between runs (building one costs seconds); each run has
    its own CheckpointManager.
    """

    def __init__(self, root, classifier, G):
        self.root = str(root)
        self.checkpoint_dir = os.path.join(self.root, "ckpt")
        self.logdir = os.path.join(self.checkpoint_dir, f"imagenet_{BATCH}")
        self.data_dir = os.path.join(self.root, "data")
        self.eval_dir = os.path.join(self.checkpoint_dir, "eval")
        self.classifier = classifier
        os.makedirs(self.logdir)
        _write_data(self.data_dir)
        config = dict(ARCH, discriminator_type="test", df_dim=4, batch_size=BATCH,
                      data_dir=self.data_dir, loss_type="hinge_loss")
        with open(os.path.join(self.logdir, "config.json"), "w") as f:
            json.dump(config, f)
        self.G = G
        self.step = tf.Variable(0, dtype=tf.int64)
        self.manager = tf.train.CheckpointManager(
            tf.train.Checkpoint(generator=self.G, step=self.step), self.logdir, max_to_keep=20)

    def save(self, step):
        _fake_training_steps(self.G, 1, seed=step)
        self.step.assign(step)
        return self.manager.save(checkpoint_number=step)

    def options(self, **kw):
        base = dict(checkpoint_dir=self.checkpoint_dir, batch_size=BATCH,
                    inception_path=self.classifier, eval_sample_size=64,
                    dcgan_generator_batch_size=32, num_real_samples=48,
                    eval_interval_secs=0, seed=1)
        base.update(kw)
        return evaluation.EvalOptions(**base)


@pytest.fixture(scope="module")
def classifier_path(tmp_path_factory):
    return save_standin_classifier(tmp_path_factory.mktemp("clf") / "standin", input_size=32)


@pytest.fixture(scope="module")
def classifier(classifier_path):
    return metrics.load_classifier(classifier_path)


@pytest.fixture(scope="module")
def shared_G():
    return _new_generator()


@pytest.fixture
def run(tmp_path, classifier_path, shared_G):
    return Run(tmp_path, classifier_path, shared_G)


def _event_values(eval_dir):
    """tag -> [(step, value)] of the event files (value: ndarray of the tensor)."""
    tags = {}
    for f in sorted(glob.glob(os.path.join(eval_dir, "events.out.tfevents.*"))):
        for e in tf.compat.v1.train.summary_iterator(f):
            for v in e.summary.value:
                tags.setdefault(v.tag, []).append((e.step, tf.make_ndarray(v.tensor)))
    return tags


# ---------------------------------------------------------------------------

def test_entry_point_end_to_end(run, capsys):
    """eval_imagenet.py flags -> one JSON line, summaries, cached real stats, record."""
    import eval_imagenet
    from absl import flags
    path = run.save(3)
    argv = ["eval_imagenet.py", f"--checkpoint_dir={run.checkpoint_dir}",
            f"--inception_path={run.classifier}", "--eval_sample_size=64",
            "--dcgan_generator_batch_size=32", "--num_real_samples=48",
            "--max_evals=1", "--eval_interval_secs=0", "--seed=2"]
    flags.FLAGS.unparse_flags()
    flags.FLAGS(argv)
    try:
        eval_imagenet.main(argv[:1])
    finally:
        flags.FLAGS.unparse_flags()
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    assert len(lines) == 1
    res = json.loads(lines[0])
    assert {"step", "inception_score", "fid", "kid", "num_samples", "seconds"} <= set(res)
    assert res["step"] == 3 and res["num_samples"] == 64
    assert res["checkpoint"] == os.path.abspath(path)
    assert 1.0 <= res["inception_score"] <= 10.0
    assert res["fid"] > 0 and np.isfinite(res["kid"]) and res["seconds"] > 0
    events = _event_values(run.eval_dir)
    # Manifold metrics are on by default, on min(real, generated) samples.
    assert res["manifold_num_samples"] == 48
    assert res["precision_recall_k"] == 3 and res["density_coverage_k"] == 5
    for tag, key in (("eval/incscore", "inception_score"), ("eval/fid", "fid"),
                     ("eval/kid", "kid"), ("eval/precision", "precision"),
                     ("eval/recall", "recall"), ("eval/density", "density"),
                     ("eval/coverage", "coverage")):
        [(step, value)] = events[tag]
        assert step == 3 and float(value) == pytest.approx(res[key], rel=1e-5), tag
    for tag in ("eval/generated_images", "eval/real_images"):
        [(step, value)] = events[tag]
        assert step == 3 and value[:2].tolist() == [b"128", b"128"], tag  # 4x4 grid of 32px
        png = tf.io.decode_png(value[2]).numpy()
        assert png.shape == (128, 128, 3) and png.std() > 0
    assert len(glob.glob(os.path.join(run.eval_dir, "real_statistics_*.npz"))) == 1
    record = json.load(open(os.path.join(run.eval_dir, "evaluated.json")))["evaluated"]
    assert [e["checkpoint"] for e in record] == [os.path.abspath(path)]


def test_restore_cache_reuse_and_invalidation(run, classifier, monkeypatch):
    """G restored exactly (eval mode); real statistics cached, reused, invalidated."""
    path = run.save(5)
    ev = evaluation.Evaluator(run.options(), classifier=classifier)
    assert ev.restore(path) == 5
    for a, b in zip(ev.generator.variables, run.G.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    z = tf.random.normal([4, ARCH["z_dim"]], seed=3)
    labels = tf.constant([0, 1, 2, 3])
    np.testing.assert_allclose(ev.generator(z, labels, training=False, update_sn=False),
                               run.G(z, labels, training=False, update_sn=False), atol=1e-5)

    calls = []
    real_compute = real_statistics.compute_real_statistics

    def counting(*a, **k):
        calls.append(1)
        return real_compute(*a, **k)

    monkeypatch.setattr(real_statistics, "compute_real_statistics", counting)
    evaluation_loop.evaluate_checkpoint(run.options(), path, ev)
    assert len(calls) == 1
    computed = ev.real_statistics()["pool_3"]
    assert computed.shape == (48, 16)
    # Forget the in-memory statistics (as a restarted evaluator): read from disk.
    ev._real = None
    evaluation_loop.evaluate_checkpoint(run.options(), path, ev)
    assert len(calls) == 1
    np.testing.assert_array_equal(ev.real_statistics()["pool_3"], computed)
    # Changing the data files invalidates the cache.
    _write_data(run.data_dir, num_files=3, seed=7)
    ev._real = None
    evaluation_loop.evaluate_checkpoint(run.options(), path, ev)
    assert len(calls) == 2
    assert len(glob.glob(os.path.join(run.eval_dir, "real_statistics_*.npz"))) == 2


def test_evaluate_repeatedly_each_checkpoint_once(run, classifier):
    """A trainer saving checkpoints in the background: each is evaluated exactly once,
    also across restarts (evaluated.json), and max_evals stops the loop."""
    first = run.save(5)
    ev = evaluation.Evaluator(run.options(), classifier=classifier)
    done = evaluation_loop.evaluate_repeatedly(run.options(max_evals=1, timeout=0), ev)
    assert [r["step"] for r in done] == [5]

    steps = [10, 20, 30]
    written = []
    errors = []

    def trainer():
        try:
            for s in steps:
                time.sleep(0.5)
                written.append(os.path.abspath(run.save(s)))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    thread = threading.Thread(target=trainer)
    thread.start()
    try:
        results = evaluation_loop.evaluate_repeatedly(run.options(timeout=2.5), ev, poll_secs=0.1)
    finally:
        thread.join()
    assert not errors
    assert [r["step"] for r in results] == steps  # 5 is not evaluated again
    assert [r["checkpoint"] for r in results] == written
    record = json.load(open(os.path.join(run.eval_dir, "evaluated.json")))["evaluated"]
    assert [e["checkpoint"] for e in record] == [os.path.abspath(first)] + written
    # Restart: nothing is evaluated twice.
    assert evaluation_loop.evaluate_repeatedly(run.options(timeout=0.2), ev, poll_secs=0.1) == []


def test_unreadable_checkpoint_is_skipped_and_watching_goes_on(run, classifier, caplog):
    """A listed, complete-looking checkpoint whose data shard is truncated is
    skipped with a warning naming it; the next one is evaluated."""
    bad, good = run.save(1), run.save(2)
    [shard] = glob.glob(bad + ".data-*")
    with open(shard, "r+b") as f:
        f.truncate(16)
    ev = evaluation.Evaluator(run.options(), classifier=classifier)
    with caplog.at_level("WARNING", logger=evaluation_loop.__name__):
        results = evaluation_loop.evaluate_repeatedly(run.options(timeout=0), ev)
    assert [r["checkpoint"] for r in results] == [os.path.abspath(good)]
    [warning] = [r.getMessage() for r in caplog.records if "Skipping" in r.getMessage()]
    assert warning.startswith(f"Skipping checkpoint {bad}: cannot read checkpoint {bad}: ")
    with pytest.raises(checkpoints.CheckpointReadError, match="cannot read checkpoint"):
        ev.restore(bad)


@pytest.mark.parametrize("where", ["generation", "real_statistics"])
def test_other_errors_of_an_evaluation_stop_the_evaluator(run, classifier, monkeypatch, where):
    """An out-of-memory while generating, or a data error in the real-statistics
    pass (a DataLossError, the class a truncated checkpoint also raises), is
    not a checkpoint read error: the evaluator stops with one line naming the
    error and the checkpoint, and records nothing."""
    path = run.save(3)
    ev = evaluation.Evaluator(run.options(), classifier=classifier)
    error = (tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with "
                                              "shape[32,299,299,3]\nmore context")
             if where == "generation" else
             tf.errors.DataLossError(None, None, "corrupted record at 12"))

    def fail(*args, **kwargs):
        raise error
    monkeypatch.setattr(ev, "_step_fn" if where == "generation" else "real_statistics", fail)
    with pytest.raises(type(error)) as e:
        evaluation_loop.evaluate_repeatedly(run.options(timeout=0), ev)
    line = cli.error_line(e.value)
    first = error.message.splitlines()[0]
    assert line == (f"evaluation of {path} failed: {type(error).__name__}: {first} (not a "
                    "checkpoint read error: the evaluator stops)")
    assert not os.path.exists(os.path.join(run.eval_dir, evaluation_loop.EVALUATED_NAME))
    with pytest.raises(type(error), match="not a checkpoint read error"):
        evaluation_loop.evaluate_checkpoint(run.options(), path, evaluator=ev)


def test_half_written_checkpoints_are_not_complete(run):
    assert checkpoints.list_complete_checkpoints(run.logdir) == []
    p1 = run.save(1)
    # Files of a checkpoint being written, not yet in the state file.
    for suffix in (".index", ".data-00000-of-00001"):
        open(os.path.join(run.logdir, "ckpt-2" + suffix), "w").close()
    assert checkpoints.list_complete_checkpoints(run.logdir) == [p1]
    # Listed in the state file, but its .index is gone (deleted/being replaced).
    p3 = run.save(3)
    os.rename(p3 + ".index", p3 + ".index.moved")
    assert checkpoints.list_complete_checkpoints(run.logdir) == [p1]
    os.rename(p3 + ".index.moved", p3 + ".index")
    assert checkpoints.list_complete_checkpoints(run.logdir) == [p1, p3]
    assert checkpoints.latest_complete_checkpoint(run.logdir) == p3


def test_no_checkpoint_is_a_clear_error(run, classifier):
    ev = evaluation.Evaluator(run.options(), classifier=classifier)
    with pytest.raises(FileNotFoundError, match="no checkpoint in .*imagenet_64"):
        evaluation_loop.evaluate_checkpoint(run.options(), evaluator=ev)
    with pytest.raises(FileNotFoundError, match="ckpt-7 not found"):
        ev.restore(os.path.join(run.logdir, "ckpt-7"))
    with pytest.raises(FileNotFoundError, match="does not exist.*--batch_size 32"):
        evaluation.Evaluator(run.options(batch_size=32), classifier=classifier)


def test_classifier_errors_through_evaluator(run, tmp_path):
    missing = str(tmp_path / "not_here")
    with pytest.raises(FileNotFoundError, match="not_here"):
        evaluation.Evaluator(run.options(inception_path=missing))
    wrong = save_standin_classifier(tmp_path / "wrong_outputs", names=("pool_3", "probs"))
    with pytest.raises(metrics.ClassifierError, match="wrong_outputs.*probs"):
        evaluation.Evaluator(run.options(inception_path=wrong))


def test_architecture_from_config_and_disagreeing_flags(run, classifier):
    config, config_path = rundir.read_config(run.logdir)
    arch = rundir.resolve_architecture(config, config_path, gf_dim=4, num_classes=10)
    assert arch == dict(generator_type="test", image_size=32, z_dim=16, gf_dim=4,
                        num_classes=10)
    with pytest.raises(ValueError, match=r"--gf_dim=8 disagrees with gf_dim=4 in .*config.json"):
        evaluation.Evaluator(run.options(gf_dim=8), classifier=classifier)
    with pytest.raises(ValueError, match="--num_classes=1000 disagrees with number_classes=10"):
        evaluation.Evaluator(run.options(num_classes=1000), classifier=classifier)
    os.remove(os.path.join(run.logdir, "config.json"))
    with pytest.raises(ValueError, match="--generator_type, --image_size.*no .*config.json"):
        evaluation.Evaluator(run.options(z_dim=16, gf_dim=4, num_classes=10),
                             classifier=classifier)


def test_checkpoint_of_other_architecture_is_rejected(run, classifier):
    path = run.save(1)
    with open(os.path.join(run.logdir, "config.json")) as f:
        config = json.load(f)
    config["generator_type"] = "baseline"  # config lies: G without attention
    with open(os.path.join(run.logdir, "config.json"), "w") as f:
        json.dump(config, f)
    ev = evaluation.Evaluator(run.options(), classifier=classifier)
    with pytest.raises(ValueError, match="architecture does not match"):
        ev.restore(path)


# ---------------------------------------------------------------------------
# Intra-FID, class accuracy, standing statistics.

def _real_features_by_class(data_dir, classifier):
    """Oracle: every record of ``data_dir`` decoded in numpy and classified, by class."""
    images, labels = [], []
    for f in record_format.list_record_files(data_dir):
        for rec in record_format.iter_serialized_records(f):
            image, label = record_format.decode_example_numpy(rec)
            images.append(image.astype(np.float32) * (2.0 / 255.0) - 1.0)
            labels.append(label)
    pool = classifier(tf.constant(np.stack(images)))["pool_3"].numpy()
    labels = np.array(labels)
    return {c: pool[labels == c] for c in np.unique(labels)}


def _sorted_rows(a):
    return a[np.lexsort(a.T[::-1])]


def test_intra_fid_class_accuracy_and_standing_stats_end_to_end(run, classifier, monkeypatch):
    """Intra-FID = mean of scipy FIDs per class against every real record of the class
    (numpy oracle); class accuracy = argmax agreement; both in JSON and TensorBoard;
    standing statistics applied after the restore and named in the JSON line."""
    from test_metrics import np_fid
    path = run.save(4)
    per_class = 40  # more than any class has (80 records, 10 classes): all records used
    captured = {}
    for name in ("intra_fid", "class_accuracy"):
        original = getattr(metrics, name)

        def spy(*args, _name=name, _original=original):
            captured[_name] = args
            return _original(*args)
        monkeypatch.setattr(metrics, name, spy)
    opts = run.options(intra_fid_samples_per_class=per_class, standing_stats_batches=2,
                       dcgan_generator_batch_size=40)  # 80 records: no partial batch dropped
    ev = evaluation.Evaluator(opts, classifier=classifier)
    res = evaluation_loop.evaluate_checkpoint(opts, path, ev)

    real = _real_features_by_class(run.data_dir, classifier)
    real_pool, real_labels, gen_pool, gen_labels, num_classes = captured["intra_fid"]
    assert num_classes == 10
    np.testing.assert_array_equal(gen_labels, np.repeat(np.arange(10), per_class))
    for c, rows in real.items():  # the cached per-class statistics are those records
        np.testing.assert_allclose(_sorted_rows(real_pool[real_labels == c]),
                                   _sorted_rows(rows), rtol=1e-4, atol=1e-5)
    fids = [np_fid(rows, gen_pool[gen_labels == c]) for c, rows in real.items()
            if len(rows) >= 2]
    assert res["intra_fid"] == pytest.approx(np.mean(fids), rel=1e-3)
    assert res["intra_fid_samples_per_class"] == per_class
    assert res["intra_fid_num_classes"] == len(fids)

    logits, labels = captured["class_accuracy"]
    assert logits.shape == (64, 10) and labels.shape == (64,)
    assert len(np.unique(labels)) > 3  # uniform labels, as G was conditioned
    assert res["class_accuracy"] == pytest.approx(np.mean(logits.argmax(1) == labels))
    assert res["bn_statistics"] == "standing statistics over 2 batches of 64"

    events = _event_values(run.eval_dir)
    for tag, key in (("eval/intra_fid", "intra_fid"), ("eval/class_accuracy",
                                                       "class_accuracy")):
        [(step, value)] = events[tag]
        assert step == 4 and float(value) == pytest.approx(res[key], rel=1e-5), tag
    [(step, value)] = events["eval/bn_statistics"]
    assert step == 4 and value.item() == b"standing statistics over 2 batches of 64"

    # Standing statistics replaced the restored moving statistics; the weights are the
    # checkpoint's (the spectral-norm u moves in eval mode, as in the release's eval graph).
    from sagan_tf.models import standing_statistics
    moving = {v.path for v in standing_statistics.moving_statistics_variables(ev.generator)}
    for a, b in zip(ev.generator.variables, run.G.variables):
        if a.path in moving:
            assert not np.array_equal(a.numpy(), b.numpy()), a.path
        elif not a.path.endswith("/u"):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_per_class_cache_reuse_and_invalidation(run, classifier, classifier_path, tmp_path,
                                                monkeypatch):
    """Per-class real statistics: computed once, read back, recomputed for new data
    or another classifier; without the flag none are computed and the release's
    moving statistics are named."""
    path = run.save(6)
    calls = []
    real_compute = real_statistics.compute_real_class_activations

    def counting(*a, **k):
        calls.append(1)
        return real_compute(*a, **k)

    monkeypatch.setattr(real_statistics, "compute_real_class_activations", counting)
    plain = evaluation_loop.evaluate_checkpoint(run.options(), path,
                                           evaluation.Evaluator(run.options(),
                                                                classifier=classifier))
    assert not calls and "intra_fid" not in plain
    assert plain["bn_statistics"] == "moving averages (the release)"
    opts = run.options(intra_fid_samples_per_class=3)
    ev = evaluation.Evaluator(opts, classifier=classifier)
    first = evaluation_loop.evaluate_checkpoint(opts, path, ev)
    assert np.isfinite(first["intra_fid"]) and len(calls) == 1
    computed = ev.real_class_statistics()
    assert np.bincount(computed["labels"], minlength=10).max() <= 3
    ev._real_by_class = None  # as a restarted evaluator: read from disk
    reread = ev.real_class_statistics()
    assert len(calls) == 1
    for key in ("pool_3", "labels"):
        np.testing.assert_array_equal(reread[key], computed[key])
    _write_data(run.data_dir, num_files=3, seed=8)  # new data
    ev._real_by_class = None
    ev.real_class_statistics()
    assert len(calls) == 2
    other = save_standin_classifier(tmp_path / "other_clf", input_size=32, seed=5)
    ev.classifier = metrics.load_classifier(other)  # another classifier
    ev._real_by_class = None
    ev.real_class_statistics()
    assert len(calls) == 3
    assert len(glob.glob(os.path.join(run.eval_dir, "real_class_activations_*.npz"))) == 3


def test_class_accuracy_only_when_classifier_classes_are_the_data_classes(run, tmp_path):
    """A classifier with another number of logits (as Inception's 1008 on ImageNet's
    1000 classes) gives no class accuracy."""
    path = run.save(7)
    other = save_standin_classifier(tmp_path / "clf12", input_size=32, num_logits=12)
    ev = evaluation.Evaluator(run.options(inception_path=other))
    assert not ev.reports_class_accuracy
    res = evaluation_loop.evaluate_checkpoint(ev.options, path, ev)
    assert "class_accuracy" not in res and "eval/class_accuracy" not in _event_values(
        run.eval_dir)


def test_manifold_metrics_on_the_fid_features(run, classifier, monkeypatch):
    """The JSON line's precision/recall/density/coverage are those of the first
    manifold_num_samples rows of the cached real pool_3 and of the generated pool_3
    FID used (full-matrix oracle); --nomanifold_metrics drops them."""
    from test_manifold_metrics import _oracle
    seen = {}
    kernel_distance = metrics.kernel_distance

    def spy(real, generated, **kw):
        seen["real"], seen["generated"] = np.array(real), np.array(generated)
        return kernel_distance(real, generated, **kw)
    monkeypatch.setattr(metrics, "kernel_distance", spy)
    path = run.save(5)
    ev = evaluation.Evaluator(run.options(manifold_num_samples=20), classifier=classifier,
                              out=open(os.devnull, "w"))
    res = ev.evaluate(path)
    [cache] = glob.glob(os.path.join(run.eval_dir, "real_statistics_*.npz"))
    np.testing.assert_array_equal(np.load(cache)[metrics.POOL_KEY], seen["real"])
    want = _oracle(seen["real"][:20], seen["generated"][:20], 3, 5)
    assert res["manifold_num_samples"] == 20
    for key, value in want.items():
        assert res[key] == pytest.approx(value, abs=1e-12), key
    off = evaluation.Evaluator(run.options(manifold_metrics=False), classifier=classifier,
                               out=open(os.devnull, "w")).evaluate(path)
    assert not {"precision", "recall", "density", "coverage", "manifold_num_samples"} & set(off)
    assert off["fid"] == pytest.approx(res["fid"], rel=1e-5)  # seeded: same samples
    with pytest.raises(ValueError, match="manifold_num_samples must be >= 0"):
        evaluation.Evaluator(run.options(manifold_num_samples=-1), classifier=classifier)


def test_truncation_is_named_and_off_is_the_release_sampling(run, classifier):
    """--truncation: the JSON line's truncation, its own summary directory beside the
    shared real-activation cache, z inside the bound; off: the release's z draws."""
    from sagan_tf.evaluation import truncation_sweep
    path = run.save(4)
    off = evaluation.Evaluator(run.options(), classifier=classifier, out=open(os.devnull, "w"))
    want = tf.random.Generator.from_seed(1).normal([32, ARCH["z_dim"]])
    np.testing.assert_array_equal(off._latents([32, ARCH["z_dim"]]).numpy(), want.numpy())
    ev = evaluation.Evaluator(run.options(truncation=0.5), classifier=classifier)
    z = tf.function(ev._latents)([500, ARCH["z_dim"]]).numpy()
    assert np.abs(z).max() <= 0.5 and z.std() > 0.2
    results = truncation_sweep.sweep(run.options(checkpoint_path=path), [None, 0.5],
                                     classifier=classifier, out=open(os.devnull, "w"))
    assert [r["truncation"] for r in results] == [None, 0.5]
    assert results[0]["fid"] != results[1]["fid"]
    sub = os.path.join(run.eval_dir, "truncation_0.5")
    assert ev.eval_dir == sub
    assert glob.glob(os.path.join(sub, "events.out.tfevents.*"))
    assert json.load(open(os.path.join(sub, "evaluated.json")))["evaluated"][0]["truncation"] == 0.5
    assert not glob.glob(os.path.join(sub, "real_statistics_*.npz"))
    assert len(glob.glob(os.path.join(run.eval_dir, "real_statistics_*.npz"))) == 1
    assert [t for t in _event_values(sub) if t.startswith("eval/latents")]
    image, points = truncation_sweep.plot_is_against_fid(results, title="sweep")
    assert image.shape[2] == 3 and len(points) == 2
    # x is FID: the point with the larger FID is to the right.
    fids = [r["fid"] for r in results]
    assert (points[0][0] < points[1][0]) == (fids[0] < fids[1])


def test_real_statistics_from_the_whole_validation_split(run, classifier, tmp_path,
                                                         monkeypatch):
    """--real_data_dir/--real_split validation/--num_real_samples 0: the cached moments
    are those of every validation record (numpy oracle; the train records beside them
    are not read), FID comes from them, and the JSON line times each part."""
    import scipy.linalg
    path = run.save(3)
    val_dir = str(tmp_path / "val_records")
    rng = np.random.default_rng(5)
    record_format.write_records(os.path.join(val_dir, "validation-00000-of-00001.tfrecords"),
                                rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8),
                                rng.integers(0, 10, 30))
    record_format.write_records(os.path.join(val_dir, "train-00000-of-00001.tfrecords"),
                                np.zeros((5, 32, 32, 3), np.uint8), np.zeros(5))
    opts = run.options(real_data_dir=val_dir, real_split="validation", num_real_samples=0)
    ev = evaluation.Evaluator(opts, classifier=classifier, out=open(os.devnull, "w"))
    seen = {}
    frechet_distance = metrics.frechet_distance

    def spy(real, generated):
        seen["generated"] = np.asarray(generated, np.float64)
        return frechet_distance(real, generated)
    monkeypatch.setattr(metrics, "frechet_distance", spy)
    res = ev.evaluate(path)
    images = [record_format.decode_example_numpy(r)[0] for r in record_format.
              iter_serialized_records(os.path.join(val_dir, "validation-00000-of-00001.tfrecords"))]
    pool = classifier(tf.constant(np.stack(images).astype(np.float32) * (2.0 / 255.0) - 1.0))[
        "pool_3"].numpy().astype(np.float64)
    real = ev.real_statistics()
    assert int(real["count"]) == 30
    np.testing.assert_allclose(real["mean"], pool.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(real["covariance"], np.cov(pool.T), rtol=1e-4, atol=1e-6)
    [cache] = glob.glob(os.path.join(run.eval_dir, "real_statistics_*.npz"))
    assert json.loads(str(np.load(cache)["description"]))["split"] == "validation"
    gen = seen["generated"]
    cov_real, cov_gen = np.cov(pool.T), np.cov(gen.T)
    want = (np.sum((pool.mean(0) - gen.mean(0)) ** 2) + np.trace(cov_real + cov_gen) - 2 * np.trace(
        np.real(scipy.linalg.sqrtm(cov_real @ cov_gen))))
    assert res["fid"] == pytest.approx(want, rel=1e-4)
    assert {"sampling", "real_statistics", "inception_score", "fid", "kid",
            "manifold_metrics"} <= set(res["metric_seconds"])
    assert all(v >= 0 for v in res["metric_seconds"].values())
