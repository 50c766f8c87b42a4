r"""The diffusion process: schedules, forward noising, the training loss, samplers and guidance.

Taught in ``notebooks/03_diffusion_basics.ipynb``. One idea per file:

==================  ==========================================================================
``schedules``       beta schedules, $\bar\alpha_t$, VideoCrafter's ``scale_arr``, presets
``process``         forward noising $q(x_t\mid x_0)$; $\epsilon$ / $v$ / $x_0$ conversions
``losses``          the training loss (DDPM's $L_{simple}$, eps or v targets, weights)
``timesteps``       which timesteps a sampler visits (VideoCrafter, LaVie, diffusers rules)
``samplers``        the DDPM and DDIM steps (with ``scale_arr``), sampler presets
``guidance``        classifier-free guidance, batched; condition dropout for training
``denoiser``        the interface a network must offer the samplers
``loop``            :func:`sample`: the whole generation loop with callback and progress bar
``analytic``        the exact denoiser of a Gaussian mixture (for tests and intuition)
==================  ==========================================================================

The network the notebook trains is not here: it is the video U-Net's ``toy_image`` preset
(:mod:`vdlearn.models.unet`), trained as a task of the one loop (:mod:`vdlearn.training.image_denoiser`).

Typical use::

    from vdlearn.diffusion import NoiseSchedule, diffusion_loss, sample
    schedule = NoiseSchedule("videocrafter")
    loss = diffusion_loss(unet, latents, schedule, cond={"context": text, "fps": fps})
    video = sample(unet, (1, 4, 16, 40, 64), schedule, "videocrafter",
                   cond={"context": text, "fps": fps}, uncond={"context": empty}, seed=123)
"""

from vdlearn.diffusion.analytic import GaussianMixtureDenoiser
from vdlearn.diffusion.denoiser import Cond, Denoiser, concat_cond, expand_cond
from vdlearn.diffusion.guidance import (
    combine_guidance,
    drop_condition,
    guided_prediction,
    rescale_guidance,
)
from vdlearn.diffusion.loop import (
    SampleStep,
    TrajectoryRecorder,
    make_generator,
    sample,
)
from vdlearn.diffusion.losses import (
    LossOutput,
    TimestepLossNormalizer,
    diffusion_loss,
    min_snr_weights,
    sample_timesteps,
)
from vdlearn.diffusion.process import (
    convert_prediction,
    get_velocity,
    predict_x0_and_eps,
    q_sample,
    training_target,
)
from vdlearn.diffusion.samplers import (
    SAMPLER_PRESETS,
    Sampler,
    SamplerConfig,
    StepOutput,
    ddim_step,
    ddpm_step,
)
from vdlearn.diffusion.schedules import (
    SCHEDULE_PRESETS,
    NoiseSchedule,
    ScheduleConfig,
    make_betas,
    make_scale_arr,
)
from vdlearn.diffusion.timesteps import (
    make_timesteps,
    previous_timesteps,
    spaced_timesteps,
)

__all__ = [
    "SAMPLER_PRESETS",
    "SCHEDULE_PRESETS",
    "Cond",
    "Denoiser",
    "GaussianMixtureDenoiser",
    "LossOutput",
    "NoiseSchedule",
    "SampleStep",
    "Sampler",
    "SamplerConfig",
    "ScheduleConfig",
    "StepOutput",
    "TimestepLossNormalizer",
    "TrajectoryRecorder",
    "combine_guidance",
    "concat_cond",
    "convert_prediction",
    "ddim_step",
    "ddpm_step",
    "diffusion_loss",
    "drop_condition",
    "expand_cond",
    "get_velocity",
    "guided_prediction",
    "make_betas",
    "make_generator",
    "make_scale_arr",
    "make_timesteps",
    "min_snr_weights",
    "predict_x0_and_eps",
    "previous_timesteps",
    "q_sample",
    "rescale_guidance",
    "sample",
    "sample_timesteps",
    "spaced_timesteps",
    "training_target",
]
