"""ReleaseAdam (sagan_tf/training/optimizers.py) against a numpy oracle of TF1's Adam; the
mixed_float16 loss-scale wrapper on several replicas."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tolerances import scaled_atol
from sagan_tf.training.optimizers import ReleaseAdam, ReplicaSafeLossScaleOptimizer

LR, B1, B2, EPS = 0.01, 0.0, 0.999, 1e-8


def numpy_adam(w, grads, lr=LR, beta1=B1, beta2=B2, eps=EPS):
    """TF1 `AdamOptimizer`: bias correction folded into the step size (NUMERICS §6).

    In float64, except that the hyper-parameters are the float32 constants
    TF1 fed its kernel: `1 - float32(0.999)` is 0.00099998713, 1.3e-5 off
    0.001, which shows in the second moment.
    """
    lr, beta1, beta2, eps = (float(np.float32(h)) for h in (lr, beta1, beta2, eps))
    w, m, v = np.array(w, np.float64), np.zeros_like(w, np.float64), np.zeros_like(w, np.float64)
    for t, g in enumerate(grads, start=1):
        lr_t = lr * np.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
        m = m + (g - m) * (1 - beta1)
        v = v + (g * g - v) * (1 - beta2)
        w = w - lr_t * m / (np.sqrt(v) + eps)
    return w, m, v


def _slots(opt):
    m = next(v for v in opt.variables if "momentum" in v.path)
    v = next(v for v in opt.variables if "velocity" in v.path)
    return m, v


@pytest.mark.parametrize("beta1", [0.0, 0.5])
def test_release_adam_matches_tf1_formula(rng, beta1):
    w0 = rng.standard_normal((3, 4)).astype(np.float32)
    grads = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(3)]
    var = tf.Variable(w0)
    opt = ReleaseAdam(LR, beta_1=beta1, beta_2=B2, epsilon=EPS)
    opt.build([var])

    @tf.function(autograph=False)
    def apply(g):
        opt.apply_gradients([(g, var)])

    for g in grads:
        apply(tf.constant(g))
    want_w, want_m, want_v = numpy_adam(w0, grads, beta1=beta1)
    np.testing.assert_allclose(var.numpy(), want_w, rtol=1e-6, atol=1e-7)
    m, v = _slots(opt)
    np.testing.assert_allclose(m.numpy(), want_m, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(v.numpy(), want_v, rtol=2e-6, atol=1e-10)
    assert int(opt.iterations.numpy()) == 3
    # The fused kernel is what ran (not Keras' elementwise formula).
    graph_def = apply.get_concrete_function(tf.constant(grads[0])).graph.as_graph_def()
    ops = {n.op for n in graph_def.node}
    ops |= {n.op for f in graph_def.library.function for n in f.node_def}
    assert "ResourceApplyAdam" in ops


def test_release_adam_on_two_replicas_sums_gradients(strategy2, rng):
    """Mirrored variables and slots: each replica's copy gets the same update,
    from the sum of the replicas' gradients (what the trainer's 1/replicas
    loss scaling turns into the average). Three variables of other shapes:
    the step's scalars (beta powers, casts) are built once per device and
    update, not once per variable, and are right for every variable."""
    shapes = [(5,), (2, 3), (4, 1, 2)]
    w0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    g_replica = [rng.standard_normal((2,) + s).astype(np.float32) for s in shapes]
    with strategy2.scope():
        variables = [tf.Variable(w) for w in w0]
        opt = ReleaseAdam(LR, beta_1=B1, beta_2=B2, epsilon=EPS)
        opt.build(variables)
    grads = [strategy2.experimental_distribute_values_from_function(
        lambda ctx, g=g: tf.constant(g[ctx.replica_id_in_sync_group])) for g in g_replica]

    @tf.function(autograph=False)
    def step(*g):
        strategy2.run(lambda *g: opt.apply_gradients(zip(g, variables)), args=g)

    step(*grads)
    step(*grads)
    graph = step.get_concrete_function(*grads).graph
    nodes = list(graph.as_graph_def().node)
    for f in graph.as_graph_def().library.function:
        nodes += list(f.node_def)
    assert sum(n.op == "ResourceApplyAdam" for n in nodes) == 3 * 2  # per variable and device
    assert sum(n.op == "Pow" for n in nodes) == 2 * 2  # beta1^t, beta2^t per device
    for k, w in enumerate(w0):
        want_w, _, want_v = numpy_adam(w, [g_replica[k].sum(0)] * 2)
        for component in strategy2.experimental_local_results(variables[k]):
            np.testing.assert_allclose(component.numpy(), want_w, rtol=1e-5, atol=1e-6)
        velocity = opt._velocities[opt._get_variable_index(variables[k])]
        for component in strategy2.experimental_local_results(velocity):
            np.testing.assert_allclose(component.numpy(), want_v, rtol=2e-6, atol=1e-10)


def test_release_adam_falls_back_for_indexed_slices(rng):
    """IndexedSlices keep Keras' sparse formula (the trainer densifies them)."""
    import keras
    rows = tf.constant(rng.standard_normal((2, 3)).astype(np.float32))
    results = []
    for cls in (ReleaseAdam, keras.optimizers.Adam):
        table = tf.Variable(np.ones((4, 3), np.float32))
        opt = cls(LR, beta_1=B1, beta_2=B2, epsilon=EPS)
        opt.build([table])
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.gather(table, [1, 2]) * rows)
        grad = tape.gradient(loss, table)
        assert isinstance(grad, tf.IndexedSlices)
        opt.apply_gradients([(grad, table)])
        results.append(table.numpy())
    np.testing.assert_array_equal(results[0], results[1])
    assert not np.array_equal(results[0], np.ones((4, 3), np.float32))


def _overflow_in_one_replica(strategy2, wrapper, bad_replica):
    """One loss-scaled step on two replicas, the gradient of replica
    ``bad_replica`` holding an inf (an fp16 overflow), the other finite.
    Returns the initial weights and loss scale, then the weights, Adam slots,
    loss scale and iterations after it, one entry per device that holds a
    copy."""
    w0 = np.array([1.0, -2.0, 3.0], np.float32)
    with strategy2.scope():
        var = tf.Variable(w0)
        opt = wrapper(ReleaseAdam(LR, beta_1=B1, beta_2=B2, epsilon=EPS))
        opt.build([var])
    scale0 = float(opt.dynamic_scale.numpy())

    @tf.function(autograph=False)
    def step():
        def replica_fn():
            r = tf.distribute.get_replica_context().replica_id_in_sync_group
            scaled = opt.scale_loss(tf.constant([0.5, 0.25, -1.0]))  # a scaled gradient
            bad = tf.constant([np.inf, 0.0, 0.0], tf.float32)
            opt.apply_gradients([(tf.where(tf.equal(r, bad_replica), scaled + bad, scaled),
                                  var)])
        strategy2.run(replica_fn)

    step()
    local = strategy2.experimental_local_results
    m, v = _slots(opt.inner_optimizer)
    return (w0, scale0, [c.numpy() for c in local(var)],
            [np.concatenate([a.numpy(), b.numpy()]) for a, b in zip(local(m), local(v))],
            [float(c.numpy()) for c in local(opt.dynamic_scale)],
            [int(c.numpy()) for c in local(opt.iterations)])


@pytest.mark.parametrize("bad_replica", [0, 1])
def test_loss_scale_skips_a_step_that_overflows_in_one_replica(strategy2, bad_replica):
    """mixed_float16 on 2 replicas, an overflow in one replica only: the whole
    step is skipped on every replica -- weights, Adam slots and iterations
    unchanged -- and the loss scale falls (halves) everywhere."""
    w0, scale0, weights, slots, scales, iterations = _overflow_in_one_replica(
        strategy2, ReplicaSafeLossScaleOptimizer, bad_replica)
    for w, slot in zip(weights, slots):
        np.testing.assert_array_equal(w, w0)
        np.testing.assert_array_equal(slot, np.zeros(6, np.float32))
    assert scales and all(s == scale0 / 2 for s in scales)
    assert iterations and all(i == 0 for i in iterations)


def test_loss_scale_applies_a_finite_step_as_adam_on_the_summed_gradient(strategy2):
    """No overflow (bad_replica 2 does not exist): the step is applied, the
    unscaled gradients summed over replicas, and the loss scale is kept."""
    w0, scale0, weights, _, scales, iterations = _overflow_in_one_replica(
        strategy2, ReplicaSafeLossScaleOptimizer, bad_replica=2)
    want, _, _ = numpy_adam(w0, [2 * np.array([0.5, 0.25, -1.0])])
    for w in weights:
        np.testing.assert_allclose(w, want, rtol=1e-6, atol=scaled_atol(want, 1e-6))
    assert scales and all(s == scale0 for s in scales)
    assert iterations and all(i == 1 for i in iterations)


def test_keras_loss_scale_lets_an_overflow_of_replica_1_through(strategy2):
    """Why the wrapper exists: Keras 3's own LossScaleOptimizer takes replica
    0's local finiteness for every replica, so an overflow in replica 1 alone
    reaches Adam (NaN weights) and the loss scale stays. If this starts to
    fail, Keras has fixed it and the wrapper can go."""
    _, scale0, weights, _, scales, _ = _overflow_in_one_replica(
        strategy2, keras.optimizers.LossScaleOptimizer, bad_replica=1)
    assert not np.all(np.isfinite(weights[0])) and all(s == scale0 for s in scales)
