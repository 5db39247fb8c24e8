"""Evaluation: exact-geometry scoring of generated images and the metrics built on it."""
