r"""Reverse steps: DDPM's ancestral step and DDIM's step, from $x_t$ to $x_{t'}$ with $t' < t$.

Taught in ``notebooks/03_diffusion_basics.ipynb`` (section "DDPM vs DDIM").

Both steps first turn the network output into $\hat x_0$ and $\hat\epsilon$
(:func:`vdlearn.diffusion.process.predict_x0_and_eps`), then move to the earlier step
$t'$ (the next timestep of the sampler's ladder, :mod:`vdlearn.diffusion.timesteps`).
Write $\bar\alpha = \bar\alpha_t$, $\bar\alpha' = \bar\alpha_{t'}$ ($= 1$ when $t' = -1$,
"clean data").

**DDPM** (Ho et al. 2020, eq. 6-7): sample the posterior $q(x_{t'} \mid x_t, \hat x_0)$.
For a jump of several steps the per-step $\alpha$ becomes $\alpha = \bar\alpha / \bar\alpha'$
(the respacing of Nichol & Dhariwal 2021, sec. 4), $\beta = 1 - \alpha$, and

$$\tilde\mu = \frac{\sqrt{\bar\alpha'}\,\beta}{1-\bar\alpha}\,\hat x_0 + \frac{\sqrt{\alpha}\,(1-\bar\alpha')}{1-\bar\alpha}\,x_t,
\qquad \tilde\beta = \frac{1-\bar\alpha'}{1-\bar\alpha}\,\beta,\qquad x_{t'} = \tilde\mu + \sqrt{\tilde\beta}\,z .$$

``variance="fixed_large"`` uses $\beta$ instead of $\tilde\beta$ (Ho et al. 2020, sec. 3.2).
No noise is added on the last step into clean data.

**DDIM** (Song et al. 2021, eq. 12 and 16): keep the marginals $q(x_t \mid x_0)$ but
choose how much fresh noise each step injects,

$$x_{t'} = \sqrt{\bar\alpha'}\,\hat x_0 + \sqrt{1-\bar\alpha'-\sigma^2}\,\hat\epsilon + \sigma z,\qquad
\sigma = \eta\sqrt{\frac{1-\bar\alpha'}{1-\bar\alpha}}\sqrt{1-\frac{\bar\alpha}{\bar\alpha'}} .$$

$\eta = 0$ is deterministic (an ODE solver: same noise, same video); $\eta = 1$ makes
$\sigma^2 = \tilde\beta$ and the step equals DDPM's in distribution. VideoCrafter
samples with $\eta = 1$, LaVie's interpolation model with $\eta = 0$.

**VideoCrafter's ``scale_arr`` inside DDIM** (official code, ``use_scale``:
``lvdm/models/samplers/ddim.py``; used by VideoCrafter1-1024, its I2V model and VideoCrafter2).
The network was trained on $x_t = \sqrt{\bar\alpha}\,s_t x_0 + \dots$,
so $\hat x_0$ is divided by $s_t$ and the clean part of the next sample is scaled by
$s_{t'}$ of the step it lands on:

$$x_{t'} = \sqrt{\bar\alpha'}\,s_{t'}\,\hat x_0 + \sqrt{1-\bar\alpha'-\sigma^2}\,\hat\epsilon + \sigma z .$$

For the last step VideoCrafter lands on $t' = 0$ ($\bar\alpha' = \bar\alpha_0$, $s' = s_0 = 1$;
``final="first"`` in :class:`SamplerConfig`). Without ``use_scale``, $s \equiv 1$ and this is
plain DDIM (equal to diffusers' ``DDIMScheduler.step``, tested). DDPM's posterior
form has no such variant; with a ``scale_arr`` schedule use DDIM with $\eta = 1$, which
is the same stochastic step written in DDIM's form.

:class:`Sampler` binds a schedule to a :class:`SamplerConfig` (which steps, which
update, $\eta$, guidance); :func:`vdlearn.diffusion.loop.sample` runs it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from vdlearn.diffusion.process import predict_x0_and_eps
from vdlearn.diffusion.schedules import (
    NoiseSchedule,
    alpha_bar_at,
    check_timesteps,
    scale_at,
    timestep_batch,
)
from vdlearn.diffusion.timesteps import (
    FINAL_CONVENTIONS,
    SPACINGS,
    make_timesteps,
    previous_timesteps,
)

METHODS = ("ddim", "ddpm")
VARIANCES = ("fixed_small", "fixed_large")


@dataclass
class StepOutput:
    """What one reverse step returns; all shaped like the sample ``(b, ...)``."""

    prev_sample: torch.Tensor  # x_{t'}: the input of the next step
    pred_x0: torch.Tensor  # the step's guess of the clean data (what a notebook wants to show)
    pred_eps: torch.Tensor  # the step's guess of the noise


def _step_inputs(schedule, model_output, x_t, t, t_prev):
    if model_output.shape != x_t.shape:
        raise ValueError(
            f"model_output {tuple(model_output.shape)} must have the shape of the sample {tuple(x_t.shape)}."
        )
    b, n = x_t.shape[0], schedule.num_train_timesteps
    t = check_timesteps(timestep_batch(t, b, x_t.device), n)
    t_prev = check_timesteps(timestep_batch(t_prev, b, x_t.device), n, allow_minus_one=True)
    return t, t_prev


def _noise_like(x: torch.Tensor, noise: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
    if noise is not None:
        if noise.shape != x.shape:
            raise ValueError(f"noise {tuple(noise.shape)} must have the shape of the sample {tuple(x.shape)}.")
        return noise.float()
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)


def ddpm_step(
    schedule: NoiseSchedule,
    model_output: torch.Tensor,
    x_t: torch.Tensor,
    t: int | torch.Tensor,
    t_prev: int | torch.Tensor,
    *,
    variance: str = "fixed_small",
    clip_x0: float | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> StepOutput:
    """One ancestral DDPM step from ``t`` to ``t_prev`` (``-1``: clean data). ``x_t``: (b, ...)."""
    if schedule.use_scale:
        raise ValueError(
            "DDPM's posterior step is not defined for a schedule with scale_arr (use_scale=True). "
            "Use DDIM with eta=1.0, the same stochastic step in DDIM's form (VideoCrafter's own sampler)."
        )
    if variance not in VARIANCES:
        raise ValueError(f"Unknown DDPM variance {variance!r}; expected one of {', '.join(VARIANCES)}.")
    t, t_prev = _step_inputs(schedule, model_output, x_t, t, t_prev)
    if bool((t_prev >= t).any()):
        raise ValueError(f"DDPM steps go backwards in time: need t_prev < t, got t={t.tolist()}, t_prev={t_prev.tolist()}.")
    x = x_t.float()
    x0, eps = predict_x0_and_eps(schedule, model_output, x_t, t)
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)

    ab = alpha_bar_at(schedule, t, x.ndim)  # (b, 1, ..)
    ab_prev = alpha_bar_at(schedule, t_prev, x.ndim)  # (b, 1, ..); 1 at t_prev = -1
    # $\alpha = \bar\alpha_t / \bar\alpha_{t'}$, $\beta = 1 - \alpha$ (one step, or several merged)
    alpha = ab / ab_prev
    beta = 1 - alpha
    # $\tilde\mu = \frac{\sqrt{\bar\alpha_{t'}}\beta}{1-\bar\alpha_t}\hat x_0 + \frac{\sqrt{\alpha}(1-\bar\alpha_{t'})}{1-\bar\alpha_t}x_t$
    mean = (ab_prev.sqrt() * beta / (1 - ab)) * x0 + (alpha.sqrt() * (1 - ab_prev) / (1 - ab)) * x
    if variance == "fixed_small":
        # $\tilde\beta = \frac{1-\bar\alpha_{t'}}{1-\bar\alpha_t}\beta$
        var = ((1 - ab_prev) / (1 - ab) * beta).clamp(min=1e-20)
    else:
        var = beta
    # $x_{t'} = \tilde\mu + \sqrt{\tilde\beta}\,z$, no noise on the final step into clean data
    noisy = (t_prev >= 0).reshape(-1, *([1] * (x.ndim - 1)))
    if bool(noisy.any()):
        mean = mean + noisy * var.sqrt() * _noise_like(x, noise, generator)
    return StepOutput(mean.to(x_t.dtype), x0, eps)


def ddim_step(
    schedule: NoiseSchedule,
    model_output: torch.Tensor,
    x_t: torch.Tensor,
    t: int | torch.Tensor,
    t_prev: int | torch.Tensor,
    *,
    eta: float = 0.0,
    clip_x0: float | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> StepOutput:
    """One DDIM step from ``t`` to ``t_prev`` (``-1``: clean data), with VideoCrafter's ``scale_arr`` if the schedule has it."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}.")
    t, t_prev = _step_inputs(schedule, model_output, x_t, t, t_prev)
    if bool((t_prev > t).any()):
        raise ValueError(f"DDIM steps go backwards in time: need t_prev <= t, got t={t.tolist()}, t_prev={t_prev.tolist()}.")
    x = x_t.float()
    x0, eps = predict_x0_and_eps(schedule, model_output, x_t, t)  # x0 already divided by s_t
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)

    ab = alpha_bar_at(schedule, t, x.ndim)  # (b, 1, ..)
    ab_prev = alpha_bar_at(schedule, t_prev, x.ndim)  # (b, 1, ..); 1 at t_prev = -1
    s_prev = scale_at(schedule, t_prev, x.ndim)  # (b, 1, ..); 1 without scale_arr
    # $\sigma = \eta \sqrt{(1-\bar\alpha_{t'})/(1-\bar\alpha_t)}\sqrt{1-\bar\alpha_t/\bar\alpha_{t'}}$
    sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).clamp(min=0).sqrt()
    # $x_{t'} = \sqrt{\bar\alpha_{t'}}\, s_{t'}\hat x_0 + \sqrt{1-\bar\alpha_{t'}-\sigma^2}\,\hat\epsilon + \sigma z$
    direction = (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps
    x_prev = ab_prev.sqrt() * s_prev * x0 + direction
    if eta > 0:
        x_prev = x_prev + sigma * _noise_like(x, noise, generator)
    return StepOutput(x_prev.to(x_t.dtype), x0, eps)


@dataclass
class SamplerConfig:
    """How to sample: which steps, which update, how much noise, how much guidance."""

    method: str = "ddim"  # "ddim" | "ddpm"
    num_steps: int = 50  # S: network evaluations (times 2 with guidance, unless batched)
    spacing: str = "leading"  # see vdlearn.diffusion.timesteps: uniform | quad | leading | trailing | linspace | spaced
    offset: int = 0  # added to every timestep (diffusers' steps_offset)
    final: str = "one"  # after the last step: "one" (clean data, alpha_bar = 1) or "first" (alpha_bar_0, VideoCrafter)
    eta: float = 0.0  # DDIM noise: 0 deterministic, 1 DDPM-like
    variance: str = "fixed_small"  # DDPM only: "fixed_small" (posterior beta tilde) or "fixed_large" (beta)
    clip_x0: float | None = None  # clamp the predicted x0 to [-c, c]; None: no clipping (all video models here)
    guidance_scale: float = 1.0  # classifier-free guidance weight w; 1 = plain conditional
    guidance_rescale: float = 0.0  # phi of Lin et al. 2023; 0 = off
    batched_guidance: bool = True  # cond and uncond in one forward call of 2b, or two calls of b

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"Unknown sampling method {self.method!r}. Known methods: {', '.join(METHODS)}.")
        if self.spacing not in SPACINGS:
            raise ValueError(f"Unknown timestep spacing {self.spacing!r}. Known spacings: {', '.join(SPACINGS)}.")
        if self.final not in FINAL_CONVENTIONS:
            raise ValueError(f"Unknown final convention {self.final!r}. Known: {', '.join(FINAL_CONVENTIONS)}.")
        if self.variance not in VARIANCES:
            raise ValueError(f"Unknown DDPM variance {self.variance!r}. Known: {', '.join(VARIANCES)}.")
        if self.method == "ddpm" and self.final != "one":
            raise ValueError("DDPM's last step always lands on clean data: use final='one'.")
        if self.eta < 0:
            raise ValueError(f"eta must be >= 0, got {self.eta}.")

    @classmethod
    def preset(cls, name: str, **overrides) -> SamplerConfig:
        """A named preset, optionally with fields changed: ``SamplerConfig.preset("videocrafter", num_steps=25)``."""
        if name not in SAMPLER_PRESETS:
            raise ValueError(f"Unknown sampler preset {name!r}. Known presets: {', '.join(sorted(SAMPLER_PRESETS))}.")
        return dataclasses.replace(SAMPLER_PRESETS[name], **overrides)


#: Named samplers, as the official scripts run them (each comment names the official file).
SAMPLER_PRESETS: dict[str, SamplerConfig] = {
    # VideoCrafter1/2 (scripts/run_text2video.sh, ddim.py): DDIM 50 steps 981..1, eta 1.0, alpha_bar_prev of
    # the last step = alpha_bar_0, no clipping, CFG 12 as two separate calls.
    "videocrafter": SamplerConfig(method="ddim", num_steps=50, spacing="uniform", final="first", eta=1.0,
                                  guidance_scale=12.0, batched_guidance=False),
    # LaVie base (base/configs/sample.yaml): diffusers DDPMScheduler, 50 steps 980..0, fixed_small, no
    # clipping, CFG 7.5 (diffusers pipelines batch [uncond; cond]).
    "lavie_base": SamplerConfig(method="ddpm", num_steps=50, spacing="leading", final="one",
                                variance="fixed_small", guidance_scale=7.5),
    # LaVie interpolation (interpolation/sample.py): guided-diffusion SpacedDiffusion "50", DDIM eta 0,
    # clip_denoised=False, CFG 4.0 batched.
    "lavie_interpolation": SamplerConfig(method="ddim", num_steps=50, spacing="spaced", final="one", eta=0.0,
                                         guidance_scale=4.0),
    # LaVie super-resolution (vsr/sample.py): diffusers DDIMScheduler from the SD x4 upscaler config with
    # steps_offset 1 (981..1), eta 0, CFG 5. That config (scheduler/scheduler_config.json of
    # stabilityai/stable-diffusion-x4-upscaler) is not in the LaVie repository; set_alpha_to_one false is
    # assumed here ("first"), and vdlearn.pretrained.lavie_pipeline reads the real file when it loads.
    "lavie_vsr": SamplerConfig(method="ddim", num_steps=50, spacing="leading", offset=1, final="first", eta=0.0,
                               guidance_scale=5.0),
    # diffusers' DDIMScheduler defaults (leading spacing, set_alpha_to_one=True), without its default clipping.
    "diffusers_ddim": SamplerConfig(method="ddim", num_steps=50, spacing="leading", final="one", eta=0.0),
    # The course's toy models: deterministic DDIM, trailing spacing so the first step starts at t = N-1
    # (pure noise under the toy cosine schedule), 50 steps.
    "toy": SamplerConfig(method="ddim", num_steps=50, spacing="trailing", final="one", eta=0.0),
    # Full ancestral DDPM over all N steps: the reference the others approximate (slow).
    "ddpm_full": SamplerConfig(method="ddpm", num_steps=1000, spacing="leading", final="one"),
}


class Sampler:
    """A schedule plus a :class:`SamplerConfig`: the ladder of timesteps and the step that walks it.

    >>> sampler = Sampler(NoiseSchedule("videocrafter"), SamplerConfig.preset("videocrafter"))
    >>> sampler.timesteps[:3].tolist(), sampler.prev_timesteps[-2:].tolist()
    ([981, 961, 941], [1, 0])
    """

    def __init__(self, schedule: NoiseSchedule, config: SamplerConfig | str = "toy", **overrides):
        if isinstance(config, str):
            config = SamplerConfig.preset(config, **overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        if config.method == "ddpm" and schedule.use_scale:
            raise ValueError(
                "This schedule uses VideoCrafter's scale_arr, which DDPM's posterior step does not support. "
                "Sample it with DDIM and eta=1.0 (SamplerConfig.preset('videocrafter'))."
            )
        self.schedule = schedule
        self.config = config
        n = schedule.num_train_timesteps
        self.timesteps = make_timesteps(n, config.num_steps, config.spacing, config.offset)  # (S,) decreasing
        self.prev_timesteps = previous_timesteps(self.timesteps, config.final)  # (S,) ends in -1 or 0

    def __len__(self) -> int:
        return len(self.timesteps)

    def first_index(self, t_start: int) -> int:
        """The index of the first ladder step at or below ``t_start`` (SDEdit's starting point)."""
        first = int((self.timesteps > int(t_start)).sum())
        if first == len(self.timesteps):
            raise ValueError(f"t_start={t_start} is below every timestep of the ladder "
                             f"(lowest {int(self.timesteps[-1])}).")
        return first

    def step(
        self,
        model_output: torch.Tensor,
        x_t: torch.Tensor,
        index: int,
        *,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> StepOutput:
        """Step ``index`` of the ladder: from ``timesteps[index]`` to ``prev_timesteps[index]``."""
        if not 0 <= index < len(self.timesteps):
            raise IndexError(f"Step index {index} out of range for a sampler with {len(self.timesteps)} steps.")
        t, t_prev = int(self.timesteps[index]), int(self.prev_timesteps[index])
        c = self.config
        if c.method == "ddim":
            return ddim_step(self.schedule, model_output, x_t, t, t_prev, eta=c.eta, clip_x0=c.clip_x0,
                             noise=noise, generator=generator)
        return ddpm_step(self.schedule, model_output, x_t, t, t_prev, variance=c.variance, clip_x0=c.clip_x0,
                         noise=noise, generator=generator)

    def __repr__(self) -> str:
        c, ts = self.config, self.timesteps.tolist()
        shown = ts if len(ts) <= 6 else ts[:3] + ["..."] + ts[-2:]
        noise = f"eta={c.eta}" if c.method == "ddim" else f"variance={c.variance}"
        return (f"Sampler({c.method}, {len(ts)} steps {shown} -> {int(self.prev_timesteps[-1])}, "
                f"{noise}, guidance={c.guidance_scale})")
