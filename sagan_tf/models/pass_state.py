"""What one pass of a network does with its state: the object the trainer passes to every layer.

Besides its output, a pass of G or D in training mode writes state
(docs/NUMERICS.md §1, §2): each spectral-norm layer's ``u`` (when the call has
``update_sn=True``) and each batch norm's moving statistics (``training=True``).
The networks and every layer take an optional ``state`` argument, a
:class:`PassState`, that says what happens to that state in this pass:

* ``writes``: None -- each new value is assigned in place at once (a call
  outside training, ``state=None``); a list -- the layer appends ``(variable,
  new value)`` and the caller assigns them after the pass
  (:func:`sagan_tf.models.state_writes.write`: the batch-norm statistics in
  one grouped cross-replica reduction; with XLA, outside the compiled pass);
* ``sigmas``: None, or a dict each spectral-norm layer puts the ``sigma`` it
  computed into, under its path (the ``collapse/`` summaries; no extra op);
* ``power_iterations``: None, or a :class:`PowerIterations` shared by passes
  over the same spectral-norm weights and ``u`` (D in the G step and in the
  first D step of an iteration): the forward tensors of a call that does not
  write ``u`` are kept and the next calls reuse them.

Deferring writes is equivalent to assigning in place as long as no recorded
variable is read again in the same pass (true for one G or D pass: each ``u``
and moving statistic is read once, before its update).
"""

__all__ = ["PassState", "PowerIterations", "IN_PLACE"]


class PowerIterations:
    """Spectral-norm forward tensors kept between passes over unchanged weights.

    For the training iteration: D's pass in the G step (no ``u`` write) and
    D's pass in the first D step (writes ``u``) normalise the same weights
    with the same ``u``, so the second takes the first's forward tensors (the
    same values); only the backward (release or exact) is attached anew. The
    caller stops passing it before the weights change (D's optimizer update).
    """

    def __init__(self):
        self._kept = {}  # id(layer) -> its power iteration's forward tensors

    def forward(self, layer, update_sn, compute):
        """``layer``'s forward tensors: kept ones if there are any, else
        ``compute()``. A call that does not write ``u`` keeps them for the next
        calls; one that writes ``u`` uses them once (its ``u`` changes)."""
        key = id(layer)
        forward = self._kept.pop(key, None) if update_sn else self._kept.get(key)
        if forward is None:
            forward = compute()
            if not update_sn:
                self._kept[key] = forward
        return forward


class PassState:
    """The state handling of one network pass (module docstring).

    Args:
      defer_writes: True: state writes are collected in ``writes`` for the
        caller; False: assigned in place.
      sigmas: None, or the dict the spectral-norm layers' ``sigma`` go into
        (several passes may share one: a layer called again keeps its last).
      power_iterations: None, or a :class:`PowerIterations` to share.
    """

    def __init__(self, defer_writes=False, sigmas=None, power_iterations=None):
        self.writes = [] if defer_writes else None
        self.sigmas = sigmas
        self.power_iterations = power_iterations

    def with_power_iterations(self, power_iterations):
        """A state with the same ``writes`` and ``sigmas`` (one pass's) and
        ``power_iterations`` (given to one network's calls only)."""
        other = PassState(sigmas=self.sigmas, power_iterations=power_iterations)
        other.writes = self.writes
        return other

    def assign(self, variable, value):
        """``variable.assign(value)``, or appended to ``writes`` when deferred."""
        if self.writes is None:
            return variable.assign(value)
        self.writes.append((variable, value))
        return None

    def record_sigma(self, layer_path, sigma):
        """Keeps a spectral-norm layer's ``sigma`` (a scalar tensor) when ``sigmas`` is kept."""
        if self.sigmas is not None:
            self.sigmas[layer_path] = sigma


#: A call outside training: state assigned in place, nothing recorded or reused
#: (what a layer does when its ``state`` argument is None).
IN_PLACE = PassState()
