"""Training: the configuration, the trainer (the compiled iteration), the loop, faults, compilation settings, distribution, losses and optimizers."""
