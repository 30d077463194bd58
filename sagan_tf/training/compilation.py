"""How the training iteration is compiled: Grappler's settings and the first call.

The iteration is one ``tf.function`` of ~11,700 ops at the test layout
(~7,800 of them spectral-norm ops and their gradients). Its first call
traces it in Python (op creation: ~2.5 s at the small configuration on the
CI machine) and lets Grappler optimise it (TensorFlow's default: 21 passes,
two meta-optimizer rounds). docs/PERFORMANCE.md §6.1 has the figures. Two
things make that first call cheaper without changing the math:

* ``--graph_optimization light`` (the CPU default through ``auto``): one
  meta-optimizer round, and the passes that change nothing in this graph on
  a CPU off (memory optimizer, layout optimizer, loop optimizer,
  implementation selector). The passes that shape the executed graph --
  pruning, common-subgraph elimination, constant folding, arithmetic,
  remapper (the oneDNN convolution fusions), dependency optimizer -- all
  run; the second round of the default removes 44 of 12,837 nodes, and
  rewrites enough to change the iteration's rounding (not its math: both
  are inside the release's noise floor, docs/NUMERICS.md §1.2).
  On a GPU ``auto`` keeps TensorFlow's default: the layout optimizer is
  what moves the convolutions to cuDNN's NCHW.
* The Python garbage collector is paused while a function is traced the
  first time: tracing allocates hundreds of thousands of short-lived
  objects, and the collector's repeated passes over them cost ~10% of the
  trace.

Grappler's settings reach a ``tf.function`` call through the eager context's
per-thread *function call options* (the ``ConfigProto`` each call carries
to the function's instantiation, where Grappler runs); they also reach the
fields ``tf.config.optimizer`` does not expose (the meta-optimizer's
iteration count, the memory optimizer). A call under other options
instantiates and optimises the function again, so every call of one
function must carry the same options: :class:`CompiledFunction` does that.
"""
import contextlib
import gc

import tensorflow as tf
from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2
from tensorflow.python.eager import context

# Values of --graph_optimization: "auto" is "light" when every device of the
# strategy is a CPU, else "full" (TensorFlow's default).
from sagan_tf.options import GRAPH_OPTIMIZATIONS

__all__ = ["GRAPH_OPTIMIZATIONS", "LIGHT_GRAPPLER", "CompiledFunction", "gc_paused",
           "function_call_options", "resolve_graph_optimization", "rewrite_options"]

#: ``RewriterConfig`` fields of ``light``.
LIGHT_GRAPPLER = {"meta_optimizer_iterations": "ONE", "memory_optimization": "NO_MEM_OPT",
                  "layout_optimizer": "OFF", "implementation_selector": "OFF",
                  "loop_optimization": "OFF"}


def resolve_graph_optimization(graph_optimization, strategy):
    """``full`` or ``light``: ``graph_optimization``, with ``auto`` resolved for
    the devices ``strategy`` runs on (``light`` when they are all CPUs)."""
    if graph_optimization not in GRAPH_OPTIMIZATIONS:
        raise ValueError(f"graph_optimization must be one of {GRAPH_OPTIMIZATIONS}, "
                         f"got {graph_optimization!r}")
    if graph_optimization != "auto":
        return graph_optimization
    try:
        devices = [tf.DeviceSpec.from_string(d).device_type
                   for d in strategy.extended.worker_devices]
    except RuntimeError:  # the default strategy: TensorFlow places on an accelerator if any
        devices = [d.device_type for d in tf.config.list_logical_devices()]
        devices = [d for d in devices if d != "CPU"] or ["CPU"]
    return "light" if all(d == "CPU" for d in devices) else "full"


def rewrite_options(options, base=None):
    """A ``ConfigProto``: ``base`` (default: this thread's function call
    config) with the Grappler ``RewriterConfig`` fields ``options`` set.

    ``options``: ``{field: value}``, enum values by name or number, booleans
    as bools or strings (e.g. :data:`LIGHT_GRAPPLER`). An unknown field is a
    ``KeyError`` naming it.
    """
    config = config_pb2.ConfigProto()
    config.ParseFromString(base if base is not None else
                           context.context().function_call_options.config_proto_serialized)
    rewrite = config.graph_options.rewrite_options
    for key, value in options.items():
        field = rewriter_config_pb2.RewriterConfig.DESCRIPTOR.fields_by_name.get(key)
        if field is None:
            raise KeyError(f"no Grappler option {key!r} in RewriterConfig")
        if field.enum_type is not None and isinstance(value, str):
            value = field.enum_type.values_by_name[value].number
        elif field.type == field.TYPE_BOOL:
            value = str(value).lower() in ("1", "true")
        setattr(rewrite, key, value)
    return config


@contextlib.contextmanager
def function_call_options(config):
    """``tf.function`` calls of this thread inside carry ``config`` (a
    ``ConfigProto``; None: unchanged); the previous options come back after."""
    if config is None:
        yield
        return
    ctx = context.context()
    previous = ctx.function_call_options
    ctx.function_call_options = context.FunctionCallOptions(
        executor_type=previous.executor_type, config_proto=config)
    try:
        yield
    finally:
        ctx.function_call_options = previous


@contextlib.contextmanager
def gc_paused():
    """The garbage collector off inside (if it was on), on again after."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class CompiledFunction:
    """A ``tf.function`` whose every call carries the same Grappler options.

    Args:
      function: a ``tf.function``.
      config: the ``ConfigProto`` its calls carry (:func:`rewrite_options`);
        None: TensorFlow's (this thread's current options).

    The first call (trace, optimisation, first run) runs with the garbage
    collector paused.
    """

    def __init__(self, function, config=None):
        self.function = function
        self.config = config
        self._called = False

    def __call__(self, *args, **kwargs):
        first = not self._called
        with function_call_options(self.config), (
                gc_paused() if first else contextlib.nullcontext()):
            out = self.function(*args, **kwargs)
        self._called = True
        return out

    def get_concrete_function(self, *args, **kwargs):
        """The traced function for these arguments (traced under the same options)."""
        with function_call_options(self.config):
            return self.function.get_concrete_function(*args, **kwargs)

    def experimental_get_tracing_count(self):
        return self.function.experimental_get_tracing_count()
