"""sagan_tf.training.compilation: Grappler settings carried by every call, GC paused on the first.

Grappler's effect is observed through its debug stripper, which removes
``Assert`` ops when (and only when) the options a call carries turn it on:
the same function then fails or passes depending on those options.
"""
import gc

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import rewriter_config_pb2
from tensorflow.python.eager import context

from sagan_tf.training import compilation
from sagan_tf.training.config import TrainConfig
from sagan_tf.training.trainer import Trainer

STRIP_ASSERTS = {"debug_stripper": "ON"}


def _failing_assert():
    @tf.function(autograph=False)
    def f(x):
        tf.debugging.Assert(tf.reduce_all(x > 100.0), ["x is small"])
        return x * 2.0
    return f


def test_rewrite_options_sets_fields_on_the_current_config():
    before = context.context().function_call_options.config_proto_serialized
    config = compilation.rewrite_options(dict(compilation.LIGHT_GRAPPLER, min_graph_nodes=-1,
                                              debug_stripper="ON",
                                              fail_on_optimizer_errors="true"))
    rewrite = config.graph_options.rewrite_options
    enum = rewriter_config_pb2.RewriterConfig
    assert rewrite.meta_optimizer_iterations == enum.ONE
    assert rewrite.memory_optimization == enum.NO_MEM_OPT
    assert rewrite.layout_optimizer == enum.OFF and rewrite.loop_optimization == enum.OFF
    assert rewrite.min_graph_nodes == -1 and rewrite.debug_stripper == enum.ON
    assert rewrite.fail_on_optimizer_errors is True
    # The rest of the thread's config (soft placement, threads) is kept.
    assert config.allow_soft_placement
    assert context.context().function_call_options.config_proto_serialized == before
    with pytest.raises(KeyError, match="no_such_pass"):
        compilation.rewrite_options({"no_such_pass": "OFF"})


def test_every_call_carries_the_options_and_other_calls_do_not():
    x = tf.constant([1.0])
    stripped = compilation.CompiledFunction(_failing_assert(),
                                            compilation.rewrite_options(STRIP_ASSERTS))
    for _ in range(2):  # the first call (trace, optimisation) and a later one
        np.testing.assert_array_equal(stripped(x).numpy(), [2.0])
    plain = _failing_assert()
    with pytest.raises(tf.errors.InvalidArgumentError, match="x is small"):
        plain(x)
    default = compilation.CompiledFunction(_failing_assert(), None)
    with pytest.raises(tf.errors.InvalidArgumentError, match="x is small"):
        default(x)
    before = context.context().function_call_options
    with compilation.function_call_options(compilation.rewrite_options(STRIP_ASSERTS)):
        np.testing.assert_array_equal(plain(tf.constant([3.0])).numpy(), [6.0])
    assert context.context().function_call_options is before


def test_first_call_runs_with_the_collector_paused():
    seen = []

    @tf.function(autograph=False)
    def f(x):
        seen.append(gc.isenabled())  # Python runs while tracing
        return x + 1.0
    compiled = compilation.CompiledFunction(f)
    assert gc.isenabled()
    compiled(tf.constant(1.0))
    compiled(tf.constant([1.0, 2.0]))  # a retrace after the first call: collector on
    assert seen == [False, True] and gc.isenabled()

    @tf.function(autograph=False)
    def broken(x):
        raise ValueError("trace failed")
    with pytest.raises(ValueError, match="trace failed"):
        compilation.CompiledFunction(broken)(tf.constant(1.0))
    assert gc.isenabled()
    gc.disable()
    try:
        with compilation.gc_paused():
            pass
        assert not gc.isenabled()  # a collector the caller turned off stays off
    finally:
        gc.enable()


class _Extended:
    def __init__(self, devices):
        self.worker_devices = devices


class _Strategy:
    def __init__(self, devices):
        self.extended = _Extended(devices)


@pytest.mark.parametrize("devices, expected", [
    (["/job:localhost/replica:0/task:0/device:CPU:0", "/cpu:1"], "light"),
    (["/job:worker/replica:0/task:0/device:GPU:0"], "full"),
    (["/cpu:0", "/gpu:0"], "full"),
    (["/job:worker/replica:0/task:0/device:TPU:0"], "full"),
])
def test_auto_is_light_on_cpus_only(devices, expected):
    strategy = _Strategy(devices)
    assert compilation.resolve_graph_optimization("auto", strategy) == expected
    assert compilation.resolve_graph_optimization("full", strategy) == "full"
    assert compilation.resolve_graph_optimization("light", strategy) == "light"
    # The default strategy has no worker_devices: this machine has no accelerator.
    assert compilation.resolve_graph_optimization("auto", tf.distribute.get_strategy()) == "light"
    with pytest.raises(ValueError, match="graph_optimization"):
        compilation.resolve_graph_optimization("fast", strategy)


def test_trainer_compiles_its_iteration_light_on_this_cpu(strategy2):
    tiny = dict(image_size=32, gf_dim=8, df_dim=8, z_dim=16, number_classes=5, batch_size=2,
                seed=7)
    trainer = Trainer(TrainConfig(**tiny), strategy2)
    assert trainer.graph_optimization == "light"
    rewrite = trainer.compiled_iterations().config.graph_options.rewrite_options
    assert rewrite.meta_optimizer_iterations == rewriter_config_pb2.RewriterConfig.ONE
    full = Trainer(TrainConfig(**tiny, graph_optimization="full"), strategy2)
    assert full.graph_optimization == "full" and full.compiled_iterations().config is None
