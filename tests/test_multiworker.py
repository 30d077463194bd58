"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1.

Each worker runs `sagan_tf.training.loop.train` with `strategy="multiworker"` (the
cluster from TF_CONFIG) on demo records, then saves its final G/D variables
to an .npz. Synchronous data-parallel training must leave both workers with
identical weights; only the chief writes the real logdir.
"""
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 180  # measured: 68 s at load 3, 117 s at load 5 (2 cores)

WORKER = textwrap.dedent("""
    import json, os, sys
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    # The strategy must exist before any TensorFlow op runs in this process.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import numpy as np
    from sagan_tf.training.config import TrainConfig
    from sagan_tf.training.loop import train
    data_dir, checkpoint_dir, out = sys.argv[1:4]
    config = TrainConfig(data_dir=data_dir, checkpoint_dir=checkpoint_dir, image_size=32,
                         gf_dim=8, df_dim=8, z_dim=16, number_classes=4, batch_size=2,
                         max_steps=3, seed=11, strategy="multiworker", shuffle=False,
                         shuffle_buffer_size=16, save_summaries_steps=0,
                         save_checkpoint_secs=0, log_every_steps=1)
    result = train(config, strategy=strategy)
    trainer = result["trainer"]
    np.savez(out, **{v.path: np.asarray(v) for m in (trainer.generator, trainer.discriminator)
                     for v in m.variables},
             __step__=np.asarray(result["step"]),
             __replicas__=np.asarray(result["num_replicas"]))
    print("WORKER DONE", result["step"], flush=True)
""")


def _free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def test_two_workers_train_to_identical_weights(tmp_path):
    from sagan_tf.data import demo_data
    data_dir = str(tmp_path / "data")
    demo_data.write_demo_dataset(data_dir, num_images=64, image_size=32, num_classes=4,
                                 seed=0, num_shards=2)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    ckpt_dir = str(tmp_path / "ckpt")
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs, logs = [], []
    env_base = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        for i in range(2):
            env = {**env_base,
                   "TF_CONFIG": json.dumps({"cluster": cluster,
                                            "task": {"type": "worker", "index": i}})}
            log = open(tmp_path / f"worker{i}.log", "w")
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, str(script), data_dir, ckpt_dir, str(tmp_path / f"w{i}.npz")],
                cwd=str(tmp_path), env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.time() + TIMEOUT_S
        while time.time() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.5)
        timed_out = any(p.poll() is None for p in procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    outputs = [(tmp_path / f"worker{i}.log").read_text()[-3000:] for i in range(2)]
    if timed_out:
        pytest.fail(f"workers did not finish in {TIMEOUT_S} s:\n" + "\n---\n".join(outputs))
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out
    w0, w1 = (np.load(tmp_path / f"w{i}.npz") for i in range(2))
    assert int(w0["__step__"]) == int(w1["__step__"]) == 3
    assert int(w0["__replicas__"]) == 2
    assert sorted(w0.files) == sorted(w1.files)
    for k in w0.files:
        np.testing.assert_array_equal(w0[k], w1[k], err_msg=k)
    # Only the chief wrote the real logdir; the other worker's scratch dir is gone.
    logdir = os.path.join(ckpt_dir, "imagenet_2")
    names = os.listdir(logdir)
    assert "config.json" in names and "checkpoint" in names
    assert not [n for n in names if n.startswith("worker_tmp")], names
