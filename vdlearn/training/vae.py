r"""Training the toy autoencoder, and fine-tuning its decoder on video.

Two jobs, one loop:

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

Checkpoints: ``OUT/checkpoint.safetensors`` (+ json) holds the model, the optimizer
state and the random-number state, written every ``--ckpt-every`` steps; ``--resume``
continues bit-for-bit (same batches, same losses). A NaN/inf loss stops the run with
a message and leaves the last good checkpoint untouched. The result is
``OUT/vae.safetensors`` (+ json with config, metrics, commit and command).

    vdlearn train vae --preset toy32 --steps 5000 --out runs/vae
    vdlearn train vae --temporal-decoder --vae runs/vae/vae.safetensors --steps 600 --out runs/vae_t

Taught in ``notebooks/02_latent_space.ipynb``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from vdlearn.device import describe_device, get_device
from vdlearn.io import load_checkpoint, load_state_dict_checked, save_checkpoint
from vdlearn.models.vae import AutoencoderKL, DiagonalGaussian, VAEConfig


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
    log_every: int = 25  # refresh the progress bar's loss this often
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
             cfg: VAETrainConfig) -> dict[str, torch.Tensor]:
    """The training loss and its parts; ``x``/``recon`` are frames ``(n, 3, H, W)`` or clips ``(b, 3, t, H, W)``."""
    err = recon - x
    weight = object_weights(x, cfg.object_weight) if cfg.object_weight else torch.ones_like(x[:, :1])
    rec = (weight * (err.abs() + cfg.l2_weight * err.pow(2))).mean() / weight.mean()  # weighted mean error
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


def learning_rate(step: int, cfg: VAETrainConfig) -> float:
    """Linear warm-up, then cosine decay from ``lr`` to ``min_lr`` (a function of the step only)."""
    peak = cfg.peak_lr
    if step < cfg.warmup:
        return peak * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (peak - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


# =============================================================================== checkpoints
def _optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    tensors = {}
    for pid, state in opt.state_dict()["state"].items():
        for name, value in state.items():
            tensors[f"optim.{pid}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})


def save_training_state(out: Path, vae: AutoencoderKL, opt: torch.optim.Optimizer, gen: torch.Generator,
                        step: int, history: list, cfg: VAETrainConfig, seconds: float) -> Path:
    """Everything needed to continue exactly: weights, optimizer, random state, step, loss history."""
    tensors = {f"model.{k}": v for k, v in vae.state_dict().items()}
    tensors.update(_optimizer_tensors(opt))
    tensors["rng.data"] = gen.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"kind": "vdlearn.vae.training_state", "step": step, "train_config": cfg.to_dict(),
            "vae_config": vae.config.to_dict(), "history": history, "train_seconds": seconds}
    return save_checkpoint(out / "checkpoint.safetensors", tensors, meta)


# =============================================================================== building
def _trainable(vae: AutoencoderKL, cfg: VAETrainConfig) -> list[torch.nn.Parameter]:
    """The parameters the optimizer updates; everything else is frozen."""
    if not cfg.video_mode:
        return list(vae.parameters())
    for p in vae.parameters():  # freeze everything, then thaw the decoding side
        p.requires_grad_(False)
    if cfg.temporal_decoder and not cfg.train_spatial:
        trainable = vae.decoder.temporal_parameters()
    else:
        trainable = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    for p in trainable:
        p.requires_grad_(True)
    return trainable


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


def _step_batch(vae: AutoencoderKL, cfg: VAETrainConfig, world, gen: torch.Generator,
                device: torch.device) -> dict[str, torch.Tensor]:
    """One step's forward pass and loss terms."""
    if not cfg.video_mode:
        x = sample_frames(world, cfg.batch_frames, cfg.mix, cfg.frames_per_clip, gen).to(device)  # (n, 3, H, W)
        posterior = vae.encode(x)
        eps = torch.randn(posterior.shape, generator=gen).to(device)
        recon = vae.decode(posterior.mean + posterior.std * eps)  # a sample z ~ q(z|x)
        return vae_loss(x, recon, posterior, cfg)
    x = sample_clips(world, cfg.clips_per_batch, cfg.clip_frames, cfg.lowq_fraction, gen).to(device)
    with torch.no_grad():  # the encoder is frozen
        latents = vae.encode_latents(x)  # (b, z, t, h, w), scaled
    sigma = torch.rand(x.shape[0], generator=gen) * cfg.latent_noise  # (b,) one noise level per clip
    eps = torch.randn(latents.shape, generator=gen)
    noisy = latents + (sigma.view(-1, 1, 1, 1, 1) * eps).to(device)
    recon = vae.decode_latents(noisy)  # (b, 3, t, H, W)
    return vae_loss(x, recon, None, cfg)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the last good checkpoint was kept."""


# =============================================================================== the loop
def reproduce_command(cfg: VAETrainConfig, out: str | Path) -> str:
    """The ``vdlearn train vae`` command line that runs ``cfg`` (written into the json sidecar)."""
    default = VAETrainConfig()
    flags = {
        "preset": "--preset", "world": "--world", "world_seed": "--world-seed", "steps": "--steps",
        "batch_frames": "--batch-frames", "lr": "--lr", "warmup": "--warmup", "kl_weight": "--kl-weight",
        "edge_weight": "--edge-weight", "object_weight": "--object-weight", "l2_weight": "--l2-weight",
        "grad_clip": "--grad-clip", "seed": "--seed", "ckpt_every": "--ckpt-every",
        "eval_clips": "--eval-clips", "vae": "--vae", "clips_per_batch": "--clips-per-batch",
        "clip_frames": "--clip-frames", "latent_noise": "--latent-noise",
    }
    parts = ["vdlearn", "train", "vae"]
    for field, flag in flags.items():
        value = getattr(cfg, field)
        if value != getattr(default, field) or field in ("preset", "steps"):
            parts += [flag, str(value)]
    for field, flag in (("temporal_decoder", "--temporal-decoder"), ("finetune_decoder", "--finetune-decoder")):
        if getattr(cfg, field):
            parts.append(flag)
    if not cfg.train_spatial:
        parts.append("--temporal-only")
    unsupported = [f for f in ("mix", "frames_per_clip", "min_lr", "weight_decay", "lowq_fraction", "temporal_weight")
                   if getattr(cfg, f) != getattr(default, f)]
    note = f"  # plus VAETrainConfig fields {unsupported} (Python API only)" if unsupported else ""
    return " ".join(parts + ["--out", str(out)]) + note


def train_vae(cfg: VAETrainConfig, out: str | Path, resume: bool = False, progress: bool = True,
              on_step: Callable[[int, dict], None] | None = None) -> AutoencoderKL:
    """Train (or fine-tune) and write ``OUT/vae.safetensors``; returns the trained model.

    ``resume=True`` continues from ``OUT/checkpoint.safetensors`` with the same batches
    and random draws as an uninterrupted run. Raises :class:`NonFiniteLossError` if the
    loss becomes NaN/inf (the last periodic checkpoint is left as it was).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = get_device(cfg.device)
    vae = _build(cfg, device)
    trainable = _trainable(vae, cfg)
    world = _world_for(cfg, vae.config)
    opt = torch.optim.AdamW(trainable, lr=cfg.peak_lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, history, seconds = 0, [], 0.0

    if resume:
        ckpt = out / "checkpoint.safetensors"
        if not ckpt.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt}. Run once without --resume first.")
        tensors, meta = load_checkpoint(ckpt)
        free = ("steps", "ckpt_every", "log_every", "device", "eval_clips")  # may change on resume
        saved = {k: v for k, v in meta.get("train_config", {}).items() if k not in free}
        now = {k: v for k, v in cfg.to_dict().items() if k in saved}
        if saved != now:
            diff = {k: (saved[k], now[k]) for k in saved if saved[k] != now.get(k)}
            raise ValueError(f"--resume with different settings than the checkpoint (checkpoint, now): {diff}.")
        if vae.config.to_dict() != meta["vae_config"]:
            raise ValueError(f"--resume: the checkpoint's VAE config {meta['vae_config']} differs from the one "
                             f"this run builds {vae.config.to_dict()}.")
        model_state = {k[len("model."):]: v.to(device) for k, v in tensors.items() if k.startswith("model.")}
        load_state_dict_checked(vae, model_state, f"training checkpoint {ckpt}")
        _restore_optimizer(opt, {k: v for k, v in tensors.items() if k.startswith("optim.")})
        gen.set_state(tensors["rng.data"])
        torch.set_rng_state(tensors["rng.torch"])
        step, history, seconds = meta["step"], meta["history"], meta.get("train_seconds", 0.0)

    vae.train()
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc="vae" if not cfg.video_mode else "decoder",
               dynamic_ncols=True)
    last_saved = step if resume else None
    t0 = time.perf_counter()
    while step < cfg.steps:
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, cfg)
        terms = _step_batch(vae, cfg, world, gen, device)
        loss = terms["loss"]
        if not torch.isfinite(loss):
            bar.close()
            where = (f"the last good checkpoint is {out / 'checkpoint.safetensors'} (step {last_saved})"
                     if last_saved is not None else "no checkpoint was written yet")
            raise NonFiniteLossError(
                f"The loss became {loss.item()} at step {step}; stopped. {where}. Try a lower --lr "
                f"(now {cfg.peak_lr}) or a stronger --grad-clip, then --resume."
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        opt.step()
        record = {k: v.detach().item() for k, v in terms.items()}
        history.append([step, record["loss"], record["rec"]])
        step += 1
        if on_step is not None:
            on_step(step, record)
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            bar.set_postfix(loss=f"{record['loss']:.4f}", rec=f"{record['rec']:.4f}")
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            save_training_state(out, vae, opt, gen, step, history, cfg, seconds + time.perf_counter() - t0)
            last_saved = step
    bar.close()
    seconds += time.perf_counter() - t0

    vae.eval()
    metrics: dict[str, Any] = {"train_seconds": round(seconds, 1), "steps": step,
                               "final_loss": history[-1][1] if history else None}
    if not cfg.video_mode:
        stats = measure_scale_factor(vae, world, cfg)
        vae.config.scale_factor = stats["scale_factor"]
        metrics.update(stats)
    if cfg.eval_clips > 0:
        from vdlearn.training.vae_eval import compare_decoders, evaluate_reconstruction, format_table

        metrics.update(evaluate_reconstruction(vae, world, n_clips=cfg.eval_clips))
        if cfg.video_mode:  # the same latents through the starting (per-frame) decoder and the new one
            base = AutoencoderKL.load(cfg.vae, device=device)
            name = "temporal (fine-tuned)" if cfg.temporal_decoder else "per-frame (fine-tuned)"
            rows = compare_decoders({"per-frame (start)": base, name: vae}, world, n_clips=cfg.eval_clips)
            metrics["decoder_rows"] = rows
            metrics["decoder_table"] = format_table(rows)
    curve = history[:: max(1, len(history) // 200)]
    path = vae.save(out / "vae.safetensors", metrics=metrics, command=reproduce_command(cfg, out),
                    train_config=cfg.to_dict(), loss_curve=curve, device=describe_device(device),
                    train_seconds=round(seconds, 1))
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
    """The options of ``vdlearn train vae`` (defaults from :class:`VAETrainConfig`)."""
    d = VAETrainConfig()
    parser.add_argument("--preset", default=d.preset, help="VAE preset to train (toy32, toy64, tiny, ...)")
    parser.add_argument("--world", default=None, help="toy-world preset (default: the one matching the VAE)")
    parser.add_argument("--steps", type=int, default=d.steps, help="total training steps")
    parser.add_argument("--out", required=True, help="output folder (checkpoint.safetensors, vae.safetensors)")
    parser.add_argument("--resume", action="store_true", help="continue exactly from OUT/checkpoint.safetensors")
    parser.add_argument("--batch-frames", type=int, default=d.batch_frames, help="frames per step")
    parser.add_argument("--lr", type=float, default=None,
                        help="peak learning rate (default 2e-3; 5e-4 for decoder fine-tuning)")
    parser.add_argument("--warmup", type=int, default=d.warmup, help="warm-up steps")
    parser.add_argument("--kl-weight", type=float, default=d.kl_weight, help="KL weight (LDM convention)")
    parser.add_argument("--edge-weight", type=float, default=d.edge_weight, help="edge (gradient) L1 weight")
    parser.add_argument("--l2-weight", type=float, default=d.l2_weight, help="squared-error weight")
    parser.add_argument("--object-weight", type=float, default=d.object_weight,
                        help="extra loss weight of object pixels (0: plain mean)")
    parser.add_argument("--grad-clip", type=float, default=d.grad_clip, help="gradient-norm clip (0: off)")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of the run")
    parser.add_argument("--world-seed", type=int, default=d.world_seed, help="seed of the toy world")
    parser.add_argument("--ckpt-every", type=int, default=d.ckpt_every, help="checkpoint period in steps")
    parser.add_argument("--device", default=d.device, help="auto, cpu, cuda, mps")
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
    parser.add_argument("--latent-noise", type=float, default=d.latent_noise,
                        help="max sigma of noise added to scaled latents (video)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def config_from_args(args: argparse.Namespace) -> VAETrainConfig:
    """A :class:`VAETrainConfig` from parsed command-line arguments."""
    return VAETrainConfig(
        preset=args.preset, world=args.world, world_seed=args.world_seed, steps=args.steps,
        batch_frames=args.batch_frames, lr=args.lr, warmup=args.warmup, kl_weight=args.kl_weight,
        edge_weight=args.edge_weight, l2_weight=args.l2_weight, object_weight=args.object_weight,
        grad_clip=args.grad_clip, seed=args.seed, ckpt_every=args.ckpt_every,
        device=args.device, eval_clips=args.eval_clips, vae=args.vae, temporal_decoder=args.temporal_decoder,
        finetune_decoder=args.finetune_decoder, train_spatial=not args.temporal_only,
        clips_per_batch=args.clips_per_batch, clip_frames=args.clip_frames, latent_noise=args.latent_noise,
    )


def main(args: argparse.Namespace) -> int:
    """``vdlearn train vae ...``: returns 0 on success, 1 on a bad argument, 2 on a NaN/inf loss."""
    try:
        cfg = config_from_args(args)
        train_vae(cfg, args.out, resume=args.resume, progress=not args.quiet)
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    path = Path(args.out) / "vae.safetensors"
    metrics = json.loads(path.with_suffix(".json").read_text())["metrics"]
    shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    print(f"wrote {path}\n" + json.dumps(shown, indent=2))
    return 0


__all__ = [
    "VAETrainConfig", "train_vae", "sample_frames", "sample_clips", "object_weights", "vae_loss", "edge_l1",
    "learning_rate", "measure_scale_factor", "save_training_state", "reproduce_command", "NonFiniteLossError",
    "add_arguments", "config_from_args", "main",
]
