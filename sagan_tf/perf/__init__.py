"""Speed measurement shared by the tools in ``tools/perf/``.

The machine a figure was measured on (``machine``), its peak GFLOP/s
(``peaks``), the FLOPs of a traced step (``flops``), timing statistics
(``timing``), memory peaks (``memory``), the op-level profile (``op_profile``),
the training-iteration benchmark (``benchmark``) and its one-line summary
(``summary``). Nothing in the training or evaluation code imports this.
"""
