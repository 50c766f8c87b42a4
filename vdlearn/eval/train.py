"""Training the judges' networks on the toy world (``vdlearn train judges``).

Both networks see every regime (clean clips, low-quality clips, high-quality images),
both splits of object-colour pairs (a judge must know the held-out pairs too) and
frames at 32 and 64 pixels, plus extra random blur and noise, so they can score what
a generator produces, not only what the world renders. Each trains through the
course's one loop (:class:`vdlearn.training.trainer.Trainer`) as a task: AdamW with
weight decay 1e-4, 10% linear warm-up, cosine decay to zero, cross-entropy on every
head. The shipped weights in ``data/judges/`` were written by :func:`main` before the loop
was shared, with the same data, seeds and step counts but torch's ``OneCycleLR`` (a 10%
cosine warm-up from lr/25, then cosine decay to nearly zero); their json records the
command. Taught in notebook 01_toy_video_world.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vdlearn.data.world import ToyWorld
from vdlearn.eval.networks import (
    AttributeClassifier,
    ClassifierConfig,
    FeatureNetConfig,
    VideoFeatureNet,
)
from vdlearn.io import artifact_meta, data_dir, reproduce_command, save_checkpoint
from vdlearn.training.trainer import Trainer, TrainerConfig


@dataclass
class JudgesTrainConfig:
    """One run of ``vdlearn train judges``: both networks, then their measurement."""

    classifier_steps: int = 1200  # training steps of the attribute classifier
    feature_steps: int = 600  # training steps of the video feature network
    lr: float = 2e-3  # peak learning rate of both
    seed: int = 0  # seed of initialisation and of every random draw
    eval_clips: int = 512  # test clips behind the recorded metrics
    device: str = "auto"  # "auto", "cpu", "cuda", "mps"


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random mild blur and noise on frames ``(n, 3, h, w)`` in [-1, 1]."""
    n = x.shape[0]
    blur = torch.rand(n, generator=g) < 0.3
    if blur.any():
        x = x.clone()
        x[blur] = F.avg_pool2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    sigma = torch.rand(n, 1, 1, 1, generator=g) * 0.1 * (torch.rand(n, 1, 1, 1, generator=g) < 0.4)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def _frames_batch(worlds: dict[str, ToyWorld], step: int, g: torch.Generator, n_clips: int = 16) -> dict:
    """One mixed batch of frames ``(n, 3, 32, 32)`` with object and colour labels ``(n,)``."""
    frames, obj, col = [], [], []
    for k, (name, world) in enumerate(worlds.items()):
        clips = n_clips if name == "toy32" else n_clips // 4
        base = (step * 4 + k) * clips
        for split, regime in (("train", "clean"), ("heldout", "clean"), ("train", "lowq")):
            b = world.batch(range(base, base + clips), split, regime)
            t = b["video"].shape[2]
            pick = torch.randint(0, t, (clips, 2), generator=g)  # two frames per clip
            v = b["video"].transpose(1, 2)  # (b, t, 3, h, w)
            f = torch.cat([v[torch.arange(clips), pick[:, j]] for j in range(2)])
            frames.append(F.interpolate(f, size=(32, 32), mode="area") if f.shape[-1] != 32 else f)
            a = b["attributes"]
            obj.append(torch.from_numpy(a.object).repeat(2))
            col.append(torch.from_numpy(a.colour).repeat(2))
        im = world.images(range(base * 2, base * 2 + 2 * clips), "train")
        f = im["image"]
        frames.append(F.interpolate(f, size=(32, 32), mode="area") if f.shape[-1] != 32 else f)
        obj.append(torch.from_numpy(im["attributes"].object))
        col.append(torch.from_numpy(im["attributes"].colour))
    return {"frames": _augment(torch.cat(frames), g), "object": torch.cat(obj), "colour": torch.cat(col)}


def _clips_batch(world: ToyWorld, step: int, n: int = 24) -> dict:
    """``4 n`` clips ``(4n, 3, t, h, w)``: train and held-out pairs, clean and low-quality, with every label."""
    out = {k: [] for k in ("video", "object", "colour", "direction", "speed", "regime")}
    for j, (split, regime) in enumerate((("train", "clean"), ("heldout", "clean"), ("train", "lowq"), ("heldout", "lowq"))):
        b = world.batch(range((step * 4 + j) * n, (step * 4 + j + 1) * n), split, regime)
        a = b["attributes"]
        out["video"].append(b["video"])
        for k in ("object", "colour", "direction", "speed"):
            out[k].append(torch.from_numpy(getattr(a, k)))
        out["regime"].append(torch.full((n,), int(regime == "lowq")))
    return {k: torch.cat(v) for k, v in out.items()}


class ClassifierTask:
    """The trainer's task for the :class:`AttributeClassifier`: mixed labelled frames, two cross-entropies."""

    def __init__(self, seed: int = 0, clips: int = 16):
        self.worlds = {"toy32": ToyWorld("toy32", seed=1000 + seed), "toy64": ToyWorld("toy64", seed=2000 + seed)}
        self.clips = clips  # clips per split and regime at 32 px (a quarter as many at 64 px): 10 frames each

    def batch(self, step: int, generator: torch.Generator) -> dict:
        return _frames_batch(self.worlds, step, generator, n_clips=self.clips)

    def loss(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
        dev = next(model.parameters()).device
        out = model(batch["frames"].to(dev))  # logits (n, objects), (n, colours)
        return F.cross_entropy(out["object"], batch["object"].to(dev)) + F.cross_entropy(out["colour"], batch["colour"].to(dev))


class FeatureTask:
    """The trainer's task for the :class:`VideoFeatureNet`: labelled clips, one cross-entropy per head."""

    def __init__(self, seed: int = 0, clips: int = 12):
        self.world, self.clips = ToyWorld("toy32", seed=3000 + seed), clips

    def batch(self, step: int, generator: torch.Generator) -> dict:
        return _clips_batch(self.world, step, n=self.clips)  # the clips of a step are fixed by its index

    def loss(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
        dev = next(model.parameters()).device
        out = model(batch["video"].to(dev))
        return sum(F.cross_entropy(out[k], batch[k].to(dev)) for k in VideoFeatureNet.HEADS)


def judge_task(which: str, seed: int = 0) -> tuple[torch.nn.Module, ClassifierTask | FeatureTask]:
    """The seeded network and the task of ``which`` (``"classifier"`` or ``"features"``)."""
    torch.manual_seed(seed)
    if which == "classifier":
        return AttributeClassifier(ClassifierConfig()), ClassifierTask(seed)
    if which == "features":
        return VideoFeatureNet(FeatureNetConfig()), FeatureTask(seed)
    raise ValueError(f"Unknown judge network {which!r}; expected 'classifier' or 'features'.")


def trainer_config(steps: int, lr: float = 2e-3, seed: int = 0, device: str = "auto") -> TrainerConfig:
    """The loop's settings for a judge network: 10% warm-up, cosine to zero, no clipping, no EMA."""
    return TrainerConfig(steps=steps, lr=lr, warmup=max(1, steps // 10), min_lr_ratio=0.0, weight_decay=1e-4,
                         grad_clip=0.0, ema_decay=0.0, mixed_precision="auto", ckpt_every=max(1, steps // 4),
                         log_every=20, seed=seed, device=device)


def _train(which: str, steps: int, seed: int, lr: float, device: str, progress: bool, out: str | Path | None,
           resume: bool, allow_changed_settings: bool = False) -> torch.nn.Module:
    model, task = judge_task(which, seed)
    with tempfile.TemporaryDirectory() as scratch:  # without ``out`` the training states are thrown away
        trainer = Trainer(model, task, trainer_config(steps, lr, seed, device), out or scratch, progress=progress,
                          name="attribute classifier" if which == "classifier" else "video feature net",
                          allow_changed_settings=allow_changed_settings)
        trainer.fit(resume=resume)
    return model.eval()


def train_classifier(steps: int = 1500, seed: int = 0, lr: float = 2e-3, device="auto", progress: bool = True,
                     out: str | Path | None = None, resume: bool = False,
                     allow_changed_settings: bool = False) -> AttributeClassifier:
    """Train the per-frame :class:`AttributeClassifier` (training states in ``out``); returns it in eval mode."""
    return _train("classifier", steps, seed, lr, device, progress, out, resume, allow_changed_settings)


def train_feature_net(steps: int = 800, seed: int = 0, lr: float = 2e-3, device="auto", progress: bool = True,
                      out: str | Path | None = None, resume: bool = False,
                      allow_changed_settings: bool = False) -> VideoFeatureNet:
    """Train the :class:`VideoFeatureNet` (features for the Frechet distance); returns it in eval mode."""
    return _train("features", steps, seed, lr, device, progress, out, resume, allow_changed_settings)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = JudgesTrainConfig()
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: data/judges)")
    parser.add_argument("--runs", type=Path, default=Path("runs/judges"),
                        help="folder of the training states, one subfolder per network (default: runs/judges)")
    parser.add_argument("--resume", action="store_true", help="continue both networks exactly from --runs")
    parser.add_argument("--allow-changed-settings", action="store_true",
                        help="with --resume: continue although settings differ from the checkpoints' (recorded)")
    parser.add_argument("--classifier-steps", type=int, default=d.classifier_steps,
                        help="training steps of the attribute classifier")
    parser.add_argument("--feature-steps", type=int, default=d.feature_steps,
                        help="training steps of the video feature network")
    parser.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed")
    parser.add_argument("--device", default=d.device, help="cpu, cuda, mps or auto")
    parser.add_argument("--eval-clips", type=int, default=d.eval_clips, help="test clips used for the recorded metrics")


def main(args: argparse.Namespace) -> int:
    """Train both judge networks, measure them, and write them with their json sidecars."""
    from vdlearn.eval.judge import Judge, evaluate_judges

    cfg = JudgesTrainConfig(classifier_steps=args.classifier_steps, feature_steps=args.feature_steps, lr=args.lr,
                            seed=args.seed, eval_clips=args.eval_clips, device=args.device)
    out = Path(args.out) if args.out else data_dir() / "judges"
    command = reproduce_command("vdlearn train judges", cfg, out, first=("classifier_steps", "feature_steps", "seed"))
    t0 = time.time()
    clf = train_classifier(cfg.classifier_steps, cfg.seed, cfg.lr, cfg.device, out=args.runs / "attribute_classifier",
                           resume=args.resume, allow_changed_settings=args.allow_changed_settings)
    t1 = time.time()
    feat = train_feature_net(cfg.feature_steps, cfg.seed, cfg.lr, cfg.device, out=args.runs / "video_features",
                             resume=args.resume, allow_changed_settings=args.allow_changed_settings)
    t2 = time.time()
    judge = Judge(clf.cpu(), feat.cpu())
    metrics = evaluate_judges(judge, n=cfg.eval_clips)
    save_checkpoint(out / "attribute_classifier", clf.state_dict(), artifact_meta(
        config=clf.config, metrics=metrics["classifier"], command=command,
        steps=cfg.classifier_steps, train_seconds=round(t1 - t0, 1)))
    save_checkpoint(out / "video_features", feat.state_dict(), artifact_meta(
        config=feat.config, metrics=metrics["features"], command=command,
        steps=cfg.feature_steps, train_seconds=round(t2 - t1, 1)))
    print(f"wrote {out}/attribute_classifier.* and {out}/video_features.*")
    for k, v in metrics.items():
        print(k, v)
    return 0
