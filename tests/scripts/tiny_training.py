"""Tiny runs of every task through the one training loop, for the trainer tests (also under `accelerate launch`).

    python tests/scripts/tiny_training.py OUT [--task T] [--steps N] [--stop-at K] [--resume] [--nan-at S]
                                          [--step-sleep SECONDS]

Tasks: ``regression`` (a small MLP fits y = A x), and the course's own tasks at their smallest:
``t2v`` (text encoder + video U-Net, ``tiny`` preset), ``vae`` (the ``tiny`` autoencoder on frames),
``temporal_decoder`` (its decoder with temporal layers, on clips, encoder frozen), ``classifier``
and ``features`` (the judges' networks), ``denoiser`` (notebook 03's ``toy_image`` U-Net).
Each is built by the function its training module offers and runs with that module's
TrainerConfig, made short. ``--task all`` runs every task, each in ``OUT/<task>``.
``--nan-at S`` poisons the loss of step S (any task); ``--step-sleep`` makes every step last at
least that long (so that a test can kill the process mid-run). Writes ``OUT/result.pt``
(loss history and final weights) on the main process.
"""

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import torch

from vdlearn.training.trainer import Trainer, TrainerConfig

TASKS = ("regression", "t2v", "vae", "temporal_decoder", "classifier", "features", "denoiser")


class RegressionTask:
    """Fit y = A x with a small MLP; all randomness is drawn for the global batch."""

    def __init__(self, batch_size: int = 8):
        self.batch_size = batch_size
        self.A = torch.randn(4, 6, generator=torch.Generator().manual_seed(123))

    def batch(self, step, generator):
        x = torch.randn(self.batch_size, 6, generator=generator)
        noise = 0.01 * torch.randn(self.batch_size, 4, generator=generator)
        return {"x": x, "y": x @ self.A.T + noise}

    def loss(self, model, batch):
        return (model(batch["x"]) - batch["y"]).square().mean()


class Poisoned:
    """Any task, whose loss becomes NaN at step ``nan_at``."""

    def __init__(self, task, nan_at: int):
        self.task, self.nan_at = task, nan_at

    def batch(self, step, generator):
        return {**self.task.batch(step, generator), "poison_step": step}

    def loss(self, model, batch):
        loss = self.task.loss(model, batch)
        return loss * float("nan") if batch["poison_step"] == self.nan_at else loss


class Slowed:
    """Any task, each of whose batches takes at least ``seconds`` (the draws are unchanged)."""

    def __init__(self, task, seconds: float):
        self.task, self.seconds = task, seconds

    def batch(self, step, generator):
        time.sleep(self.seconds)
        return self.task.batch(step, generator)

    def loss(self, model, batch):
        return self.task.loss(model, batch)


def build(name: str, out: Path) -> tuple[torch.nn.Module, object, TrainerConfig]:
    """The model, the task and the task's own TrainerConfig (the real recipe), at toy size."""
    if name == "regression":
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
        return model, RegressionTask(), TrainerConfig(lr=3e-2, warmup=2, ema_decay=0.9)
    if name == "t2v":
        from vdlearn.pipelines.t2v import TextToVideo
        from vdlearn.training.t2v import T2VTask, T2VTrainConfig, latent_cache

        torch.manual_seed(0)
        model = TextToVideo.from_preset("tiny")
        cache = latent_cache(model, T2VTrainConfig(preset="tiny", cache_clips=8), None, progress=False)
        return model, T2VTask(model, cache, 4, cond_drop=0.25), TrainerConfig(lr=1e-3, warmup=2, ema_decay=0.9)
    if name in ("vae", "temporal_decoder"):
        from vdlearn.models.vae import AutoencoderKL
        from vdlearn.training.vae import VAETrainConfig, trainer_config, vae_task

        cfg = VAETrainConfig(preset="tiny", batch_frames=8, frames_per_clip=4, warmup=2, eval_clips=0, device="cpu",
                             clips_per_batch=2, clip_frames=4)
        if name == "temporal_decoder":  # it starts from an autoencoder: a seeded, untrained tiny one
            torch.manual_seed(1)
            start = out / f"start_vae_rank{os.environ.get('RANK', '0')}.safetensors"
            AutoencoderKL.from_preset("tiny").save(start, command="tests/scripts/tiny_training.py")
            cfg = dataclasses.replace(cfg, temporal_decoder=True, vae=str(start))
        model, task = vae_task(cfg)
        return model, task, trainer_config(cfg)
    if name in ("classifier", "features"):
        from vdlearn.eval.train import judge_task, trainer_config

        model, task = judge_task(name)
        task.clips = 4 if name == "classifier" else 2  # 40 frames a step instead of 160; 8 clips instead of 48
        return model, task, trainer_config(steps=6)
    if name == "denoiser":
        from vdlearn.training.image_denoiser import (
            ImageDenoiserTrainConfig,
            image_denoiser_task,
            trainer_config,
        )

        cfg = ImageDenoiserTrainConfig(batch_size=4, warmup=2, device="cpu")
        model, task = image_denoiser_task(cfg)
        return model, task, trainer_config(cfg)
    raise ValueError(f"Unknown task {name!r}; choose one of {TASKS} or 'all'.")


def run_task(name: str, a: argparse.Namespace, out: Path) -> Trainer:
    out.mkdir(parents=True, exist_ok=True)
    model, task, cfg = build(name, out)
    cfg = dataclasses.replace(cfg, steps=a.steps, ckpt_every=a.ckpt_every, log_every=1, device="cpu",
                              mixed_precision="no")
    if a.nan_at >= 0:
        task = Poisoned(task, a.nan_at)
    if a.step_sleep > 0:
        task = Slowed(task, a.step_sleep)
    trainer = Trainer(model, task, cfg, out, progress=False)
    history = trainer.fit(resume=a.resume, stop_at=a.stop_at)
    if trainer.accelerator.is_main_process:
        torch.save({"history": history, "state": trainer.accelerator.unwrap_model(trainer.model).state_dict(),
                    "processes": trainer.accelerator.num_processes}, out / "result.pt")
    return trainer


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--stop-at", type=int, default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--nan-at", type=int, default=-1)
    p.add_argument("--ckpt-every", type=int, default=4)
    p.add_argument("--step-sleep", type=float, default=0.0)
    p.add_argument("--task", default="regression", choices=[*TASKS, "all"])
    a = p.parse_args(argv)
    if a.task == "all":
        return {name: run_task(name, a, Path(a.out) / name) for name in TASKS}
    return run_task(a.task, a, Path(a.out))


if __name__ == "__main__":
    main(sys.argv[1:])
