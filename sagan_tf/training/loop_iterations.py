"""Several training iterations per compiled call (TPUEstimator's ``iterations_per_loop``).

Each call of a compiled function costs a host round trip: arguments in,
results out, the runtime's bookkeeping. :func:`train_iterations` runs ``k``
iterations of the loop's :meth:`sagan_tf.training.trainer.Trainer.train_iteration`
in one call, with the same numbers, bit for bit, as ``k`` calls
(`tests/test_iteration_inputs.py`). The iterations are unrolled, so the
traced graph is ``k`` times the iteration's (tracing and graph optimisation
take ``k`` times as long, once).
"""
__all__ = ["train_iterations"]


def train_iterations(trainer, real_batches_per_iteration, check):
    """``k = len(real_batches_per_iteration)`` iterations of ``trainer`` in one call.

    Args:
      trainer: a :class:`sagan_tf.training.trainer.Trainer` (not on TPUs).
      real_batches_per_iteration: ``k`` lists of ``d_step`` per-replica
        ``(images, labels)`` batches, as ``train_iteration`` takes them.
      check: the loop's check, ``check(metrics) -> boolean tensor``.

    Returns:
      ``([(metrics, check result)] * k, real_images, generated_images)``,
      the images of the last iteration (replica 0).
    """
    # pylint: disable=protected-access
    key = (check, len(real_batches_per_iteration))
    if key not in trainer._compiled_iterations:
        def iterations(batches):
            results, images = [], None
            for real in batches:
                metrics, real_images, fake, finite = trainer._step_drawing_noise(real, check)
                results.append((metrics, finite))
                images = (real_images, fake)
            return results, images
        trainer._compiled_iterations[key] = trainer._compiled(iterations)
    results, (real_images, fake) = trainer._compiled_iterations[key](
        [list(real) for real in real_batches_per_iteration])
    return results, real_images, fake
