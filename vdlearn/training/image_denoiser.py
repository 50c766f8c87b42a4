r"""Notebook 03's image denoiser: the video U-Net's ``toy_image`` preset, trained on toy frames.

The network is :class:`~vdlearn.models.unet.VideoUNet`, the class of notebooks 04-10
(VideoCrafter1's denoising 3D U-Net, arXiv 2310.19512), with the ``toy_image`` preset:
no temporal layers, no fps embedding, no text, so it is the image U-Net a video model
starts from, and an image is a video of one frame, ``(b, 3, 1, 32, 32)``. It learns
DDPM's objective (Ho et al. 2020, eq. 14) with the toy schedule's $v$ target (Salimans &
Ho 2022) on the toy world's high-quality still images, unconditionally.

It trains through the course's one loop (:class:`~vdlearn.training.trainer.Trainer`) as a
task, :class:`ImageDenoiserTask`: ``batch`` draws the step's frames, a timestep and the
noise per frame; ``loss`` is :func:`vdlearn.diffusion.diffusion_loss`. The loop brings
checkpoints, exact ``--resume``, the NaN stop and the EMA; the result is the EMA weights,
``OUT/denoiser.safetensors``, with a json sidecar (config, metrics, commit, hardware,
training time and the command that reproduces it). The shipped copy,
``data/diffusion/toy_image_denoiser.safetensors`` (:func:`load_image_denoiser`), is that
file of the run its json names, stored in float16 and measured again (:mod:`vdlearn.shipping`)::

    vdlearn train denoiser --out runs/denoiser
    vdlearn ship runs/denoiser/denoiser.safetensors data/diffusion/toy_image_denoiser.safetensors

Its recorded figure is :func:`heldout_loss`: the loss on test-split frames, at ten fixed
timesteps (one per tenth of the schedule) with fixed noise. Taught in ``notebooks/03_diffusion_basics.ipynb``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vdlearn.data import ToyWorld, WorldConfig
from vdlearn.diffusion import (
    NoiseSchedule,
    ScheduleConfig,
    diffusion_loss,
    sample_timesteps,
)
from vdlearn.io import (
    CheckpointMismatchError,
    artifact_meta,
    data_dir,
    git_commit,
    load_checkpoint,
    load_state_dict_checked,
    reproduce_command,
    save_checkpoint,
)
from vdlearn.models.unet import UNetConfig, VideoUNet
from vdlearn.training.trainer import (
    Trainer,
    TrainerConfig,
    add_loop_arguments,
)

#: The ``kind`` written into the json sidecar of every image denoiser, checked when loading.
CHECKPOINT_KIND = "vdlearn.image_denoiser"


def shipped_denoiser_path() -> Path:
    """Where the shipped image denoiser lives: ``data/diffusion/toy_image_denoiser.safetensors``."""
    return data_dir() / "diffusion" / "toy_image_denoiser.safetensors"


@dataclass
class ImageDenoiserTrainConfig:
    """One training run of the image denoiser (the shipped one: these defaults)."""

    preset: str = "toy_image"  # VideoUNet preset (image mode: in_channels 3, no temporal layers, no fps, no text)
    schedule: str = "toy"  # NoiseSchedule preset (cosine betas, v-prediction)
    world: str = "toy32"  # toy-world preset whose high-quality stills are the data
    world_seed: int = 0  # seed of the toy world
    pool: int = 100_000  # training frames are the world's train-split images 0..pool-1
    steps: int = 1000  # optimisation steps
    batch_size: int = 32  # frames per step (global, over all processes)
    lr: float = 2e-3  # peak learning rate (AdamW)
    warmup: int = 50  # linear warm-up steps
    min_lr_ratio: float = 0.05  # final learning rate as a fraction of the peak (cosine decay)
    grad_clip: float = 1.0  # gradient-norm clipping
    ema_decay: float = 0.995  # EMA of the weights; the written model is the EMA
    seed: int = 0  # seed of initialisation and of every random draw
    ckpt_every: int = 250  # training-state checkpoint interval (for --resume)
    log_every: int = 10  # OUT/log.csv row interval
    eval_frames: int = 256  # test-split frames behind the recorded held-out loss (0: skip)
    mixed_precision: str = "auto"  # "auto" (bf16 on GPUs that support it), "bf16", "no"
    device: str = "auto"  # "auto", "cpu", "cuda", "mps"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class ImageDenoiserTask:
    """The trainer's task: toy stills as one-frame videos, a timestep and noise each; the diffusion loss."""

    def __init__(self, world: ToyWorld, schedule: NoiseSchedule, batch_size: int, pool: int = 100_000):
        self.world, self.schedule, self.batch_size, self.pool = world, schedule, batch_size, pool

    def batch(self, step: int, generator: torch.Generator) -> dict:
        b = self.batch_size
        idx = torch.randint(0, self.pool, (b,), generator=generator).tolist()
        x0 = self.world.images(idx)["image"][:, :, None]  # (b, 3, 1, H, W): an image is a video of one frame
        t = sample_timesteps(b, self.schedule, generator=generator)  # (b,)
        noise = torch.randn(x0.shape, generator=generator)  # (b, 3, 1, H, W)
        return {"x0": x0, "t": t, "noise": noise}

    def loss(self, model: VideoUNet, batch: dict) -> torch.Tensor:
        dev = next(model.parameters()).device
        return diffusion_loss(model, batch["x0"].to(dev), self.schedule, t=batch["t"].to(dev),
                              noise=batch["noise"].to(dev))


def image_denoiser_task(cfg: ImageDenoiserTrainConfig) -> tuple[VideoUNet, ImageDenoiserTask]:
    """The seeded U-Net and the task of run ``cfg``."""
    torch.manual_seed(cfg.seed)
    model = VideoUNet.from_preset(cfg.preset)
    if model.config.has_temporal_layers or model.config.context_dim is not None:
        raise ValueError(f"The image denoiser is unconditional and per frame; preset {cfg.preset!r} has temporal "
                         f"layers, fps or text conditioning. Use 'toy_image' (or a preset without them).")
    world = ToyWorld(WorldConfig.preset(cfg.world), seed=cfg.world_seed)
    if world.config.size % 2 ** (len(model.config.channel_mult) - 1):
        raise ValueError(f"World {cfg.world!r} makes {world.config.size}-pixel frames, which preset {cfg.preset!r} "
                         f"cannot halve {len(model.config.channel_mult) - 1} times. Pick a matching --world.")
    if model.config.in_channels != 3:
        raise ValueError(f"The image denoiser works on RGB frames: preset {cfg.preset!r} takes "
                         f"{model.config.in_channels} input channels, expected 3.")
    return model, ImageDenoiserTask(world, NoiseSchedule(cfg.schedule), cfg.batch_size, cfg.pool)


def trainer_config(cfg: ImageDenoiserTrainConfig) -> TrainerConfig:
    """The loop's settings for ``cfg`` (AdamW, warm-up and cosine decay, clipping, EMA)."""
    return TrainerConfig(steps=cfg.steps, lr=cfg.lr, warmup=cfg.warmup, min_lr_ratio=cfg.min_lr_ratio,
                         grad_clip=cfg.grad_clip, ema_decay=cfg.ema_decay, mixed_precision=cfg.mixed_precision,
                         ckpt_every=cfg.ckpt_every, log_every=cfg.log_every, seed=cfg.seed, device=cfg.device)


# ============================================================================== the figure
@torch.no_grad()
def heldout_loss(model: VideoUNet, schedule: NoiseSchedule, n: int = 256, world: str = "toy32", world_seed: int = 0,
                 num_timesteps: int = 10, seed: int = 0, chunk: int = 64) -> dict:
    """The denoising loss on ``n`` test-split frames (never trained on), stratified over timesteps.

    Every frame is noised at the middle timestep of each of ``num_timesteps`` equal bins
    (50, 150, ..., 950 for 10), with noise from ``seed``: an estimate of the training
    objective (uniform ``t``) that depends on the model and the frames only. Returns the
    mean loss, the standard deviation over frames of each frame's mean (to size a margin
    for another draw of frames), ``n`` and the timesteps.
    """
    frames = ToyWorld(WorldConfig.preset(world), seed=world_seed).images(range(n), split="test")["image"]
    frames = frames[:, :, None]  # (n, 3, 1, H, W)
    n_t = schedule.num_train_timesteps
    steps = ((torch.arange(num_timesteps) + 0.5) * n_t / num_timesteps).long()  # (k,) bin middles
    gen = torch.Generator().manual_seed(seed)
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    per_frame = []
    for x0 in frames.split(chunk):
        losses = []
        for t in steps:
            noise = torch.randn(x0.shape, generator=gen)
            out = diffusion_loss(model, x0.to(dev), schedule, t=t.expand(len(x0)).to(dev), noise=noise.to(dev),
                                 return_details=True)
            losses.append(out.per_sample.float().cpu())  # (c,)
        per_frame.append(torch.stack(losses).mean(dim=0))  # (c,) each frame's mean over the timesteps
    model.train(was_training)
    per_frame = torch.cat(per_frame)  # (n,)
    return {"loss": float(per_frame.mean()), "per_frame_std": float(per_frame.std()), "n": n,
            "world_seed": world_seed, "timesteps": steps.tolist()}


# ============================================================================== files
def save_image_denoiser(path: str | Path, model: VideoUNet, schedule: NoiseSchedule, **meta) -> Path:
    """Write the U-Net and the schedule it was trained with (safetensors + json sidecar)."""
    config = {"unet": dataclasses.asdict(model.config), "schedule": dataclasses.asdict(schedule.config)}
    return save_checkpoint(path, model.state_dict(), artifact_meta(config=config, kind=CHECKPOINT_KIND, **meta))


def load_image_denoiser(path: str | Path | None = None,
                        device: str | torch.device = "cpu") -> tuple[VideoUNet, NoiseSchedule]:
    """An image denoiser and its schedule; default: the shipped ``data/diffusion/toy_image_denoiser``.

    The model carries its json sidecar as ``model.meta`` (config, metrics, command).
    """
    path = Path(path) if path is not None else shipped_denoiser_path()
    if not path.with_suffix(".safetensors").exists():
        raise FileNotFoundError(f"No image denoiser at {path}. Train one with `vdlearn train denoiser --out "
                                f"runs/denoiser` and pass runs/denoiser/denoiser.safetensors.")
    state, meta = load_checkpoint(path)
    if meta.get("kind") != CHECKPOINT_KIND:
        raise CheckpointMismatchError(f"{path} is not an image denoiser (its json sidecar has kind="
                                      f"{meta.get('kind')!r}, expected {CHECKPOINT_KIND!r}); it was not written by "
                                      f"save_image_denoiser.")
    # fields this version of UNetConfig no longer has are left out; the strict weight check below
    # refuses the file if that changes the architecture
    known = {f.name for f in dataclasses.fields(UNetConfig)}
    model = VideoUNet(UNetConfig(**{k: v for k, v in meta["config"]["unet"].items() if k in known}))
    load_state_dict_checked(model, state, f"image denoiser {path}")
    model.meta = meta
    schedule = NoiseSchedule(ScheduleConfig(**meta["config"]["schedule"]))
    return model.to(device).eval(), schedule.to(device)


# ============================================================================== the run
def train_image_denoiser(cfg: ImageDenoiserTrainConfig, out: str | Path, resume: bool = False,
                         stop_at: int | None = None, progress: bool = True,
                         allow_changed_settings: bool = False) -> VideoUNet:
    """Train ``cfg`` and write ``OUT/denoiser.safetensors`` (the EMA weights); returns them, ``.meta`` attached.

    ``resume`` continues exactly from ``OUT/checkpoint.safetensors``; ``stop_at`` ends early at
    that step (checkpoint written, no ``denoiser.safetensors``), as an interruption would.
    """
    out = Path(out)
    commit = git_commit()  # the code that trains, recorded before the working tree can change
    model, task = image_denoiser_task(cfg)
    trainer = Trainer(model, task, trainer_config(cfg), out, progress=progress, name="image denoiser",
                      run_info={"image_denoiser_train_config": cfg.to_dict()},
                      allow_changed_settings=allow_changed_settings)
    cpu0 = time.process_time()
    trainer.fit(resume=resume, stop_at=stop_at)
    cpu_seconds = time.process_time() - cpu0  # this invocation's CPU time (wall time is trainer.seconds)
    final = trainer.ema_model().eval()
    if trainer.step < cfg.steps or not trainer.accelerator.is_main_process:
        return final
    every = max(1, len(trainer.history) // 200)
    metrics = {"final_loss": sum(trainer.history[-50:]) / len(trainer.history[-50:]), "steps": trainer.step,
               "loss_curve": [[s, loss] for s, loss in enumerate(trainer.history)][::every]}
    if cfg.eval_frames:
        untrained, _ = image_denoiser_task(cfg)  # the same initialisation, before any step
        metrics["heldout"] = heldout_loss(final, task.schedule, cfg.eval_frames, cfg.world, cfg.world_seed)
        metrics["heldout_untrained"] = heldout_loss(untrained.to(trainer.accelerator.device), task.schedule,
                                                    cfg.eval_frames, cfg.world, cfg.world_seed)
    path = save_image_denoiser(
        out / "denoiser.safetensors", final, task.schedule, metrics=metrics, commit=commit,
        command=trainer.honest_command(reproduce_command("vdlearn train denoiser", cfg, out)),
        train_config=cfg.to_dict(), settings_history=trainer.settings_history,
        training={"train_minutes": round(trainer.seconds / 60, 2), "cpu_minutes": round(cpu_seconds / 60, 2),
                  "resumed": resume, "device": str(trainer.accelerator.device),
                  "processes": trainer.accelerator.num_processes, "threads": torch.get_num_threads(),
                  "parameters": sum(p.numel() for p in final.parameters())},
    )
    final.meta = json.loads(path.with_suffix(".json").read_text())
    return final


# ============================================================================== command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``vdlearn train denoiser``: one per :class:`ImageDenoiserTrainConfig` field."""
    d = ImageDenoiserTrainConfig()
    add_loop_arguments(parser, d)
    parser.add_argument("--preset", default=d.preset, help="VideoUNet preset without temporal layers (toy_image)")
    parser.add_argument("--schedule", default=d.schedule, help="noise-schedule preset (toy: cosine, v-prediction)")
    parser.add_argument("--world", default=d.world, help="toy-world preset whose still images are the data")
    parser.add_argument("--world-seed", type=int, default=d.world_seed, help="seed of the toy world")
    parser.add_argument("--pool", type=int, default=d.pool, help="training images are indices 0..pool-1")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="frames per step")
    parser.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio, help="final / peak learning rate")
    parser.add_argument("--ema-decay", type=float, default=d.ema_decay, help="EMA decay (0: no EMA)")
    parser.add_argument("--eval-frames", type=int, default=d.eval_frames, help="held-out frames for the figure")
    parser.add_argument("--mixed-precision", default=d.mixed_precision, help="auto, bf16 or no")
    parser.epilog = "Example: vdlearn train denoiser --out runs/denoiser"


def main(args: argparse.Namespace) -> int:
    """``vdlearn train denoiser ...``: returns 0 on success (``vdlearn`` reports errors and exits with 2)."""
    fields = {f.name for f in dataclasses.fields(ImageDenoiserTrainConfig)}
    cfg = ImageDenoiserTrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    model = train_image_denoiser(cfg, args.out, resume=args.resume, progress=not args.quiet,
                                 allow_changed_settings=args.allow_changed_settings)
    print(f"wrote {Path(args.out) / 'denoiser.safetensors'}")
    heldout = model.meta["metrics"].get("heldout")
    if heldout:
        print(f"held-out loss {heldout['loss']:.4f} on {heldout['n']} test frames "
              f"(untrained: {model.meta['metrics']['heldout_untrained']['loss']:.4f})")
    return 0


__all__ = [
    "CHECKPOINT_KIND",
    "ImageDenoiserTask",
    "ImageDenoiserTrainConfig",
    "add_arguments",
    "heldout_loss",
    "image_denoiser_task",
    "load_image_denoiser",
    "main",
    "save_image_denoiser",
    "shipped_denoiser_path",
    "train_image_denoiser",
    "trainer_config",
]
