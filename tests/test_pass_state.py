"""sagan_tf.models.pass_state: deferred or in-place state writes, shared power iterations.

The iteration-level checks (the same numbers with and without the sharing,
deferred writes on every execution path) are in tests/test_iteration_inputs.py
and tests/test_layers.py.
"""
import tensorflow as tf

from sagan_tf.models.pass_state import IN_PLACE, PassState, PowerIterations


def test_pass_state_defers_writes_or_assigns_in_place():
    v = tf.Variable(1.0)
    deferred = PassState(defer_writes=True)
    deferred.assign(v, 5.0)
    assert float(v.numpy()) == 1.0 and len(deferred.writes) == 1 and deferred.writes[0][0] is v
    shared = deferred.with_power_iterations(PowerIterations())
    assert shared.writes is deferred.writes and shared.sigmas is deferred.sigmas
    IN_PLACE.assign(v, 3.0)
    assert float(v.numpy()) == 3.0 and IN_PLACE.writes is None


def test_power_iterations_kept_by_a_reading_call_used_once_by_a_writing_call():
    kept, computed = PowerIterations(), []

    def compute():
        computed.append(len(computed))
        return computed[-1]
    layer = object()
    assert kept.forward(layer, False, compute) == 0  # computed, kept
    assert kept.forward(layer, False, compute) == 0  # reused
    assert kept.forward(layer, True, compute) == 0   # reused, then dropped (u changes)
    assert kept.forward(layer, True, compute) == 1   # computed anew
    assert computed == [0, 1]
