"""Sample-quality metrics: PSNR and SSIM against a reference, Fréchet distance of features."""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

__all__ = ["frechet_distance", "psnr", "score_samples", "ssim"]


def psnr(images: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over the whole batch (``inf`` when identical).

    Examples
    --------
    >>> import torch
    >>> round(psnr(torch.full((1, 4), 0.1), torch.zeros(1, 4)), 6)
    20.0
    """
    mse = float((images.double() - reference.double()).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(
    images: torch.Tensor,
    reference: torch.Tensor,
    data_range: float = 1.0,
    window: int = 7,
    sigma: float = 1.5,
) -> float:
    """Mean structural similarity of ``(n, c, h, w)`` images (Gaussian window, no padding).

    Examples
    --------
    >>> import torch
    >>> x = torch.rand(2, 1, 16, 16)
    >>> ssim(x, x)
    1.0
    """
    x, y = images.double(), reference.double()
    channels = x.shape[1]
    kernel = _gaussian_window(window, sigma).expand(channels, 1, window, window)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, kernel, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return round(float((numerator / denominator).mean()), 12)


def frechet_distance(features: torch.Tensor, reference: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(n, d)``.

    ``|mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))``, the FID formula on whatever
    features are given (here a digits classifier's penultimate layer).

    Examples
    --------
    >>> import torch
    >>> f = torch.randn(500, 3, generator=torch.Generator().manual_seed(0))
    >>> frechet_distance(f, f) < 1e-6, frechet_distance(f, f + 1) > 2.9
    (True, True)
    """
    a = features.double().cpu().numpy()
    b = reference.double().cpu().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    if np.iscomplexobj(root):
        root = root.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def score_samples(
    images: torch.Tensor,
    labels: torch.Tensor,
    classifier: torch.nn.Module,
    real_features: torch.Tensor,
    reference: torch.Tensor | None = None,
) -> dict[str, float]:
    """Score generated digits in ``[-1, 1]`` with the digits classifier.

    Returns ``accuracy`` (the classifier names the digit asked for, ``labels``) and
    ``frechet_distance`` (of its features to ``real_features``); with ``reference``
    samples (the uncached ones from the same noise), also ``psnr_db`` and ``ssim`` on the
    ``[0, 1]`` scale.
    """
    with torch.no_grad():
        accuracy = float((classifier(images).argmax(1) == labels).float().mean())
        features = classifier.features(images)
    scores = {"accuracy": accuracy, "frechet_distance": frechet_distance(features, real_features)}
    if reference is not None:
        unit, unit_reference = (images + 1) / 2, (reference + 1) / 2
        scores["psnr_db"] = psnr(unit, unit_reference)
        scores["ssim"] = ssim(unit, unit_reference)
    return scores
