"""Shared pytest setup.

The CPU is split into two logical devices *before any TensorFlow op runs*, so
that multi-replica code can be tested with a real `MirroredStrategy` on a
machine without GPUs. One strategy object is shared by the whole session.

The test process runs the CPU kernels users get from the entry points
(``sagan_tf.kernels.use_onednn_by_default``: oneDNN's on x86 unless the
environment sets ``TF_ENABLE_ONEDNN_OPTS``), chosen before TensorFlow loads;
``TF_ENABLE_ONEDNN_OPTS=0`` runs the suite on Eigen's, and
``ONEDNN_MAX_CPU_ISA=AVX2`` on an AVX-512 machine on what an AVX2 CPU runs.
XLA's CPU backend compiles without LLVM's optimisations here (``XLA_FLAGS``,
unless set; inherited by the tools the tests start).
"""
import os
import tempfile

_TMP_HOME = tempfile.mkdtemp(prefix="sagan_tf_test_home_")
os.environ.setdefault("KERAS_HOME", os.path.join(_TMP_HOME, "keras"))
os.environ.setdefault("TFHUB_CACHE_DIR", os.path.join(_TMP_HOME, "tfhub"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# XLA's CPU code generated without LLVM's optimisations: compiling the tests'
# XLA steps takes half the CPU time (86 -> 44 s for the two-replica step), and
# what they check of XLA (the numbers of the step without it, to rounding)
# does not depend on how fast the generated code runs.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

from sagan_tf import kernels  # noqa: E402  (imports no TensorFlow)

kernels.use_onednn_by_default()

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from sagan_tf.training.devices import configure_cpu_replicas  # noqa: E402

NUM_LOGICAL_CPUS = 2

configure_cpu_replicas(NUM_LOGICAL_CPUS)

#: The modules with the longest tests (the GPU check's dry run, the
#: release-parity runs, the fault tests' entry points), run first: pytest-xdist
#: hands out tests in runs of consecutive ones, so these start at once and the
#: run ends on short tests with both workers busy.
LONGEST_MODULES_FIRST = ("test_gpu_check.py", "test_release_parity.py", "test_faults.py")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Moves :data:`LONGEST_MODULES_FIRST` to the front, keeping pytest's order
    within each module (its grouping by module-scoped fixtures)."""
    rank = {name: i for i, name in enumerate(LONGEST_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def strategy2():
    """A 2-replica MirroredStrategy over the two logical CPU devices."""
    return tf.distribute.MirroredStrategy(
        [f"/cpu:{i}" for i in range(NUM_LOGICAL_CPUS)])


@pytest.fixture
def rng():
    import numpy as np
    return np.random.default_rng(1234)
