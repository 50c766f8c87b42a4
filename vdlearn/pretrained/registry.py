"""The official VideoCrafter checkpoints vdlearn loads: where each file is and how it samples.

One :class:`PretrainedSpec` per checkpoint, filled from the official repository
(``AILab-CVC/VideoCrafter`` @ ``11bcd76``): the Hugging Face repository and file name from
the README's model table and ``scripts/gradio/*_test.py`` (``hf_hub_download``), the
folder the README tells you to put it in, the inference yaml it belongs to, and the
sampling settings of the official run scripts (``scripts/run_text2video.sh``,
``scripts/run_image2video.sh``; the VideoCrafter1-1024 script is the same file at commit
``dab0535``):

========================  ==============================  ============  ====  =====  =======  ===
name                      Hugging Face file               size (px)     fps   steps  eta      cfg
========================  ==============================  ============  ====  =====  =======  ===
videocrafter2_t2v_512     VideoCrafter/VideoCrafter2      320 x 512     28    50     1.0      12
videocrafter1_t2v_1024    VideoCrafter/Text2Video-1024    576 x 1024    28    50     1.0      12
videocrafter1_i2v_512     VideoCrafter/Image2Video-512    320 x 512     8     50     1.0      12
========================  ==============================  ============  ====  =====  =======  ===

(``inference.py``'s own argument defaults differ: ``--unconditional_guidance_scale 1.0``,
``--fps 24``; the run scripts pass 12.0 and the fps above, which are the defaults here; the
gradio demos use cfg 12 and fps 16.) All three are ``model.ckpt``, a pickle of tensors only
(read with ``torch.load(weights_only=True)``; any of the three official wrappings), 16
frames, seed 123 in the scripts, the empty prompt as the unconditional input. The I2V
README's download line links ``Image2Video-512-v1.0``, but its model table and its gradio
demo (``hf_hub_download``) use ``Image2Video-512``, the repository used here.

Licences: the official code and weights are for research only (a clause added to the
Apache text of the repository's ``License``); ``VideoCrafter2`` is tagged apache-2.0 on the
Hub, the others carry no tag. vdlearn never redistributes them.

The model fields name vdlearn presets (U-Net, schedule, VAE, OpenCLIP encoders);
``*_overrides`` change fields of those presets, which is how the tests build the same
checkpoint layout at a reduced width. Taught in notebook 10_pretrained.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vdlearn.pipelines.videocrafter import SamplingDefaults


@dataclass(frozen=True)
class PretrainedSpec:
    """One official checkpoint: the file, the vdlearn modules it fills, and its official sampling settings."""

    name: str  # vdlearn's name (also its U-Net preset)
    title: str  # what it is, in words
    task: str  # "t2v" (text-to-video) or "i2v" (image-to-video)
    # --- the file ---------------------------------------------------------------------------------
    repo_id: str  # Hugging Face repository
    filename: str  # file inside it
    official_path: str  # where the official README puts it (relative to the VideoCrafter folder)
    official_config: str  # the official inference yaml of this checkpoint
    size: str  # download size, as the Hub lists it
    revision: str | None = None  # a branch, tag or commit of the repository (None: main)
    # --- the modules it fills (vdlearn presets; overrides change their fields) ------------------
    unet: str = "videocrafter2_t2v_512"  # VideoUNet preset
    schedule: str = "videocrafter"  # NoiseSchedule preset (betas and scale_arr of the yaml)
    vae: str = "videocrafter"  # VAEConfig preset (SD KL-f8)
    text_encoder: str = "openclip_vit_h14"  # OpenCLIPTextConfig preset (ViT-H/14 text tower, penultimate layer)
    image_encoder: str | None = None  # OpenCLIPImageConfig preset (I2V only)
    resampler: str | None = None  # ResamplerConfig preset (I2V only)
    unet_overrides: Mapping[str, Any] = field(default_factory=dict)
    vae_overrides: Mapping[str, Any] = field(default_factory=dict)
    text_overrides: Mapping[str, Any] = field(default_factory=dict)
    image_overrides: Mapping[str, Any] = field(default_factory=dict)
    resampler_overrides: Mapping[str, Any] = field(default_factory=dict)
    # --- how the official scripts sample it -------------------------------------------------------
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)
    seed: int = 123  # --seed of the official run script
    save_fps: int = 10  # frame rate of the saved mp4 (inference.py's --savefps default; not the fps condition)
    example_prompt: str = "A tiger walks in the forest, photorealistic, 4k, high definition"  # prompts/test_prompts.txt
    example_image: str | None = None  # the official example input image (path in the official repository)

    @property
    def url(self) -> str:
        """The file's page on the Hub (what the official README links)."""
        return f"https://huggingface.co/{self.repo_id}/blob/{self.revision or 'main'}/{self.filename}"

    @property
    def repo_url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}"

    @property
    def is_i2v(self) -> bool:
        return self.task == "i2v"

    def replace(self, **changes: Any) -> PretrainedSpec:
        """A copy with fields changed: ``spec.replace(unet_overrides={"model_channels": 32})``."""
        return dataclasses.replace(self, **changes)


def _videocrafter(
    name: str, title: str, task: str, repo_id: str, folder: str, config: str, size: str, schedule: str,
    height: int, width: int, fps: int, **fields: Any,
) -> PretrainedSpec:
    """One official VideoCrafter checkpoint: ``model.ckpt`` in ``checkpoints/<folder>/``, U-Net preset ``name``.

    All three run 16 frames, 50 DDIM steps, eta 1.0 and cfg 12 in the official scripts.
    """
    return PretrainedSpec(
        name=name, title=title, task=task, repo_id=repo_id, filename="model.ckpt",
        official_path=f"checkpoints/{folder}/model.ckpt", official_config=f"configs/{config}", size=size,
        unet=name, schedule=schedule,
        sampling=SamplingDefaults(height=height, width=width, num_frames=16, fps=fps, num_inference_steps=50,
                                  guidance_scale=12.0, eta=1.0),
        **fields,
    )


#: The checkpoints :func:`vdlearn.pretrained.load_pipeline` knows, by name.
PRETRAINED: dict[str, PretrainedSpec] = {
    # VideoCrafter2 (arXiv 2401.09047): README "Models" table, scripts/run_text2video.sh
    "videocrafter2_t2v_512": _videocrafter(
        "videocrafter2_t2v_512", "VideoCrafter2 text-to-video, 320x512, 16 frames", task="t2v",
        repo_id="VideoCrafter/VideoCrafter2", folder="base_512_v2", config="inference_t2v_512_v2.0.yaml",
        size="7.4 GB", schedule="videocrafter", height=320, width=512, fps=28,
    ),
    # VideoCrafter1 (arXiv 2310.19512), 576x1024: README table, run_text2video.sh @ dab0535
    "videocrafter1_t2v_1024": _videocrafter(
        "videocrafter1_t2v_1024", "VideoCrafter1 text-to-video, 576x1024, 16 frames", task="t2v",
        repo_id="VideoCrafter/Text2Video-1024", folder="base_1024_v1", config="inference_t2v_1024_v1.0.yaml",
        size="6.34 GB", schedule="videocrafter1_1024", height=576, width=1024, fps=28,
    ),
    # VideoCrafter1 image-to-video, 320x512: README table, scripts/gradio/i2v_test.py, run_image2video.sh
    "videocrafter1_i2v_512": _videocrafter(
        "videocrafter1_i2v_512", "VideoCrafter1 image-to-video, 320x512, 16 frames", task="i2v",
        repo_id="VideoCrafter/Image2Video-512", folder="i2v_512_v1", config="inference_i2v_512_v1.0.yaml",
        size="5.22 GB", schedule="videocrafter", height=320, width=512, fps=8,
        image_encoder="openclip_vit_h14", resampler="videocrafter1_i2v",
        example_prompt="horses are walking on the grassland",  # prompts/i2v_prompts/test_prompts.txt
        example_image="prompts/i2v_prompts/horse.png",
    ),
}


def get_spec(name: str | PretrainedSpec) -> PretrainedSpec:
    """The :class:`PretrainedSpec` called ``name`` (a spec is returned as it is)."""
    if isinstance(name, PretrainedSpec):
        return name
    if name not in PRETRAINED:
        raise KeyError(f"Unknown pretrained checkpoint {name!r}. Known: {', '.join(PRETRAINED)}.")
    return PRETRAINED[name]


__all__ = ["PRETRAINED", "PretrainedSpec", "get_spec"]
