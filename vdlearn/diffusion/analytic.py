r"""The perfect denoiser for data whose distribution we know: a mixture of Gaussians.

Taught in ``notebooks/03_diffusion_basics.ipynb`` (section "A sampler you can trust");
``tests/test_diffusion_analytic.py`` uses it to prove the samplers right end to end.

A trained network only approximates the best possible prediction. For data drawn from
a mixture $p(x_0) = \sum_k w_k\,\mathcal N(\mu_k, \tau_k^2 I)$ in $D$ dimensions (points
when $\tau_k = 0$) the best prediction has a closed form. Write the forward process as
$x_t = c\,x_0 + \sigma\epsilon$ with $c = \sqrt{\bar\alpha_t}\,s_t$, $\sigma = \sqrt{1-\bar\alpha_t}$. Then

$$p(x_t \mid k) = \mathcal N\big(c\,\mu_k,\ v_k I\big),\quad v_k = c^2\tau_k^2 + \sigma^2,\qquad
r_k(x_t) = \frac{w_k\, p(x_t\mid k)}{\sum_j w_j\, p(x_t \mid j)},$$

$$\mathbb E[x_0 \mid x_t] = \sum_k r_k(x_t)\Big(\mu_k + \frac{c\,\tau_k^2}{v_k}\,(x_t - c\,\mu_k)\Big).$$

The minimiser of the training loss is exactly this posterior mean (for $x_0$-targets;
for $\epsilon$ and $v$ targets, its conversion, see :mod:`vdlearn.diffusion.process`).
A sampler driven by it must reproduce the mixture: samples on the points, in the
right proportions. If the step formulas, the timesteps, the scale handling or the
guidance were wrong, they would not.

Class labels make it conditional: ``label=k`` keeps only the components of class
$k$ (``-1``: all of them). So classifier-free guidance can be watched exactly, with
$\epsilon(x_t, \varnothing)$ the full mixture's and $\epsilon(x_t, c)$ the class's.
"""

from __future__ import annotations

import math

import torch

from vdlearn.diffusion.schedules import (
    NoiseSchedule,
    check_timesteps,
    extract,
    timestep_batch,
)


class GaussianMixtureDenoiser:
    """An exact :class:`~vdlearn.diffusion.denoiser.Denoiser` for a Gaussian mixture.

    Args:
        schedule: the forward process (its ``prediction_type`` sets what is returned).
        means: ``(K, *shape)`` component means $\\mu_k$; samples have shape ``(b, *shape)``.
        stds: the components' standard deviations $\\tau_k$: a float or ``(K,)``; 0 = points.
        weights: ``(K,)`` mixture weights (normalised here); default uniform.
        labels: ``(K,)`` long class of each component, for conditional use; default 0..K-1.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        means: torch.Tensor,
        stds: float | torch.Tensor = 0.0,
        weights: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ):
        k = means.shape[0]
        self.schedule = schedule
        self.means = means.double()  # (K, *shape)
        self.stds = torch.as_tensor(stds, dtype=torch.float64).expand(k).clone()  # (K,)
        w = torch.ones(k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if w.shape != (k,) or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError(f"weights must be {k} non-negative numbers with a positive sum, got {w.tolist()}.")
        self.weights = w / w.sum()  # (K,)
        self.labels = torch.arange(k) if labels is None else torch.as_tensor(labels, dtype=torch.long)
        if self.labels.shape != (k,):
            raise ValueError(f"labels must have shape ({k},), got {tuple(self.labels.shape)}.")

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one sample."""
        return tuple(self.means.shape[1:])

    def posterior_mean(self, x_t: torch.Tensor, t: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        r"""$\mathbb E[x_0 \mid x_t]$ under the (class-restricted) mixture: ``(b, *shape)``, float64."""
        b = x_t.shape[0]
        if tuple(x_t.shape[1:]) != self.shape:
            raise ValueError(f"x_t has sample shape {tuple(x_t.shape[1:])}, the mixture's is {self.shape}.")
        t = check_timesteps(timestep_batch(t, b, x_t.device), self.schedule.num_train_timesteps)
        x = x_t.detach().double().flatten(1).cpu()  # (b, D)
        t = t.cpu()
        mu = self.means.flatten(1)  # (K, D)
        d = x.shape[1]
        ab = extract(self.schedule.alphas_cumprod.double(), t, 2)  # (b, 1)
        s = extract(self.schedule.scale_arr.double(), t, 2)  # (b, 1)
        # $c = \sqrt{\bar\alpha_t}\, s_t$, $\sigma^2 = 1 - \bar\alpha_t$
        c, sigma2 = ab.sqrt() * s, 1 - ab
        # $v_k = c^2 \tau_k^2 + \sigma^2$
        v = c**2 * self.stds[None] ** 2 + sigma2  # (b, K)
        # $\|x_t - c\mu_k\|^2$
        sq = (x[:, None, :] - c[:, :, None] * mu[None]).pow(2).sum(-1)  # (b, K)
        # $\log w_k + \log \mathcal N(x_t; c\mu_k, v_k I)$ (up to a constant)
        logits = self.weights.log()[None] - 0.5 * d * v.log() - sq / (2 * v)  # (b, K)
        if label is not None:
            label = torch.as_tensor(label).reshape(-1).cpu().expand(b)
            keep = (self.labels[None] == label[:, None]) | (label[:, None] < 0)  # (b, K)
            if not bool(keep.any(dim=1).all()):
                raise ValueError(f"Unknown label in {label.tolist()}; the mixture's classes are {self.labels.unique().tolist()}.")
            logits = logits.masked_fill(~keep, -math.inf)
        r = logits.softmax(dim=1)  # (b, K) responsibilities $r_k(x_t)$
        # $\mu_k + \frac{c\tau_k^2}{v_k}(x_t - c\mu_k)$
        gain = c * self.stds[None] ** 2 / v  # (b, K)
        per_k = mu[None] + gain[:, :, None] * (x[:, None, :] - c[:, :, None] * mu[None])  # (b, K, D)
        x0 = (r[:, :, None] * per_k).sum(1)  # (b, D)
        return x0.reshape(b, *self.shape).to(x_t.device)

    def __call__(self, x: torch.Tensor, timesteps: torch.Tensor, label: torch.Tensor | None = None, **_) -> torch.Tensor:
        """The optimal prediction of the schedule's type ($\\epsilon$, $v$ or $x_0$), float32 like ``x``."""
        x0 = self.posterior_mean(x, timesteps, label)  # (b, ...) float64
        t = timestep_batch(timesteps, x.shape[0], x.device)
        ab = extract(self.schedule.alphas_cumprod.double(), t, x.ndim)
        s = extract(self.schedule.scale_arr.double(), t, x.ndim)
        a, sigma, xd = ab.sqrt(), (1 - ab).sqrt(), x.double()
        kind = self.schedule.prediction_type
        if kind == "sample":
            out = x0
        else:
            # $\epsilon = (x_t - \sqrt{\bar\alpha_t}\, s_t\, \hat x_0) / \sqrt{1-\bar\alpha_t}$
            eps = (xd - a * s * x0) / sigma
            # $v = \sqrt{\bar\alpha_t}\,\epsilon - \sqrt{1-\bar\alpha_t}\, s_t \hat x_0$
            out = eps if kind == "epsilon" else a * eps - sigma * s * x0
        return out.to(x.dtype)

    def sample_data(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` exact draws from the mixture: ``(samples (n, *shape) float32, component (n,) long)``."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # (n,)
        z = torch.randn((n, *self.shape), generator=generator, dtype=torch.float64)
        std = self.stds[comp].reshape(n, *([1] * len(self.shape)))
        return (self.means[comp] + std * z).float(), comp
