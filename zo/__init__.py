"""Zeroth-order training (DeepZero-style) with feature reuse, sparsity and parallel forwards."""

__version__ = "0.1.0"
