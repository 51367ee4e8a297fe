"""The shared cache-scheduling core: full steps, reuse steps, schedules and predictors.

An expensive computation runs in full only on some steps; on the others a predictor
fills in from what the full steps stored. A *schedule* decides which steps are full, a
*predictor* fills reuse steps, and a :class:`Cache` ties them to a function. Pure torch:
nothing here knows about atoms or images.

The generative uses build on it: :mod:`integrators.samplers` (DDIM, flow-matching Euler,
DPM-Solver++ taking a cache), :mod:`integrators.methods` (the published caching methods
as configs), :mod:`integrators.diffusers` (attaching them to diffusers transformers and,
through :mod:`integrators.unet`, UNets; needs the ``diffusion`` extra) and
:mod:`integrators.masked` (MaskGIT decoding with ReCAP's cheap steps).
:mod:`integrators.digits` holds the test beds they are measured on (digits models and
their training commands); the core modules never import it.
"""

from integrators.cache import Cache, CacheStats, Predictor, Schedule
from integrators.predictors import AdamsBashforth, Linear, PerDimension, Reuse, Taylor
from integrators.schedules import ErrorControlled, Periodic, Profiled, Threshold, Warmup

__all__ = [
    "AdamsBashforth",
    "Cache",
    "CacheStats",
    "ErrorControlled",
    "Linear",
    "PerDimension",
    "Periodic",
    "Predictor",
    "Profiled",
    "Reuse",
    "Schedule",
    "Taylor",
    "Threshold",
    "Warmup",
]
