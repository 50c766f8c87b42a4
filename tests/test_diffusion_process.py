"""Forward noising and the epsilon / v / x0 conversions equal diffusers; scale_arr follows the formula."""

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from vdlearn.diffusion import (
    NoiseSchedule,
    ScheduleConfig,
    convert_prediction,
    get_velocity,
    predict_x0_and_eps,
    q_sample,
    training_target,
)

CASES = [  # (our config, diffusers kwargs)
    (ScheduleConfig(beta_schedule="linear", beta_start=1e-4, beta_end=0.02),
     {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}),
    (ScheduleConfig(beta_schedule="scaled_linear"), {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}),
    (ScheduleConfig(beta_schedule="cosine"), {"beta_schedule": "squaredcos_cap_v2"}),
]
TIMESTEPS = torch.tensor([0, 1, 250, 500, 999, 37])


@pytest.mark.parametrize("ours,ref_kwargs", CASES)
@pytest.mark.parametrize("shape", [(6, 3, 8, 8), (6, 4, 3, 4, 4)])
def test_q_sample_and_velocity_equal_diffusers(ours, ref_kwargs, shape):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    s, ref = NoiseSchedule(ours), DDPMScheduler(**ref_kwargs)
    torch.testing.assert_close(q_sample(s, x0, TIMESTEPS, noise), ref.add_noise(x0, noise, TIMESTEPS), atol=1e-5, rtol=0)
    torch.testing.assert_close(get_velocity(s, x0, noise, TIMESTEPS), ref.get_velocity(x0, noise, TIMESTEPS),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("preset", ["toy", "lavie_base", "videocrafter"])
@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_exact_predictions_recover_x0_and_noise(preset, kind):
    s = NoiseSchedule(preset, prediction_type=kind)
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(5, 4, 2, 6, 6, generator=g), torch.randn(5, 4, 2, 6, 6, generator=g)
    t = torch.tensor([0, 10, 399, 700, 980])
    x_t = q_sample(s, x0, t, noise)
    x0_hat, eps_hat = predict_x0_and_eps(s, training_target(s, x0, noise, t), x_t, t)
    # eps-prediction divides by sqrt(alpha_bar) ~ 0.07 at t = 980: float32 error grows accordingly
    torch.testing.assert_close(x0_hat, x0, atol=2e-4 if kind == "epsilon" else 1e-5, rtol=0)
    torch.testing.assert_close(eps_hat, noise, atol=1e-5 if kind != "sample" else 2e-3, rtol=0)


def test_convert_prediction_between_types():
    s = NoiseSchedule("toy")
    g = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([5, 100, 600, 900])
    x_t = q_sample(s, x0, t, noise)
    v = convert_prediction(s, noise, x_t, t, source="epsilon", target="v_prediction")
    torch.testing.assert_close(v, get_velocity(s, x0, noise, t), atol=1e-5, rtol=0)
    eps = convert_prediction(s, v, x_t, t, source="v_prediction", target="epsilon")
    torch.testing.assert_close(eps, noise, atol=1e-5, rtol=0)


def test_q_sample_with_scale_arr_follows_the_formula():
    """x_t = sqrt(ab_t) * scale_arr[t] * x0 + sqrt(1 - ab_t) * eps, built here from the documented rule."""
    s = NoiseSchedule("videocrafter")
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    ab = np.cumprod(1 - betas)
    scale = np.concatenate([np.linspace(1, 0.7, 400), np.full(1000, 0.7)])
    g = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(4, 4, 2, 4, 4, generator=g), torch.randn(4, 4, 2, 4, 4, generator=g)
    t = [0, 200, 450, 999]
    expected = torch.stack([
        float(np.sqrt(ab[k]) * scale[k]) * x0[i] + float(np.sqrt(1 - ab[k])) * noise[i] for i, k in enumerate(t)
    ])
    torch.testing.assert_close(q_sample(s, x0, torch.tensor(t), noise), expected, atol=1e-6, rtol=0)
    # without scale_arr the same call is plain DDPM noising: different numbers past t = 0
    plain = q_sample(NoiseSchedule("videocrafter1_512"), x0, torch.tensor(t), noise)
    assert (plain - expected)[1:].abs().max() > 0.05


def test_errors():
    s = NoiseSchedule("toy")
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="out of range.*0 .. 999"):
        q_sample(s, x, torch.tensor([0, 1000]))
    with pytest.raises(ValueError, match="out of range"):
        q_sample(s, x, -1)
    with pytest.raises(ValueError, match="same shape"):
        q_sample(s, x, 3, noise=torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match="one per sample"):
        q_sample(s, x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="integers"):
        q_sample(s, x, torch.tensor([1.5, 2.0]))
