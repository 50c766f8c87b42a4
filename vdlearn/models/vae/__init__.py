"""The latent space: a KL autoencoder applied to videos frame by frame, and a temporal decoder.

* ``config``: :class:`VAEConfig` and the presets (``sd``/``videocrafter``/``lavie``, ``toy32``, ``toy64``, ``tiny``).
* ``blocks``, ``encoder``, ``decoder``: the networks (LDM, Rombach et al. 2022, sec. 3.1, appendix G).
* ``posterior``: :class:`DiagonalGaussian` (sample, mode, KL).
* ``autoencoder``: :class:`AutoencoderKL` for images and videos, scaled latents, save/load.
* ``temporal_decoder``: VideoGen's enhanced video decoder (SVD-style temporal layers, identity at init).

Official weights load through :mod:`vdlearn.pretrained.vae_layouts`; training is in
:mod:`vdlearn.training.vae`. Taught in ``notebooks/02_latent_space.ipynb``.
"""

from vdlearn.models.vae.autoencoder import AutoencoderKL, load_toy_vae, shipped_vae_path
from vdlearn.models.vae.config import PRESETS, VAEConfig
from vdlearn.models.vae.decoder import Decoder
from vdlearn.models.vae.encoder import Encoder
from vdlearn.models.vae.posterior import DiagonalGaussian
from vdlearn.models.vae.temporal_decoder import TemporalDecoder, TemporalResBlock

__all__ = [
    "PRESETS",
    "AutoencoderKL",
    "Decoder",
    "DiagonalGaussian",
    "Encoder",
    "TemporalDecoder",
    "TemporalResBlock",
    "VAEConfig",
    "load_toy_vae",
    "shipped_vae_path",
]
