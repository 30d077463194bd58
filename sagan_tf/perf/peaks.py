"""The machine's peak GFLOP/s, measured, and a time's achieved fraction of it.

A short matmul and 3x3-convolution micro-benchmark runs in the calling
process, on the same device and thread pools as the figure it is compared
with, in float32 and in a mixed-precision policy's compute dtype. The best
of a few calls counts (the usual convention for a peak).
"""
import time

#: Micro-benchmark problems (``measure_peak_gflops``). CPU: a 2048^2 matmul and
#: a 3x3 convolution of [8, 64, 64, 128] -> 128 channels (the sizes of the
#: mid-network convolutions at batch 8). GPU: larger, and ``chain`` of them
#: per call, so that launch overhead does not count.
PEAK_PROBLEMS = {
    "cpu": dict(matmul_n=2048, conv_shape=(8, 64, 64, 128), chain=1, repeats=3),
    "gpu": dict(matmul_n=8192, conv_shape=(64, 64, 64, 256), chain=10, repeats=5),
}
#: ``TrainConfig.mixed_precision`` -> the dtype its convolutions compute in.
COMPUTE_DTYPES = {"none": "float32", "mixed_bfloat16": "bfloat16",
                  "mixed_float16": "float16"}


def peak_problem_flops(matmul_n, conv_shape):
    """FLOPs of one micro-benchmark op: ``2 n^3`` for the n x n matmul and
    ``2 B H W C^2 9`` for the SAME 3x3 convolution of [B, H, W, C] to C channels
    (a multiply-add counts 2, the convention of the graph count)."""
    b, h, w, c = conv_shape
    return {"matmul": 2 * matmul_n ** 3, "conv": 2 * b * h * w * c * c * 9}


def _chained_kernels(dtype, device, matmul_n, conv_shape, chain):
    """``{"matmul": (fn, args), "conv": (fn, args)}``: each ``fn`` runs ``chain``
    dependent ops (each one's output is the next one's input, so none can be
    skipped; weights scaled so that values stay O(1) in any dtype) and returns
    one element, whose ``numpy()`` waits for the device."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    rs = np.random.default_rng(0)
    c = conv_shape[-1]

    def normal(shape, scale=1.0):
        return tf.cast(rs.standard_normal(shape, dtype=np.float32) * np.float32(scale), dtype)

    with tf.device(device):
        a = normal((matmul_n, matmul_n))
        m = normal((matmul_n, matmul_n), 1 / np.sqrt(matmul_n))
        x = normal(conv_shape)
        k = normal((3, 3, c, c), 1 / np.sqrt(9 * c))

    def matmuls(y, m):
        for _ in range(chain):
            y = tf.linalg.matmul(y, m)
        return y[0, 0]

    def convs(y, k):
        for _ in range(chain):
            y = tf.nn.conv2d(y, k, strides=1, padding="SAME")
        return y[0, 0, 0, 0]

    return {"matmul": (tf.function(matmuls, autograph=False), (a, m)),
            "conv": (tf.function(convs, autograph=False), (x, k))}


def _best_seconds(fn, args, device, repeats):
    """One untimed call (tracing, autotuning), then the best of ``repeats`` timed calls."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    with tf.device(device):
        fn(*args).numpy()
        best = float("inf")
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            fn(*args).numpy()
            best = min(best, time.perf_counter() - t0)
    return best


def measure_peak_gflops(dtype="float32", device="/cpu:0", matmul_n=2048,
                        conv_shape=(8, 64, 64, 128), chain=1, repeats=3, return_details=False):
    """Best achieved GFLOP/s of a matmul and a 3x3 convolution in ``dtype``.

    One ``tf.function`` per kernel runs ``chain`` dependent ops; it is called
    once untimed, then ``repeats`` times, and the best time counts. Returns
    ``{"matmul": GFLOP/s, "conv": GFLOP/s}``; with ``return_details`` also
    ``{kernel: {"flops_per_call", "best_seconds", "function", "args"}}``
    (tests).
    """
    per_op = peak_problem_flops(matmul_n, conv_shape)
    out, details = {}, {}
    kernels = _chained_kernels(dtype, device, matmul_n, conv_shape, chain)
    for name, (fn, args) in kernels.items():
        best = _best_seconds(fn, args, device, repeats)
        flops_per_call = chain * per_op[name]
        out[name] = flops_per_call / best / 1e9
        details[name] = {"flops_per_call": flops_per_call, "best_seconds": best,
                         "function": fn, "args": args}
    return (out, details) if return_details else out


def measure_peaks(devices, mixed_precision="none", problem=None):
    """``(peak_gflops, peak_gflops_by_dtype)`` of a run on ``devices``.

    Measures float32 and, under mixed precision, its compute dtype on the
    first replica's device (``problem`` overrides the sizes of
    ``PEAK_PROBLEMS``). ``peak_gflops``: ``{"dtype", "matmul", "conv",
    "devices_counted"}`` in the compute dtype. On GPUs each replica is its
    own device, so the peak of the run is the per-device figure times the
    number of GPU replicas; logical CPU replicas share the same cores, so it
    is not multiplied. ``peak_gflops_by_dtype``: ``{"per_device": {dtype:
    {"matmul", "conv"}}, "problem": the sizes and device}``.
    """
    kind = "gpu" if "gpu" in devices[0].lower() else "cpu"
    problem = dict(PEAK_PROBLEMS[kind], **(problem or {}))
    compute = COMPUTE_DTYPES[mixed_precision]
    by_dtype = {}
    for dtype in dict.fromkeys(("float32", compute)):
        by_dtype[dtype] = measure_peak_gflops(dtype, devices[0], **problem)
    scale = len(devices) if kind == "gpu" else 1
    peak = {"dtype": compute, "devices_counted": scale,
            **{k: v * scale for k, v in by_dtype[compute].items()}}
    return peak, {"per_device": by_dtype, "problem": dict(problem, device=devices[0])}


def add_fraction_of_peak(figures, flops, peak):
    """Adds ``achieved_gflops`` (FLOPs / median seconds), ``fraction_of_peak``
    (achieved / the better of the matmul and conv peaks: the best this machine
    did in the dtype) and ``fraction_of_peak_by_kernel`` to a timing dict;
    None where the FLOPs, the time or the peak is unknown. Returns the dict."""
    med = figures.get("median_seconds_per_iteration")
    achieved = flops / med / 1e9 if flops and med else None
    figures["achieved_gflops"] = achieved
    if achieved is None or not peak:
        figures["fraction_of_peak"] = figures["fraction_of_peak_by_kernel"] = None
    else:
        figures["fraction_of_peak"] = achieved / max(peak["matmul"], peak["conv"])
        figures["fraction_of_peak_by_kernel"] = {k: achieved / peak[k]
                                                 for k in ("matmul", "conv")}
    return figures
