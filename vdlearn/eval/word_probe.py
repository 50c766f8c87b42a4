r"""The word-ablation probe: which caption words does a text-to-video model use?

Prompt adherence (:mod:`vdlearn.eval.generation`) says *whether* generated clips do
what the prompt asks. This probe says *which words the model uses at all*, without
generating anything. Take real clips with their true captions, noise them to step
``t`` and measure the model's denoising loss. Then swap one attribute word of every
caption for a wrong one ("left" -> "right", "red" -> "green", ...) and measure it again
on the same clips and the same noise:

* a model that uses the word predicts worse with the wrong word: the loss **rises**;
* a model that ignores the word predicts the same either way: the loss is **unchanged**,
  and no guidance scale can make its samples follow that word (classifier-free
  guidance amplifies the difference between two predictions that are equal).

The probe also drops the whole caption (the empty prompt, what CFG's unconditional
branch sees) as a reference. The result is reported per noise level, because words
matter where the noisy clip leaves the answer open: at high noise, where the sampler
decides what and where things are.

Swaps: direction and speed are replaced by their opposite (left <-> right, up <-> down,
slowly <-> quickly); object and colour by the next value of their list (3 -> 4,
red -> green, the last wraps to the first).

    >>> from vdlearn.eval.word_probe import word_sensitivity, format_sensitivity
    >>> print(format_sensitivity(word_sensitivity(model, n=128)))

A second, sharper look at the noisiest step: the **first guess**. At $t \approx T$ the
noisy latent holds almost nothing of the clip, so the loss-minimising prediction of
$x_0$ is the mean of all training clips with that caption, $\mathbb E[x_0 \mid y]$. The
world gives that mean directly (:func:`mean_clip`: encode many clips that show the
caption and average); the model gives its own (:func:`first_guess`: average its $x_0$
prediction over many noise draws). Comparing the two for captions that differ in one
word shows what the model has, and has not, learned to expect from that word before
the sampler has committed to anything:

    >>> data = mean_clip(model, ["a red 3 moving left quickly", "a red 3 moving right quickly"])
    >>> guess = first_guess(model, ["a red 3 moving left quickly", "a red 3 moving right quickly"])
    >>> relative_gap(data[0], data[1]), relative_gap(guess[0], guess[1])

Taught in notebook 05_text_to_video (failure cases).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vdlearn.data.captions import COLOURS, VIDEO_OBJECTS, Caption, parse_caption
from vdlearn.diffusion import diffusion_loss

_OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up", "slowly": "quickly", "quickly": "slowly"}
PROBED = ("object", "colour", "direction", "speed")


def swap_word(caption: str, attribute: str) -> str:
    """``caption`` with its ``attribute`` word replaced by a wrong one (see the module docstring)."""
    c = parse_caption(caption)
    if attribute in ("direction", "speed"):
        value = getattr(c, attribute)
        if value is None:
            raise ValueError(f"Caption {caption!r} has no {attribute} word to swap (an image caption).")
        new = _OPPOSITE[value]
    elif attribute == "object":
        new = VIDEO_OBJECTS[(VIDEO_OBJECTS.index(c.object) + 1) % len(VIDEO_OBJECTS)] \
            if c.object in VIDEO_OBJECTS else VIDEO_OBJECTS[0]
    elif attribute == "colour":
        new = COLOURS[(COLOURS.index(c.colour) + 1) % len(COLOURS)]
    else:
        raise ValueError(f"Unknown attribute {attribute!r}; probe one of {PROBED}.")
    fields = c.asdict()
    fields[attribute] = new
    return Caption(**fields).text()


@torch.no_grad()
def word_sensitivity(model, n: int = 256, timesteps: Sequence[int] = (500, 700, 800, 900, 950), *,
                     noise_draws: int = 2, split: str = "test", world_seed: int = 0, seed: int = 0,
                     batch_size: int = 64) -> dict:
    """How much worse ``model`` denoises real clips when one caption word is wrong.

    ``model`` is a :class:`vdlearn.pipelines.t2v.TextToVideo` (it needs ``tokenize``,
    ``vae``, ``schedule`` and ``config.world``). ``n`` clips of the toy world's ``split``
    are encoded once; for every timestep the loss is averaged over ``noise_draws`` noise
    draws, the same draws for every caption variant.

    Returns ``{"timesteps": [...], "loss": [...], "increase": {"object": [...], "colour":
    [...], "direction": [...], "speed": [...], "empty prompt": [...]}, "n": n}``: the loss
    with the true captions, and the *relative* rise of the loss (0.5 = 50% worse) for
    each swap, one number per timestep.
    """
    from vdlearn.data import ToyWorld, WorldConfig

    if n < 1 or noise_draws < 1:
        raise ValueError(f"n and noise_draws must be at least 1, got n={n}, noise_draws={noise_draws}.")
    num_train = model.schedule.num_train_timesteps
    bad = [t for t in timesteps if not 0 <= int(t) < num_train]
    if bad:
        raise ValueError(f"Timesteps {bad} are outside the schedule's 0..{num_train - 1}.")
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    world = ToyWorld(WorldConfig.preset(model.config.world), seed=world_seed)
    clips = world.batch(range(n), split=split, regime="clean")
    captions, fps = clips["caption"], clips["fps"].to(dev)
    z0 = torch.cat([model.vae.encode_latents(clips["video"][i:i + batch_size].to(dev))
                    for i in range(0, n, batch_size)])  # (n, 4, t, h, w)
    variants = {"true": model.tokenize(captions)}
    for attribute in PROBED:
        variants[attribute] = model.tokenize([swap_word(c, attribute) for c in captions])
    variants["empty prompt"] = model.tokenize([""] * n)

    gen = torch.Generator().manual_seed(seed)
    noises = [torch.randn(z0.shape, generator=gen).to(dev) for _ in range(noise_draws)]  # (n, 4, t, h, w) each
    losses = {k: [] for k in variants}
    for step in timesteps:
        t = torch.full((n,), int(step), device=dev, dtype=torch.long)
        for name, tokens in variants.items():
            total = 0.0
            for noise in noises:
                for i in range(0, n, batch_size):
                    sl = slice(i, i + batch_size)
                    cond = {"tokens": tokens[sl].to(dev), "fps": fps[sl]}
                    loss = diffusion_loss(model, z0[sl], model.schedule, cond=cond, t=t[sl], noise=noise[sl])
                    total += loss.item() * len(z0[sl])
            losses[name].append(total / (n * noise_draws))
    model.train(was_training)
    true = losses.pop("true")
    return {
        "timesteps": [int(t) for t in timesteps],
        "loss": true,
        "increase": {k: [v / base - 1 for v, base in zip(vals, true)] for k, vals in losses.items()},
        "n": n,
        "split": split,
    }


@torch.no_grad()
def mean_clip(model, captions: Sequence[str], n: int = 256, *, split: str = "train", world_seed: int = 0,
              batch_size: int = 64) -> torch.Tensor:
    r"""The data's answer to "what does this caption look like on average": ``(k, c, t, h, w)`` latents.

    For each caption, ``n`` clips of the toy world that show exactly it (handwriting,
    start position and background vary) are encoded with the model's VAE and averaged.
    This is $\mathbb E[z_0 \mid y]$, the best possible prediction at the noisiest step.
    """
    from vdlearn.data import ToyWorld, WorldConfig

    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}.")
    world = ToyWorld(WorldConfig.preset(model.config.world), seed=world_seed)
    dev = next(model.parameters()).device
    means = []
    for caption in captions:
        if parse_caption(caption).direction is None:
            raise ValueError(f"{caption!r} describes an image; mean_clip needs a video caption with a direction.")
        total = 0.0
        for start in range(0, n, batch_size):
            clips = world.from_caption(caption, indices=range(start, min(n, start + batch_size)), split=split,
                                       fps=model.config.default_fps)
            total = total + model.vae.encode_latents(clips["video"].to(dev)).sum(0)  # (c, t, h, w)
        means.append(total / n)
    return torch.stack(means)  # (k, c, t, h, w)


@torch.no_grad()
def first_guess(model, captions: Sequence[str], t: int = 990, draws: int = 64, *, seed: int = 0,
                fps: int | None = None) -> torch.Tensor:
    r"""The model's answer: its $x_0$ prediction at step ``t``, averaged over ``draws`` noisy latents.

    The noisy latents are drawn as pure noise: near $t = T$ the clean part of $z_t$ is
    scaled by $\sqrt{\bar\alpha_t}$ (0.014 at ``t=990`` on the toy schedule) and does not
    matter. Conditional prediction, no guidance. Every caption sees the same noise draws,
    so two captions' guesses differ only through the caption. Returns ``(k, c, t, h, w)``
    latents.
    """
    from vdlearn.diffusion.process import predict_x0_and_eps

    num_train = model.schedule.num_train_timesteps
    if not 0 <= int(t) < num_train:
        raise ValueError(f"Timestep {t} is outside the schedule's 0..{num_train - 1}.")
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}.")
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    x_t = torch.randn((draws, *model.config.latent_shape), generator=gen).to(dev)  # (draws, c, t, h, w)
    steps = torch.full((draws,), int(t), device=dev, dtype=torch.long)
    fps_all = torch.full((draws,), int(fps or model.config.default_fps), device=dev, dtype=torch.long)
    guesses = []
    for caption in captions:
        out = model(x_t, steps, model.tokenize([caption] * draws).to(dev), fps_all)
        x0, _ = predict_x0_and_eps(model.schedule, out, x_t, steps)
        guesses.append(x0.mean(0))
    model.train(was_training)
    return torch.stack(guesses)  # (k, c, t, h, w)


def relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    """``|a - b| / |a|``: how different two mean clips are, relative to the first."""
    return float((a - b).norm() / a.norm().clamp_min(1e-12))


def format_sensitivity(result: dict) -> str:
    """A plain-text table of :func:`word_sensitivity`: loss rise in % per swapped word and timestep."""
    names = list(result["increase"])
    lines = [f"denoising loss rise when one caption word is wrong ({result['n']} real clips, '{result['split']}' split)",
             f"{'t':>5s}{'loss':>8s}" + "".join(f"{k:>14s}" for k in names)]
    for i, t in enumerate(result["timesteps"]):
        lines.append(f"{t:5d}{result['loss'][i]:8.4f}"
                     + "".join(f"{100 * result['increase'][k][i]:+13.1f}%" for k in names))
    return "\n".join(lines)


__all__ = ["PROBED", "first_guess", "format_sensitivity", "mean_clip", "relative_gap", "swap_word",
           "word_sensitivity"]
