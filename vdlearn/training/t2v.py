r"""Train the toy text-to-video model: ``vdlearn train t2v --preset toy --out runs/t2v``.

The recipe is VideoCrafter1's (sec. 3.2, 4.1) at toy scale:

1. **Latents once.** Clean 8-frame clips of the toy world's training split are encoded by
   the frozen toy VAE into scaled latents ``(N, 4, 8, 8, 8)``, once, and kept (in memory
   and in ``OUT/latent_cache.safetensors``, so a resumed run does not re-encode). The
   VAE never changes, so encoding each clip once per run instead of once per step saves
   most of the compute on a CPU.
2. **Each step** (:class:`T2VTask`): draw clips from the cache, a timestep and noise per
   clip, and drop 10% of the captions to the empty prompt (so the model also learns the
   unconditional prediction that classifier-free guidance needs). All of it comes from
   the step's generator, for the *global* batch: exact resume and identical results on
   one or several processes (see :mod:`vdlearn.training.trainer`). With ``--images-per-clip K``
   (LaVie sec. 3.4) K single frames of other clips, each with its own caption, are appended to
   every clip; ``--image-timesteps own`` noises each of them at a step of its own, as if it were a
   sample of its own, so that ``--high-noise-share`` moves only the videos to the top of the ladder.
3. **The loss** is the v-prediction MSE of :func:`vdlearn.diffusion.diffusion_loss` (with
   ``--min-snr-gamma`` each frame weighted by :func:`vdlearn.diffusion.min_snr_weights`, with
   ``--loss-norm-bins`` by :class:`vdlearn.diffusion.TimestepLossNormalizer`); the
   text encoder and the U-Net train together (the toy text encoder is learned, not frozen
   CLIP: see :mod:`vdlearn.models.text`).
4. **At the end** the EMA weights are written to ``OUT/t2v.safetensors`` with a json
   (config, training time, hardware, commit, reproduce command) and, unless
   ``--eval-n 0``, the judges' figures (:mod:`vdlearn.eval.generation`).

With ``--eval-every K`` the run measures joint adherence every K steps on a few prompts
and, with ``--target 0.9``, stops once it is reached: the time-to-quality benchmark
(``benchmarks/time_to_quality.py``) is this.

Taught in notebook 05_text_to_video.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vdlearn.diffusion import (
    TimestepLossNormalizer,
    diffusion_loss,
    min_snr_weights,
    sample_timesteps,
)
from vdlearn.io import (
    InputError,
    artifact_meta,
    git_commit,
    load_checkpoint,
    lock_folder,
    reproduce_command,
    save_checkpoint,
)
from vdlearn.pipelines.t2v import T2VConfig, TextToVideo
from vdlearn.training.trainer import (
    Trainer,
    TrainerConfig,
    add_run_arguments,
    append_csv_row,
    check_trainer_config,
)


@dataclass
class T2VTrainConfig:
    """One training run of a text-to-video model (model architecture: ``preset``)."""

    preset: str = "toy"  # T2VConfig preset (architecture, VAE, world)
    steps: int = 9000  # optimisation steps (the shipped model: 9000, about 1h45 on 2 CPU cores)
    batch_size: int = 16  # clips per step (global, over all processes)
    lr: float = 5e-4  # peak learning rate (AdamW)
    warmup: int = 200  # linear warm-up steps
    min_lr_ratio: float = 0.1  # final learning rate as a fraction of the peak
    ema_decay: float = 0.999  # EMA of the weights; the shipped model is the EMA
    grad_clip: float = 1.0  # gradient-norm clipping
    cond_drop: float = 0.1  # share of captions replaced by "" (for classifier-free guidance)
    cache_clips: int = 16384  # training clips encoded once into the latent cache
    world_seed: int = 0  # seed of the toy world
    seed: int = 0  # seed of initialisation and of every random draw
    ckpt_every: int = 250  # training-state checkpoint interval (for --resume)
    sample_every: int = 0  # write sample gifs every this many steps (0: never)
    eval_every: int = 0  # measure adherence every this many steps (0: never)
    eval_every_n: int = 64  # prompts used by those measurements
    target: float = 0.0  # stop once that joint adherence reaches this (0: never stop early)
    eval_n: int = 256  # prompts per split for the final evaluation (0: skip)
    eval_steps: int = 25  # DDIM steps of the evaluations
    mixed_precision: str = "auto"  # "auto", "bf16", "no"
    device: str = "auto"  # "auto", "cpu", "cuda", "mps"
    init: str = ""  # start from this t2v.safetensors (its weights; modules it lacks start fresh) instead of scratch
    fresh_lr_scale: float = 1.0  # learning-rate multiplier for the modules that ``init`` lacks
    high_noise_share: float = 0.0  # share of every batch whose timestep is drawn from [high_noise_from, N)
    high_noise_from: int = 850  # where "high noise" starts: the steps where the sampler decides the layout
    images_per_clip: int = 0  # joint image-video training (LaVie sec. 3.4): this many single frames of other
    #                           clips, each with its own caption, ride along with every clip (temporal layers skip them)
    image_timesteps: str = "clip"  # "clip": the images share their clip's timestep; "own": each image draws its
    #                                own, uniformly, as it would as a sample of its own (the high-noise share then
    #                                applies to the videos only)
    image_t_from: int = 0  # with image_timesteps "own": the images' timesteps are drawn from [image_t_from,
    image_t_to: int = 0  # image_t_to) (0: the top of the ladder); the videos keep theirs
    min_snr_gamma: float = 0.0  # Min-SNR-gamma loss weighting (Hang et al. 2023; 5 in the paper): every frame's
    #                            loss is weighted by min(SNR, gamma) / (SNR + 1) for its timestep (0: off)
    adam_beta2: float = 0.999  # AdamW's second-moment decay
    loss_norm_bins: int = 0  # weight every frame's loss by 1 / (running mean loss of its timestep bin), in this many
    #                          bins of the ladder (EDM2's weighting, estimated by running means: vdlearn's own; 0: off)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ============================================================================== data
def encode_world_latents(model: TextToVideo, n: int, world_seed: int = 0, split: str = "train",
                         chunk: int = 256, progress: bool = True) -> dict[str, torch.Tensor]:
    """Encode clips ``0..n-1`` of the toy world's ``split`` with the model's frozen VAE.

    Returns ``latents (n, 4, t, h, w)`` (scaled), ``tokens (n, L)``, ``fps (n,)``.
    """
    from tqdm.auto import tqdm

    from vdlearn.data import ToyWorld, WorldConfig

    cfg = model.config
    world = ToyWorld(WorldConfig.preset(cfg.world), seed=world_seed)
    if world.config.frames != cfg.frames or world.config.size != cfg.size:
        raise ValueError(f"World preset {cfg.world!r} makes {world.config.frames} frames of {world.config.size} px, "
                         f"but the model expects {cfg.frames} frames of {cfg.size} px.")
    vae = model.vae
    lat, tok, fps = [], [], []
    for start in tqdm(range(0, n, chunk), desc="encoding clips", disable=not progress, leave=False):
        b = world.batch(range(start, min(n, start + chunk)), split=split, regime="clean")
        with torch.no_grad():
            lat.append(vae.encode_latents(b["video"].to(vae.device)).cpu())  # (c, 4, t, h, w)
        tok.append(model.tokenize(b["caption"]))
        fps.append(b["fps"])
    return {"latents": torch.cat(lat), "tokens": torch.cat(tok), "fps": torch.cat(fps)}


def latent_cache(model: TextToVideo, cfg: T2VTrainConfig, out: Path | None, progress: bool = True) -> dict:
    """The run's latent cache: read from ``out/latent_cache.safetensors`` when it matches, else built."""
    key = {"world": model.config.world, "world_seed": cfg.world_seed, "n": cfg.cache_clips, "vae": model.config.vae}
    path = out / "latent_cache.safetensors" if out is not None else None
    if path is not None and path.exists():
        tensors, meta = load_checkpoint(path)
        if meta.get("key") == key:
            return tensors
    cache = encode_world_latents(model, cfg.cache_clips, cfg.world_seed, progress=progress)
    if path is not None:
        save_checkpoint(path, cache, {"kind": "latent_cache", "key": key})
    return cache


def check_batch_settings(high_noise_share: float, high_noise_from: int, images_per_clip: int, image_timesteps: str,
                         num_train_timesteps: int = 1000, image_t_from: int = 0, image_t_to: int = 0,
                         min_snr_gamma: float = 0.0, loss_norm_bins: int = 0) -> None:
    """Refuse batch settings that make no sense (an :class:`InputError` naming the flag), before any work."""
    if not (min_snr_gamma >= 0 and min_snr_gamma < float("inf")):
        raise InputError(f"min_snr_gamma (--min-snr-gamma) must be 0 (off) or a positive number, got {min_snr_gamma}.")
    if not 0 <= loss_norm_bins <= num_train_timesteps:
        raise InputError(f"loss_norm_bins (--loss-norm-bins) must be 0 (off) or a number of bins up to "
                         f"{num_train_timesteps}, got {loss_norm_bins}.")
    if loss_norm_bins and min_snr_gamma:
        raise InputError("--loss-norm-bins and --min-snr-gamma are two loss weightings: give one of them.")
    if not 0.0 <= high_noise_share <= 1.0:
        raise InputError(f"high_noise_share (--high-noise-share) must be in [0, 1], got {high_noise_share}.")
    if not 0 <= high_noise_from < num_train_timesteps:
        raise InputError(f"high_noise_from (--high-noise-from) must be a timestep 0..{num_train_timesteps - 1}, "
                         f"got {high_noise_from}.")
    if images_per_clip < 0:
        raise InputError(f"images_per_clip (--images-per-clip) must be 0 or more, got {images_per_clip}.")
    if image_timesteps not in ("clip", "own"):
        raise InputError(f"image_timesteps (--image-timesteps) must be 'clip' (an image shares its clip's timestep) "
                         f"or 'own' (each image draws its own), got {image_timesteps!r}.")
    top = image_t_to or num_train_timesteps
    if not 0 <= image_t_from < top <= num_train_timesteps:
        raise InputError(f"image_t_from, image_t_to (--image-t-from, --image-t-to) must give a range of timesteps "
                         f"0 <= from < to <= {num_train_timesteps} (to 0: {num_train_timesteps}), "
                         f"got {image_t_from}, {image_t_to}.")
    if (image_t_from or image_t_to) and image_timesteps != "own":
        raise InputError("--image-t-from / --image-t-to set the images' own timesteps: give --image-timesteps own.")


class T2VTask:
    """The trainer's task: global batches from the latent cache, the v-prediction loss."""

    def __init__(self, model: TextToVideo, cache: dict, batch_size: int, cond_drop: float = 0.1,
                 high_noise_share: float = 0.0, high_noise_from: int = 850, images_per_clip: int = 0,
                 image_timesteps: str = "clip", image_t_from: int = 0, image_t_to: int = 0,
                 min_snr_gamma: float = 0.0, loss_norm_bins: int = 0):
        n_steps = model.schedule.num_train_timesteps
        check_batch_settings(high_noise_share, high_noise_from, images_per_clip, image_timesteps, n_steps,
                             image_t_from, image_t_to, min_snr_gamma, loss_norm_bins)
        self.min_snr_gamma = min_snr_gamma
        self.loss_norm = TimestepLossNormalizer(n_steps, loss_norm_bins) if loss_norm_bins else None
        self.image_timesteps = image_timesteps
        self.image_range = (image_t_from, image_t_to or n_steps)
        self.images_per_clip = images_per_clip
        self.high_noise = (round(batch_size * high_noise_share), high_noise_from)
        self.schedule = model.schedule
        self.latents, self.tokens, self.fps = cache["latents"], cache["tokens"], cache["fps"]
        self.batch_size = batch_size
        self.cond_drop = cond_drop
        self.empty = model.tokenize([""])[0]  # (L,) the unconditional prompt

    def batch(self, step: int, generator: torch.Generator) -> dict:
        b = self.batch_size
        idx = torch.randint(0, len(self.latents), (b,), generator=generator)
        x0 = self.latents[idx]  # (b, 4, t, h, w)
        tokens = self.tokens[idx].clone()  # (b, L)
        drop = torch.rand(b, generator=generator) < self.cond_drop
        tokens[drop] = self.empty
        t = sample_timesteps(b, self.schedule, generator=generator)
        k, start = self.high_noise
        if k:  # the first k clips get a high-noise timestep (drawn only when asked: default runs are unchanged)
            t[:k] = torch.randint(start, self.schedule.num_train_timesteps, (k,), generator=generator)
        k = self.images_per_clip
        if k:  # joint image-video batch: k frames of other clips appended, each with its own caption
            n, frames = len(self.latents), self.latents.shape[2]
            clip = torch.randint(0, n, (b, k), generator=generator)
            frame = torch.randint(0, frames, (b, k), generator=generator)
            images = self.latents[clip, :, frame]  # (b, k, 4, h, w)
            x0 = torch.cat([x0, images.permute(0, 2, 1, 3, 4)], dim=2)  # (b, 4, t + k, h, w)
            image_tokens = self.tokens[clip].clone()  # (b, k, L)
            image_tokens[drop] = self.empty
            tokens = torch.cat([tokens[:, None].expand(-1, frames, -1), image_tokens], dim=1)  # (b, t + k, L)
            if self.image_timesteps == "own":  # every image is noised as a sample of its own: one step per frame
                own = torch.randint(*self.image_range, (b, k), generator=generator)  # (b, k) uniform on the range
                t = torch.cat([t[:, None].expand(-1, frames), own], dim=1)  # (b, t + k)
        noise = torch.randn(x0.shape, generator=generator)
        return {"x0": x0, "tokens": tokens, "fps": self.fps[idx], "t": t, "noise": noise}

    def loss(self, model, batch: dict) -> torch.Tensor:
        dev = next(model.parameters()).device
        cond = {"tokens": batch["tokens"].to(dev), "fps": batch["fps"].to(dev)}
        if self.images_per_clip:
            def denoiser(x, t, **c):
                return model(x, t, num_images=self.images_per_clip, **c)
        else:
            denoiser = model
        t = batch["t"].to(dev)  # (b,) or (b, frames)
        weights = min_snr_weights(self.schedule, t, self.min_snr_gamma) if self.min_snr_gamma else None
        if self.loss_norm is None:
            return diffusion_loss(denoiser, batch["x0"].to(dev), self.schedule, cond=cond,
                                  t=t, noise=batch["noise"].to(dev), weights=weights)
        out = diffusion_loss(denoiser, batch["x0"].to(dev), self.schedule, cond=cond, t=t,
                             noise=batch["noise"].to(dev), weights=self.loss_norm.weights(t), return_details=True)
        err = (out.prediction.detach().float() - out.target.float()).pow(2)  # (b, c, frames, h, w)
        self.loss_norm.update(t, err.mean(dim=(1, 3, 4)) if t.ndim == 2 else err.flatten(1).mean(dim=1))
        return out.loss

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What a resumed run needs besides the weights: the loss normaliser's running means (if on)."""
        return self.loss_norm.state_dict() if self.loss_norm is not None else {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if self.loss_norm is not None:
            self.loss_norm.load_state_dict(state)


# ============================================================================= run
def init_from(model: TextToVideo, path: str | Path) -> list[str]:
    """Load the weights of the finished model at ``path`` into ``model``; returns the fresh parameter names.

    ``model`` may have modules the checkpoint lacks (a caption layout added to the shipped
    model, say): those keep their initialisation and are returned, so they can get a learning
    rate of their own. Everything the checkpoint holds must exist in ``model`` with the same
    shape, and ``model`` must share most of its weights with it; otherwise the error lists
    what does not match.
    """
    from vdlearn.io import CheckpointMismatchError, mismatch_error
    from vdlearn.pipelines.t2v import CHECKPOINT_KIND

    state, meta = load_checkpoint(path)
    if meta.get("kind") != CHECKPOINT_KIND:
        raise CheckpointMismatchError(f"--init {path}: not a finished text-to-video model (kind={meta.get('kind')!r}); "
                                      f"use a t2v.safetensors written by `vdlearn train t2v`.")
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    reshaped = [f"{k}: model {tuple(own[k].shape)} vs checkpoint {tuple(state[k].shape)}"
                for k in sorted(set(state) & set(own)) if state[k].shape != own[k].shape]
    missing = sorted(set(own) - set(state))
    if unexpected or reshaped or len(missing) > len(own) // 2:
        raise mismatch_error(
            f"--init {path} does not fit preset {model.config.name!r}: {len(unexpected)} unexpected keys, "
            f"{len(reshaped)} with other shapes, {len(missing)} of {len(own)} missing.",
            missing, unexpected, reshaped, limit=6,
            hint="A model may only add modules to the one it starts from (missing keys start fresh).")
    model.load_state_dict(state, strict=False)
    params = {n for n, _ in model.named_parameters()}
    return [k for k in missing if k in params]


def _eval_prompts(model: TextToVideo, n: int, split: str, world_seed: int = 0) -> tuple[list[str], torch.Tensor]:
    from vdlearn.data import ToyWorld, WorldConfig

    world = ToyWorld(WorldConfig.preset(model.config.world), seed=world_seed)
    b = world.batch(range(n), split=split, regime="clean")
    return b["caption"], b["fps"]


def quick_adherence(model: TextToVideo, n: int = 64, num_steps: int = 25, guidance_scale: float | None = None,
                    split: str = "test", seed: int = 0) -> dict:
    """Joint adherence of ``model`` on ``n`` prompts of ``split`` (the in-training check)."""
    from vdlearn.eval.judge import Judge

    prompts, fps = _eval_prompts(model, n, split)
    videos = model.generate(prompts, fps=fps, num_steps=num_steps, guidance_scale=guidance_scale, seed=seed,
                            progress=False)
    return Judge.load().adherence(videos, prompts, fps)


def train(cfg: T2VTrainConfig, out: str | Path, resume: bool = False, stop_at: int | None = None,
          progress: bool = True, command: str | None = None, allow_changed_settings: bool = False) -> dict:
    """Run ``cfg``; returns the final json sidecar (also written to ``OUT/t2v.json``).

    ``resume`` refuses a checkpoint written with other settings unless ``allow_changed_settings``.
    """
    out = Path(out)
    tcfg = check_trainer_config(TrainerConfig(
        steps=cfg.steps, lr=cfg.lr, warmup=cfg.warmup, min_lr_ratio=cfg.min_lr_ratio, grad_clip=cfg.grad_clip,
        ema_decay=cfg.ema_decay, mixed_precision=cfg.mixed_precision, ckpt_every=cfg.ckpt_every,
        sample_every=cfg.sample_every, seed=cfg.seed, device=cfg.device, log_every=10, betas=(0.9, cfg.adam_beta2),
    ))  # bad settings are refused before the latent cache is built
    for name in ("batch_size", "cache_clips"):
        if getattr(cfg, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: give at least 1.")
    check_batch_settings(cfg.high_noise_share, cfg.high_noise_from, cfg.images_per_clip, cfg.image_timesteps,
                         image_t_from=cfg.image_t_from, image_t_to=cfg.image_t_to, min_snr_gamma=cfg.min_snr_gamma,
                         loss_norm_bins=cfg.loss_norm_bins)
    if not 0 < cfg.adam_beta2 < 1:
        raise InputError(f"--adam-beta2 {cfg.adam_beta2}: give a value in (0, 1).")
    if resume and not (out / "checkpoint.safetensors").exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {out / 'checkpoint.safetensors'}; start without --resume.")
    lock_folder(out)  # a folder in use by a live run is refused before any work
    commit = git_commit()  # the code that trains, recorded now (the working tree may change during a long run)
    torch.manual_seed(cfg.seed)
    model = TextToVideo(T2VConfig.preset(cfg.preset))
    fresh = init_from(model, cfg.init) if cfg.init else []
    t_cache = time.time()
    cache = latent_cache(model, cfg, out, progress)
    cache_seconds = time.time() - t_cache
    task = T2VTask(model, cache, cfg.batch_size, cfg.cond_drop, cfg.high_noise_share, cfg.high_noise_from,
                   cfg.images_per_clip, cfg.image_timesteps, cfg.image_t_from, cfg.image_t_to, cfg.min_snr_gamma,
                   cfg.loss_norm_bins)
    prompts = ["a red 3 moving left quickly", "a blue circle moving up slowly", "a green 7 moving right quickly",
               "a white square moving down slowly"]

    def sample_fn(ema_model, step):
        ema_model.set_vae(model.vae)
        videos = ema_model.generate(prompts, num_steps=cfg.eval_steps, progress=False)
        return {p.replace(" ", "_"): v for p, v in zip(prompts, videos)}

    run_info = {"t2v_train_config": cfg.to_dict()}
    trainer = Trainer(model, task, tcfg, out, sample_fn=sample_fn, progress=progress, run_info=run_info,
                      lr_scales={name: cfg.fresh_lr_scale for name in fresh},
                      allow_changed_settings=allow_changed_settings)
    if resume:
        trainer.load()
        trainer._truncate_log()
    curve_path = out / "adherence.csv"
    if not resume and curve_path.exists():
        curve_path.unlink()
    reached = None
    end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    while trainer.step < end:
        chunk_end = end
        if cfg.eval_every:
            chunk_end = min(end, (trainer.step // cfg.eval_every + 1) * cfg.eval_every)
        trainer.fit(resume=False, stop_at=chunk_end)
        if cfg.eval_every and trainer.accelerator.is_main_process and trainer.step % cfg.eval_every == 0:
            t_eval = time.time()
            ema = trainer.ema_model().eval()
            ema.set_vae(model.vae)
            adh = quick_adherence(ema, cfg.eval_every_n, cfg.eval_steps)
            # the trainer's own clock: optimisation time over every resumed part of the run, evaluations excluded
            row = {"step": trainer.step, "train_seconds": round(trainer.seconds, 1),
                   "joint": adh["joint"], **{k: adh[k] for k in ("object", "colour", "direction", "speed")},
                   "eval_seconds": round(time.time() - t_eval, 1)}
            append_csv_row(curve_path, row)
            if progress:
                print(f"step {trainer.step}: joint adherence {adh['joint']:.3f} on {cfg.eval_every_n} prompts "
                      f"({row['train_seconds']:.0f} s of training)", flush=True)
            if cfg.target and adh["joint"] >= cfg.target:
                reached = row
        if cfg.target and _any_process(trainer, reached is not None):  # every process stops together
            break
    train_seconds = trainer.seconds  # every resumed part of the run, evaluations excluded
    if stop_at is not None and trainer.step < cfg.steps and reached is None:
        trainer.save()
        return {"stopped_at": trainer.step}
    trainer.save()
    final = trainer.ema_model().eval()
    final.set_vae(model.vae)
    metrics: dict = {"final_loss": sum(trainer.history[-50:]) / max(1, len(trainer.history[-50:])),
                     "steps_done": trainer.step}
    if reached is not None:
        metrics["target_reached"] = reached
    if curve_path.exists():
        import csv

        metrics["adherence_curve"] = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(curve_path.open())]
    if cfg.eval_n and trainer.accelerator.is_main_process:
        from vdlearn.eval.generation import evaluate_t2v

        metrics["eval"] = evaluate_t2v(final, n=cfg.eval_n, num_steps=cfg.eval_steps, progress=progress)
    meta = artifact_meta(
        config={"train": cfg.to_dict(), "t2v": model.config.to_dict()}, metrics=metrics,
        command=trainer.honest_command(command or reproduce_command("vdlearn train t2v", cfg, out)), commit=commit,
        settings_history=trainer.settings_history,
        training={"train_minutes": round(train_seconds / 60, 2), "latent_cache_minutes": round(cache_seconds / 60, 2),
                  "device": str(trainer.accelerator.device), "processes": trainer.accelerator.num_processes,
                  "threads": torch.get_num_threads(), "init": cfg.init or None,
                  "fresh_parameters": sum(dict(model.named_parameters())[n].numel() for n in fresh)},
    )
    if trainer.accelerator.is_main_process:
        final.save(out / "t2v.safetensors", meta)
    return meta


def _any_process(trainer: Trainer, flag: bool) -> bool:
    """True on every process when ``flag`` is true on any (the main process decides early stops)."""
    if trainer.accelerator.num_processes == 1:
        return flag
    votes = trainer.accelerator.gather(torch.tensor([float(flag)], device=trainer.accelerator.device))
    return bool(votes.max() > 0)


# ============================================================================== CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    default = T2VTrainConfig()
    p.add_argument("--preset", default=default.preset, help="model preset: toy (shipped), toy_vc1 (VideoCrafter1 temporal layers), toy_layout (toy plus a caption "
                        "layout; start it from the shipped model with --init), toy_abspos / toy_vc2_fps / toy_rope (frame-position "
                        "experiments at 4, 8 and 16 fps: absolute, none, rotary + T5 bias; data/t2v/README.md), tiny or "
                        "tiny_layout (seconds-long demos)")
    add_run_arguments(p, "t2v.safetensors")
    for f in dataclasses.fields(T2VTrainConfig):
        if f.name == "preset":
            continue
        flag = f"--{f.name.replace('_', '-')}"
        value = getattr(default, f.name)
        p.add_argument(flag, type=type(value), default=value, help=f"(default {value})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.epilog = "Example: vdlearn train t2v --preset toy --steps 9000 --out runs/t2v"


def main(args: argparse.Namespace) -> int:
    fields = {f.name for f in dataclasses.fields(T2VTrainConfig)}
    cfg = T2VTrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    meta = train(cfg, args.out, resume=args.resume, progress=not args.quiet,
                 allow_changed_settings=args.allow_changed_settings)
    ev = meta.get("metrics", {}).get("eval")
    print(f"wrote {Path(args.out) / 't2v.safetensors'}")
    if ev:
        print(json.dumps({k: ev[k] for k in ("train_combinations", "heldout_combinations") if k in ev}, indent=1))
    return 0
