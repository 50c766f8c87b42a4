"""Pipelines: the models of the course put together for generation.

==========  ==========================================================================
``t2v``     text-to-video: toy text encoder + video U-Net + schedule + frozen VAE (notebook 05)
==========  ==========================================================================
"""

from vdlearn.pipelines.t2v import T2V_PRESETS, T2VConfig, TextToVideo, shipped_t2v_path

__all__ = ["T2V_PRESETS", "T2VConfig", "TextToVideo", "shipped_t2v_path"]
