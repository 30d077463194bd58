"""The port checked against the 2018 release's training iteration.

``tf1_release_graph``: the release's iteration rebuilt on TF1 ref variables,
independent of the port's model code (the reference); ``tf1_release_session``
runs it in a session of its own (and as a process of its own).
``comparison``: the port's iteration run from the same weights and inputs,
and its distance from the reference measured against the reference's own
noise floor.
"""
