"""Small, honest test beds for the generative caches: digits, tiny models, a classifier.

:func:`digits` gives scikit-learn's handwritten digits as 16x16 images; the shipped
class-conditional DiT (:func:`load_dit`, trained by ``python -m integrators.digits.train``)
generates them for the diffusion caches; the shipped masked token model
(:mod:`integrators.digits.tokens`, trained by ``python -m integrators.digits.train_tokens``)
generates them for ReCAP; the shipped class-conditional UNet
(:mod:`integrators.digits.unet`, trained by ``python -m integrators.digits.train_unet``)
and its Clockwork adaptor (``python -m integrators.digits.distill_clockwork``) are the
test bed of the low-resolution caches; :class:`DigitsClassifier` (:func:`load_classifier`)
scores samples by accuracy and by the Fréchet distance of its features
(:mod:`integrators.digits.metrics`). Needs the ``diffusion`` extra (diffusers,
scikit-learn).

The test beds live here, beside the core and outside it: the core modules never import
this package, and the top level is fixed (``boostmd``, ``zo``, ``integrators``), so this
is the one place where shipped models, their training commands and the benchmarks and
tests that load them can all reach.
"""

from integrators.digits.data import IMAGE_SIZE, NUM_CLASSES, digits
from integrators.digits.metrics import frechet_distance, psnr, score_samples, ssim
from integrators.digits.models import (
    NULL_CLASS,
    DigitsClassifier,
    DiTRecipe,
    denoiser,
    guided_ddim,
    load_classifier,
    load_dit,
    noise_schedule,
)

__all__ = [
    "IMAGE_SIZE",
    "NULL_CLASS",
    "NUM_CLASSES",
    "DiTRecipe",
    "DigitsClassifier",
    "denoiser",
    "digits",
    "frechet_distance",
    "guided_ddim",
    "load_classifier",
    "load_dit",
    "noise_schedule",
    "psnr",
    "score_samples",
    "ssim",
]
