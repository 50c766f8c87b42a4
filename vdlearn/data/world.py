"""The toy video world: captioned clips of one object moving on a background.

This is the course's dataset and its measuring stick. A clip is a pure function of
``(seed, index, split)``: one object (a real handwritten digit or a shape) of a named
colour moves left, right, up or down, slowly or quickly, and bounces off the walls.
Its caption is generated from those attributes (see :mod:`vdlearn.data.captions`).

Three regimes, as in VideoCrafter2 (arXiv 2401.09047, sec. 3.1):

* ``clean``: sharp, textured videos, the ground truth we would like to generate;
* ``lowq``: the same clips degraded (dull colours, blur, watermark, JPEG blocks,
  noise), the plentiful-but-poor WebVid situation (:mod:`vdlearn.data.degrade`);
* **images** (:meth:`ToyWorld.images`): sharp, textured still frames, including a
  concept that never appears in any video (the ``star``), the JDB situation.

Splits: ``train`` and ``test`` draw from the same attribute combinations (on separate
random streams, so they never share a clip); ``heldout`` draws only the
object-colour pairs that are kept out of training, to measure composition.

Motion physics: speeds are in pixels per second (at 32 px; scaled with the frame
size), so the displacement per frame is ``speed / fps``: the same caption at a higher
fps moves less per frame, which is what fps conditioning (VideoCrafter1 sec. 3.2)
has to learn. Starting points are chosen so the object does not reach a wall in the
first half of the clip (when the path is too long for that, as at 4 fps, it starts at
the far wall); after that it bounces.

Rendering is batched: sprites are placed with separable bilinear (tent) weights, so a
batch of clips costs a few small matrix products. Taught in notebook 01_toy_video_world.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from vdlearn.data import degrade
from vdlearn.data.captions import (
    COLOURS,
    DIRECTIONS,
    OBJECTS,
    SPEEDS,
    VIDEO_OBJECTS,
    Caption,
    parse_caption,
)
from vdlearn.data.glyphs import digit_glyphs, shape_glyph
from vdlearn.data.rng import integer_seed, uniform

#: Object-colour pairs kept out of the train/test splits (about 9% of the 112 video pairs).
DEFAULT_HELDOUT: tuple[tuple[str, str], ...] = (
    ("3", "green"), ("7", "blue"), ("0", "orange"), ("5", "cyan"), ("9", "white"),
    ("2", "yellow"), ("circle", "yellow"), ("square", "magenta"), ("triangle", "red"), ("cross", "green"),
)

#: RGB in [0, 1] of each colour word.
COLOUR_RGB: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.12, 0.10),
    "green": (0.12, 0.80, 0.22),
    "blue": (0.18, 0.35, 1.00),
    "yellow": (0.95, 0.90, 0.12),
    "cyan": (0.10, 0.88, 0.92),
    "magenta": (0.90, 0.18, 0.90),
    "white": (0.95, 0.95, 0.95),
    "orange": (1.00, 0.55, 0.05),
}

SPLITS = ("train", "test", "heldout")
REGIMES = ("clean", "lowq")
_SPLIT_SALT = {"train": 0, "test": 1_000_003, "heldout": 2_000_029}
_DIRECTION_VECTORS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}


@dataclass(frozen=True)
class WorldConfig:
    """Everything that defines the toy world. Named presets: :meth:`preset`."""

    size: int = 32  # frame height and width in pixels (32 or 64)
    frames: int = 16  # frames per clip (8 to 16)
    fps_choices: tuple[int, ...] = (8,)  # frame rates a clip is sampled at
    speeds_px_per_s: tuple[float, float] = (8.0, 20.0)  # "slowly", "quickly", in px/s at 32 px
    sprite_frac: float = 0.36  # object sprite size as a fraction of the frame
    texture: float = 0.22  # depth of the stripes on objects (0 = flat colour)
    heldout: tuple[tuple[str, str], ...] = DEFAULT_HELDOUT  # object-colour pairs never trained on
    image_only_fraction: float = 0.2  # share of high-quality images that show an image-only object
    # low-quality regime: each clip draws its strengths uniformly from these ranges
    dull: tuple[float, float] = (0.4, 0.75)  # colour dulling amount
    blur_sigma: tuple[float, float] = (0.8, 1.2)  # Gaussian blur, pixels at 32 px
    watermark_opacity: tuple[float, float] = (0.15, 0.25)  # opacity of the "VD" stamp
    jpeg_quality: tuple[float, float] = (25.0, 50.0)  # libjpeg quality
    noise_sigma: tuple[float, float] = (0.02, 0.045)  # sensor noise, in [0, 1] units

    def __post_init__(self):
        if self.size % 8 or not 16 <= self.size <= 256:
            raise ValueError(f"WorldConfig.size must be a multiple of 8 between 16 and 256, got {self.size}.")
        if not 2 <= self.frames <= 64:
            raise ValueError(f"WorldConfig.frames must be between 2 and 64, got {self.frames}.")
        bad = [p for p in self.heldout if p[0] not in VIDEO_OBJECTS or p[1] not in COLOURS]
        if bad:
            raise ValueError(f"Held-out pairs must be (video object, colour); unknown: {bad}.")

    @property
    def sprite(self) -> int:
        """Sprite size in pixels."""
        return round(self.size * self.sprite_frac)

    @staticmethod
    def preset(name: str) -> WorldConfig:
        """A named configuration: ``toy32`` (default), ``toy64``, ``toy32_8f``, ``toy32_fps``, ``toy32_8f_fps``."""
        if name not in WORLD_PRESETS:
            raise KeyError(f"Unknown world preset {name!r}; known presets: {sorted(WORLD_PRESETS)}.")
        return WORLD_PRESETS[name]


WORLD_PRESETS: dict[str, WorldConfig] = {
    "toy32": WorldConfig(),
    "toy64": WorldConfig(size=64),
    "toy32_8f": WorldConfig(frames=8),
    "toy32_fps": WorldConfig(fps_choices=(4, 8, 16)),
    "toy32_8f_fps": WorldConfig(frames=8, fps_choices=(4, 8, 16)),  # the base T2V model's data
}


@dataclass
class ClipAttributes:
    """The sampled attributes of a batch of clips (numpy arrays of length ``b``)."""

    index: np.ndarray
    object: np.ndarray  # index into OBJECTS
    colour: np.ndarray  # index into COLOURS
    direction: np.ndarray  # index into DIRECTIONS (-1 for images)
    speed: np.ndarray  # index into SPEEDS (-1 for images)
    fps: np.ndarray  # frames per second
    glyph: np.ndarray  # digit bank index (-1 for shapes)
    start: np.ndarray  # (b, 2) sprite centre (x, y) in pixels at frame 0
    velocity: np.ndarray  # (b, 2) pixels per frame
    style: np.ndarray  # (b, 9) texture orientation, period, phase, two background colours
    lowq: np.ndarray  # (b, 5) strengths: dull, blur, watermark, jpeg, noise
    extra: dict = field(default_factory=dict)

    def captions(self) -> list[str]:
        return [c.text() for c in self.caption_objects()]

    def caption_objects(self) -> list[Caption]:
        out = []
        for i in range(len(self.index)):
            d, s = int(self.direction[i]), int(self.speed[i])
            out.append(
                Caption(
                    OBJECTS[self.object[i]], COLOURS[self.colour[i]],
                    DIRECTIONS[d] if d >= 0 else None, SPEEDS[s] if s >= 0 else None,
                )
            )
        return out


def _lerp(lo_hi: tuple[float, float], u: np.ndarray) -> np.ndarray:
    return lo_hi[0] + (lo_hi[1] - lo_hi[0]) * u


class ToyWorld:
    """The toy video world for one :class:`WorldConfig` and ``seed``.

    >>> world = ToyWorld(WorldConfig.preset("toy32"), seed=0)
    >>> batch = world.batch(range(4))            # dict: video (4, 3, 16, 32, 32) in [-1, 1], caption, fps
    >>> imgs = world.images(range(4))             # dict: image (4, 3, 32, 32), caption
    """

    def __init__(self, config: WorldConfig | str = "toy32", seed: int = 0):
        self.config = WorldConfig.preset(config) if isinstance(config, str) else config
        self.seed = int(seed)
        heldout = {(OBJECTS.index(o), COLOURS.index(c)) for o, c in self.config.heldout}
        all_pairs = [(o, c) for o in range(len(VIDEO_OBJECTS)) for c in range(len(COLOURS))]
        self._pairs = {
            "train": np.array([p for p in all_pairs if p not in heldout]),
            "heldout": np.array(sorted(heldout)),
        }
        self._pairs["test"] = self._pairs["train"]

    def __repr__(self) -> str:
        return f"ToyWorld({self.config}, seed={self.seed})"

    # ------------------------------------------------------------------ sampling
    def _check(self, split: str, regime: str | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}; choose one of {SPLITS}.")
        if regime is not None and regime not in REGIMES:
            raise ValueError(f"Unknown regime {regime!r}; choose one of {REGIMES} (images: use world.images).")

    def heldout_pairs(self) -> list[tuple[str, str]]:
        """The object-colour pairs of the ``heldout`` split."""
        return [(OBJECTS[o], COLOURS[c]) for o, c in self._pairs["heldout"]]

    def attributes(
        self, indices: Sequence[int], split: str = "train", image: bool = False, fix: dict | None = None,
    ) -> ClipAttributes:
        """Sample the attributes of clips (or, with ``image=True``, of still images).

        ``fix`` pins attributes for every clip, e.g. ``{"object": "3", "colour": "red",
        "direction": "left", "speed": "quickly", "fps": 8}``; the rest (handwriting,
        position, texture, background) still comes from ``(seed, index)``.
        """
        self._check(split)
        fix = dict(fix or {})
        cfg = self.config
        idx = np.asarray(list(indices), dtype=np.int64)
        if idx.ndim != 1 or (idx < 0).any():
            raise ValueError("Clip indices must be non-negative integers.")
        if len(idx) == 0:
            raise ValueError("No clip indices given: pass at least one, e.g. range(8).")
        salt = _SPLIT_SALT[split] + (7_000_001 if image else 0)
        u = uniform(self.seed, idx + salt * 0, stream=1 + salt, n=24)  # (b, 24)
        b = len(idx)
        pairs = self._pairs[split]
        pair = pairs[np.minimum((u[:, 0] * len(pairs)).astype(int), len(pairs) - 1)]
        obj, col = pair[:, 0].copy(), pair[:, 1].copy()
        if image and split != "heldout":  # the image-only concepts (the star)
            star = u[:, 1] < cfg.image_only_fraction
            obj[star] = OBJECTS.index("star")
            col[star] = np.minimum((u[star, 2] * len(COLOURS)).astype(int), len(COLOURS) - 1)
        if "object" in fix:
            obj[:] = OBJECTS.index(fix["object"])
        if "colour" in fix:
            col[:] = COLOURS.index(fix["colour"])
        # a handwritten sample for digits
        _, by_digit = digit_glyphs(cfg.sprite)
        glyph = np.full(b, -1, dtype=np.int64)
        for i in np.flatnonzero(obj < 10):
            bank = by_digit[obj[i]]
            glyph[i] = int(bank[min(int(u[i, 3] * len(bank)), len(bank) - 1)])
        s = cfg.sprite
        lo, hi = s / 2, cfg.size - s / 2
        if image:
            direction = np.full(b, -1)
            speed = np.full(b, -1)
            fps = np.zeros(b, dtype=np.int64)
            start = np.stack([_lerp((lo, hi), u[:, 4]), _lerp((lo, hi), u[:, 5])], axis=1)
            velocity = np.zeros((b, 2))
        else:
            direction = np.minimum((u[:, 6] * 4).astype(int), 3)
            speed = (u[:, 7] < 0.5).astype(int)
            fps = np.asarray(cfg.fps_choices)[np.minimum((u[:, 8] * len(cfg.fps_choices)).astype(int),
                                                         len(cfg.fps_choices) - 1)]
            if fix.get("direction") is not None:
                direction[:] = DIRECTIONS.index(fix["direction"])
            if fix.get("speed") is not None:
                speed[:] = SPEEDS.index(fix["speed"])
            if fix.get("fps") is not None:
                fps = np.full(b, int(fix["fps"]))
            px_per_frame = np.asarray(cfg.speeds_px_per_s)[speed] * (cfg.size / 32) / fps
            unit = np.array([_DIRECTION_VECTORS[DIRECTIONS[d]] for d in direction])  # (b, 2)
            velocity = unit * px_per_frame[:, None]
            travel = np.minimum(px_per_frame * (cfg.frames - 1) / 2, hi - lo)  # first half, no wall
            along = np.where(
                (unit.sum(1) > 0), _lerp((0, 1), u[:, 4]) * (hi - lo - travel) + lo,
                hi - _lerp((0, 1), u[:, 4]) * (hi - lo - travel),
            )
            across = _lerp((lo, hi), u[:, 5])
            horizontal = unit[:, 0] != 0
            start = np.stack([np.where(horizontal, along, across), np.where(horizontal, across, along)], axis=1)
        style = np.stack(
            [
                (u[:, 9] < 0.5).astype(float),  # stripe orientation: 0 horizontal, 1 vertical
                _lerp((3.0, 4.5), u[:, 10]) * cfg.size / 32,  # stripe period, px
                u[:, 11] * 2 * np.pi,  # stripe phase
                *[_lerp((0.02, 0.22), u[:, 12 + k]) for k in range(6)],  # top and bottom background RGB
            ],
            axis=1,
        )
        lowq = np.stack(
            [
                _lerp(cfg.dull, u[:, 18]),
                _lerp(cfg.blur_sigma, u[:, 19]) * cfg.size / 32,
                _lerp(cfg.watermark_opacity, u[:, 20]),
                _lerp(cfg.jpeg_quality, u[:, 21]),
                _lerp(cfg.noise_sigma, u[:, 22]),
            ],
            axis=1,
        )
        return ClipAttributes(idx, obj, col, direction, speed, fps, glyph, start, velocity, style, lowq,
                              extra={"split": split, "image": image})

    # ----------------------------------------------------------------- rendering
    def trajectory(self, attrs: ClipAttributes, frames: int) -> torch.Tensor:
        """Sprite centres ``(b, t, 2)`` (x, y) in pixels, bouncing off the walls."""
        s = self.config.sprite
        lo, hi = s / 2, self.config.size - s / 2
        t = torch.arange(frames, dtype=torch.float64)
        free = torch.from_numpy(attrs.start)[:, None, :] + torch.from_numpy(attrs.velocity)[:, None, :] * t[None, :, None]
        # reflect into [lo, hi]: a triangle wave of period 2 (hi - lo)
        span = hi - lo
        phase = torch.remainder(free - lo, 2 * span)
        return (lo + torch.where(phase <= span, phase, 2 * span - phase)).float()

    def _sprites(self, attrs: ClipAttributes) -> torch.Tensor:
        """Alpha masks ``(b, s, s)`` of the objects."""
        s = self.config.sprite
        bank, _ = digit_glyphs(s)
        out = torch.empty(len(attrs.index), s, s)
        digits = attrs.glyph >= 0
        if digits.any():
            out[torch.from_numpy(digits)] = bank[torch.from_numpy(attrs.glyph[digits])]
        for i in np.flatnonzero(~digits):
            out[i] = shape_glyph(OBJECTS[attrs.object[i]], s)
        return out

    def render(self, attrs: ClipAttributes, frames: int | None = None) -> torch.Tensor:
        """Clean frames ``(b, 3, t, h, w)`` in [0, 1] for the given attributes."""
        cfg = self.config
        frames = cfg.frames if frames is None else frames
        s, n = cfg.sprite, cfg.size
        alpha = self._sprites(attrs)  # (b, s, s)
        style = torch.from_numpy(attrs.style).float()  # (b, 9)
        # object texture: stripes across the sprite, brightness in [1 - texture, 1]
        coord = torch.arange(s, dtype=torch.float32) + 0.5
        along = torch.where(style[:, 0, None, None] > 0.5, coord[None, None, :], coord[None, :, None])  # (b, s, s)
        stripes = 0.5 * (1 + torch.sin(2 * np.pi * along / style[:, 1, None, None] + style[:, 2, None, None]))
        shade = 1 - cfg.texture * stripes  # (b, s, s)
        rgb = torch.tensor([COLOUR_RGB[c] for c in COLOURS])[torch.from_numpy(attrs.colour)]  # (b, 3)
        paint = alpha[:, None] * shade[:, None] * rgb[:, :, None, None]  # (b, 3, s, s) premultiplied
        # separable bilinear placement: weight of sprite pixel u on canvas pixel j
        centre = self.trajectory(attrs, frames)  # (b, t, 2)
        pix = torch.arange(n, dtype=torch.float32)
        u = torch.arange(s, dtype=torch.float32)
        offset_x = pix[None, None, :, None] - (centre[..., 0, None, None] - s / 2) - u  # (b, t, w, s)
        offset_y = pix[None, None, :, None] - (centre[..., 1, None, None] - s / 2) - u  # (b, t, h, s)
        wx = (1 - offset_x.abs()).clamp_min(0)
        wy = (1 - offset_y.abs()).clamp_min(0)
        layers = torch.cat([paint, alpha[:, None]], dim=1)[:, None]  # (b, 1, 4, s, s): RGB and alpha
        placed = wy[:, :, None] @ (layers @ wx.transpose(-1, -2)[:, :, None])  # (b, t, 4, h, w)
        placed = placed.permute(0, 2, 1, 3, 4)  # (b, 4, t, h, w)
        placed_paint, placed_alpha = placed[:, :3], placed[:, 3:]
        # background: a vertical gradient between two dark colours
        top, bottom = style[:, 3:6], style[:, 6:9]  # (b, 3)
        ramp = torch.linspace(0, 1, n)[None, None, :]  # (1, 1, h)
        bg = (top[:, :, None] * (1 - ramp) + bottom[:, :, None] * ramp)[:, :, None, :, None]  # (b, 3, 1, h, 1)
        video = bg * (1 - placed_alpha) + placed_paint
        return video.clamp(0, 1)

    def degrade(self, video: torch.Tensor, attrs: ClipAttributes) -> torch.Tensor:
        """The low-quality version ``(b, 3, t, h, w)`` in [0, 1] of clean frames."""
        q = torch.from_numpy(attrs.lowq).float()  # (b, 5)
        x = degrade.dull_colours(video, q[:, 0])
        x = degrade.gaussian_blur(x, q[:, 1])
        x = degrade.add_watermark(x, q[:, 2])
        x = degrade.jpeg_compress(x, q[:, 3])
        noise = torch.stack([
            torch.randn(video.shape[1:], generator=torch.Generator().manual_seed(
                integer_seed(self.seed, int(i), 99 + _SPLIT_SALT[attrs.extra.get("split", "train")])))
            for i in attrs.index
        ])
        x = degrade.add_noise(x, q[:, 4], noise)
        return x.clamp(0, 1)

    # ------------------------------------------------------------------- public
    def batch(
        self, indices: Sequence[int], split: str = "train", regime: str = "clean",
        device: str | torch.device | None = None,
    ) -> dict:
        """A batch of clips.

        Returns a dict: ``video`` ``(b, 3, t, h, w)`` in [-1, 1], ``caption`` (list of
        str), ``fps`` ``(b,)`` long, ``attributes`` (:class:`ClipAttributes`).
        """
        self._check(split, regime)
        attrs = self.attributes(indices, split)
        video = self.render(attrs)
        if regime == "lowq":
            video = self.degrade(video, attrs)
        video = video * 2 - 1
        if device is not None:
            video = video.to(device)
        return {
            "video": video,
            "caption": attrs.captions(),
            "fps": torch.from_numpy(attrs.fps.astype(np.int64)).to(video.device),
            "attributes": attrs,
        }

    def images(self, indices: Sequence[int], split: str = "train", device: str | torch.device | None = None) -> dict:
        """High-quality still images: ``image`` ``(b, 3, h, w)`` in [-1, 1], ``caption``, ``attributes``."""
        self._check(split)
        attrs = self.attributes(indices, split, image=True)
        image = self.render(attrs, frames=1)[:, :, 0] * 2 - 1
        if device is not None:
            image = image.to(device)
        return {"image": image, "caption": attrs.captions(), "attributes": attrs}

    def from_caption(
        self, caption: str, indices: Sequence[int] = (0,), regime: str = "clean", fps: int | None = None,
        split: str = "test",
    ) -> dict:
        """Clips that show exactly ``caption`` (one per index; handwriting, position and
        background vary with the index). An image caption ("a red star") gives images.
        Image-only objects can be rendered moving too: the ground truth for a composition
        (star + motion) that no training video shows.

        >>> ToyWorld().from_caption("a red 3 moving left quickly", indices=range(4))["video"].shape
        torch.Size([4, 3, 16, 32, 32])
        """
        c = parse_caption(caption)
        fix = {"object": c.object, "colour": c.colour}
        if c.direction is None:
            attrs = self.attributes(indices, split, image=True, fix=fix)
            image = self.render(attrs, frames=1)[:, :, 0] * 2 - 1
            return {"image": image, "caption": attrs.captions(), "attributes": attrs}
        fix.update(direction=c.direction, speed=c.speed or SPEEDS[0], fps=fps)
        attrs = self.attributes(indices, split, fix=fix)
        video = self.render(attrs)
        if regime == "lowq":
            video = self.degrade(video, attrs)
        return {"video": video * 2 - 1, "caption": attrs.captions(),
                "fps": torch.from_numpy(attrs.fps.astype(np.int64)), "attributes": attrs}

    def clip(self, index: int, split: str = "train", regime: str = "clean") -> dict:
        """One clip: ``video`` ``(3, t, h, w)`` in [-1, 1], ``caption``, ``fps``."""
        b = self.batch([index], split, regime)
        return {"video": b["video"][0], "caption": b["caption"][0], "fps": int(b["fps"][0])}

    def loader(
        self, batch_size: int, split: str = "train", regime: str = "clean", start: int = 0,
        device: str | torch.device | None = None,
    ) -> Iterator[dict]:
        """An endless stream of batches over indices ``start, start + 1, ...``."""
        i = start
        while True:
            yield self.batch(range(i, i + batch_size), split, regime, device)
            i += batch_size

    def with_config(self, **changes) -> ToyWorld:
        """The same world (same seed) with some config fields changed."""
        return ToyWorld(replace(self.config, **changes), self.seed)
