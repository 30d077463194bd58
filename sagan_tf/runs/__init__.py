"""A run directory: finding it, its checkpoints, the trainer's lock, the import of the release's TF1 checkpoints."""
