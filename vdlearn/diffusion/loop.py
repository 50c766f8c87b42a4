r"""The sampling loop: start from noise, ask the denoiser, step, repeat.

Taught in ``notebooks/03_diffusion_basics.ipynb``; every generation in the course goes
through :func:`sample`.

$$x_{t_0} \sim \mathcal N(0, I);\qquad
\text{for } i = 0..S-1:\ \hat u_i = \text{CFG}\big(\text{model}(x_{t_i}, t_i, c)\big),\
x_{t_{i+1}} = \text{step}(\hat u_i, x_{t_i}).$$

Randomness: with a ``seed`` (or your own ``generator``) the starting noise is drawn
first, then one fresh draw per stochastic step, all from that generator, so the same
seed gives the same video on the same device. ``callback`` receives a
:class:`SampleStep` after every step: :class:`TrajectoryRecorder` is one that keeps
the trajectory for plotting.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from vdlearn.device import get_device
from vdlearn.diffusion.denoiser import Cond, Denoiser
from vdlearn.diffusion.guidance import guided_prediction
from vdlearn.diffusion.samplers import Sampler, SamplerConfig
from vdlearn.diffusion.schedules import NoiseSchedule


@dataclass
class SampleStep:
    """Handed to the ``callback`` after each step (tensors are the live ones: copy what you keep)."""

    index: int  # step number, 0 .. S-1
    num_steps: int  # S
    t: int  # the timestep just denoised
    t_prev: int  # the timestep landed on (-1: clean data)
    x: torch.Tensor  # (b, ...) the new sample x_{t_prev}
    pred_x0: torch.Tensor  # (b, ...) the clean-data prediction made at t
    model_output: torch.Tensor  # (b, ...) the (guided) network output at t


@dataclass
class TrajectoryRecorder:
    """A ``callback`` that keeps every ``every``-th step (on the CPU) for plotting.

    >>> rec = TrajectoryRecorder(every=10)   # sample(..., callback=rec); rec.x, rec.pred_x0, rec.t
    """

    every: int = 1
    t: list[int] = field(default_factory=list)
    x: list[torch.Tensor] = field(default_factory=list)
    pred_x0: list[torch.Tensor] = field(default_factory=list)

    def __call__(self, step: SampleStep) -> None:
        if step.index % self.every == 0 or step.index == step.num_steps - 1:
            self.t.append(step.t)
            self.x.append(step.x.detach().float().cpu())
            self.pred_x0.append(step.pred_x0.detach().float().cpu())

    def stacked(self, which: str = "pred_x0") -> torch.Tensor:
        """The recorded tensors as one ``(K, b, ...)`` tensor; ``which`` is ``"x"`` or ``"pred_x0"``."""
        return torch.stack(getattr(self, which))


def make_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """A generator on ``device`` seeded with ``seed`` (None: no generator, the global RNG is used)."""
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(int(seed))


@torch.no_grad()
def sample(
    model: Denoiser,
    shape: Sequence[int],
    schedule: NoiseSchedule,
    sampler: Sampler | SamplerConfig | str = "toy",
    *,
    cond: Cond | None = None,
    uncond: Cond | None = None,
    guidance_scale: float | None = None,
    x_T: torch.Tensor | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = "auto",
    dtype: torch.dtype = torch.float32,
    callback: Callable[[SampleStep], None] | None = None,
    progress: bool = True,
    return_pred_x0: bool = False,
    t_start: int | None = None,
) -> torch.Tensor:
    """Generate a batch with ``model`` by running ``sampler`` over ``schedule``.

    Args:
        model: any :class:`~vdlearn.diffusion.denoiser.Denoiser`, ``model(x, t, **cond)``.
        shape: ``(b, c, t, h, w)`` for video latents, ``(b, c, h, w)`` for images.
        schedule: the :class:`NoiseSchedule` the model was trained with (its
            ``prediction_type`` says how to read the model output).
        sampler: a :class:`Sampler`, a :class:`SamplerConfig` or a preset name.
        cond, uncond: conditioning dicts (e.g. ``{"context": (b, n, d), "fps": (b,)}``); a
            batch of 1 is shared. ``uncond`` enables classifier-free guidance.
        guidance_scale: overrides the sampler config's ``guidance_scale``.
        x_T: the starting noise (else drawn from the generator).
        seed / generator: reproducibility; ``seed`` makes a generator on ``device``.
        device: where to sample (``"auto"``: GPU if present).
        callback: called with a :class:`SampleStep` after every step.
        progress: show a tqdm progress bar.
        return_pred_x0: return the last step's $\\hat x_0$ instead of the last sample.
            They differ only when the last step does not land on clean data
            (VideoCrafter's ``final="first"``) or with clipping.
        t_start: start part-way down the ladder (SDEdit, Meng et al. 2022): the steps above
            ``t_start`` are skipped and ``x_T`` must be the noisy sample at the first step kept,
            ``sampler.timesteps[sampler.first_index(t_start)]`` (e.g. from
            :func:`~vdlearn.diffusion.process.q_sample`). None: the whole ladder from pure noise.

    Returns:
        the generated batch, ``shape``, float32 on ``device``.
    """
    device = get_device(device)
    if not isinstance(sampler, Sampler):
        sampler = Sampler(schedule, sampler)
    elif sampler.schedule is not schedule:
        raise ValueError("The Sampler was built for a different schedule than the one passed to sample().")
    if generator is not None and seed is not None:
        raise ValueError("Pass either seed or generator, not both.")
    if generator is None:
        generator = make_generator(seed, device)
    shape = tuple(int(s) for s in shape)
    cfg = sampler.config
    scale = cfg.guidance_scale if guidance_scale is None else guidance_scale
    if scale != 1.0 and uncond is None:
        warnings.warn(
            f"guidance_scale={scale} has no effect without uncond: sampling the plain conditional model. "
            f"Pass uncond=... (e.g. the empty-prompt embedding) for guidance, or guidance_scale=1.0 to silence this.",
            stacklevel=2,
        )

    if x_T is None:
        x = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
    else:
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T has shape {tuple(x_T.shape)}, but shape={shape}.")
        x = x_T.to(device=device, dtype=torch.float32)
    cond = _to_device(cond, device)
    uncond = _to_device(uncond, device)
    pred_x0 = x
    first = 0 if t_start is None else sampler.first_index(t_start)
    if t_start is not None and x_T is None:
        raise ValueError("t_start needs x_T: the noisy sample at the first timestep kept.")

    steps = tqdm(range(first, len(sampler)), desc=f"{cfg.method.upper()} sampling", disable=not progress, leave=False)
    for i in steps:
        t = int(sampler.timesteps[i])
        t_batch = torch.full((shape[0],), t, device=device, dtype=torch.long)  # (b,)
        out = guided_prediction(
            model, x.to(dtype), t_batch, cond, uncond, scale,
            guidance_rescale=cfg.guidance_rescale, batched=cfg.batched_guidance,
        )
        result = sampler.step(out, x, i, generator=generator)
        x, pred_x0 = result.prev_sample.float(), result.pred_x0
        if callback is not None:
            callback(SampleStep(i, len(sampler), t, int(sampler.prev_timesteps[i]), x, pred_x0, out))
    return pred_x0 if return_pred_x0 else x


def _to_device(cond: Cond | None, device: torch.device) -> dict | None:
    if cond is None:
        return None
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in cond.items()}
