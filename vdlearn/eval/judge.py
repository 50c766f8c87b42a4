"""The judges in one object: attributes, motion, quality, consistency, adherence, Frechet.

:class:`Judge` bundles the trained networks (:mod:`vdlearn.eval.networks`) with the
analytic measures (:mod:`~vdlearn.eval.tracker`, :mod:`~vdlearn.eval.quality`,
:mod:`~vdlearn.eval.temporal`). Its central number is **prompt adherence**: for each
generated clip, judge its object, colour, direction and speed, and compare with what
the prompt asked for. Adherence is the fraction of clips that match, per attribute and
jointly (all attributes the prompt names). A prompt without motion words (an image
caption) is judged on object and colour only.

    >>> judge = Judge.load()                                  # the shipped weights in data/judges
    >>> report = judge.adherence(videos, captions, fps)       # {'object': .., 'colour': .., ..., 'joint': ..}

Taught in notebook 01_toy_video_world; every later notebook measures with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from vdlearn.data.captions import ATTRIBUTES, COLOURS, OBJECTS, parse_caption
from vdlearn.eval.frechet import frechet_distance
from vdlearn.eval.networks import (
    AttributeClassifier,
    ClassifierConfig,
    FeatureNetConfig,
    VideoFeatureNet,
)
from vdlearn.eval.quality import quality
from vdlearn.eval.temporal import background_flicker, flicker
from vdlearn.eval.tracker import track
from vdlearn.io import InputError, data_dir, load_checkpoint, load_state_dict_checked


def _check_videos(videos: torch.Tensor) -> torch.Tensor:
    if videos.ndim == 4 and videos.shape[1] == 3:  # images (b, 3, h, w) -> one-frame clips
        videos = videos[:, :, None]
    if videos.ndim != 5 or videos.shape[1] != 3:
        raise ValueError(
            f"The judges expect videos (b, 3, t, h, w) or images (b, 3, h, w) in [-1, 1]; got shape {tuple(videos.shape)}."
        )
    if videos.numel() == 0:
        raise InputError(f"No videos to judge (shape {tuple(videos.shape)}).")
    h, w = videos.shape[-2:]
    if h != w:  # the judges resize to 32 x 32 and the tracker scales by the width: a squashed clip reads wrong
        raise InputError(f"The judges read square frames (the toy world renders 32 x 32, or 64 x 64); these are "
                         f"{h} x {w}. Crop or resize them to a square first.")
    if not torch.isfinite(videos).all():
        raise InputError("The videos contain NaN or inf values; the judges cannot score them.")
    lo, hi = float(videos.min()), float(videos.max())
    if lo < -1.05 or hi > 1.05:  # a little overshoot (an unclamped decoder) is tolerated, other scales are not
        raise InputError(f"The judges read videos with values in [-1, 1]; these span [{lo:.4g}, {hi:.4g}]. Scale "
                         f"them first: x / 127.5 - 1 for values in [0, 255], x * 2 - 1 for values in [0, 1].")
    return videos.float()


class Judge:
    """Offline evaluation of toy-world videos. Build with :meth:`load`."""

    def __init__(self, classifier: AttributeClassifier, features: VideoFeatureNet, batch_size: int = 64):
        self.classifier = classifier.eval()
        self.features = features.eval()
        self.batch_size = batch_size

    @classmethod
    def load(cls, folder: str | Path | None = None, device: str | torch.device = "cpu") -> Judge:
        """Load the judge networks (default: the shipped ``data/judges``)."""
        folder = Path(folder) if folder is not None else data_dir() / "judges"
        clf_state, clf_meta = load_checkpoint(folder / "attribute_classifier.safetensors", device)
        feat_state, feat_meta = load_checkpoint(folder / "video_features.safetensors", device)
        clf = AttributeClassifier(ClassifierConfig(**clf_meta.get("config", {})))
        feat_cfg = feat_meta.get("config", {})
        feat = VideoFeatureNet(FeatureNetConfig(**{k: tuple(v) for k, v in feat_cfg.items()}))
        load_state_dict_checked(clf, clf_state, "attribute classifier checkpoint")
        load_state_dict_checked(feat, feat_state, "video feature checkpoint")
        return cls(clf.to(device), feat.to(device))

    @property
    def device(self) -> torch.device:
        return next(self.classifier.parameters()).device

    # ------------------------------------------------------------- attributes
    @torch.no_grad()
    def frame_logprobs(self, videos: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-frame log-probabilities: ``object`` ``(b, t, 15)``, ``colour`` ``(b, t, 8)``."""
        videos = _check_videos(videos)
        b, c, t, h, w = videos.shape
        frames = videos.transpose(1, 2).reshape(b * t, c, h, w)
        outs = [self.classifier(frames[i : i + self.batch_size * 8].to(self.device))
                for i in range(0, len(frames), self.batch_size * 8)]
        return {k: torch.cat([o[k] for o in outs]).log_softmax(-1).reshape(b, t, -1).cpu() for k in ("object", "colour")}

    def describe(self, videos: torch.Tensor, fps: torch.Tensor | int | Sequence[int] = 8) -> list[dict]:
        """What each clip shows: ``{'object', 'colour', 'direction', 'speed', 'identity_agreement'}``.

        One-frame clips (images) get ``direction``/``speed`` ``None``.
        """
        videos = _check_videos(videos)
        lp = self.frame_logprobs(videos)
        obj = lp["object"].mean(1).argmax(-1)  # (b,)
        col = lp["colour"].mean(1).argmax(-1)
        agree = ((lp["object"].argmax(-1) == obj[:, None]) & (lp["colour"].argmax(-1) == col[:, None])).float().mean(1)
        if videos.shape[2] >= 3:
            tr = track(videos, torch.as_tensor(fps))
            directions, speeds = tr.direction, tr.speed
        else:
            directions = speeds = [None] * len(videos)
        return [
            {"object": OBJECTS[o], "colour": COLOURS[c], "direction": d, "speed": s, "identity_agreement": float(a)}
            for o, c, d, s, a in zip(obj.tolist(), col.tolist(), directions, speeds, agree)
        ]

    def adherence(
        self, videos: torch.Tensor, captions: Sequence[str], fps: torch.Tensor | int | Sequence[int] = 8,
        details: bool = False,
    ) -> dict:
        """Prompt adherence: the fraction of clips whose judged attributes match the prompt.

        Returns ``{'object', 'colour', 'direction', 'speed', 'joint', 'n'}`` (an attribute no
        prompt mentions is ``None``); with ``details=True`` also the per-clip verdicts.
        """
        videos = _check_videos(videos)
        if len(captions) != len(videos):
            raise ValueError(f"Got {len(videos)} videos but {len(captions)} captions; give one caption per video.")
        asked = [parse_caption(c) for c in captions]
        seen = self.describe(videos, fps)
        hits = {k: [] for k in ATTRIBUTES}
        joint = []
        for want, got in zip(asked, seen):
            ok_all = True
            for k in ATTRIBUTES:
                target = getattr(want, k)
                if target is None:
                    continue
                ok = got[k] == target
                hits[k].append(ok)
                ok_all &= ok
            joint.append(ok_all)
        report = {k: (sum(v) / len(v) if v else None) for k, v in hits.items()}
        report["joint"] = sum(joint) / len(joint)
        report["n"] = len(joint)
        if details:
            report["clips"] = [{"prompt": c, "judged": s, "match": j} for c, s, j in zip(captions, seen, joint)]
        return report

    # ----------------------------------------------------------- other axes
    def quality(self, videos: torch.Tensor) -> dict[str, float]:
        """Mean picture-quality measures (sharpness, noise, watermark rate)."""
        q = quality(_check_videos(videos))
        return {k: float(v.mean()) for k, v in q.items()}

    def temporal(self, videos: torch.Tensor, fps=8) -> dict[str, float]:
        """Mean temporal measures: flicker, background flicker, jerk, identity agreement."""
        videos = _check_videos(videos)
        tr = track(videos, torch.as_tensor(fps))
        c = tr.centroid
        jerk = (c[:, 2:] - 2 * c[:, 1:-1] + c[:, :-2]).norm(dim=-1).nanmean(1)
        agree = [d["identity_agreement"] for d in self.describe(videos, fps)]
        return {
            "flicker": float(flicker(videos).mean()),
            "background_flicker": float(background_flicker(videos, tr.foreground).mean()),
            "jerk": float(jerk.nanmean()),
            "identity_agreement": sum(agree) / len(agree),
        }

    @torch.no_grad()
    def video_features(self, videos: torch.Tensor) -> torch.Tensor:
        """``(b, 128)`` features of the judge's video network."""
        videos = _check_videos(videos)
        return torch.cat([self.features.features(videos[i : i + self.batch_size].to(self.device)).cpu()
                          for i in range(0, len(videos), self.batch_size)])

    def frechet(self, videos_a: torch.Tensor, videos_b: torch.Tensor) -> float:
        """Frechet distance between two sets of clips, on the judge's video features."""
        return frechet_distance(self.video_features(videos_a), self.video_features(videos_b))

    def report(self, videos, captions, fps=8, reference: torch.Tensor | None = None) -> dict:
        """Everything at once: adherence, quality, temporal (and Frechet against ``reference``)."""
        out = {"adherence": self.adherence(videos, captions, fps), "quality": self.quality(videos),
               "temporal": self.temporal(videos, fps)}
        if reference is not None:
            out["frechet"] = self.frechet(videos, reference)
        return out


def evaluate_judges(judge: Judge, n: int = 512, seed: int = 123) -> dict:
    """The judges' own scorecard on fresh test clips (recorded in the shipped json)."""
    from vdlearn.data.world import ToyWorld

    world = ToyWorld("toy32", seed=seed)
    clean = world.batch(range(n), "test", "clean")
    lowq = world.batch(range(n), "test", "lowq")
    clean2 = world.batch(range(n, 2 * n), "test", "clean")
    adh = judge.adherence(clean["video"], clean["caption"], clean["fps"])
    held = world.batch(range(n // 2), "heldout", "clean")
    adh_held = judge.adherence(held["video"], held["caption"], held["fps"])
    images = world.images(range(n), "train")
    adh_img = judge.adherence(images["image"], images["caption"])
    fd_clean = judge.frechet(clean["video"], clean2["video"])
    fd_lowq = judge.frechet(clean["video"], lowq["video"])
    return {
        "classifier": {"clean_test_adherence": adh, "heldout_pairs_adherence": adh_held, "image_adherence": adh_img},
        "features": {"frechet_clean_vs_clean": fd_clean, "frechet_clean_vs_lowq": fd_lowq, "n": n},
    }
