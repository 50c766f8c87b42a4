r"""The encoder's output as a distribution: a diagonal Gaussian over latents.

A KL autoencoder (Kingma and Welling 2014; LDM, Rombach et al. 2022, sec. 3.1) encodes
each frame to a mean $\mu$ and a log-variance $\log\sigma^2$ per latent value, and

* samples $z = \mu + \sigma\,\epsilon$, $\epsilon \sim \mathcal N(0, I)$ (the reparameterisation
  trick: gradients flow through $\mu$ and $\sigma$);
* pays a small KL penalty towards $\mathcal N(0, I)$,
  $\mathrm{KL} = \tfrac12 \sum (\mu^2 + \sigma^2 - 1 - \log\sigma^2)$, which keeps the latent
  space smooth and its scale bounded. LDM weights it by only ~1e-6, so in practice the
  latents are nearly deterministic and their spread is set afterwards by ``scale_factor``.

The log-variance is clamped to [-30, 20] as in the original code. Works for images
``(b, 2z, h, w)`` and videos ``(b, 2z, t, h, w)`` alike: channels are dimension 1, and sums
run over every dimension but the batch. Taught in ``notebooks/02_latent_space.ipynb``.
"""

from __future__ import annotations

import math

import torch


class DiagonalGaussian:
    """A Gaussian with independent coordinates, built from the encoder's moments."""

    def __init__(self, moments: torch.Tensor, deterministic: bool = False):
        # moments: (b, 2z, ...) = concat(mean, logvar) along channels, or (b, z, ...) if deterministic
        if deterministic:
            self.mean = moments
            self.logvar = torch.full_like(moments, -30.0)  # the clamp floor: sigma ~ 3e-7
            self.std = torch.zeros_like(moments)
        else:
            if moments.shape[1] % 2:
                raise ValueError(
                    f"Expected moments with an even number of channels (mean and log-variance), got {moments.shape[1]}."
                )
            self.mean, logvar = moments.chunk(2, dim=1)  # (b, z, ...) each
            self.logvar = logvar.clamp(-30.0, 20.0)
            self.std = torch.exp(0.5 * self.logvar)
        self.deterministic = deterministic

    @property
    def var(self) -> torch.Tensor:
        return self.std**2

    @property
    def shape(self) -> torch.Size:
        """Shape of a latent sample, ``(b, z, ...)``."""
        return self.mean.shape

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""$z = \mu + \sigma\,\epsilon$; pass a ``generator`` for a reproducible draw."""
        gen_device = generator.device if generator is not None else self.mean.device
        eps = torch.randn(self.mean.shape, generator=generator, device=gen_device, dtype=self.mean.dtype)
        return self.mean + self.std * eps.to(self.mean.device)

    def mode(self) -> torch.Tensor:
        """The most likely latent: the mean."""
        return self.mean

    def _sum_dims(self) -> list[int]:
        return list(range(1, self.mean.dim()))

    def kl(self, other: DiagonalGaussian | None = None) -> torch.Tensor:
        r"""KL(self || other) per batch element, shape ``(b,)``; ``other=None`` means $\mathcal N(0, I)$."""
        if self.deterministic:
            return torch.zeros(self.mean.shape[0], device=self.mean.device, dtype=self.mean.dtype)
        if other is None:
            terms = self.mean**2 + self.var - 1.0 - self.logvar
        else:
            terms = (
                (self.mean - other.mean) ** 2 / other.var + self.var / other.var - 1.0 - self.logvar + other.logvar
            )
        return 0.5 * terms.sum(dim=self._sum_dims())

    def nll(self, sample: torch.Tensor) -> torch.Tensor:
        r"""Negative log-likelihood of ``sample`` per batch element.

        $\tfrac12\sum(\log 2\pi + \log\sigma^2 + (x-\mu)^2/\sigma^2)$
        """
        if self.deterministic:
            raise ValueError("A deterministic posterior has no density; nll is undefined.")
        terms = math.log(2.0 * math.pi) + self.logvar + (sample - self.mean) ** 2 / self.var
        return 0.5 * terms.sum(dim=self._sum_dims())

    def __repr__(self) -> str:
        return f"DiagonalGaussian(shape={tuple(self.mean.shape)}, deterministic={self.deterministic})"


__all__ = ["DiagonalGaussian"]
