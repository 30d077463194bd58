"""The state writes of a training pass, with as few cross-replica reductions as the numbers allow.

A G or D pass writes two kinds of non-trainable state (docs/NUMERICS.md §1,
§2), which differ in what the replicas must agree on:

* the spectral-norm vectors `u`: `u_new` is a function of the weights and
  the previous `u` only, which are the same on every replica, so every
  replica computes the same `u_new`, bit for bit (deterministic kernels on
  identical devices; `tests/test_training.py` checks the copies after
  training on 2 replicas). Such a variable is *sync-on-read*
  (`LOCAL_U_SYNCHRONIZATION`): each replica writes its own copy, with no
  communication; a read outside the replicas (checkpoint, summaries,
  sampling) takes replica 0's copy.
* the batch-norm moving statistics: each replica's batch statistics differ,
  and the stored statistic is the mean over replicas of each replica's
  update (as the port always did, NUMERICS "Where a port may differ").
  These are mirrored variables with `aggregation="mean"`; assigned one by
  one, each write is a cross-replica reduction of its own. `write` averages
  all of a pass's writes in one grouped reduction (`batch_reduce_to`: one
  packed all-reduce on GPUs), then updates each replica's copy with the
  result: the same means.

`write` takes the `(variable, value)` pairs a pass deferred
(`sagan_tf.models.pass_state.PassState.writes`).
"""
import tensorflow as tf

__all__ = ["LOCAL_U_SYNCHRONIZATION", "LOCAL_U_AGGREGATION", "write"]

#: Keras `synchronization` / `aggregation` of the spectral-norm `u` variables.
LOCAL_U_SYNCHRONIZATION = "on_read"
LOCAL_U_AGGREGATION = "only_first_replica"

_MIRRORED = (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)


def _tf_variable(v):
    """The TensorFlow variable (possibly distributed) behind a Keras variable."""
    return getattr(v, "value", v) if not isinstance(v, tf.Variable) else v


def _grouped_mean_assign(strategy, variables, values):
    """Cross-replica context: one grouped mean of the per-replica `values`,
    assigned to every copy of each mirrored variable."""
    means = strategy.extended.batch_reduce_to(
        tf.distribute.ReduceOp.MEAN, list(zip(values, variables)))
    for var, mean in zip(variables, means):
        strategy.extended.update(var, lambda v, x: v.assign(x), args=(mean,), group=False)


def write(updates):
    """Assigns the recorded `(variable, value)` pairs of one pass.

    Sync-on-read variables (`u`) and variables outside a mirrored strategy's
    replica context are assigned directly. In a mirrored replica context the
    mirrored ones are averaged across replicas in one grouped reduction and
    then assigned (the values `var.assign(value)` would give one by one).
    """
    grouped = []
    context = tf.distribute.get_replica_context()
    mirrored_replica = (context is not None
                        and isinstance(tf.distribute.get_strategy(), _MIRRORED))
    for var, value in updates:
        inner = _tf_variable(var)
        if (mirrored_replica and inner.synchronization != tf.VariableSynchronization.ON_READ
                and inner.aggregation == tf.VariableAggregation.MEAN):
            grouped.append((inner, value))
        else:
            var.assign(value)
    if grouped:
        context.merge_call(_grouped_mean_assign,
                           args=([v for v, _ in grouped], [x for _, x in grouped]))
