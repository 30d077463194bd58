"""glibc's malloc thresholds, as they are before TensorFlow's generator dataset pins them.

TensorFlow's generator dataset kernel, which every distributed input iterator
builds (its ``MultiDeviceIterator``), calls ``mallopt(M_MMAP_THRESHOLD, 128 KiB)``
when it is constructed (TensorFlow's mitigation of a ``Dataset.from_generator``
memory growth on Python 3.11). That switches off glibc's dynamic threshold, which
otherwise rises to the size of the large blocks a program frees and reuses:
from then on every block of 128 KiB or more that the heap's free blocks cannot
serve is a fresh ``mmap``, returned with ``munmap`` when freed. Eigen's CPU
kernels allocate about 1.2 GB of such blocks per demo training step: in a
process whose input pipeline is opened before its first step, every step would
fault about 300,000 zeroed pages back in (system time; the demo loop at about
1.6x its bare step's CPU time on a 2-core AVX2 CPU).
:func:`restore` sets the thresholds where glibc's dynamic rule takes them at most,
where the training step's blocks are kept and reused, as in a process without an
input pipeline. No computed value changes: only where the memory comes from.
"""
import ctypes
import platform

__all__ = ["M_TRIM_THRESHOLD", "M_MMAP_THRESHOLD", "DYNAMIC_MMAP_THRESHOLD_MAX", "restore"]

#: ``mallopt`` parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: The highest mmap threshold glibc's dynamic rule sets (``DEFAULT_MMAP_THRESHOLD_MAX``:
#: 32 MiB on 64-bit); the rule sets the trim threshold to twice the mmap threshold.
DYNAMIC_MMAP_THRESHOLD_MAX = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)


def restore():
    """Sets glibc's mmap threshold to :data:`DYNAMIC_MMAP_THRESHOLD_MAX` and its
    trim threshold to twice that, undoing the 128 KiB pin of TensorFlow's generator
    dataset (call it after creating an input iterator). Returns whether it did: False
    where the C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)  # this process's C library
    return bool(libc.mallopt(M_MMAP_THRESHOLD, DYNAMIC_MMAP_THRESHOLD_MAX)
                and libc.mallopt(M_TRIM_THRESHOLD, 2 * DYNAMIC_MMAP_THRESHOLD_MAX))
