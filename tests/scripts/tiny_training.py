"""A tiny training run used by the trainer tests (also launched under `accelerate launch`).

    python tests/scripts/tiny_training.py OUT [--steps N] [--stop-at K] [--resume] [--nan-at S] [--task t2v]

``--task t2v`` trains the ``tiny`` text-to-video model (text encoder + video U-Net) on a few
cached toy-world latents instead of the regression MLP.
"""

import argparse
import sys

import torch

from vdlearn.training.trainer import Trainer, TrainerConfig


class RegressionTask:
    """Fit y = A x with a small MLP; all randomness is drawn for the global batch."""

    def __init__(self, batch_size: int = 8, nan_at: int = -1):
        self.batch_size = batch_size
        self.nan_at = nan_at
        self.A = torch.randn(4, 6, generator=torch.Generator().manual_seed(123))

    def batch(self, step, generator):
        x = torch.randn(self.batch_size, 6, generator=generator)
        noise = 0.01 * torch.randn(self.batch_size, 4, generator=generator)
        return {"x": x, "y": x @ self.A.T + noise, "step": step}

    def loss(self, model, batch):
        loss = (model(batch["x"]) - batch["y"]).square().mean()
        if batch["step"] == self.nan_at:
            loss = loss * float("nan")
        return loss


def build_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))


def build_t2v(batch_size: int = 4):
    from vdlearn.pipelines.t2v import TextToVideo
    from vdlearn.training.t2v import T2VTask, T2VTrainConfig, latent_cache

    torch.manual_seed(0)
    model = TextToVideo.from_preset("tiny")
    cache = latent_cache(model, T2VTrainConfig(preset="tiny", cache_clips=8), None, progress=False)
    return model, T2VTask(model, cache, batch_size, cond_drop=0.25)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--stop-at", type=int, default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--nan-at", type=int, default=-1)
    p.add_argument("--ckpt-every", type=int, default=4)
    p.add_argument("--task", default="regression", choices=["regression", "t2v"])
    a = p.parse_args(argv)
    cfg = TrainerConfig(steps=a.steps, lr=3e-2, warmup=2, ema_decay=0.9, ckpt_every=a.ckpt_every, log_every=1,
                        device="cpu", mixed_precision="no")
    if a.task == "t2v":
        model, task = build_t2v()
        cfg.lr = 1e-3
    else:
        model, task = build_model(), RegressionTask(nan_at=a.nan_at)
    trainer = Trainer(model, task, cfg, a.out, progress=False)
    history = trainer.fit(resume=a.resume, stop_at=a.stop_at)
    if trainer.accelerator.is_main_process:
        torch.save({"history": history, "state": trainer.accelerator.unwrap_model(trainer.model).state_dict()},
                   f"{a.out}/result.pt")
    return trainer


if __name__ == "__main__":
    main(sys.argv[1:])
