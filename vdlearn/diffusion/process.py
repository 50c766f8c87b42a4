r"""The forward process and the three things a network can predict: $\epsilon$, $v$ or $x_0$.

Taught in ``notebooks/03_diffusion_basics.ipynb`` (sections "The forward process" and
"Epsilon or v").

**Forward noising** (Ho et al. 2020, eq. 4), with VideoCrafter's signal scale $s_t$
(``scale_arr``, 1 for every other model; see :mod:`vdlearn.diffusion.schedules`):

$$x_t = \sqrt{\bar\alpha_t}\, s_t\, x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon,\qquad \epsilon\sim\mathcal N(0, I).$$

Write $a_t = \sqrt{\bar\alpha_t}$ and $\sigma_t = \sqrt{1-\bar\alpha_t}$, so $a_t^2 + \sigma_t^2 = 1$,
and $y_0 = s_t x_0$ for the signal the network actually sees at step $t$.

**What the network predicts.** Given $x_t$, knowing any one of $\epsilon$, $y_0$ or
$v$ gives the other two, because $x_t = a_t y_0 + \sigma_t \epsilon$:

* $\epsilon$-prediction (Ho et al. 2020, eq. 11-12): $\hat y_0 = (x_t - \sigma_t\hat\epsilon)/a_t$.
  Simple and good at low noise, but at high noise ($a_t \to 0$) small errors in
  $\hat\epsilon$ are divided by $a_t$ and $\hat y_0$ explodes.
* $v$-prediction (Salimans & Ho 2022, sec. 4 and appendix D): $v = a_t\epsilon - \sigma_t y_0$,
  the velocity of $x_t$ along the circle $(a_t, \sigma_t) = (\cos\phi, \sin\phi)$. Then
  $\hat y_0 = a_t x_t - \sigma_t \hat v$ and $\hat\epsilon = \sigma_t x_t + a_t \hat v$:
  no division, well conditioned at both ends. Used by LaVie's super-resolution stage.
* $x_0$-prediction ("sample"): $\hat\epsilon = (x_t - a_t s_t \hat x_0)/\sigma_t$.

Finally $\hat x_0 = \hat y_0 / s_t$ (VideoCrafter's DDIM does exactly this division).
With $s_t = 1$ all formulas reduce to the textbook ones and equal diffusers'
``add_noise``, ``get_velocity`` and the conversions inside its schedulers.

All functions take ``t`` as a ``(b,)`` long tensor (or an int) and tensors of any shape
``(b, ...)``: images ``(b, c, h, w)`` and videos ``(b, c, t, h, w)`` alike. For videos ``t`` may
also be ``(b, T)``, one step per frame: independent images appended to a clip in joint
image-video training are noised each at its own step.
"""

from __future__ import annotations

import torch

from vdlearn.diffusion.schedules import (
    NoiseSchedule,
    check_timesteps,
    extract,
    timestep_batch,
)


def _prepare(schedule: NoiseSchedule, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Checked ``(b,)`` timesteps and the coefficients $a_t, \\sigma_t, s_t$ as ``(b, 1, ..)`` float32."""
    t = check_timesteps(timestep_batch(t, x.shape[0], x.device), schedule.num_train_timesteps)
    a = extract(schedule.sqrt_alphas_cumprod, t, x.ndim)  # (b, 1, ..)
    sigma = extract(schedule.sqrt_one_minus_alphas_cumprod, t, x.ndim)  # (b, 1, ..)
    s = extract(schedule.scale_arr, t, x.ndim)  # (b, 1, ..)
    return t, a, sigma, s


def _same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}.")


def q_sample(
    schedule: NoiseSchedule, x0: torch.Tensor, t: int | torch.Tensor, noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Noise clean data ``x0`` (b, ...) to step ``t`` in one jump: a sample of $q(x_t \mid x_0)$.

    ``noise`` defaults to fresh $\mathcal N(0, I)$ drawn with ``generator``.
    """
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    _same_shape("x0", x0, "noise", noise)
    _, a, sigma, s = _prepare(schedule, x0, t)
    # $x_t = \sqrt{\bar\alpha_t}\, s_t\, x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$
    return (a * s * x0 + sigma * noise).to(x0.dtype)


def get_velocity(schedule: NoiseSchedule, x0: torch.Tensor, noise: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
    r"""The $v$ target of Salimans & Ho (2022): $v = \sqrt{\bar\alpha_t}\,\epsilon - \sqrt{1-\bar\alpha_t}\, s_t x_0$."""
    _same_shape("x0", x0, "noise", noise)
    _, a, sigma, s = _prepare(schedule, x0, t)
    # $v = a_t \epsilon - \sigma_t y_0$, $y_0 = s_t x_0$
    return (a * noise - sigma * s * x0).to(x0.dtype)


def training_target(
    schedule: NoiseSchedule, x0: torch.Tensor, noise: torch.Tensor, t: int | torch.Tensor,
    prediction_type: str | None = None,
) -> torch.Tensor:
    """What the network should output at ``x_t = q_sample(x0, t, noise)``: $\\epsilon$, $v$ or $x_0$."""
    kind = prediction_type or schedule.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return get_velocity(schedule, x0, noise, t)
    if kind == "sample":
        return x0
    raise ValueError(f"Unknown prediction_type {kind!r}; expected 'epsilon', 'v_prediction' or 'sample'.")


def predict_x0_and_eps(
    schedule: NoiseSchedule, model_output: torch.Tensor, x_t: torch.Tensor, t: int | torch.Tensor,
    prediction_type: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Turn a network output into the predicted clean data $\hat x_0$ and noise $\hat\epsilon$.

    Returns float32 tensors shaped like ``x_t`` (the samplers do their arithmetic in float32).
    """
    _same_shape("model_output", model_output, "x_t", x_t)
    kind = prediction_type or schedule.prediction_type
    _, a, sigma, s = _prepare(schedule, x_t, t)
    out, x = model_output.float(), x_t.float()
    if kind == "epsilon":
        eps = out
        # $\hat y_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\epsilon) / \sqrt{\bar\alpha_t}$
        y0 = (x - sigma * eps) / a
    elif kind == "v_prediction":
        # $\hat y_0 = \sqrt{\bar\alpha_t}\, x_t - \sqrt{1-\bar\alpha_t}\,\hat v$
        y0 = a * x - sigma * out
        # $\hat\epsilon = \sqrt{1-\bar\alpha_t}\, x_t + \sqrt{\bar\alpha_t}\,\hat v$
        eps = sigma * x + a * out
    elif kind == "sample":
        y0 = s * out
        # $\hat\epsilon = (x_t - \sqrt{\bar\alpha_t}\, s_t \hat x_0) / \sqrt{1-\bar\alpha_t}$
        eps = (x - a * y0) / sigma
    else:
        raise ValueError(f"Unknown prediction_type {kind!r}; expected 'epsilon', 'v_prediction' or 'sample'.")
    # $\hat x_0 = \hat y_0 / s_t$
    return y0 / s, eps


def convert_prediction(
    schedule: NoiseSchedule, model_output: torch.Tensor, x_t: torch.Tensor, t: int | torch.Tensor,
    source: str, target: str,
) -> torch.Tensor:
    """Re-express a prediction of one kind (``source``) as another (``target``), e.g. epsilon -> v."""
    x0, eps = predict_x0_and_eps(schedule, model_output, x_t, t, prediction_type=source)
    if target == "epsilon":
        return eps
    if target == "sample":
        return x0
    if target == "v_prediction":
        _, a, sigma, s = _prepare(schedule, x_t, t)
        return a * eps - sigma * s * x0
    raise ValueError(f"Unknown target {target!r}; expected 'epsilon', 'v_prediction' or 'sample'.")
