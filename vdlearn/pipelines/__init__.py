"""Pipelines: the models of the course put together for generation.

================  ==========================================================================
``t2v``           text-to-video: toy text encoder + video U-Net + schedule + frozen VAE (notebook 05)
``videocrafter``  the official VideoCrafter1/2 T2V and I2V models, called like diffusers pipelines (notebook 10)
``lavie``         LaVie's cascade: base T2V -> interpolation (16 -> 61 frames) -> x4 super-resolution (notebook 10)
``memory``        model / sequential offload and attention slicing for the full-size models
``video_io``      ``output.frames`` in numpy, torch or PIL form, and ``export_to_video``
================  ==========================================================================
"""

from vdlearn.pipelines.lavie import (
    LaVieBasePipeline,
    LaVieCascade,
    LaVieInterpolationPipeline,
    LaVieVSRPipeline,
)
from vdlearn.pipelines.t2v import (
    BASE_MODEL,
    T2V_PRESETS,
    T2VConfig,
    TextToVideo,
    shipped_t2v_path,
)
from vdlearn.pipelines.video_io import export_to_video
from vdlearn.pipelines.videocrafter import VideoCrafterPipeline, VideoPipelineOutput

__all__ = ["BASE_MODEL", "T2V_PRESETS", "LaVieBasePipeline", "LaVieCascade", "LaVieInterpolationPipeline",
           "LaVieVSRPipeline", "T2VConfig", "TextToVideo", "VideoCrafterPipeline", "VideoPipelineOutput", "export_to_video",
           "shipped_t2v_path"]
