r"""Noise schedules: how much signal survives at each of the ``N`` diffusion steps.

Taught in ``notebooks/03_diffusion_basics.ipynb`` (section "Schedules compared").

The forward process of DDPM (Ho et al. 2020, eq. 2) adds a little Gaussian noise at
every step,

$$q(x_t \mid x_{t-1}) = \mathcal N\big(\sqrt{1-\beta_t}\,x_{t-1},\ \beta_t I\big),$$

and because Gaussians compose, any step can be reached from the data in one jump
(Ho et al. 2020, eq. 4):

$$q(x_t \mid x_0) = \mathcal N\big(\sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t) I\big),
\qquad \alpha_t = 1-\beta_t,\quad \bar\alpha_t = \prod_{s\le t}\alpha_s .$$

A *schedule* is the choice of $\beta_1..\beta_N$. Three are in common use:

* ``linear``: $\beta_t$ evenly spaced from ``beta_start`` to ``beta_end`` (DDPM used
  $10^{-4} \to 0.02$; LaVie keeps it).
* ``scaled_linear``: $\sqrt{\beta_t}$ evenly spaced, then squared (Stable Diffusion's
  $0.00085 \to 0.012$; VideoCrafter1/2). **Naming trap:** the official VideoCrafter
  code calls this schedule ``"linear"``.
* ``cosine``: defined through $\bar\alpha$ instead of $\beta$ (Nichol & Dhariwal 2021,
  eq. 17), $\bar\alpha(\tau) = \cos^2\!\big(\tfrac{\tau + s}{1 + s}\tfrac{\pi}{2}\big)$
  with $\beta_t$ clipped at 0.999. Diffusers calls it ``squaredcos_cap_v2``.

The signal-to-noise ratio $\mathrm{SNR}(t) = \bar\alpha_t / (1-\bar\alpha_t)$ is the
single number that says how hard step $t$ is; plotting $\log\mathrm{SNR}$ is the best
way to compare schedules.

**VideoCrafter's ``scale_arr``** (official code, config key ``use_scale``,
``lvdm/models/ddpm3d.py``). VideoCrafter2, VideoCrafter1-1024 and VideoCrafter1's I2V
model shrink the clean latent before noising it: $x_t = \sqrt{\bar\alpha_t}\,s_t\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$ with
$s_t$ falling linearly from ``scale_a`` = 1 to ``scale_b`` over the first ``mid_step`` = 400
steps and constant afterwards. It lowers the SNR of every step by $s_t^2$, so the
model sees noisier inputs for the same $t$ (useful at high resolution, where a given
noise level destroys less of the picture). ``scale_b`` is 0.7 for VideoCrafter2 and
the I2V model and 0.3 for VideoCrafter1-1024. The official buffer has length 1400
(a bug; ``fix_scale_bug`` makes it 1000); only its first ``N`` entries are ever used.
Schedules without ``use_scale`` get $s_t = 1$.

As in the official code, everything is computed in float64 and stored in float32.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

BETA_SCHEDULES = ("linear", "scaled_linear", "cosine")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass
class ScheduleConfig:
    """Everything that defines the forward process and what the network predicts."""

    num_train_timesteps: int = 1000  # N: steps of the forward process, t = 0 .. N-1
    beta_schedule: str = "scaled_linear"  # "linear" | "scaled_linear" | "cosine"
    beta_start: float = 0.00085  # first beta (linear / scaled_linear)
    beta_end: float = 0.012  # last beta (linear / scaled_linear)
    cosine_s: float = 0.008  # the small offset s of the cosine schedule
    max_beta: float = 0.999  # cosine betas are clipped here so that alpha_bar never hits 0
    prediction_type: str = "epsilon"  # what the network outputs: "epsilon" | "v_prediction" | "sample" (x0)
    zero_terminal_snr: bool = False  # rescale so that alpha_bar at t=N-1 is exactly 0 (Lin et al. 2023)
    use_scale: bool = False  # VideoCrafter's scale_arr: shrink x0 by s_t before noising
    scale_a: float = 1.0  # s_t at t = 0
    scale_b: float = 0.3  # s_t from t = mid_step on (official default 0.3; VideoCrafter2 sets 0.7)
    scale_mid_step: int = 400  # s_t falls linearly from scale_a to scale_b over these many steps
    fix_scale_bug: bool = False  # official buffer length: N if True, else mid_step + N (the official "bug")

    @classmethod
    def preset(cls, name: str, **overrides) -> ScheduleConfig:
        """A named preset, optionally with some fields changed: ``ScheduleConfig.preset("toy", prediction_type="epsilon")``."""
        if name not in SCHEDULE_PRESETS:
            raise ValueError(
                f"Unknown schedule preset {name!r}. Known presets: {', '.join(sorted(SCHEDULE_PRESETS))}."
            )
        return dataclasses.replace(SCHEDULE_PRESETS[name], **overrides)

    def __post_init__(self) -> None:
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(
                f"Unknown beta_schedule {self.beta_schedule!r}. Known schedules: {', '.join(BETA_SCHEDULES)}. "
                f"(VideoCrafter's 'linear' is 'scaled_linear' here; diffusers' 'squaredcos_cap_v2' is 'cosine'.)"
            )
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"Unknown prediction_type {self.prediction_type!r}. Known types: {', '.join(PREDICTION_TYPES)}."
            )
        if self.num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be at least 2, got {self.num_train_timesteps}.")
        if self.use_scale and not 0 < self.scale_mid_step <= self.num_train_timesteps:
            raise ValueError(
                f"scale_mid_step must lie in 1..num_train_timesteps ({self.num_train_timesteps}), got {self.scale_mid_step}."
            )


#: Named schedules. Presets are data: add one here, never a subclass.
SCHEDULE_PRESETS: dict[str, ScheduleConfig] = {
    # VideoCrafter2 and VideoCrafter1-I2V-512 (configs/inference_t2v_512_v2.0.yaml): SD's scaled-linear
    # betas, epsilon prediction, scale_arr with scale_b = 0.7 (buffer of length 1400: the "bug").
    "videocrafter": ScheduleConfig(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                   use_scale=True, scale_b=0.7, fix_scale_bug=False),
    # VideoCrafter1 text-to-video 1024 (inference_t2v_1024_v1.0.yaml): scale_b left at its default 0.3,
    # fix_scale_bug true (buffer of length 1000).
    "videocrafter1_1024": ScheduleConfig(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                         use_scale=True, scale_b=0.3, fix_scale_bug=True),
    # VideoCrafter1 text-to-video 512 v1.0: no scale_arr.
    "videocrafter1_512": ScheduleConfig(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    # Stable Diffusion 1.x/2.x (the spatial layers VideoCrafter and LaVie start from).
    "stable_diffusion": ScheduleConfig(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    # LaVie base and interpolation models: DDPM's linear betas 1e-4 -> 0.02 (not SD's scaled linear).
    "lavie_base": ScheduleConfig(beta_schedule="linear", beta_start=1e-4, beta_end=0.02),
    "lavie_interpolation": ScheduleConfig(beta_schedule="linear", beta_start=1e-4, beta_end=0.02),
    # LaVie super-resolution: linear betas, v-prediction.
    "lavie_vsr": ScheduleConfig(beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                                prediction_type="v_prediction"),
    # LaVie super-resolution's noise augmentation of the low-res input (vsr/sample.py adds noise_level 50 with the
    # x4 upscaler's low_res_scheduler, a DDPMScheduler): LDM's sqrt-linear betas 1e-4 -> 0.02, i.e. diffusers'
    # scaled_linear, as LaVie's own vsr/models/upscaling.py (make_beta_schedule) builds them. The x4 folder's
    # low_res_scheduler/scheduler_config.json is not in the LaVie repository; the loader reads it when present.
    "lavie_vsr_low_res": ScheduleConfig(beta_schedule="scaled_linear", beta_start=1e-4, beta_end=0.02),
    # The course's toy models (32x32 frames, 8x8 latents). Cosine because at such low resolution the
    # (scaled-)linear schedules spend most steps at an SNR where nothing recognisable is left (Nichol &
    # Dhariwal 2021, sec. 3.2); v-prediction because it stays well conditioned at both ends, where
    # epsilon-prediction has to divide by sqrt(alpha_bar) ~ 0 to get x0 at high noise (Salimans & Ho
    # 2022, sec. 4). Checked on the toy frames: after the same 600 training steps of a small conv
    # denoiser (notebook 03's network before it became the U-Net's toy_image preset), cosine + v gave
    # clean backgrounds while scaled-linear + epsilon left visible noise and colour casts in DDIM samples.
    "toy": ScheduleConfig(beta_schedule="cosine", prediction_type="v_prediction"),
}


def make_betas(config: ScheduleConfig) -> torch.Tensor:
    r"""The betas of ``config`` as a float64 tensor of shape ``(N,)``."""
    n = config.num_train_timesteps
    if config.beta_schedule == "linear":
        # $\beta_t$ evenly spaced (Ho et al. 2020, sec. 4)
        betas = torch.linspace(config.beta_start, config.beta_end, n, dtype=torch.float64)
    elif config.beta_schedule == "scaled_linear":
        # $\sqrt{\beta_t}$ evenly spaced, then squared (Stable Diffusion, VideoCrafter)
        betas = torch.linspace(config.beta_start**0.5, config.beta_end**0.5, n, dtype=torch.float64) ** 2
    else:  # cosine
        # $\bar\alpha(\tau) = \cos^2\big(\frac{\tau+s}{1+s}\frac{\pi}{2}\big)$ at $\tau = t/N$, t = 0..N
        tau = torch.arange(n + 1, dtype=torch.float64) / n
        alpha_bar = torch.cos((tau + config.cosine_s) / (1 + config.cosine_s) * math.pi / 2) ** 2
        # $\beta_t = \min\big(1 - \bar\alpha(\tfrac{t+1}{N}) / \bar\alpha(\tfrac{t}{N}),\ \beta_{max}\big)$
        betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=config.max_beta)
    if config.zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    return betas


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    r"""Shift and stretch $\sqrt{\bar\alpha_t}$ so that the last step is pure noise.

    Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
    Algorithm 1: with SD's schedule $\bar\alpha_{N-1} \approx 0.0047$, so training never
    sees pure noise while sampling starts from it. Use with v-prediction (epsilon
    prediction cannot recover $x_0$ when $\bar\alpha = 0$).
    """
    sqrt_ab = torch.cumprod(1 - betas.double(), dim=0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    # $\sqrt{\bar\alpha_t} \leftarrow (\sqrt{\bar\alpha_t} - \sqrt{\bar\alpha_{N-1}})
    #  \cdot \sqrt{\bar\alpha_0} / (\sqrt{\bar\alpha_0} - \sqrt{\bar\alpha_{N-1}})$
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    alpha_bar = sqrt_ab**2
    # $\alpha_t = \bar\alpha_t / \bar\alpha_{t-1}$, $\alpha_0 = \bar\alpha_0$
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1 - alphas


def make_scale_arr(config: ScheduleConfig) -> torch.Tensor:
    r"""VideoCrafter's ``scale_arr`` exactly as the official buffer (float64; length 1400 or N).

    $s = [\mathrm{linspace}(a, b, m),\ b, b, \dots]$ with $m$ = ``scale_mid_step``, followed
    by ``N`` copies of $b$ (the official "bug", length $m + N$) or ``N - m`` copies
    (``fix_scale_bug``, length ``N``).
    """
    m, n = config.scale_mid_step, config.num_train_timesteps
    tail = n - m if config.fix_scale_bug else n
    ramp = torch.linspace(config.scale_a, config.scale_b, m, dtype=torch.float64)
    return torch.cat([ramp, torch.full((tail,), config.scale_b, dtype=torch.float64)])


class NoiseSchedule(nn.Module):
    r"""All per-timestep quantities of a schedule, as float32 buffers of shape ``(N,)``.

    >>> s = NoiseSchedule("videocrafter")
    >>> s.alphas_cumprod.shape, s.prediction_type
    (torch.Size([1000]), 'epsilon')

    Buffers (names as in the official DDPM code, so they can be compared with a
    checkpoint's): ``betas``, ``alphas``, ``alphas_cumprod`` ($\bar\alpha_t$),
    ``alphas_cumprod_prev`` ($\bar\alpha_{t-1}$, 1 at t = 0), ``sqrt_alphas_cumprod``,
    ``sqrt_one_minus_alphas_cumprod``, ``posterior_variance`` ($\tilde\beta_t$),
    ``posterior_log_variance_clipped``, ``posterior_mean_coef1``, ``posterior_mean_coef2``
    and ``scale_arr`` ($s_t$, ones without ``use_scale``). They are not saved in a
    module's state dict (``persistent=False``): the config alone rebuilds them.

    Move it with ``.to(device)``; the functions in :mod:`vdlearn.diffusion` also accept
    a schedule on the CPU and timesteps elsewhere.
    """

    def __init__(self, config: ScheduleConfig | str = "toy", **overrides):
        super().__init__()
        if isinstance(config, str):
            config = ScheduleConfig.preset(config, **overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config

        betas = make_betas(config)  # (N,) float64
        # $\alpha_t = 1 - \beta_t$
        alphas = 1.0 - betas
        # $\bar\alpha_t = \prod_{s \le t} \alpha_s$
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        # $\bar\alpha_{t-1}$, with $\bar\alpha_{-1} = 1$ (no noise before the first step)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        # posterior $q(x_{t-1} \mid x_t, x_0)$ (Ho et al. 2020, eq. 6-7):
        # $\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t$
        posterior_variance = (1 - alphas_cumprod_prev) / (1 - alphas_cumprod) * betas
        # $\tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\beta_t}{1-\bar\alpha_t} x_0
        #  + \frac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t} x_t$
        posterior_mean_coef1 = alphas_cumprod_prev.sqrt() * betas / (1 - alphas_cumprod)
        posterior_mean_coef2 = alphas.sqrt() * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod)
        if config.use_scale:
            self._scale_arr_official = make_scale_arr(config)  # (1400,) or (N,) float64
            scale_arr = self._scale_arr_official[: config.num_train_timesteps]
        else:
            self._scale_arr_official = None
            scale_arr = torch.ones_like(betas)

        buffers = {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt(),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
            "posterior_mean_coef1": posterior_mean_coef1,
            "posterior_mean_coef2": posterior_mean_coef2,
            "scale_arr": scale_arr,
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.to(torch.float32), persistent=False)

    # -- what the rest of the package asks of a schedule ------------------------------------------
    @property
    def num_train_timesteps(self) -> int:
        return self.config.num_train_timesteps

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    @property
    def prediction_type(self) -> str:
        return self.config.prediction_type

    @property
    def use_scale(self) -> bool:
        return self.config.use_scale

    def snr(self, t: torch.Tensor | None = None) -> torch.Tensor:
        r"""Signal-to-noise ratio $\bar\alpha_t s_t^2 / (1-\bar\alpha_t)$ at ``t`` (all steps if None)."""
        ab, s = self.alphas_cumprod.double(), self.scale_arr.double()
        snr = (ab * s**2 / (1 - ab)).float()
        if t is None:
            return snr
        return snr.to(t.device)[check_timesteps(t, self.num_train_timesteps)]

    def videocrafter_buffers(self) -> dict[str, torch.Tensor]:
        """The schedule buffers an official VideoCrafter checkpoint holds, under their key names.

        Useful to check a downloaded checkpoint against the preset it claims to be
        (``scale_arr`` has the official length: 1400 or 1000).
        """
        keys = [
            "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
            "sqrt_one_minus_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
            "posterior_mean_coef1", "posterior_mean_coef2",
        ]
        out = {k: getattr(self, k).detach().cpu() for k in keys}
        ab = self.alphas_cumprod.detach().cpu().double()
        out["log_one_minus_alphas_cumprod"] = (1 - ab).log().float()
        out["sqrt_recip_alphas_cumprod"] = (1 / ab).sqrt().float()
        out["sqrt_recipm1_alphas_cumprod"] = (1 / ab - 1).sqrt().float()
        if self._scale_arr_official is not None:
            out["scale_arr"] = self._scale_arr_official.float()
        return out

    def extra_repr(self) -> str:
        c = self.config
        text = f"{c.beta_schedule}, N={c.num_train_timesteps}, predicts {c.prediction_type}"
        if c.use_scale:
            text += f", scale_arr {c.scale_a}->{c.scale_b}"
        return text


# -- indexing helpers shared by the forward process, the loss and the samplers ----------------------
def check_timesteps(t: torch.Tensor, num_train_timesteps: int, allow_minus_one: bool = False) -> torch.Tensor:
    """Return ``t`` as a long tensor after checking it lies in ``0 .. N-1`` (or -1 when allowed)."""
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t)
    if t.is_floating_point() and not torch.equal(t, t.round()):
        raise ValueError(f"Timesteps must be integers, got {t.reshape(-1).tolist()[:8]}.")
    t = t.long()
    low = -1 if allow_minus_one else 0
    if t.numel() and (int(t.min()) < low or int(t.max()) > num_train_timesteps - 1):
        what = "-1 (clean data) or 0" if allow_minus_one else "0"
        raise ValueError(
            f"Timesteps out of range: got values from {int(t.min())} to {int(t.max())}, expected {what} .. "
            f"{num_train_timesteps - 1} (the schedule has {num_train_timesteps} steps)."
        )
    return t


def timestep_batch(t: int | torch.Tensor, batch: int, device: torch.device | str) -> torch.Tensor:
    """``t`` as a ``(batch,)`` long tensor on ``device``: an int or a 0-d tensor is repeated.

    A ``(batch, T)`` tensor (one timestep per frame of a video, as when independent images ride
    along with a clip in joint image-video training) is kept as it is.
    """
    t = torch.as_tensor(t, device=device)
    if t.is_floating_point() and not torch.equal(t, t.round()):
        raise ValueError(f"Timesteps must be integers, got {t.reshape(-1).tolist()[:8]}.")
    if t.ndim == 0:
        return t.long().expand(batch).clone()
    if t.ndim == 2 and t.shape[0] == batch:
        return t.long()
    if t.ndim != 1 or t.shape[0] not in (1, batch):
        raise ValueError(f"Expected one timestep or one per sample (batch {batch}), got shape {tuple(t.shape)}.")
    return t.long().expand(batch).clone()


def extract(values: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """``values[t]`` reshaped to ``(b, 1, ..., 1)`` with ``ndim`` dims, to broadcast against a batch.

    ``values`` is a ``(N,)`` buffer; ``t`` is ``(b,)`` on any device, or ``(b, T)`` (one step per
    frame) for videos ``(b, c, T, h, w)``, giving ``(b, 1, T, 1, 1)``.
    """
    out = values.to(t.device)[t]  # (b,) or (b, T)
    if t.ndim == 2:
        if ndim != 5:
            raise ValueError(f"Per-frame timesteps {tuple(t.shape)} need a video (b, c, T, h, w), got {ndim} dims.")
        return out.reshape(t.shape[0], 1, t.shape[1], 1, 1)
    return out.reshape(t.shape[0], *([1] * (ndim - 1)))


def alpha_bar_at(schedule: NoiseSchedule, t: torch.Tensor, ndim: int) -> torch.Tensor:
    r"""$\bar\alpha_t$ as ``(b, 1, ..)``, with the convention $\bar\alpha_{-1} = 1$ (clean data)."""
    t = check_timesteps(t, schedule.num_train_timesteps, allow_minus_one=True)
    ab = extract(schedule.alphas_cumprod, t.clamp(min=0), ndim)
    return torch.where(extract_mask(t, ndim), torch.ones_like(ab), ab)


def scale_at(schedule: NoiseSchedule, t: torch.Tensor, ndim: int) -> torch.Tensor:
    r"""$s_t$ (``scale_arr``) as ``(b, 1, ..)``, with $s_{-1}$ = ``scale_a`` (clean data)."""
    t = check_timesteps(t, schedule.num_train_timesteps, allow_minus_one=True)
    s = extract(schedule.scale_arr, t.clamp(min=0), ndim)
    clean = torch.full_like(s, schedule.config.scale_a if schedule.use_scale else 1.0)
    return torch.where(extract_mask(t, ndim), clean, s)


def extract_mask(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """``t < 0`` as a ``(b, 1, ..)`` boolean mask."""
    return (t < 0).reshape(t.shape[0], *([1] * (ndim - 1)))
