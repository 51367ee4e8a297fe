"""Sampling validation of BoostMD against its reference (``python -m boostmd.validate``)."""
