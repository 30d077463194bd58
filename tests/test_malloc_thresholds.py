"""The training input iterator leaves glibc's malloc thresholds unpinned.

TensorFlow's generator dataset kernel (built by ``Dataset.from_generator`` and
by every distributed iterator) pins glibc's mmap threshold at 128 KiB, after
which every block above it that the heap's free blocks cannot serve is a fresh
mmap. Reference: glibc's own bookkeeping, read with ``malloc_usable_size`` (a
block glibc mmapped has a usable size of a multiple of 16 bytes, a page multiple
minus its 16-byte header; a heap block's is 8 bytes past a multiple of 16).
Each case runs in a fresh process: what the heap already holds decides whether
a block reaches the threshold at all.
"""
import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

PROBE = textwrap.dedent("""
    import ctypes, os, sys, tempfile
    import numpy as np
    import tensorflow as tf
    from sagan_tf.data import malloc_thresholds, record_format
    from sagan_tf.data.pipeline import training_iterator
    from sagan_tf.training.config import TrainConfig
    BLOCK = 16 << 20  # above the pin, below glibc's dynamic maximum (32 MiB)
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.malloc_usable_size.restype = ctypes.c_size_t
    libc.malloc_usable_size.argtypes = [ctypes.c_void_p]
    libc.free.argtypes = [ctypes.c_void_p]

    def mmapped(nbytes):
        block = libc.malloc(nbytes)
        try:
            return libc.malloc_usable_size(block) % 16 == 0
        finally:
            libc.free(block)

    case = sys.argv[1]
    next(iter(tf.data.Dataset.from_generator(lambda: iter([1]), output_types=tf.int32)))
    pinned = mmapped(BLOCK)
    if case == "restore":
        restored = malloc_thresholds.restore()
    else:
        data_dir = tempfile.mkdtemp()
        rng = np.random.default_rng(0)
        record_format.write_records(os.path.join(data_dir, "train-0.tfrecords"),
                                    rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8),
                                    np.arange(8) % 4)
        shuffle, start_step = case == "shuffled", 0 if case == "shuffled" else 3
        config = TrainConfig(data_dir=data_dir, image_size=8, number_classes=4, batch_size=2,
                             seed=1, shuffle=shuffle, shuffle_buffer_size=8)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
        next(training_iterator(config, strategy, start_step))
        restored = True
    print(pinned, restored, mmapped(BLOCK))
""")


@pytest.mark.parametrize("case", ["restore", "shuffled", "resumed_unshuffled"])
def test_thresholds_unpinned_after(case):
    """After :func:`malloc_thresholds.restore` and after creating the training
    iterator (both of its branches), a 16 MiB block comes from the heap again;
    TensorFlow's pin before it made it an mmap."""
    out = subprocess.run([sys.executable, "-c", PROBE, case], capture_output=True,
                         text=True, check=True, timeout=300).stdout.split()
    assert out[-3:] == ["True", "True", "False"], out
