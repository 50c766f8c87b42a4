"""Training the judges' networks on the toy world (``vdlearn train judges``).

Both networks see every regime (clean clips, low-quality clips, high-quality images),
both splits of object-colour pairs (a judge must know the held-out pairs too) and
frames at 32 and 64 pixels, plus extra random blur and noise, so they can score what
a generator produces, not only what the world renders. The shipped weights in
``data/judges/`` were written by :func:`main`; their json records the command.
Taught in notebook 01_toy_video_world.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from vdlearn.data.world import ToyWorld
from vdlearn.device import get_device
from vdlearn.eval.networks import AttributeClassifier, ClassifierConfig, FeatureNetConfig, VideoFeatureNet
from vdlearn.io import artifact_meta, data_dir, save_checkpoint


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
    """One mixed batch of frames with object and colour labels."""
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


def train_classifier(steps: int = 1500, seed: int = 0, lr: float = 2e-3, device="auto", progress: bool = True):
    """Train the per-frame :class:`AttributeClassifier`; returns the model (eval mode)."""
    device = get_device(device)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    worlds = {"toy32": ToyWorld("toy32", seed=1000 + seed), "toy64": ToyWorld("toy64", seed=2000 + seed)}
    model = AttributeClassifier(ClassifierConfig()).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    bar = tqdm(range(steps), desc="attribute classifier", disable=not progress)
    for step in bar:
        b = _frames_batch(worlds, step, g)
        out = model(b["frames"].to(device))
        loss = F.cross_entropy(out["object"], b["object"].to(device)) + F.cross_entropy(out["colour"], b["colour"].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return model.eval()


def _clips_batch(world: ToyWorld, step: int, n: int = 24) -> dict:
    out = {k: [] for k in ("video", "object", "colour", "direction", "speed", "regime")}
    for j, (split, regime) in enumerate((("train", "clean"), ("heldout", "clean"), ("train", "lowq"), ("heldout", "lowq"))):
        b = world.batch(range((step * 4 + j) * n, (step * 4 + j + 1) * n), split, regime)
        a = b["attributes"]
        out["video"].append(b["video"])
        for k in ("object", "colour", "direction", "speed"):
            out[k].append(torch.from_numpy(getattr(a, k)))
        out["regime"].append(torch.full((n,), int(regime == "lowq")))
    return {k: torch.cat(v) for k, v in out.items()}


def train_feature_net(steps: int = 800, seed: int = 0, lr: float = 2e-3, device="auto", progress: bool = True):
    """Train the :class:`VideoFeatureNet` (features for the Frechet distance)."""
    device = get_device(device)
    torch.manual_seed(seed)
    world = ToyWorld("toy32", seed=3000 + seed)
    model = VideoFeatureNet(FeatureNetConfig()).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    bar = tqdm(range(steps), desc="video feature net", disable=not progress)
    for step in bar:
        b = _clips_batch(world, step, n=12)
        out = model(b["video"].to(device))
        loss = sum(F.cross_entropy(out[k], b[k].to(device)) for k in VideoFeatureNet.HEADS)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return model.eval()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: data/judges)")
    parser.add_argument("--classifier-steps", type=int, default=1200, help="training steps of the attribute classifier")
    parser.add_argument("--feature-steps", type=int, default=600, help="training steps of the video feature network")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--device", default="auto", help="cpu, cuda, mps or auto")
    parser.add_argument("--eval-clips", type=int, default=512, help="test clips used for the recorded metrics")


def main(args: argparse.Namespace) -> int:
    """Train both judge networks, measure them, and write them with their json sidecars."""
    from vdlearn.eval.judge import Judge, evaluate_judges

    out = Path(args.out) if args.out else data_dir() / "judges"
    command = (f"vdlearn train judges --classifier-steps {args.classifier_steps} --feature-steps "
               f"{args.feature_steps} --seed {args.seed}")
    t0 = time.time()
    clf = train_classifier(args.classifier_steps, args.seed, device=args.device)
    t1 = time.time()
    feat = train_feature_net(args.feature_steps, args.seed, device=args.device)
    t2 = time.time()
    judge = Judge(clf.cpu(), feat.cpu())
    metrics = evaluate_judges(judge, n=args.eval_clips)
    save_checkpoint(out / "attribute_classifier", clf.state_dict(), artifact_meta(
        config=clf.config, metrics=metrics["classifier"], command=command,
        steps=args.classifier_steps, train_seconds=round(t1 - t0, 1)))
    save_checkpoint(out / "video_features", feat.state_dict(), artifact_meta(
        config=feat.config, metrics=metrics["features"], command=command,
        steps=args.feature_steps, train_seconds=round(t2 - t1, 1)))
    print(f"wrote {out}/attribute_classifier.* and {out}/video_features.*")
    for k, v in metrics.items():
        print(k, v)
    return 0
