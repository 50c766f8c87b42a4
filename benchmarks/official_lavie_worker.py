"""The official side of ``official_sampling.py --model lavie_base``: LaVie's own base pipeline, timed.

Runs in a separate Python environment with LaVie's pinned libraries (diffusers 0.16.0, transformers
4.28.1, einops, rotary_embedding_torch; torch from anywhere), because LaVie's code does not import
under a current diffusers. It imports nothing of vdlearn. ``official_sampling.py`` writes the
inputs into a folder and starts this script with ``--official-python``; see its docstring.

Reads from ``--inputs``: ``config.json`` (the official U-Net's and diffusers VAE's constructor
arguments, the size and the sampler settings), ``unet.pt`` (official names), ``vae.pt`` (diffusers
names) and ``inputs.pt`` (the two text embeddings and ``x_T``). Builds ``base/models/unet.py``'s
``UNet3DConditionModel`` and ``base/pipelines/pipeline_videogen.py``'s ``VideoGenPipeline`` with
diffusers' ``DDPMScheduler`` as ``base/pipelines/sample.py`` does (SD 1.4's scheduler config with
linear betas 1e-4 -> 0.02), loads the weights strictly and samples once per ``--dtypes`` entry.
Writes ``official_<dtype>.pt``: the frames (uint8, ``(b, T, H, W, 3)``), peak GPU memory and seconds.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import measure

#: stable-diffusion-v1-4 scheduler/scheduler_config.json, which base/pipelines/sample.py reads (then sets linear betas)
SD14_SCHEDULER = {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                  "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False,
                  "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None}
#: diffusers 0.16 names the VAE's mid-block attention as AttentionBlock did; current diffusers as Attention
OLD_ATTENTION_NAMES = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}


class _TextStandIn(torch.nn.Module):
    """The pipeline reads only the dtype of its text encoder when the embeddings are given."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    @property
    def dtype(self) -> torch.dtype:
        return self.anchor.dtype


def build(checkout: Path, inputs: Path, device: torch.device):
    """The official pipeline holding the given weights (fp32, on ``device``)."""
    from diffusers import AutoencoderKL, DDPMScheduler

    sys.path[:0] = [str(checkout / "base"), str(checkout / "base" / "pipelines")]
    from models.unet import UNet3DConditionModel  # official
    from pipeline_videogen import VideoGenPipeline  # official

    config = json.loads((inputs / "config.json").read_text())
    unet = UNet3DConditionModel(**config["unet"])
    unet.load_state_dict(torch.load(inputs / "unet.pt", weights_only=True), strict=True)
    known = inspect.signature(AutoencoderKL.__init__).parameters  # diffusers 0.16 lacks the newer arguments
    vae_kwargs = {k: v for k, v in config["vae"].items() if k in known}
    vae = AutoencoderKL(**vae_kwargs)
    state = torch.load(inputs / "vae.pt", weights_only=True)
    if not any(".to_q." in k for k in vae.state_dict()):
        for new, old in OLD_ATTENTION_NAMES.items():
            state = {k.replace(new, old): v for k, v in state.items()}
    vae.load_state_dict(state, strict=True)
    scheduler = DDPMScheduler.from_config(SD14_SCHEDULER, beta_start=0.0001, beta_end=0.02, beta_schedule="linear")

    class Pipeline(VideoGenPipeline):  # the execution device, fixed (no accelerate hooks here)
        _execution_device = device

    pipe = Pipeline(vae=vae.eval(), text_encoder=_TextStandIn(), tokenizer=None, unet=unet.eval(), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe, config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, type=Path, help="a checkout of Vchitect/LaVie")
    parser.add_argument("--inputs", required=True, type=Path)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", nargs="+", default=["float32"])
    args = parser.parse_args()
    device = torch.device(args.device)
    pipe, config = build(args.official, args.inputs, device)
    x = torch.load(args.inputs / "inputs.pt", weights_only=True)
    for name in args.dtypes:
        dtype = getattr(torch, name)
        for module in (pipe.unet, pipe.vae, pipe.text_encoder):  # diffusers 0.16's pipeline.to() takes no dtype
            module.to(device, dtype)
        video, peak, seconds = measure(lambda dtype=dtype: pipe(
            prompt_embeds=x["cond"].to(device, dtype), negative_prompt_embeds=x["uncond"].to(device, dtype),
            latents=x["x_T"].to(device, dtype), height=config["height"], width=config["width"],
            video_length=config["frames"], num_inference_steps=config["steps"], guidance_scale=config["guidance_scale"],
            generator=torch.Generator().manual_seed(config["generator_seed"])).video, device)
        frames = None if video is None else video.cpu()  # uint8 (b, T, H, W, 3)
        torch.save({"frames": frames, "peak": peak, "seconds": seconds}, args.inputs / f"official_{name}.pt")


if __name__ == "__main__":
    main()
