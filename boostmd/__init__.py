"""BoostMD: a reference MACE every N MD steps, a cheap feature-reusing surrogate between."""

__version__ = "0.1.0"
