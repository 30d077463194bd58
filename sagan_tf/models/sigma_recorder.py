"""Each spectral-norm call's ``sigma``, handed to whoever listens (the trainer's
``collapse/`` summaries, :mod:`sagan_tf.training.collapse_summaries`).

A spectral-norm layer calls :func:`record_sigma` with the ``sigma`` it has just
computed; inside :func:`record_sigmas` the innermost listener keeps it. With no
listener open nothing happens, so the networks compute exactly the same ops
either way (no extra pass over the weights).
"""
import contextlib
import threading

__all__ = ["record_sigmas", "record_sigma"]

_RECORDERS = threading.local()


@contextlib.contextmanager
def record_sigmas(enabled=True):
    """Collects the ``sigma`` of every spectral-norm call made inside.

    Yields a dict ``{layer path: scalar tensor}`` (a layer called several
    times keeps its last sigma); with ``enabled=False`` nothing is recorded
    and the dict stays empty.
    """
    stack = getattr(_RECORDERS, "stack", None)
    if stack is None:
        stack = _RECORDERS.stack = []
    sigmas = {}
    if not enabled:
        yield sigmas
        return
    stack.append(sigmas)
    try:
        yield sigmas
    finally:
        stack.pop()


def record_sigma(name, sigma):
    """Hands ``sigma`` (a scalar tensor) of layer ``name`` to the innermost open
    :func:`record_sigmas`; does nothing when none is open."""
    stack = getattr(_RECORDERS, "stack", None)
    if stack:
        stack[-1][name] = sigma
