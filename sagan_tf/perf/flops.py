"""FLOPs of a traced step: the whole graph by the TF profiler, and the convolutions that ran.

A multiply-add counts 2, the TF profiler's convention (``peaks`` counts its
micro-benchmark the same way, so achieved / peak compares like with like).
"""
import collections

#: Graph op type of a convolution -> the oneDNN kernel types it runs as
#: after Grappler's remapper on a CPU (the op types a profile shows).
CONV_KERNELS = {
    "Conv2D": ("_MklNativeFusedConv2D", "_MklNativeConv2D"),
    "Conv2DBackpropInput": ("_MklNativeConv2DBackpropInput",),
    "Conv2DBackpropFilter": ("_MklNativeConv2DBackpropFilterWithBias",
                             "_MklNativeConv2DBackpropFilter"),
}


def count_graph_flops(concrete_fn):
    """Floating-point operations of one call of a concrete function (TF profiler).

    Counts the ops of the function's graph (convolutions, matmuls, elementwise
    ops with registered FLOP statistics), i.e. forward and backward passes of
    the traced step. Returns None if the profiler is unavailable.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    try:
        opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        opts["output"] = "none"
        prof = tf.compat.v1.profiler.profile(graph=concrete_fn.graph, options=opts)
        return int(prof.total_float_ops)
    except Exception:  # noqa: BLE001 - the figure is optional
        return None


def conv_flops(graph, executed_names):
    """FLOPs per call of the graph's convolutions that ran, by graph op type.

    ``2 * output * kh * kw * in`` for a forward convolution, and the same
    product for its two gradients (``2 * |grad out| * kh * kw * in``).
    Forward convolutions always run; a gradient counts only if its op name
    is in ``executed_names`` (Grappler prunes the gradients nobody uses, e.g.
    D's weight gradients in the G step). Returns ``{op type: FLOPs}``.
    """
    import numpy as np  # pylint: disable=import-outside-toplevel
    flops = collections.Counter()
    for op in graph.get_operations():
        if op.type not in CONV_KERNELS:
            continue
        if op.type != "Conv2D" and op.name not in executed_names:
            continue
        if op.type == "Conv2D":
            out, kernel = op.outputs[0].shape, op.inputs[1].shape
        elif op.type == "Conv2DBackpropInput":
            out, kernel = op.inputs[2].shape, op.inputs[1].shape
        else:
            out, kernel = op.inputs[2].shape, op.outputs[0].shape
        if not (out.is_fully_defined() and kernel.is_fully_defined()):
            continue
        kh, kw, cin, _ = kernel.as_list()
        flops[op.type] += 2 * int(np.prod(out.as_list())) * kh * kw * cin
    return dict(flops)
