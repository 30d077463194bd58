"""Shared pytest setup.

The CPU is split into two logical devices *before any TensorFlow op runs*, so
that multi-replica code can be tested with a real `MirroredStrategy` on a
machine without GPUs. One strategy object is shared by the whole session.

The test process runs TensorFlow's own kernel default (oneDNN only on
AVX512_VNNI/AVX512_BF16/AMX CPUs, Eigen's elsewhere) unless the environment
sets ``TF_ENABLE_ONEDNN_OPTS``; the entry points that tests start as
subprocesses turn oneDNN on as they do for users. Not the users' default in
this process: on an AVX2 CPU, the port on oneDNN's kernels is outside the
release-parity criterion on the losses (docs/NUMERICS.md §11).
"""
import os
import tempfile

_TMP_HOME = tempfile.mkdtemp(prefix="sagan_tf_test_home_")
os.environ.setdefault("KERAS_HOME", os.path.join(_TMP_HOME, "keras"))
os.environ.setdefault("TFHUB_CACHE_DIR", os.path.join(_TMP_HOME, "tfhub"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from sagan_tf.training.devices import configure_cpu_replicas  # noqa: E402

NUM_LOGICAL_CPUS = 2

configure_cpu_replicas(NUM_LOGICAL_CPUS)


@pytest.fixture(scope="session")
def strategy2():
    """A 2-replica MirroredStrategy over the two logical CPU devices."""
    return tf.distribute.MirroredStrategy(
        [f"/cpu:{i}" for i in range(NUM_LOGICAL_CPUS)])


@pytest.fixture
def rng():
    import numpy as np
    return np.random.default_rng(1234)
