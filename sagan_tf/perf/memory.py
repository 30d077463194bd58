"""Memory peaks of a benchmark run: the host process's and the GPUs'."""
import resource
import sys


def peak_host_memory_bytes():
    """Peak resident set size of this process (``ru_maxrss``; KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) if sys.platform == "darwin" else int(rss) * 1024


def peak_device_memory_bytes(devices):
    """Sum over GPU replicas of ``get_memory_info(...)["peak"]``; None on CPU."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    gpu = [d for d in devices if "gpu" in d.lower()]
    if not gpu:
        return None
    return int(sum(tf.config.experimental.get_memory_info("GPU:" + d.split(":")[-1])["peak"]
                   for d in gpu))
