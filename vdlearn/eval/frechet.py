"""The Frechet distance between two sets of features (the "F" in FID and FVD).

Fit a Gaussian to each set of feature vectors and measure

.. math:: d^2 = \\lVert \\mu_1 - \\mu_2 \\rVert^2 + \\operatorname{Tr}\\big(\\Sigma_1 + \\Sigma_2 - 2 (\\Sigma_1 \\Sigma_2)^{1/2}\\big)

(Heusel et al. 2017, eq. 6; for videos with a video network, Unterthiner et al.
2018). The matrix square root's trace is computed from the eigenvalues of
:math:`\\Sigma_1^{1/2} \\Sigma_2 \\Sigma_1^{1/2}`, which is symmetric, so it stays real
and stable. Taught in notebook 01_toy_video_world.
"""

from __future__ import annotations

import torch


def _sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between feature sets ``a`` ``(n, d)`` and ``b`` ``(m, d)``."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"Expected two (n, d) feature matrices with the same d, got {tuple(a.shape)} and {tuple(b.shape)}.")
    if min(len(a), len(b)) < 2:
        raise ValueError("Each set needs at least 2 samples (use hundreds for a stable estimate).")
    a, b = a.double(), b.double()
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = torch.cov(a.T), torch.cov(b.T)
    r1 = _sqrtm_psd(s1)
    cross = torch.linalg.eigvalsh(r1 @ s2 @ r1).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * cross)
