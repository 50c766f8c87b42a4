"""vdlearn: learn latent video diffusion by building it.

The package holds the real pieces (toy video world and judges, video VAE, temporal
U-Net, diffusion, cascades, fine-tuning recipes); the notebooks in ``notebooks/``
teach them in order. See README.md for the course map.
"""

__version__ = "0.1.0"

from vdlearn.device import get_device  # noqa: F401
