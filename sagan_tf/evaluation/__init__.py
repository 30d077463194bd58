"""Evaluation: classifier metrics (IS, FID, KID, intra-FID), real statistics and their cache, the evaluator, which checkpoints are evaluated, learning curves."""
