"""VideoCrafter2 and LaVie base sampling, vdlearn beside the official implementations: peak GPU memory, time, same frames.

Both sides sample the same random weights at equal settings: vdlearn's pipeline from
:func:`pretrained_memory.random_pipeline`, and the official ``LatentDiffusion`` of
``configs/inference_t2v_512_v2.0.yaml`` with those weights converted to the official names
(``vdlearn.pretrained.videocrafter.to_official``, ``vae_layouts.vdlearn_to_ldm``) and loaded with
``strict=True``. The same text embeddings (the text encoder runs once before sampling in both, so
it is left out of both), the same ``x_T``, ``fps`` 28, guidance 12, DDIM at ``--eta`` (default 0,
so that both sides are deterministic and their frames can be compared; the run script's 1.0 needs
the same memory), then the official ``decode_first_stage_2DAE`` or vdlearn's decoder. The official
code runs as its run script does (fp32: ``scripts/evaluation/inference.py`` never calls ``half()``),
and in fp16 after ``model.half()`` for a fair comparison; vdlearn plain, with model offload, and
with offload plus one-frame decoding.

No official code is part of vdlearn: pass a checkout of AILab-CVC/VideoCrafter with ``--official``
(its inference needs ``omegaconf`` and ``einops``; ``pytorch_lightning``, ``torchvision`` and
``cv2`` are imported by it but not used at inference, and are stubbed here if missing)::

    git clone https://github.com/AILab-CVC/VideoCrafter /tmp/VideoCrafter
    pip install omegaconf einops
    python benchmarks/official_sampling.py --official /tmp/VideoCrafter            # full size, on a GPU
    python benchmarks/official_sampling.py --official /tmp/VideoCrafter --reduced  # any machine: the table's shape

Rows print as they finish; a row that runs out of GPU memory says so and the next one runs.

``--model lavie_base``: LaVie's base stage (320 x 512 x 16, DDPM, guidance 7.5), vdlearn's
:class:`~vdlearn.pipelines.lavie.LaVieBasePipeline` beside the official ``VideoGenPipeline`` of
``base/pipelines/pipeline_videogen.py`` with the official ``UNet3DConditionModel``, on the same random
weights (``vdlearn.pretrained.lavie.to_official`` for the U-Net, diffusers names for the SD VAE, both
loaded strictly), embeddings, ``x_T`` and generator seed (the DDPM noise is drawn from it on both
sides). The official pipeline returns 8-bit frames, so where the videos agree the last column shows
half an 8-bit step, 1.96e-03, the rounding. LaVie's code needs its pinned diffusers 0.16.0, so it runs in a separate environment through
``official_lavie_worker.py``, which imports nothing of vdlearn; ``--official-python`` names that
environment's Python::

    git clone https://github.com/Vchitect/LaVie /tmp/LaVie
    python -m venv /tmp/lavie-venv      # LaVie's pins; torch (and numpy, safetensors) from this environment:
    /tmp/lavie-venv/bin/pip install --no-deps diffusers==0.16.0 transformers==4.28.1 tokenizers==0.13.3 \
        huggingface_hub==0.25.2 einops==0.6.1 rotary_embedding_torch==0.9.1
    python -c "import site; print(site.getsitepackages()[0])" > /tmp/lavie-venv/lib/python3.11/site-packages/zz_this_env.pth
    python benchmarks/official_sampling.py --model lavie_base --official /tmp/LaVie \
        --official-python /tmp/lavie-venv/bin/python [--reduced]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import numpy as np
import torch
from measure import measure
from pretrained_memory import REDUCED, random_lavie_base, random_pipeline

from vdlearn.device import describe_device, get_device
from vdlearn.pretrained import vae_layouts, videocrafter
from vdlearn.pretrained.registry import PRETRAINED

CONFIG = "configs/inference_t2v_512_v2.0.yaml"
LAVIE_UNET = "base/models/unet.py"
#: LaVie base: Stable Diffusion 1.4's unet/config.json as base/models/unet.py's from_pretrained_2d builds it
LAVIE_SD14_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "center_input_sample": False, "flip_sin_to_cos": True, "freq_shift": 0,
    "down_block_types": ("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    "mid_block_type": "UNetMidBlock3DCrossAttn",
    "up_block_types": ("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
    "block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2, "downsample_padding": 1, "mid_block_scale_factor": 1,
    "act_fn": "silu", "norm_num_groups": 32, "norm_eps": 1e-5, "cross_attention_dim": 768, "attention_head_dim": 8,
    "use_first_frame": False,
}
#: --reduced for LaVie: the widths of its golden outputs (the official RotaryEmbedding(32) needs heads of >= 32
#: channels), official and vdlearn spellings
LAVIE_REDUCED = {"official": {"block_out_channels": (64, 128, 192, 192), "attention_head_dim": 2, "cross_attention_dim": 64},
                 "vdlearn": {"model_channels": 64, "channel_mult": (1, 2, 3, 3), "attention_heads": 2, "context_dim": 64}}
#: --reduced: the official GroupNorms have 32 groups, so 32 channels is the narrowest first level
#: (the widths of the golden outputs, tests/fixtures/golden/README.md); the text encoder only fixes the width
OFFICIAL_REDUCED = {**REDUCED, "unet_overrides": {"model_channels": 32, "head_channels": 16, "context_dim": 64},
                    "vae_overrides": {"base_channels": 32}}


def _stub_unused_imports() -> None:
    """Modules the official code imports but does not use at inference, stubbed when not installed."""
    if "pytorch_lightning" not in sys.modules:
        try:
            import pytorch_lightning  # noqa: F401
        except ImportError:
            class LightningModule(torch.nn.Module):  # what LatentDiffusion needs of it: an nn.Module with .device
                @property
                def device(self):
                    return next(self.parameters()).device

            sys.modules["pytorch_lightning"] = types.SimpleNamespace(LightningModule=LightningModule)
    for name in ("torchvision", "cv2"):
        try:
            __import__(name)
        except ImportError:
            module = types.ModuleType(name)
            if name == "torchvision":
                module.utils = types.SimpleNamespace(make_grid=None)
                sys.modules["torchvision.utils"] = module.utils
            sys.modules[name] = module


def official_model(checkout: Path, pipe, reduced: bool):
    """The official LatentDiffusion from its yaml, holding ``pipe``'s U-Net and VAE weights (text encoder left out)."""
    from omegaconf import OmegaConf

    _stub_unused_imports()
    sys.path.insert(0, str(checkout))
    from utils.utils import instantiate_from_config  # official

    cfg = OmegaConf.load(checkout / CONFIG)
    unet_cfg, vae_cfg = pipe.unet.config, pipe.vae.config
    params = cfg.model.params
    params.unet_config.params.use_checkpoint = False  # a training-time memory saver; inference runs no backward
    if reduced:
        params.unet_config.params.update(model_channels=unet_cfg.model_channels, num_head_channels=unet_cfg.head_channels,
                                         context_dim=unet_cfg.context_dim)
        params.first_stage_config.params.ddconfig.ch = vae_cfg.base_channels
    params.cond_stage_config = OmegaConf.create({"target": "torch.nn.Identity"})  # embeddings are given
    model = instantiate_from_config(cfg.model)
    model.model.diffusion_model.load_state_dict(videocrafter.to_official(pipe.unet), strict=True)
    model.first_stage_model.load_state_dict(vae_layouts.vdlearn_to_ldm(pipe.vae.state_dict(), vae_cfg), strict=True)
    return model.eval()


def official_sample(model, cond, uncond, x_T, steps: int, eta: float, guidance: float, fps: int) -> torch.Tensor:
    """The run script's ``batch_ddim_sampling`` with given embeddings: frames ``(b, 3, T, H, W)`` in [-1, 1]."""
    from lvdm.models.samplers.ddim import DDIMSampler  # official

    class Sampler(DDIMSampler):  # the official one moves its buffers to "cuda" whatever the model's device
        def register_buffer(self, name, attr):
            if isinstance(attr, torch.Tensor):
                attr = attr.to(model.device)
            setattr(self, name, attr)

    fps = torch.full((x_T.shape[0],), fps, device=model.device, dtype=torch.long)
    c, uc = {"c_crossattn": [cond], "fps": fps}, {"c_crossattn": [uncond], "fps": fps}
    samples, _ = Sampler(model).sample(S=steps, conditioning=c, batch_size=x_T.shape[0], shape=list(x_T.shape[1:]),
                                       verbose=False, unconditional_guidance_scale=guidance, unconditional_conditioning=uc,
                                       eta=eta, temporal_length=x_T.shape[2], x_T=x_T, clean_cond=True)
    return model.decode_first_stage_2DAE(samples)


def text_and_noise(pipe, frames: int, height: int, width: int):
    """What both sides sample from: the two text embeddings ``(1, 77, d)`` (the text encoder runs once before
    sampling on both sides, so it is left out) and ``x_T (1, 4, T, H/8, W/8)``."""
    g = torch.Generator().manual_seed(123)
    d = pipe.unet.config.context_dim
    cond, uncond = torch.randn(1, 77, d, generator=g), torch.randn(1, 77, d, generator=g)
    return cond, uncond, torch.randn(1, 4, frames, height // 8, width // 8, generator=g)


def vdlearn_rows(pipe, device: torch.device, dtype: torch.dtype, call: dict, seed: int | None = None) -> list:
    """vdlearn's rows: plain, with model offload, and with offload plus 1-frame decoding. Each row's function
    gives ``(frames (b, T, H, W, 3) in [0, 1] or None, peak GiB, seconds)``; ``call`` holds the pipeline's
    arguments (tensors are cast to ``dtype``), ``seed`` a generator seed for each call."""
    def run(saver):
        pipe.to("cpu" if saver else device, dtype=dtype)
        if saver:
            pipe.enable_model_cpu_offload(device)
        kwargs = {k: v.to(dtype) if isinstance(v, torch.Tensor) else v for k, v in call.items()}
        if seed is not None:
            kwargs["generator"] = torch.Generator().manual_seed(seed)
        out = pipe(**kwargs, output_type="np", decode_chunk_size=1 if saver == "offload + 1 frame" else None).frames
        pipe.to("cpu")  # also ends the offloading
        return out

    name = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32")
    return [(label, lambda saver=saver: measure(lambda: run(saver), device))
            for label, saver in ((f"vdlearn, {name}", None), (f"vdlearn, {name}, model offload", "offload"),
                                 (f"vdlearn, {name}, model offload + 1 frame", "offload + 1 frame"))]


def print_table(rows: list) -> None:
    """One line per row as it finishes: peak memory, time, the largest difference from the first row's frames."""
    print(f"{'run':<44} {'peak GPU memory':>16} {'time':>9} {'max |frames - official fp32|':>29}")
    reference = None
    for label, fn in rows:
        out, peak, seconds = fn()
        if out is None:
            print(f"{label:<44} {'out of memory':>16}")
            continue
        reference = out if reference is None else reference
        memory = f"{'n/a (CPU)':>16}" if math.isnan(peak) else f"{peak:12.2f} GiB"
        print(f"{label:<44} {memory} {seconds:8.1f}s {float(np.abs(out - reference).max()):29.2e}", flush=True)


def lavie_main(args, device: torch.device) -> None:
    """``--model lavie_base``: the official base pipeline (in ``--official-python``) beside vdlearn's."""
    from vdlearn.pretrained import lavie
    from vdlearn.pretrained.vae_layouts import diffusers_kwargs, vdlearn_to_diffusers

    height, width, frames = (64, 64, 4) if args.reduced else (320, 512, 16)
    guidance, seed = 7.5, 321
    pipe = random_lavie_base(args.reduced, unet_overrides=LAVIE_REDUCED["vdlearn"] if args.reduced else None)
    pipe.set_progress_bar_config(disable=True)
    cond, uncond, x_T = text_and_noise(pipe, frames, height, width)
    dtypes = ["float32", "float16"] if device.type == "cuda" else ["float32"]  # fp16 convolutions need a GPU
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        unet_config = {**LAVIE_SD14_UNET, **(LAVIE_REDUCED["official"] if args.reduced else {})}
        folder.joinpath("config.json").write_text(json.dumps({
            "unet": unet_config, "vae": diffusers_kwargs(pipe.vae.config), "height": height, "width": width,
            "frames": frames, "steps": args.steps, "guidance_scale": guidance, "generator_seed": seed}))
        torch.save(lavie.to_official(pipe.unet), folder / "unet.pt")
        torch.save(vdlearn_to_diffusers(pipe.vae.state_dict(), pipe.vae.config), folder / "vae.pt")
        torch.save({"cond": cond, "uncond": uncond, "x_T": x_T}, folder / "inputs.pt")
        subprocess.run([str(args.official_python), str(HERE / "official_lavie_worker.py"), "--official",
                        str(args.official), "--inputs", tmp, "--device", str(device), "--dtypes", *dtypes], check=True)
        official = {name: torch.load(folder / f"official_{name}.pt", weights_only=True) for name in dtypes}

    def official_row(r):  # measured by the worker; uint8 frames (b, T, H, W, 3)
        return (None if r["frames"] is None else r["frames"].float().numpy() / 255), r["peak"], r["seconds"]

    rows = [(f"official, {n.replace('float', 'fp')} ({'its sample script' if n == 'float16' else 'model in fp32'})",
             lambda r=official[n]: official_row(r)) for n in dtypes]
    call = {"prompt_embeds": cond, "negative_prompt_embeds": uncond, "latents": x_T, "height": height, "width": width,
            "num_frames": frames, "num_inference_steps": args.steps, "guidance_scale": guidance}
    rows += vdlearn_rows(pipe, device, getattr(torch, dtypes[-1]), call, seed=seed)
    print(f"LaVie base ({'random weights, reduced width' if args.reduced else 'random weights'}), "
          f"{height}x{width}x{frames}, {args.steps} DDPM steps, cfg {guidance}, on {describe_device(device)}; "
          f"text encoder not included; official: its own process")
    print_table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="videocrafter2_t2v_512", choices=["videocrafter2_t2v_512", "lavie_base"])
    parser.add_argument("--official", required=True, type=Path,
                        help="a checkout of AILab-CVC/VideoCrafter (or of Vchitect/LaVie with --model lavie_base)")
    parser.add_argument("--official-python", type=Path, default=Path(sys.executable),
                        help="--model lavie_base: the Python of an environment with LaVie's pinned diffusers 0.16.0")
    parser.add_argument("--reduced", action="store_true", help="reduced width at 64x64x4: runs anywhere")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=10, help="sampler steps (memory does not depend on them)")
    parser.add_argument("--eta", type=float, default=0.0)
    args = parser.parse_args()
    device = get_device(args.device)
    if args.model == "lavie_base":
        if not (args.official / LAVIE_UNET).is_file():
            parser.error(f"--official {args.official}: no {LAVIE_UNET} there; pass a checkout of Vchitect/LaVie")
        return lavie_main(args, device)
    if not (args.official / CONFIG).is_file():
        parser.error(f"--official {args.official}: no {CONFIG} there; pass a checkout of AILab-CVC/VideoCrafter")

    spec = PRETRAINED["videocrafter2_t2v_512"]
    s = spec.sampling
    height, width, frames = (64, 64, 4) if args.reduced else (s.height, s.width, s.num_frames)
    if args.reduced:
        spec = spec.replace(**OFFICIAL_REDUCED)
    pipe = random_pipeline(spec)  # fp32, on the CPU
    pipe.set_progress_bar_config(disable=True)
    cond, uncond, x_T = text_and_noise(pipe, frames, height, width)
    official = official_model(args.official, pipe, args.reduced)

    def official_row(dtype):
        official.to(device=device, dtype=dtype)
        out, peak, seconds = measure(lambda: official_sample(
            official, cond.to(device, dtype), uncond.to(device, dtype), x_T.to(device, dtype), args.steps, args.eta,
            s.guidance_scale, s.fps), device)
        official.to("cpu")
        if out is not None:
            out = ((out.float().cpu() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1).numpy()  # (b, T, H, W, 3) in [0, 1]
        return out, peak, seconds

    half = torch.float16 if device.type == "cuda" else torch.float32  # fp16 convolutions need a GPU
    rows = [("official, fp32 (its run script)", lambda: official_row(torch.float32))]
    if half == torch.float16:
        rows.append(("official, fp16 (model.half())", lambda: official_row(half)))
    call = {"prompt_embeds": cond, "negative_prompt_embeds": uncond, "latents": x_T, "height": height, "width": width,
            "num_frames": frames, "num_inference_steps": args.steps, "eta": args.eta,
            "guidance_scale": s.guidance_scale, "fps": s.fps}
    rows += vdlearn_rows(pipe, device, half, call)
    print(f"VideoCrafter2 ({'random weights, reduced width' if args.reduced else 'random weights'}), "
          f"{height}x{width}x{frames}, {args.steps} DDIM steps, eta {args.eta}, cfg {s.guidance_scale}, "
          f"on {describe_device(device)}; text encoder not included")
    print_table(rows)


if __name__ == "__main__":
    main()
