"""Asymptotically exact samplers built on the particle engine."""
