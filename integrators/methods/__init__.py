"""The published diffusion caching methods as small configs on the shared core.

======================  ===========  ===================================================
method                  level        what it does
======================  ===========  ===================================================
:class:`FORA`           output       reuse the last output on a fixed interval
:class:`ABCache`        output       Adams-Bashforth extrapolation of order ``k``
:class:`TaylorSeer`     output       Taylor expansion of order ``k``
:class:`TeaCache`       output       threshold on an accumulated cheap input change
:class:`ERTACache`      output       offline-profiled steps with calibrated step gains
:class:`HyCa`           output       per-dimension predictor chosen offline
:class:`OutputCache`    output       any core schedule and predictor
:class:`BWCache`        blocks       per-block threshold on the block input change
:class:`Sortblock`      blocks       recompute the fastest-changing blocks, extrapolate
                                     the rest linearly
:class:`FirstBlockCache`  blocks     block 0's residual decides; cached tail residual
:class:`ProfilingDiT`   blocks       profiled always-compute blocks, the rest cached
:class:`BlockStack`     blocks       any output-level method on the residual of all
                                     blocks (the final layer runs every step)
:class:`CFGCache`       guidance     reuse ``uncond - cond`` to skip the unconditional
                                     pass
:class:`DeepCache`      lowres       skip a UNet's inner levels, reuse their last output
:class:`Clockwork`      lowres       skip a UNet's inner levels, a distilled adaptor
                                     (:class:`ClockworkAdaptor`) predicts their output
======================  ===========  ===================================================

Output- and guidance-level methods go to a sampler's ``cache=`` argument
(:mod:`integrators.samplers`) or to :func:`integrators.diffusers.apply_cache`; block-level
methods attach to a diffusers transformer, and low-resolution methods to a diffusers
UNet, with ``apply_cache``.
"""

from integrators.methods.adaptor import AdaptorRecipe, ClockworkAdaptor, distill
from integrators.methods.blocks import (
    BlockRecorder,
    BlockRuntime,
    BlockStack,
    BWCache,
    FirstBlockCache,
    ProfilingDiT,
    Sortblock,
)
from integrators.methods.guidance import CFGCache, DifferenceCache
from integrators.methods.lowres import (
    Clockwork,
    DeepCache,
    LowResFeatures,
    LowResMethod,
    LowResRecorder,
    LowResRuntime,
)
from integrators.methods.output import (
    FORA,
    ABCache,
    ERTACache,
    HyCa,
    InputChange,
    OutputCache,
    OutputMethod,
    TaylorSeer,
    TeaCache,
)

__all__ = [
    "FORA",
    "ABCache",
    "AdaptorRecipe",
    "BWCache",
    "BlockRecorder",
    "BlockRuntime",
    "BlockStack",
    "CFGCache",
    "Clockwork",
    "ClockworkAdaptor",
    "DeepCache",
    "DifferenceCache",
    "ERTACache",
    "FirstBlockCache",
    "HyCa",
    "InputChange",
    "LowResFeatures",
    "LowResMethod",
    "LowResRecorder",
    "LowResRuntime",
    "OutputCache",
    "OutputMethod",
    "ProfilingDiT",
    "Sortblock",
    "TaylorSeer",
    "TeaCache",
    "distill",
]
