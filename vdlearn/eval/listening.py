"""Which words does a text-to-video model listen to? The word-swap probe.

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

    >>> from vdlearn.eval.listening import word_sensitivity, format_sensitivity
    >>> print(format_sensitivity(word_sensitivity(model, n=128)))

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


def format_sensitivity(result: dict) -> str:
    """A plain-text table of :func:`word_sensitivity`: loss rise in % per swapped word and timestep."""
    names = list(result["increase"])
    lines = [f"denoising loss rise when one caption word is wrong ({result['n']} real clips, '{result['split']}' split)",
             f"{'t':>5s}{'loss':>8s}" + "".join(f"{k:>14s}" for k in names)]
    for i, t in enumerate(result["timesteps"]):
        lines.append(f"{t:5d}{result['loss'][i]:8.4f}"
                     + "".join(f"{100 * result['increase'][k][i]:+13.1f}%" for k in names))
    return "\n".join(lines)


__all__ = ["PROBED", "format_sensitivity", "swap_word", "word_sensitivity"]
