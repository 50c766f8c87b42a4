r"""Training the toy autoencoder, and fine-tuning its decoder on video.

Two jobs, one task:

1. **The per-frame KL autoencoder** (LDM, Rombach et al. 2022, sec. 3.1, appendix G).
   Each step takes a batch of *frames* from the toy world's training split, mixing
   clean video frames, low-quality video frames and high-quality still images (the
   data every later notebook encodes), and minimises

   $$\mathcal L = \overline{m\,(|x - \hat x| + w_2 (x - \hat x)^2)}
      + w_e\,|\nabla x - \nabla \hat x|_1
      + w_{kl}\,\frac{\mathrm{KL}(q(z|x)\,\|\,\mathcal N(0, I))}{\#\text{pixels}}$$

   with $\hat x = D(z)$, $z \sim q(z|x)$. LDM adds a perceptual (LPIPS) loss and a patch
   GAN; on 32x32 toy frames L1 + L2 plus an edge term (finite differences, sharpens
   outlines) is enough, and no network outside the project is needed. The weights $m$
   (normalised to mean 1) count object pixels ``1 + object_weight`` times: the object
   covers about 5% of a toy frame, and without the weights training spends a long time
   drawing only backgrounds. ``kl_weight``
   follows LDM's convention (sums per image; 1e-6 for KL-f8). At the end the latent
   scale factor is measured as LDM does: ``1 / std`` of sampled latents over a batch.

2. **The temporal decoder** (VideoGen, arXiv 2309.00398, "enhanced video decoder";
   SVD, Blattmann et al. 2023). Start from a trained autoencoder, add temporal layers
   (identity at init), freeze the encoder, and train the decoder on whole clips. The
   latents are perturbed by ``sigma * eps`` in scaled units, ``sigma ~ U(0, latent_noise)``,
   because a diffusion model's latents are never exact; the loss adds an L1 term on
   frame differences, which is what flicker violates. ``--finetune-decoder`` without
   ``--temporal-decoder`` runs the same recipe on the per-frame decoder: the control
   that shows what the temporal layers themselves add.

Both train through the course's one loop, :class:`~vdlearn.training.trainer.Trainer`, as
one task (:class:`VAETask`: ``batch`` draws the frames or clips and every random number of
the step; ``loss`` is :func:`vae_loss`). The loop writes ``OUT/checkpoint.safetensors``
(+ json) every ``--ckpt-every`` steps, ``--resume`` continues bit-for-bit (same batches,
same losses), and a NaN/inf loss stops the run with
:class:`~vdlearn.training.trainer.TrainingDiverged`, the last good checkpoint untouched.
The result is ``OUT/vae.safetensors`` (+ json with config, metrics, commit and command).
The shipped ``data/vae/`` models were trained by this recipe (same losses, optimizer and
schedule) before the loop was shared; each step's random draws now come from the loop's
``(seed, step)`` generator, so their recorded command gives a model of the same recipe,
not the same bits.

    vdlearn train vae --preset toy32 --steps 5000 --out runs/vae
    vdlearn train vae --temporal-decoder --vae runs/vae/vae.safetensors --steps 600 --out runs/vae_t

Taught in ``notebooks/02_latent_space.ipynb``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vdlearn.device import describe_device, get_device
from vdlearn.io import reproduce_command
from vdlearn.models.vae import AutoencoderKL, DiagonalGaussian, VAEConfig
from vdlearn.training.trainer import (
    Trainer,
    TrainerConfig,
    add_loop_arguments,
)


@dataclass
class VAETrainConfig:
    """One training run of the autoencoder (or of its decoder, on video)."""

    preset: str = "toy32"  # VAE preset to build (ignored when --vae gives a starting model)
    world: str | None = None  # toy-world preset; None: the one whose frame size matches the VAE ("toy32"/"toy64")
    world_seed: int = 0  # seed of the toy world
    steps: int = 5000  # total optimisation steps (a resumed run continues up to this number)
    batch_frames: int = 16  # frames per step (per-frame training)
    frames_per_clip: int = 4  # frames taken from each sampled clip (per-frame training)
    mix: tuple[float, float, float] = (0.5, 0.25, 0.25)  # shares of clean video frames, low-quality frames, HQ images
    lr: float | None = None  # peak learning rate (AdamW); None: 2e-3 from scratch, 5e-4 for decoder fine-tuning
    min_lr: float = 1e-5  # learning rate at the end of the cosine decay
    warmup: int = 100  # linear warm-up steps
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 1.0  # clip the gradient norm (0: off)
    kl_weight: float = 1e-6  # weight of the KL term, LDM convention (per-image sums)
    l2_weight: float = 1.0  # weight of the squared error next to the L1 error
    edge_weight: float = 0.5  # weight of the L1 loss on horizontal/vertical pixel differences
    object_weight: float = 8.0  # object pixels count 1 + this much (the object is ~5% of a toy frame)
    seed: int = 0  # seed of initialisation and of every random draw of the run
    ckpt_every: int = 500  # write OUT/checkpoint.safetensors every this many steps
    log_every: int = 25  # append a row to OUT/log.csv (and refresh the progress bar) this often
    device: str = "auto"  # "auto", "cpu", "cuda", "mps"
    eval_clips: int = 64  # held-out clean clips for the final PSNR / adherence (0: skip)
    # --- decoder fine-tuning on video (temporal decoder, or the per-frame control)
    vae: str | None = None  # trained autoencoder to start from (required for decoder fine-tuning)
    temporal_decoder: bool = False  # add temporal layers to the decoder and train them (encoder frozen)
    finetune_decoder: bool = False  # train the decoder on video with the encoder frozen (implied by temporal_decoder)
    train_spatial: bool = True  # decoder fine-tuning: also update the decoder's per-frame layers
    clips_per_batch: int = 6  # decoder fine-tuning: clips per step
    clip_frames: int = 8  # decoder fine-tuning: frames per clip (a random window of the world's clips)
    lowq_fraction: float = 0.25  # decoder fine-tuning: share of low-quality clips
    latent_noise: float = 0.2  # decoder fine-tuning: sigma ~ U(0, latent_noise) added to scaled latents
    temporal_weight: float = 1.0  # decoder fine-tuning: weight of the L1 loss on frame differences

    @property
    def peak_lr(self) -> float:
        """The peak learning rate: ``lr``, or the default of the run's kind."""
        if self.lr is not None:
            return self.lr
        return 5e-4 if self.video_mode else 2e-3

    @property
    def video_mode(self) -> bool:
        """True when the run fine-tunes a decoder on clips rather than training on frames."""
        return self.temporal_decoder or self.finetune_decoder

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["mix"] = list(self.mix)
        return d


# =============================================================================== data
def _world_for(cfg: VAETrainConfig, vae_cfg: VAEConfig):
    from vdlearn.data import ToyWorld, WorldConfig

    name = cfg.world or ("toy64" if vae_cfg.resolution == 64 else "toy32")
    world = ToyWorld(WorldConfig.preset(name), seed=cfg.world_seed)
    if vae_cfg.resolution is not None and world.config.size != vae_cfg.resolution:
        raise ValueError(
            f"The world preset {name!r} makes {world.config.size}x{world.config.size} frames but the VAE "
            f"preset {vae_cfg.name!r} expects {vae_cfg.resolution}x{vae_cfg.resolution}. Pass a matching --world."
        )
    return world


def _indices(n: int, gen: torch.Generator) -> list[int]:
    return torch.randint(0, 2**31 - 1, (n,), generator=gen).tolist()


def sample_frames(world, n: int, mix: tuple[float, float, float], frames_per_clip: int,
                  gen: torch.Generator, split: str = "train") -> torch.Tensor:
    """``(n, 3, H, W)`` frames in [-1, 1]: clean video frames, low-quality frames and HQ images, by ``mix``."""
    n_clean = round(n * mix[0] / sum(mix))
    n_lowq = round(n * mix[1] / sum(mix))
    n_image = n - n_clean - n_lowq
    parts = []
    for regime, count in (("clean", n_clean), ("lowq", n_lowq)):
        if count == 0:
            continue
        clips = math.ceil(count / frames_per_clip)
        video = world.batch(_indices(clips, gen), split=split, regime=regime)["video"]  # (c, 3, T, H, W)
        t_pick = torch.randint(0, video.shape[2], (clips, frames_per_clip), generator=gen)  # (c, k)
        frames = video[torch.arange(clips)[:, None], :, t_pick]  # (c, k, 3, H, W)
        parts.append(frames.flatten(0, 1)[:count])
    if n_image:
        parts.append(world.images(_indices(n_image, gen), split=split)["image"])  # (m, 3, H, W)
    return torch.cat(parts)


def sample_clips(world, n: int, frames: int, lowq_fraction: float, gen: torch.Generator,
                 split: str = "train") -> torch.Tensor:
    """``(n, 3, frames, H, W)`` windows of clean and low-quality clips."""
    n_lowq = round(n * lowq_fraction)
    parts = []
    for regime, count in (("clean", n - n_lowq), ("lowq", n_lowq)):
        if count:
            parts.append(world.batch(_indices(count, gen), split=split, regime=regime)["video"])
    video = torch.cat(parts)  # (n, 3, T, H, W)
    frames = min(frames, video.shape[2])
    start = torch.randint(0, video.shape[2] - frames + 1, (1,), generator=gen).item()
    return video[:, :, start : start + frames]


# =============================================================================== losses
def edge_l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between the horizontal and vertical pixel differences of ``x`` and ``y``."""
    dx = (x[..., :, 1:] - x[..., :, :-1]) - (y[..., :, 1:] - y[..., :, :-1])
    dy = (x[..., 1:, :] - x[..., :-1, :]) - (y[..., 1:, :] - y[..., :-1, :])
    return 0.5 * (dx.abs().mean() + dy.abs().mean())


def object_weights(x: torch.Tensor, strength: float) -> torch.Tensor:
    """Per-pixel loss weights ``1 + strength * m`` where ``m`` in [0, 1] marks what is not background.

    The toy world's backgrounds are smooth vertical gradients, so each row's median is a
    good background estimate (the motion tracker uses the same idea); a pixel 0.2 (in
    [-1, 1] units) or more away from it counts fully as object. Shape ``x.shape`` with 1 channel.
    """
    background = x.median(dim=-1, keepdim=True).values  # one colour per row
    distance = (x - background).abs().amax(dim=1, keepdim=True)  # (n, 1, ..., H, W)
    return 1.0 + strength * (distance / 0.2).clamp(0, 1)


def vae_loss(x: torch.Tensor, recon: torch.Tensor, posterior: DiagonalGaussian | None,
             cfg: VAETrainConfig, weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The training loss and its parts; ``x``/``recon`` are frames ``(n, 3, H, W)`` or clips ``(b, 3, t, H, W)``.

    ``weight``: per-pixel weights ``(n, 1, ...)`` of mean 1 (:func:`object_weights` divided by
    their mean over the global batch); computed from ``x`` when not given.
    """
    if weight is None:
        weight = object_weights(x, cfg.object_weight) if cfg.object_weight else torch.ones_like(x[:, :1])
        weight = weight / weight.mean()
    err = recon - x
    rec = (weight * (err.abs() + cfg.l2_weight * err.pow(2))).mean()  # weighted mean error
    edge = edge_l1(recon, x)
    loss = rec + cfg.edge_weight * edge
    out = {"rec": rec, "edge": edge, "l1": err.abs().mean().detach()}
    if posterior is not None:
        pixels_per_image = x[0].numel()
        kl = posterior.kl().mean() / pixels_per_image  # LDM: KL summed per image; here per pixel
        loss = loss + cfg.kl_weight * kl
        out["kl"] = kl
    if x.dim() == 5 and x.shape[2] > 1:  # frame-to-frame changes must match too
        dt = (recon[:, :, 1:] - recon[:, :, :-1]) - (x[:, :, 1:] - x[:, :, :-1])
        out["temporal"] = dt.abs().mean()
        loss = loss + cfg.temporal_weight * out["temporal"]
    out["loss"] = loss
    return out


# =============================================================================== the task
class VAETask:
    """The trainer's task: the step's frames (or clips) and noise, and :func:`vae_loss` on a shard of them."""

    def __init__(self, world, cfg: VAETrainConfig, vae_config: VAEConfig):
        self.world, self.cfg, self.vae_config = world, cfg, vae_config

    def batch(self, step: int, generator: torch.Generator) -> dict:
        cfg = self.cfg
        noise = offset = None
        if not cfg.video_mode:
            x = sample_frames(self.world, cfg.batch_frames, cfg.mix, cfg.frames_per_clip, generator)  # (n, 3, H, W)
            latent = self.vae_config.latent_shape(*x.shape[-2:])  # (z, h, w)
            noise = torch.randn((x.shape[0], *latent), generator=generator)  # eps of z = mu + sigma * eps
        else:
            x = sample_clips(self.world, cfg.clips_per_batch, cfg.clip_frames, cfg.lowq_fraction, generator)
            z, h, w = self.vae_config.latent_shape(*x.shape[-2:])
            sigma = torch.rand(x.shape[0], generator=generator) * cfg.latent_noise  # (b,) one noise level per clip
            eps = torch.randn((x.shape[0], z, x.shape[2], h, w), generator=generator)  # (b, z, t, h, w)
            offset = sigma.view(-1, 1, 1, 1, 1) * eps  # added to the scaled latents: a diffusion model's are never exact
        weight = object_weights(x, cfg.object_weight) if cfg.object_weight else torch.ones_like(x[:, :1])
        # normalised over the global batch, so that shards on several processes add up to the same loss
        return {"x": x, "weight": weight / weight.mean(), "noise": noise, "offset": offset}

    def loss(self, model: AutoencoderKL, batch: dict) -> torch.Tensor:
        dev = next(model.parameters()).device
        x = batch["x"].to(dev)
        if self.cfg.video_mode:  # frozen encoder, posterior mean, perturbed latents, decoder trained
            recon, _ = model(x, sample=False, latent_offset=batch["offset"].to(dev))
            posterior = None
        else:  # z ~ q(z|x) with the step's noise
            recon, posterior = model(x, noise=batch["noise"].to(dev))
        return vae_loss(x, recon, posterior, self.cfg, weight=batch["weight"].to(dev))["loss"]


def _build(cfg: VAETrainConfig, device: torch.device) -> AutoencoderKL:
    """The model to train: a fresh preset, or (decoder fine-tuning) a trained autoencoder."""
    torch.manual_seed(cfg.seed)
    if not cfg.video_mode:
        return AutoencoderKL.from_preset(cfg.preset).to(device)
    if cfg.vae is None:
        raise ValueError("Decoder fine-tuning starts from a trained autoencoder: pass --vae PATH "
                         "(e.g. data/vae/toy32.safetensors).")
    base = AutoencoderKL.load(cfg.vae, device=device)
    if base.is_temporal:
        base = base.per_frame()
    return base.with_temporal_decoder() if cfg.temporal_decoder else base


def _freeze(vae: AutoencoderKL, cfg: VAETrainConfig) -> None:
    """Decoder fine-tuning trains the decoding side only (or only its temporal layers); the rest is frozen."""
    if not cfg.video_mode:
        return
    for p in vae.parameters():
        p.requires_grad_(False)
    if cfg.temporal_decoder and not cfg.train_spatial:
        trainable = vae.decoder.temporal_parameters()
    else:
        trainable = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    for p in trainable:
        p.requires_grad_(True)


def vae_task(cfg: VAETrainConfig) -> tuple[AutoencoderKL, VAETask]:
    """The model (seeded, with the frozen parts frozen) and the task of run ``cfg``."""
    vae = _build(cfg, get_device(cfg.device))
    _freeze(vae, cfg)
    return vae, VAETask(_world_for(cfg, vae.config), cfg, vae.config)


def trainer_config(cfg: VAETrainConfig) -> TrainerConfig:
    """The loop's settings for ``cfg``: AdamW (betas 0.9, 0.99), warm-up, cosine decay to ``min_lr``, no EMA.

    Precision is the loop's policy (bf16 autocast on GPUs that support it, fp32 elsewhere).
    """
    return TrainerConfig(
        steps=cfg.steps, lr=cfg.peak_lr, min_lr_ratio=cfg.min_lr / cfg.peak_lr, warmup=cfg.warmup,
        weight_decay=cfg.weight_decay, betas=(0.9, 0.99), grad_clip=cfg.grad_clip, ema_decay=0.0,
        mixed_precision="auto", ckpt_every=cfg.ckpt_every, log_every=cfg.log_every, seed=cfg.seed, device=cfg.device,
    )


# =============================================================================== the run
def train_vae(cfg: VAETrainConfig, out: str | Path, resume: bool = False, progress: bool = True,
              stop_at: int | None = None, allow_changed_settings: bool = False) -> AutoencoderKL:
    """Train (or fine-tune) and write ``OUT/vae.safetensors``; returns the trained model.

    ``resume=True`` continues from ``OUT/checkpoint.safetensors`` with the same batches
    and random draws as an uninterrupted run (other settings than the checkpoint's are refused
    unless ``allow_changed_settings``); ``stop_at`` ends the run early at that step
    (checkpoint written, no ``vae.safetensors``: as an interruption would). Raises
    :class:`~vdlearn.training.trainer.TrainingDiverged` if the loss becomes NaN/inf.
    """
    out = Path(out)
    vae, task = vae_task(cfg)
    run_info = {"vae_train_config": cfg.to_dict(), "vae_config": vae.config.to_dict()}
    trainer = Trainer(vae, task, trainer_config(cfg), out, progress=progress, run_info=run_info,
                      name="decoder" if cfg.video_mode else "vae", allow_changed_settings=allow_changed_settings)
    trainer.fit(resume=resume, stop_at=stop_at)
    vae.eval()
    if trainer.step < cfg.steps or not trainer.accelerator.is_main_process:
        return vae

    metrics: dict[str, Any] = {"train_seconds": round(trainer.seconds, 1), "steps": trainer.step,
                               "final_loss": trainer.history[-1]}
    if not cfg.video_mode:
        stats = measure_scale_factor(vae, task.world, cfg)
        vae.config.scale_factor = stats["scale_factor"]
        metrics.update(stats)
    if cfg.eval_clips > 0:
        from vdlearn.training.vae_eval import (
            compare_decoders,
            evaluate_reconstruction,
            format_table,
        )

        metrics.update(evaluate_reconstruction(vae, task.world, n_clips=cfg.eval_clips))
        if cfg.video_mode:  # the same latents through the starting (per-frame) decoder and the new one
            base = AutoencoderKL.load(cfg.vae, device=vae.device)
            name = "temporal (fine-tuned)" if cfg.temporal_decoder else "per-frame (fine-tuned)"
            rows = compare_decoders({"per-frame (start)": base, name: vae}, task.world, n_clips=cfg.eval_clips)
            metrics["decoder_rows"] = rows
            metrics["decoder_table"] = format_table(rows)
    every = max(1, len(trainer.history) // 200)
    curve = [[step, loss] for step, loss in enumerate(trainer.history)][::every]  # (step, loss)
    command = trainer.honest_command(
        reproduce_command("vdlearn train vae", cfg, out, negations={"train_spatial": "--temporal-only"}))
    path = vae.save(out / "vae.safetensors", metrics=metrics, command=command, train_config=cfg.to_dict(),
                    settings_history=trainer.settings_history,
                    loss_curve=curve, device=describe_device(vae.device), train_seconds=round(trainer.seconds, 1))
    vae.meta = json.loads(path.with_suffix(".json").read_text())
    return vae


@torch.no_grad()
def measure_scale_factor(vae: AutoencoderKL, world, cfg: VAETrainConfig, n: int = 512, seed: int = 1234) -> dict:
    r"""LDM's latent scale: $1/\mathrm{std}$ of sampled latents $z \sim q(z|x)$ over a batch of training data.

    LDM (``scale_by_std``) uses the first training batch; here ``n`` frames of the same
    mixture the autoencoder was trained on, with a fixed seed.
    """
    gen = torch.Generator().manual_seed(seed)
    x = sample_frames(world, n, cfg.mix, cfg.frames_per_clip, gen)
    device = vae.device
    z = torch.cat([vae.encode(c.to(device)).sample(gen).cpu() for c in x.split(128)])  # (n, z, h, w)
    std = z.flatten().std().item()
    return {"scale_factor": 1.0 / std, "latent_std": std, "latent_mean": z.mean().item(),
            "latent_channel_std": z.transpose(0, 1).flatten(1).std(dim=1).tolist(), "scale_frames": n}


# =============================================================================== command line
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``vdlearn train vae``: one per :class:`VAETrainConfig` field (defaults from it)."""
    d = VAETrainConfig()
    add_loop_arguments(parser, d, lr_help="peak learning rate (default 2e-3; 5e-4 for decoder fine-tuning)")
    parser.add_argument("--preset", default=d.preset, help="VAE preset to train (toy32, toy64, tiny, ...)")
    parser.add_argument("--world", default=None, help="toy-world preset (default: the one matching the VAE)")
    parser.add_argument("--world-seed", type=int, default=d.world_seed, help="seed of the toy world")
    parser.add_argument("--batch-frames", type=int, default=d.batch_frames, help="frames per step")
    parser.add_argument("--frames-per-clip", type=int, default=d.frames_per_clip,
                        help="frames taken from each sampled clip")
    parser.add_argument("--mix", type=float, nargs=3, default=list(d.mix), metavar=("CLEAN", "LOWQ", "IMAGES"),
                        help="shares of clean video frames, low-quality frames and high-quality images")
    parser.add_argument("--min-lr", type=float, default=d.min_lr, help="learning rate at the end of the decay")
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    parser.add_argument("--kl-weight", type=float, default=d.kl_weight, help="KL weight (LDM convention)")
    parser.add_argument("--edge-weight", type=float, default=d.edge_weight, help="edge (gradient) L1 weight")
    parser.add_argument("--l2-weight", type=float, default=d.l2_weight, help="squared-error weight")
    parser.add_argument("--object-weight", type=float, default=d.object_weight,
                        help="extra loss weight of object pixels (0: plain mean)")
    parser.add_argument("--eval-clips", type=int, default=d.eval_clips, help="held-out clips for final metrics")
    parser.add_argument("--vae", default=None, help="trained VAE to start decoder fine-tuning from")
    parser.add_argument("--temporal-decoder", action="store_true",
                        help="add temporal layers to the decoder of --vae and fine-tune on video")
    parser.add_argument("--finetune-decoder", action="store_true",
                        help="fine-tune the per-frame decoder of --vae on video (the control run)")
    parser.add_argument("--temporal-only", action="store_true",
                        help="with --temporal-decoder: train only the new temporal layers")
    parser.add_argument("--clips-per-batch", type=int, default=d.clips_per_batch, help="clips per step (video)")
    parser.add_argument("--clip-frames", type=int, default=d.clip_frames, help="frames per clip (video)")
    parser.add_argument("--lowq-fraction", type=float, default=d.lowq_fraction,
                        help="share of low-quality clips (video)")
    parser.add_argument("--latent-noise", type=float, default=d.latent_noise,
                        help="max sigma of noise added to scaled latents (video)")
    parser.add_argument("--temporal-weight", type=float, default=d.temporal_weight,
                        help="weight of the L1 loss on frame differences (video)")
    return parser


def config_from_args(args: argparse.Namespace) -> VAETrainConfig:
    """A :class:`VAETrainConfig` from parsed command-line arguments."""
    fields = {f.name for f in dataclasses.fields(VAETrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    values["mix"] = tuple(values["mix"])
    return VAETrainConfig(**values, train_spatial=not args.temporal_only)


def main(args: argparse.Namespace) -> int:
    """``vdlearn train vae ...``: returns 0 on success (``vdlearn`` reports errors and exits with 2)."""
    cfg = config_from_args(args)
    train_vae(cfg, args.out, resume=args.resume, progress=not args.quiet,
              allow_changed_settings=args.allow_changed_settings)
    path = Path(args.out) / "vae.safetensors"
    metrics = json.loads(path.with_suffix(".json").read_text())["metrics"]
    shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    print(f"wrote {path}\n" + json.dumps(shown, indent=2))
    return 0


__all__ = [
    "VAETask",
    "VAETrainConfig",
    "add_arguments",
    "config_from_args",
    "edge_l1",
    "main",
    "measure_scale_factor",
    "object_weights",
    "sample_clips",
    "sample_frames",
    "train_vae",
    "trainer_config",
    "vae_loss",
    "vae_task",
]
