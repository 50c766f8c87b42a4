r"""A tiny convolutional denoiser for single toy frames, and the few-line loop that trains it.

Taught in ``notebooks/03_diffusion_basics.ipynb``: it is the smallest network that
makes the diffusion maths visible on real pictures, and it trains on a CPU in
minutes. The real video U-Net comes in notebook 04 (:mod:`vdlearn.models.unet`).

The shape is a miniature of the DDPM U-Net (Ho et al. 2020, appendix B):

* the timestep enters through a sinusoidal embedding (Vaswani et al. 2017, as in
  DDPM) and an MLP, and is added to the features inside every residual block;
* an encoder halves the resolution twice (32 -> 16 -> 8), a decoder doubles it back,
  and skip connections carry the fine detail across;
* GroupNorm + SiLU + 3x3 convolutions; the last convolution starts at zero, so the
  untrained network predicts 0 (for v-prediction: $\hat x_0 = \sqrt{\bar\alpha_t}\,x_t$, a calm start).

With the default ``channels=16`` it has about 0.2 M parameters. It follows the
:class:`~vdlearn.diffusion.denoiser.Denoiser` interface; videos ``(b, c, t, h, w)`` are
denoised frame by frame. It is unconditional.

A checkpoint trained for longer ships in ``data/`` (:func:`load_tiny_denoiser`);
``python -m vdlearn.diffusion.tiny_denoiser`` reproduces it (see its json sidecar).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from vdlearn.diffusion.losses import diffusion_loss
from vdlearn.diffusion.schedules import NoiseSchedule, ScheduleConfig
from vdlearn.io import (
    artifact_meta,
    data_dir,
    load_checkpoint,
    load_state_dict_checked,
    save_checkpoint,
)

#: The shipped checkpoint (``data/tiny_denoiser_toy32.safetensors`` + ``.json``), made by :func:`main`.
CHECKPOINT_NAME = "tiny_denoiser_toy32"


@dataclass
class TinyDenoiserConfig:
    in_channels: int = 3  # RGB frames (4 for VAE latents)
    channels: int = 16  # width at full resolution; 2x after the first downsampling
    levels: int = 3  # resolutions: 32, 16, 8 for a 32x32 input (input size must divide by 2**(levels-1))
    time_dim: int = 128  # width of the timestep embedding
    groups: int = 8  # GroupNorm groups


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    r"""Sinusoidal embedding ``(b, dim)`` of integer timesteps ``(b,)``: $[\cos(t\omega_i), \sin(t\omega_i)]$.

    $\omega_i = \text{max\_period}^{-i/(dim/2)}$: frequencies from 1 down to 1/max_period.
    """
    half = dim // 2
    # $\omega_i = \exp(-\ln(\text{max\_period})\, i / \text{half})$
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # (b, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)  # (b, dim)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the time embedding added in between; residual."""

    def __init__(self, c_in: int, c_out: int, time_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(time_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (b, c_out, h, w)
        h = h + self.time(emb)[:, :, None, None]  # add the timestep, broadcast over pixels
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class TinyDenoiser(nn.Module):
    """A small 2D U-Net: ``model(x (b, c, h, w) or (b, c, t, h, w), timesteps (b,)) -> same shape``."""

    def __init__(self, config: TinyDenoiserConfig | None = None, **overrides):
        super().__init__()
        config = config or TinyDenoiserConfig()
        if overrides:
            config = TinyDenoiserConfig(**{**config.__dict__, **overrides})
        self.config = c = config
        widths = [c.channels * min(2**i, 2) for i in range(c.levels)]  # e.g. 32, 64, 64
        self.time_mlp = nn.Sequential(nn.Linear(c.time_dim, c.time_dim), nn.SiLU(), nn.Linear(c.time_dim, c.time_dim))
        self.conv_in = nn.Conv2d(c.in_channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i, w in enumerate(widths):
            self.down.append(ResBlock(widths[i - 1] if i else widths[0], w, c.time_dim, c.groups))
            if i < len(widths) - 1:
                self.downsample.append(nn.Conv2d(w, w, 3, stride=2, padding=1))
        self.mid = ResBlock(widths[-1], widths[-1], c.time_dim, c.groups)
        self.up = nn.ModuleList()
        for i in reversed(range(len(widths))):
            c_in = (widths[i + 1] if i < len(widths) - 1 else widths[-1]) + widths[i]  # upsampled + skip
            self.up.append(ResBlock(c_in, widths[i], c.time_dim, c.groups))
        self.norm_out = nn.GroupNorm(c.groups, widths[0])
        self.conv_out = nn.Conv2d(widths[0], c.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, **cond: torch.Tensor | None) -> torch.Tensor:
        given = [k for k, v in cond.items() if v is not None]
        if given:
            raise ValueError(f"TinyDenoiser is unconditional, but got conditioning {given}.")
        if x.ndim == 5:  # (b, c, t, h, w): denoise each frame on its own
            b, ch, f, h, w = x.shape
            frames = x.permute(0, 2, 1, 3, 4).reshape(b * f, ch, h, w)  # (b*t, c, h, w)
            out = self.forward(frames, timesteps.repeat_interleave(f))
            return out.reshape(b, f, ch, h, w).permute(0, 2, 1, 3, 4)
        if x.ndim != 4:
            raise ValueError(f"Expected (b, c, h, w) or (b, c, t, h, w), got shape {tuple(x.shape)}.")
        factor = 2 ** (self.config.levels - 1)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"Height and width must be multiples of {factor}, got {tuple(x.shape[-2:])}.")
        emb = self.time_mlp(timestep_embedding(timesteps, self.config.time_dim))  # (b, time_dim)
        h = self.conv_in(x)  # (b, c0, H, W)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)  # halve the resolution
        h = self.mid(h, emb)
        for block in self.up:
            skip = skips.pop()
            if h.shape[-1] != skip.shape[-1]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")  # double the resolution
            h = block(torch.cat([h, skip], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))


def train_denoiser(
    model: nn.Module,
    data: torch.Tensor | Callable[[int, torch.Generator], torch.Tensor],
    schedule: NoiseSchedule,
    *,
    steps: int = 1000,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    log_every: int = 10,
) -> list[float]:
    """Train ``model`` with :func:`~vdlearn.diffusion.losses.diffusion_loss`; returns the loss every ``log_every`` steps.

    ``data`` is a tensor of clean samples ``(n, ...)`` in [-1, 1] (random minibatches are
    drawn from it) or a function ``(batch_size, generator) -> (batch_size, ...)``.
    Adam with a cosine learning-rate decay and gradient clipping at 1: the plainest
    recipe that works. The full trainers of the course live in ``vdlearn.training``.
    """
    generator = torch.Generator().manual_seed(seed)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1), eta_min=lr * 0.05)
    history: list[float] = []
    running = 0.0
    for step in tqdm(range(steps), desc="training", disable=not progress, leave=False):
        if callable(data):
            x0 = data(batch_size, generator)
        else:
            idx = torch.randint(0, data.shape[0], (batch_size,), generator=generator)
            x0 = data[idx]
        x0 = x0.to(device)
        loss = diffusion_loss(model, x0, schedule, generator=generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running += loss.item()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            history.append(running / ((step % log_every) + 1))
            running = 0.0
    model.eval()
    return history


def toy_frames(world_preset: str = "toy32", seed: int = 0, pool: int = 100_000) -> Callable[[int, torch.Generator], torch.Tensor]:
    """A data function for :func:`train_denoiser`: random high-quality still frames of the toy world."""
    from vdlearn.data import ToyWorld

    world = ToyWorld(world_preset, seed=seed)

    def draw(batch_size: int, generator: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, pool, (batch_size,), generator=generator).tolist()
        return world.images(idx)["image"]  # (b, 3, h, w) in [-1, 1]

    return draw


def save_tiny_denoiser(path: str | Path, model: TinyDenoiser, schedule: NoiseSchedule, **meta) -> Path:
    """Write the model and the schedule it was trained with (safetensors + json sidecar)."""
    config = {"model": dataclasses.asdict(model.config), "schedule": dataclasses.asdict(schedule.config)}
    return save_checkpoint(path, model.state_dict(), artifact_meta(config=config, **meta))


def load_tiny_denoiser(
    path: str | Path | None = None, device: str | torch.device = "cpu"
) -> tuple[TinyDenoiser, NoiseSchedule]:
    """Load a saved tiny denoiser and its schedule; default: the shipped ``data/tiny_denoiser_toy32``."""
    path = Path(path) if path is not None else data_dir() / f"{CHECKPOINT_NAME}.safetensors"
    state, meta = load_checkpoint(path, device=device)
    if "config" not in meta:
        raise ValueError(f"{path} has no json sidecar with a config; it was not written by save_tiny_denoiser.")
    model = TinyDenoiser(TinyDenoiserConfig(**meta["config"]["model"]))
    load_state_dict_checked(model, state, what=str(path))
    schedule = NoiseSchedule(ScheduleConfig(**meta["config"]["schedule"]))
    return model.to(device).eval(), schedule.to(device)


def main(argv: list[str] | None = None) -> Path:
    """Train the tiny denoiser on toy frames and save it: ``python -m vdlearn.diffusion.tiny_denoiser``."""
    parser = argparse.ArgumentParser(description="Train notebook 03's tiny denoiser on toy-world frames.")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--schedule", default="toy", help="a schedule preset of vdlearn.diffusion")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=str(data_dir() / CHECKPOINT_NAME))
    args = parser.parse_args(argv)

    from vdlearn.device import get_device

    device = get_device(args.device)
    torch.manual_seed(args.seed)
    schedule = NoiseSchedule(args.schedule)
    model = TinyDenoiser(channels=args.channels)
    start = time.time()
    history = train_denoiser(model, toy_frames(seed=args.seed), schedule, steps=args.steps,
                             batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=device, log_every=100)
    minutes = (time.time() - start) / 60
    tail = history[-5:]
    command = "python -m vdlearn.diffusion.tiny_denoiser " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "device"))
    path = save_tiny_denoiser(
        args.out, model.cpu(), schedule,
        metrics={"final_loss": sum(tail) / len(tail), "loss_every_100_steps": history, "train_minutes": minutes},
        command=command, training={k: v for k, v in vars(args).items() if k != "out"},
    )
    print(f"saved {path} after {minutes:.1f} min; final loss {sum(tail) / len(tail):.4f}")
    return path


if __name__ == "__main__":
    main()
