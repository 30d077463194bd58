"""First contact without tracebacks or TensorFlow start-up noise.

Every entry point and tool runs through sagan_tf.cli: an expected error is one
line ``<program>: error: <culprit and fix>`` with exit status 2, and unless the
user set TF_CPP_MIN_LOG_LEVEL, TensorFlow's start-up logging is held back.
The subprocess runs below have TF_CPP_MIN_LOG_LEVEL *unset* (conftest sets it
for the pytest process) and assert that their whole output is that one line:
no traceback and no C++ log line. A default training run's output is checked
in tests/test_faults.py::test_two_trainers_racing_on_one_run_directory.
"""
import json
import os
import re
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from sagan_tf import cli
from sagan_tf.training.config import TrainConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: TensorFlow / absl C++ log lines and the start-up notices.
CPP_LOG = re.compile(r"^[IWEF]\d{4} |oneDNN custom operations|cpu_feature_guard|cuInit|"
                     r"absl::InitializeLog|Traceback", re.M)


def _default_env():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return env


def _run_parallel(commands, parallel=3, timeout=300):
    """``{name: argv}`` -> ``{name: (returncode, stdout + stderr)}``."""
    pending, running, results = list(commands.items()), {}, {}
    deadline = time.time() + timeout
    try:
        while pending or running:
            while pending and len(running) < parallel:
                name, argv = pending.pop(0)
                running[name] = subprocess.Popen(
                    [sys.executable] + argv, cwd=REPO, env=_default_env(), text=True,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for name, proc in list(running.items()):
                if proc.poll() is not None:
                    results[name] = (proc.returncode, proc.stdout.read())
                    del running[name]
            assert time.time() < deadline, f"timed out: {sorted(running)}"
            time.sleep(0.05)
    finally:
        for proc in running.values():
            proc.kill()
            proc.wait()
    return results


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    """A --checkpoint_dir holding one run, imagenet_32, with its config.json."""
    root = tmp_path_factory.mktemp("runs")
    logdir = root / "imagenet_32"
    logdir.mkdir()
    config = TrainConfig(checkpoint_dir=str(root), batch_size=32, image_size=32,
                         number_classes=10, gf_dim=8, df_dim=8, z_dim=16, seed=1)
    (logdir / "config.json").write_text(json.dumps(config.to_dict()))
    return str(root)


def test_expected_errors_are_one_line_without_tensorflow_noise(run_root, tmp_path):
    not_a_model = tmp_path / "not_a_model"
    not_a_model.mkdir()
    (not_a_model / "readme.txt").write_text("x")
    export_dir = tmp_path / "export"
    export_dir.mkdir()
    (export_dir / "keep.txt").write_text("x")
    res = _run_parallel({
        # A first user's case: the demo ran at batch 32, the evaluator is asked for 64.
        "eval_batch": ["eval_imagenet.py", f"--checkpoint_dir={run_root}", "--batch_size=64"],
        # Without --batch_size the only run is used; the classifier is the culprit.
        "eval_classifier": ["eval_imagenet.py", f"--checkpoint_dir={run_root}",
                            f"--inception_path={not_a_model}"],
        "sample_missing": ["tools/sample.py", f"--checkpoint_dir={tmp_path / 'nowhere'}",
                           f"--output={tmp_path / 'x.png'}"],
        "export_no_ckpt": ["tools/export_generator.py", f"--checkpoint_dir={run_root}",
                           f"--export_dir={export_dir}"],
        "demo_classes": ["tools/make_demo_data.py", f"--output_dir={tmp_path / 'demo'}",
                         "--num_classes=11"],
        "convert_missing": ["tools/convert_imagenet_to_records.py",
                            f"--imagenet_dir={tmp_path / 'no_imagenet'}",
                            f"--output_dir={tmp_path / 'out'}"],
        "curve_missing": ["tools/plot_learning_curve.py", f"--results={tmp_path / 'no_eval'}",
                          f"--output={tmp_path / 'curve.png'}"],
    })
    expected = {
        "eval_batch": (
            f"eval_imagenet.py: error: {run_root}/imagenet_64 does not exist (--checkpoint_dir "
            f"'{run_root}' with --batch_size 64); it holds imagenet_32: pass --batch_size 32 "
            "(the run's per-replica batch size) or leave --batch_size out"),
        "eval_classifier": (
            f"eval_imagenet.py: error: classifier path '{not_a_model}' is not a SavedModel / "
            "TF-Hub module directory (no saved_model.pb; contents: ['readme.txt'])"),
        "sample_missing": (
            f"sample.py: error: --checkpoint_dir '{tmp_path / 'nowhere'}' does not exist (give "
            "the --checkpoint_dir of train_imagenet.py)"),
        "export_no_ckpt": f"export_generator.py: error: no checkpoint in '{run_root}/imagenet_32'",
        "demo_classes": ("make_demo_data.py: error: demo data has 10 classes; num_classes must "
                         "be in [1, 10], got 11"),
        "convert_missing": (f"convert_imagenet_to_records.py: error: image folder "
                            f"'{tmp_path / 'no_imagenet'}' does not exist (--imagenet_dir)"),
        "curve_missing": (f"plot_learning_curve.py: error: {tmp_path / 'no_eval'} does not exist "
                          "(give the evaluator's eval directory"),
    }
    for name, line in expected.items():
        rc, out = res[name]
        assert rc == cli.EXIT_USER_ERROR, (name, out)
        assert not CPP_LOG.search(out), (name, out)
        lines = out.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(line), (name, out)


def test_train_flags_are_checked_before_tensorflow_loads():
    """A contradiction between train_imagenet.py's flags is its one-line error
    at once: TensorFlow (seconds to load) is never imported."""
    code = ("import runpy, sys\n"
            "sys.argv = ['train_imagenet.py', '--data_dir=unused', '--strategy=tpu', "
            "'--num_cpu_replicas=2']\n"
            "try:\n"
            "    runpy.run_path('train_imagenet.py', run_name='__main__')\n"
            "except SystemExit as e:\n"
            "    print('exit', e.code, 'tensorflow' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_default_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["exit", "2", "False"], proc.stdout + proc.stderr
    assert proc.stderr.strip() == ("train_imagenet.py: error: --num_cpu_replicas only applies "
                                   "to --strategy mirrored, got 2")


def test_run_turns_expected_errors_into_one_line(capsys):
    def failing(error):
        def main(argv):
            raise error
        return main
    for error, line in [
            (cli.UserError("--x is bad; use --y"), "prog: error: --x is bad; use --y"),
            (FileNotFoundError(2, "No such file or directory", "/a/b"),
             "prog: error: [Errno 2] No such file or directory: '/a/b'"),
            (ValueError("a long message\nwith a second line"),
             "prog: error: a long message\nwith a second line"),
            # TensorFlow's errors: the first line (the rest is graph context).
            (tf.errors.DataLossError(None, None, "corrupt record at 12\n\t [[{{node x}}]]"),
             "prog: error: corrupt record at 12")]:
        with pytest.raises(SystemExit) as e:
            sys.argv = ["prog"]
            cli.run(failing(error), program="prog")
        assert e.value.code == cli.EXIT_USER_ERROR
        assert capsys.readouterr().err.strip() == line
    with pytest.raises(SystemExit) as e:  # Ctrl-C: one line, status 130
        cli.run(failing(KeyboardInterrupt()), program="prog")
    assert e.value.code == 130 and capsys.readouterr().err.strip() == "prog: interrupted"
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        cli.run(failing(ZeroDivisionError("bug")), program="prog")


def test_sampling_tools_share_and_explain_the_standing_statistics_flags():
    """One definition (cli.define_standing_stats_flags), listed by each tool's --help."""
    res = _run_parallel({t: [f"tools/{t}.py", "--help"]
                         for t in ("sample", "visualize_attention", "export_generator")})
    for tool, (_, out) in res.items():  # absl's --help exits 1
        assert "Traceback" not in out, (tool, out)
        assert "--standing_stats_batches" in out and "--standing_stats_batch_size" in out, tool


def test_checkpoint_flags_are_defined_once_and_parsed_for_every_tool():
    """cli.define_checkpoint_flags: the flags the sampling tools share, with their
    defaults; cli.int_list / cli.start: the tools' usage errors."""
    from absl import app, flags
    values = flags.FlagValues()
    cli.define_checkpoint_flags(values)
    values(["prog", "--checkpoint_dir=ck", "--batch_size=8", "--standing_stats_batches=3"])
    assert (values.checkpoint_dir, values.checkpoint_path, values.batch_size,
            values.attention_query_block_size, values.standing_stats_batches,
            values.standing_stats_batch_size) == ("ck", None, 8, None, 3, None)
    assert set(cli.CHECKPOINT_FLAGS) < set(values)
    with pytest.raises(flags.IllegalFlagValueError):
        values(["prog", "--standing_stats_batches=-1"])
    assert cli.int_list(["3", "07"], "--classes") == [3, 7]
    assert cli.int_list(None, "--classes") is None
    with pytest.raises(app.UsageError, match=r"--labels must be integers, got \['1', 'x'\]"):
        cli.int_list(["1", "x"], "--labels")
    assert cli.start(["prog"]) is tf
    with pytest.raises(app.UsageError, match=r"unexpected arguments: \['extra'\]"):
        cli.start(["prog", "extra"])


def test_tensorflow_start_is_streamed_so_a_crash_in_its_import_still_shows(tmp_path):
    """A stand-in ``tensorflow`` that prints a start-up notice and a real error
    line, then dies of SIGSEGV inside its import (a CUDA library's crash): the
    error line reaches stderr, the notice does not."""
    fake = tmp_path / "fake" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "import os, signal\n"
        "os.write(2, b'I0000 00:00:1700000000.000000 1 cpu_feature_guard.cc:210] notice\\n')\n"
        "os.write(2, b'libcudnn.so.9: cannot open shared object file\\n')\n"
        "os.kill(os.getpid(), signal.SIGSEGV)\n")
    env = _default_env()
    env["PYTHONPATH"] = str(tmp_path / "fake") + os.pathsep + env["PYTHONPATH"]
    code = "from sagan_tf import cli; cli.quiet_tensorflow()"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == -11, proc.stderr
    assert "libcudnn.so.9: cannot open shared object file" in proc.stderr
    assert "cpu_feature_guard" not in proc.stderr
