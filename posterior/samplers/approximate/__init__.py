"""Approximate guidance baselines."""
