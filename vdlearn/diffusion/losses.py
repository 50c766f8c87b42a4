r"""The training loss: noise the data to a random step, ask the network to undo it.

Taught in ``notebooks/03_diffusion_basics.ipynb`` (section 4, the training loss);
the trainers of notebooks 05-09 call :func:`diffusion_loss`.

Ho et al. 2020 (eq. 14) show that a reweighted variational bound reduces to a plain
regression, $L_{simple}$:

$$L = \mathbb E_{t \sim U\{0..N-1\},\ x_0,\ \epsilon \sim \mathcal N(0,I)}
\big\| \text{target} - f_\theta(x_t, t, c) \big\|^2,\qquad
x_t = \sqrt{\bar\alpha_t}\,s_t\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon,$$

where the target is $\epsilon$ (epsilon-prediction), $v = \sqrt{\bar\alpha_t}\epsilon - \sqrt{1-\bar\alpha_t}\,s_t x_0$
(v-prediction, Salimans & Ho 2022) or $x_0$, as the schedule's ``prediction_type``
says. For video, the squared error is averaged over channels, frames and pixels, so
one video counts as one sample whatever its length.

Optional per-sample ``weights`` (shape ``(b,)``; ``(b, frames)`` when every frame has a
timestep of its own) multiply each sample's (or frame's) loss before the batch mean, e.g. :func:`min_snr_weights` (Hang et al. 2023, "Efficient Diffusion
Training via Min-SNR Weighting Strategy"): in $x_0$ units every step is weighted by
$\min(\mathrm{SNR}_t, \gamma)$, so easy low-noise steps stop dominating the gradient, or
:class:`TimestepLossNormalizer`, whose weights come from the loss itself: one over its running mean
at each part of the ladder, so that every part pulls about equally (EDM2's weighting; notebook 05).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vdlearn.diffusion.denoiser import Cond, Denoiser, expand_cond
from vdlearn.diffusion.process import q_sample, training_target
from vdlearn.diffusion.schedules import NoiseSchedule, check_timesteps


@dataclass
class LossOutput:
    """The loss and what went into it (for logging and for notebooks)."""

    loss: torch.Tensor  # () the scalar to backpropagate
    per_sample: torch.Tensor  # (b,) each sample's (weighted) mean squared error
    t: torch.Tensor  # (b,) the timesteps drawn
    x_t: torch.Tensor  # (b, ...) the noised input
    target: torch.Tensor  # (b, ...) what the network should have output
    prediction: torch.Tensor  # (b, ...) what it did output


def sample_timesteps(
    batch: int, schedule: NoiseSchedule, generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    r"""$t \sim U\{0, .., N-1\}$, one per sample: ``(b,)`` long."""
    gen_device = generator.device if generator is not None else device
    t = torch.randint(0, schedule.num_train_timesteps, (batch,), generator=generator, device=gen_device)
    return t.to(device)


def min_snr_weights(
    schedule: NoiseSchedule, t: torch.Tensor, gamma: float = 5.0, prediction_type: str | None = None,
) -> torch.Tensor:
    r"""Min-SNR-$\gamma$ loss weights ``(b,)`` for the schedule's target.

    $x_0$-target: $\min(\mathrm{SNR}, \gamma)$; $\epsilon$-target: $\min(\mathrm{SNR}, \gamma)/\mathrm{SNR}$;
    $v$-target: $\min(\mathrm{SNR}, \gamma)/(\mathrm{SNR}+1)$.
    """
    snr = schedule.snr(t)  # (b,)
    clipped = snr.clamp(max=gamma)
    kind = prediction_type or schedule.prediction_type
    if kind == "epsilon":
        return clipped / snr
    if kind == "v_prediction":
        return clipped / (snr + 1)
    if kind == "sample":
        return clipped
    raise ValueError(f"Unknown prediction_type {kind!r}; expected 'epsilon', 'v_prediction' or 'sample'.")


class TimestepLossNormalizer:
    r"""Weights that let every part of the noise ladder pull equally: $w_t = \bar L / L_t$, from running means.

    The loss of a v-prediction model is ten times larger near the top of the ladder than in the
    middle (``data/t2v/README.md``, "Which words it uses"), so the top's large and mostly
    irreducible errors dominate the gradient. EDM2 (Karras et al. 2024, "Analyzing and Improving
    the Training Dynamics of Diffusion Models") learns an uncertainty $u(\sigma)$ with the loss
    $L/e^{u} + u$ (after Kendall et al. 2018), whose optimum $e^{u} = \mathbb E[L \mid \sigma]$
    weights each noise level by the inverse of its expected loss. vdlearn's own shortcut: that
    expectation is a running mean per bin of timesteps instead of a learned network;
    $\bar L$ (the mean over the bins) keeps the weighted loss on the unweighted one's scale.
    Bins not seen yet weigh 1. ``state_dict`` / ``load_state_dict`` keep a resumed run exact.
    Used by ``vdlearn train t2v --loss-norm-bins`` (notebook 05).
    """

    def __init__(self, num_train_timesteps: int, bins: int = 20, decay: float = 0.99):
        if not 1 <= bins <= num_train_timesteps:
            raise ValueError(f"bins must be between 1 and {num_train_timesteps}, got {bins}.")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}.")
        self.num_train_timesteps, self.bins, self.decay = num_train_timesteps, bins, decay
        self.mean = torch.zeros(bins, dtype=torch.float64)  # (bins,) running mean loss; 0 where not seen
        self.seen = torch.zeros(bins, dtype=torch.bool)  # (bins,)

    def bin(self, t: torch.Tensor) -> torch.Tensor:
        """The bin of every timestep, shaped like ``t``."""
        return (t.long().cpu() * self.bins) // self.num_train_timesteps

    def weights(self, t: torch.Tensor) -> torch.Tensor:
        """One weight per entry of ``t`` (``(b,)`` or ``(b, frames)``), float32 on ``t``'s device."""
        w = torch.ones(self.bins, dtype=torch.float64)
        if self.seen.any():
            w[self.seen] = self.mean[self.seen].mean() / self.mean[self.seen]
        return w[self.bin(t)].float().to(t.device)

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Fold this step's unweighted losses (shaped like ``t``) into the running means."""
        b = self.bin(t).flatten()
        x = losses.detach().double().cpu().flatten()
        total = torch.zeros(self.bins, dtype=torch.float64).index_add_(0, b, x)
        count = torch.zeros(self.bins, dtype=torch.float64).index_add_(0, b, torch.ones_like(x))
        hit = count > 0
        step_mean = total[hit] / count[hit]
        first = hit & ~self.seen
        self.mean[hit] = torch.where(first[hit], step_mean, self.decay * self.mean[hit] + (1 - self.decay) * step_mean)
        self.seen |= hit

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state["mean"].shape != (self.bins,):
            raise ValueError(f"The saved loss normaliser has {state['mean'].shape[0]} bins; this run has {self.bins}.")
        self.mean, self.seen = state["mean"].double().clone(), state["seen"].bool().clone()


def diffusion_loss(
    model: Denoiser,
    x0: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    cond: Cond | None = None,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    weights: torch.Tensor | None = None,
    return_details: bool = False,
) -> torch.Tensor | LossOutput:
    """The denoising loss of ``model`` on a batch of clean data ``x0`` ``(b, c, [t,] h, w)``.

    ``t`` and ``noise`` are drawn (with ``generator``) unless given. ``cond`` is passed to
    the model as keywords (drop it for CFG training with
    :func:`vdlearn.diffusion.guidance.drop_condition` first). Returns the scalar loss,
    or a :class:`LossOutput` with ``return_details=True``.
    """
    b = x0.shape[0]
    if t is None:
        t = sample_timesteps(b, schedule, generator=generator, device=x0.device)
    t = check_timesteps(t.to(x0.device), schedule.num_train_timesteps)
    per_frame = x0.ndim == 5 and t.shape == (b, x0.shape[2])  # one timestep per frame (joint image-video batches)
    if t.shape != (b,) and not per_frame:
        raise ValueError(f"t must have shape ({b},), one timestep per sample"
                         + (f", or ({b}, {x0.shape[2]}), one per frame" if x0.ndim == 5 else "")
                         + f"; got {tuple(t.shape)}.")
    if noise is None:
        gen_device = generator.device if generator is not None else x0.device
        noise = torch.randn(x0.shape, generator=generator, device=gen_device, dtype=x0.dtype).to(x0.device)

    # $x_t = \sqrt{\bar\alpha_t}\, s_t\, x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$
    x_t = q_sample(schedule, x0, t, noise)  # (b, ...)
    # target: $\epsilon$, $v$ or $x_0$
    target = training_target(schedule, x0, noise, t)  # (b, ...)
    prediction = model(x_t, t, **expand_cond(cond, b))  # (b, ...)
    if prediction.shape != target.shape:
        raise ValueError(
            f"The model returned shape {tuple(prediction.shape)} for an input of shape {tuple(x_t.shape)}; "
            f"a denoiser must return a tensor shaped like its input."
        )
    # $\| \text{target} - f_\theta(x_t, t) \|^2$, averaged over everything but the batch
    err = (prediction.float() - target.float()).pow(2)  # (b, ...)
    if weights is not None and per_frame and weights.shape == t.shape:  # one weight per frame, as its timestep
        per_sample = (err.mean(dim=(1, 3, 4)) * weights.to(err)).mean(dim=1)  # (b, frames) -> (b,)
    else:
        per_sample = err.flatten(1).mean(dim=1)  # (b,)
        if weights is not None:
            if weights.shape != (b,):
                raise ValueError(f"weights must have shape ({b},), one per sample"
                                 + (f", or {tuple(t.shape)}, one per frame" if per_frame else "")
                                 + f"; got {tuple(weights.shape)}.")
            per_sample = per_sample * weights.to(per_sample)
    loss = per_sample.mean()
    if return_details:
        return LossOutput(loss, per_sample, t, x_t, target, prediction)
    return loss
