"""Numerical kernels shared by blocks (attention backends, ...)."""
