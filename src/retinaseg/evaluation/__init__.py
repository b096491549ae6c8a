"""Evaluation: metrics (reference §9), figures, and dataset-level scoring."""
