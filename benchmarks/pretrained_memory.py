"""Peak GPU memory and time of VideoCrafter2 (or LaVie base) sampling, 320 x 512 x 16, with each memory saver.

Each row samples the same prompt with the same seed through
:class:`vdlearn.pipelines.videocrafter.VideoCrafterPipeline`, with one saver switched on
(:mod:`vdlearn.pipelines.memory`): none, model offload, sequential offload, attention
slicing, decoding one frame at a time, and model offload with both of the others. The
table gives the peak of ``torch.cuda.max_memory_allocated`` over the call (weights on the
GPU plus activations), the wall time, and the largest difference of the frames from the
plain row's (0, or fp rounding: every saver gives the same video).

Usage::

    python benchmarks/pretrained_memory.py                       # the official file (HF cache or download)
    python benchmarks/pretrained_memory.py --path checkpoints/base_512_v2/model.ckpt
    python benchmarks/pretrained_memory.py --random-weights      # full size, no file: memory and time only
    python benchmarks/pretrained_memory.py --reduced             # any machine (CPU): a reduced-width model,
                                                                 # 64 x 64 x 4 frames, to show the table
    python benchmarks/pretrained_memory.py --name lavie_base      # LaVie's base stage, full size, random weights
                                                                 # (DDPM 50 steps, CFG 7.5; --reduced as above)

On the CPU there is no GPU memory to measure (the column says so); the rows still show the
time and that every saver gives the same frames. Steps default to 10 (``--steps 50`` for
the official run); memory does not depend on the number of steps.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
from measure import measure

from vdlearn.device import describe_device, get_device
from vdlearn.models.clip import OpenCLIPTextEncoder
from vdlearn.models.unet import VideoUNet
from vdlearn.models.vae import AutoencoderKL
from vdlearn.pipelines.videocrafter import VideoCrafterPipeline
from vdlearn.pretrained import checkpoints
from vdlearn.pretrained.registry import PRETRAINED

SAVERS = ["none", "model offload", "sequential offload", "attention slicing", "decode 1 frame at a time",
          "model offload + slicing + 1 frame"]
#: The reduced widths of --reduced (the layout of the full model, 20x fewer channels).
REDUCED = {"unet_overrides": {"model_channels": 16, "head_channels": 8, "context_dim": 64, "norm_groups": 8,
                              "init_attention_heads": 2},
           "vae_overrides": {"base_channels": 16, "norm_groups": 8},
           "text_encoder": "openclip_reduced", "text_overrides": {"width": 64, "layers": 3, "heads": 2,
                                                                 "mlp_width": 256}}


def make_live(unet: torch.nn.Module) -> None:
    """Give the zero-initialised output layers random weights too, so that random weights make a live network."""
    with torch.no_grad():
        for p in unet.parameters():
            if p.ndim >= 2 and not p.abs().sum():
                p.normal_(0, 0.02)


def random_pipeline(spec, seed: int = 0) -> VideoCrafterPipeline:
    """The spec's modules with random weights (the zero-initialised output layers made live too)."""
    torch.manual_seed(seed)
    unet = VideoUNet(checkpoints.unet_config(spec))
    vae = AutoencoderKL(checkpoints.vae_config(spec))
    text = OpenCLIPTextEncoder(checkpoints.text_config(spec))
    make_live(unet)
    from vdlearn.diffusion import NoiseSchedule

    return VideoCrafterPipeline(unet, vae, text, NoiseSchedule(spec.schedule), defaults=spec.sampling,
                                name=spec.title)


def random_lavie_base(reduced: bool, seed: int = 0, unet_overrides: dict | None = None):
    """LaVie's base stage (:class:`~vdlearn.pipelines.lavie.LaVieBasePipeline`) at full size or reduced, random weights
    (``unet_overrides``: other reduced U-Net widths)."""
    from vdlearn.diffusion import NoiseSchedule
    from vdlearn.models.clip import OpenCLIPTextConfig
    from vdlearn.models.unet import UNetConfig
    from vdlearn.models.vae import VAEConfig
    from vdlearn.pipelines.lavie import LaVieBasePipeline

    torch.manual_seed(seed)
    small = {"model_channels": 32, "attention_heads": 2, "norm_groups": 8, "context_dim": 64} if reduced else {}
    unet = VideoUNet(UNetConfig.preset("lavie_base", **(small if unet_overrides is None else unet_overrides)))
    vae = AutoencoderKL(VAEConfig.preset("lavie", **({"base_channels": 16, "norm_groups": 8} if reduced else {})))
    text = OpenCLIPTextEncoder(OpenCLIPTextConfig.preset(
        "clip_vit_l14", **({"width": 64, "layers": 2, "heads": 2, "mlp_width": 128} if reduced else {})))
    make_live(unet)
    return LaVieBasePipeline(unet, vae, text, NoiseSchedule("lavie_base"))


def run(pipe: VideoCrafterPipeline, saver: str, device: torch.device, call: dict) -> tuple[np.ndarray, float, float]:
    """Frames, peak GPU memory (GiB; NaN on CPU) and seconds of one call with ``saver`` on."""
    pipe.to("cpu" if "offload" in saver else device)  # .to() also ends an earlier row's offloading
    pipe.disable_attention_slicing()
    chunk = None
    if "offload" in saver:
        if saver.startswith("sequential"):
            pipe.enable_sequential_cpu_offload(device)
        else:
            pipe.enable_model_cpu_offload(device)
    if "slicing" in saver:
        pipe.enable_attention_slicing()
    if "1 frame" in saver:
        chunk = 1
    return measure(lambda: pipe(**call, decode_chunk_size=chunk, generator=torch.Generator().manual_seed(123)).frames,
                   device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="videocrafter2_t2v_512", choices=[*PRETRAINED, "lavie_base"])
    parser.add_argument("--path", default=None, help="the checkpoint file (default: the Hugging Face cache)")
    parser.add_argument("--random-weights", action="store_true", help="full size, random weights, no file")
    parser.add_argument("--reduced", action="store_true", help="reduced width at 64x64x4: runs anywhere")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                        help="default: float16 on CUDA, float32 elsewhere")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--savers", nargs="*", default=SAVERS, choices=SAVERS)
    args = parser.parse_args()

    device = get_device(args.device)
    dtype = getattr(torch, args.dtype or ("float16" if device.type == "cuda" else "float32"))
    if args.name == "lavie_base":
        if not (args.reduced or args.random_weights):
            parser.error("--name lavie_base runs on random weights: add --random-weights (full size) or --reduced")
        pipe = random_lavie_base(args.reduced).to(dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        size = (64, 64, 4) if args.reduced else (320, 512, 16)
        call = {"prompt": "a teddy bear walking on the street, 2k, high quality", "height": size[0], "width": size[1],
                "num_frames": size[2], "num_inference_steps": args.steps}
        print(f"LaVie base (random weights{', reduced width' if args.reduced else ''}), {size[0]}x{size[1]}x{size[2]}, "
              f"{args.steps} DDPM steps, cfg 7.5, {str(dtype).removeprefix('torch.')}, on {describe_device(device)}")
        table(pipe, args.savers, device, call)
        return
    spec = PRETRAINED[args.name]
    if spec.is_i2v:
        parser.error("this benchmark samples the text-to-video checkpoints")
    s = spec.sampling
    call = {"prompt": spec.example_prompt, "height": s.height, "width": s.width, "num_frames": s.num_frames,
            "num_inference_steps": args.steps}
    if args.reduced:
        spec = spec.replace(**REDUCED)
        call.update(height=64, width=64, num_frames=4)
    if args.reduced or args.random_weights:
        pipe = random_pipeline(spec).to(dtype=dtype)
        source = "random weights" + (", reduced width" if args.reduced else "")
    else:
        from vdlearn.pretrained import load_pipeline

        pipe = load_pipeline(spec, path=args.path, dtype=dtype)
        source = args.path or f"{spec.repo_id}/{spec.filename}"
    pipe.set_progress_bar_config(disable=True)

    print(f"{spec.title} ({source}), {call['height']}x{call['width']}x{call['num_frames']}, {args.steps} DDIM "
          f"steps, cfg {s.guidance_scale}, {str(dtype).removeprefix('torch.')}, on {describe_device(device)}")
    table(pipe, args.savers, device, call)


def table(pipe, savers, device: torch.device, call: dict) -> None:
    """One row per saver: peak memory, time, and the largest difference from the first row's frames."""
    print(f"{'saver':<36} {'peak GPU memory':>16} {'time':>9} {'max |frames - plain|':>21}")
    plain = None
    for saver in savers:
        frames, peak, seconds = run(pipe, saver, device, call)
        if frames is None:
            print(f"{saver:<36} {'out of memory':>16}", flush=True)
            continue
        plain = frames if plain is None else plain
        memory = f"{'n/a (CPU)':>16}" if math.isnan(peak) else f"{peak:12.2f} GiB"
        diff = float(np.abs(frames - plain).max())
        print(f"{saver:<36} {memory} {seconds:8.1f}s {diff:21.2e}", flush=True)


if __name__ == "__main__":
    main()
