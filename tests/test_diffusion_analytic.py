"""End to end: driven by the exact denoiser of a known distribution, the samplers reproduce it.

These tests fail if a step formula, the timestep ladder, the scale_arr handling, the
parameterisation or the guidance is wrong anywhere along a whole sampling run.
"""

import math

import pytest
import torch

from vdlearn.diffusion import GaussianMixtureDenoiser, NoiseSchedule, Sampler, sample

SHAPE = (3, 4, 4)  # one sample: a tiny 3-channel 4x4 "frame"
WEIGHTS = torch.tensor([0.1, 0.2, 0.3, 0.4])


def _points():
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, 2, (4, *SHAPE), generator=g).float() * 2 - 1) * 0.8  # 4 distinct corners


def _nearest(x, points):
    rms = ((x[:, None] - points[None]) ** 2).flatten(2).mean(2).sqrt()  # (n, K)
    dist, k = rms.min(1)
    return dist, torch.bincount(k, minlength=len(points)).float() / len(k)


@pytest.mark.parametrize("schedule_name,sampler_name", [
    ("toy", "toy"),  # cosine, v-prediction, DDIM eta 0, trailing
    ("lavie_base", "lavie_base"),  # linear, epsilon, DDPM 50 steps 980..0
    ("lavie_interpolation", "lavie_interpolation"),  # linear, epsilon, DDIM over SpacedDiffusion steps
    ("videocrafter", "videocrafter"),  # scaled linear + scale_arr, epsilon, DDIM eta 1, 981..1 -> 0
])
def test_samples_land_on_the_data_points_in_the_right_proportions(schedule_name, sampler_name):
    schedule = NoiseSchedule(schedule_name)
    points = _points()
    model = GaussianMixtureDenoiser(schedule, points, stds=0.0, weights=WEIGHTS)
    sampler = Sampler(schedule, sampler_name, guidance_scale=1.0)
    x = sample(model, (800, *SHAPE), schedule, sampler, seed=1, device="cpu", progress=False)
    x0 = sample(model, (800, *SHAPE), schedule, sampler, seed=1, device="cpu", progress=False, return_pred_x0=True)
    dist, freq = _nearest(x0, points)
    assert float(dist.max()) < 1e-3
    # binomial standard error at n = 800 is at most 0.018
    torch.testing.assert_close(freq, WEIGHTS, atol=0.06, rtol=0)
    dist, _ = _nearest(x, points)
    if sampler.prev_timesteps[-1] == 0:  # VideoCrafter stops at t = 0: noise std sqrt(1 - alpha_bar_0) = 0.029 is left
        residual = math.sqrt(1 - float(schedule.alphas_cumprod[0]))
        assert 0.5 * residual < float(dist.median()) < 1.5 * residual
    else:
        assert float(dist.max()) < 1e-3


def _exact_ddim_moments(schedule, sampler, mu, tau):
    """Mean and variance, per coordinate, of DDIM (eta = 0) driven by the exact Gaussian denoiser.

    With data N(mu, tau^2) and x_T ~ N(0, 1), every step is an affine map of x, so the moments follow
    exactly: written here from the formulas alone, with plain floats.
    """
    ab = schedule.alphas_cumprod.double().tolist()
    s = schedule.scale_arr.double().tolist()

    def coeffs(t):  # alpha_bar, scale at t (t = -1: clean data)
        return (1.0, 1.0) if t < 0 else (ab[t], s[t])

    m, var = torch.zeros_like(mu), torch.ones_like(mu)
    for t, t_prev in zip(sampler.timesteps.tolist(), sampler.prev_timesteps.tolist()):
        a_t, s_t = coeffs(t)
        a_p, s_p = coeffs(t_prev)
        c, sig2 = math.sqrt(a_t) * s_t, 1 - a_t
        gain = c * tau**2 / (c**2 * tau**2 + sig2)  # x0_hat = mu + gain * (x - c mu) = gain x + (1 - gain c) mu
        x0_p, x0_q = gain, (1 - gain * c) * mu
        eps_p, eps_q = (1 - c * x0_p) / math.sqrt(sig2), -c * x0_q / math.sqrt(sig2)  # eps_hat = (x - c x0_hat) / sigma
        p = math.sqrt(a_p) * s_p * x0_p + math.sqrt(1 - a_p) * eps_p
        q = math.sqrt(a_p) * s_p * x0_q + math.sqrt(1 - a_p) * eps_q
        final = (x0_p * m + x0_q, x0_p**2 * var)
        m, var = p * m + q, p**2 * var
    return final  # moments of the last step's x0 prediction


@pytest.mark.parametrize("schedule_name,sampler_name", [
    ("toy", "toy"), ("lavie_base", "diffusers_ddim"), ("videocrafter", "videocrafter"),
])
def test_ddim_on_a_gaussian_matches_its_exact_discrete_dynamics(schedule_name, sampler_name):
    schedule = NoiseSchedule(schedule_name)
    sampler = Sampler(schedule, sampler_name, eta=0.0, guidance_scale=1.0)
    g = torch.Generator().manual_seed(2)
    mu, tau = (torch.rand(SHAPE, generator=g) - 0.5).double(), 0.3
    model = GaussianMixtureDenoiser(schedule, mu[None].float(), stds=tau)
    x0 = sample(model, (1500, *SHAPE), schedule, sampler, seed=3, device="cpu", progress=False, return_pred_x0=True)
    mean, var = _exact_ddim_moments(schedule, sampler, mu, tau)
    # 50 DDIM steps slightly shrink the spread (the exact dynamics say by how much; it vanishes with more steps)
    assert 0.85 < float(var.sqrt().mean()) / tau < 1.0
    # sampling error of a mean over 1500 draws: ~ std / 39
    assert float((x0.double().mean(0) - mean).abs().mean()) < 0.012
    torch.testing.assert_close(x0.double().std(0).mean(), var.sqrt().mean(), atol=0.01, rtol=0)


def test_more_ddim_steps_approach_the_true_distribution():
    schedule = NoiseSchedule("toy")
    g = torch.Generator().manual_seed(4)
    mu, tau = torch.rand(SHAPE, generator=g) - 0.5, 0.3
    model = GaussianMixtureDenoiser(schedule, mu[None], stds=tau)
    x0 = sample(model, (1000, *SHAPE), schedule, "toy", seed=5, device="cpu", progress=False)
    x0_fine = sample(model, (1000, *SHAPE), schedule, Sampler(schedule, "toy", num_steps=250), seed=5, device="cpu",
                     progress=False)
    ratio, ratio_fine = float(x0.std(0).mean()) / tau, float(x0_fine.std(0).mean()) / tau
    assert ratio < ratio_fine and 0.975 < ratio_fine < 1.015


def test_sampling_a_scale_arr_model_without_the_correction_misses():
    """What the diffusers port of VideoCrafter does (videocrafter.md, section 6): the same model, plain DDIM."""
    g = torch.Generator().manual_seed(2)
    mu, tau = (torch.rand(SHAPE, generator=g) - 0.5), 0.3
    with_scale = NoiseSchedule("videocrafter")
    model = GaussianMixtureDenoiser(with_scale, mu[None], stds=tau)  # "trained" with scale_arr
    right = sample(model, (1500, *SHAPE), with_scale, "videocrafter", guidance_scale=1.0, seed=3, device="cpu",
                   progress=False, return_pred_x0=True)
    plain = NoiseSchedule("videocrafter1_512")
    wrong = sample(model, (1500, *SHAPE), plain, Sampler(plain, "videocrafter", guidance_scale=1.0), seed=3,
                   device="cpu", progress=False, return_pred_x0=True)
    err_right = float((right.mean(0) - mu).abs().mean())
    err_wrong = float((wrong.mean(0) - mu).abs().mean())
    assert err_right < 0.012 and err_wrong > 2.5 * err_right


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_conditional_sampling_and_guidance_pick_the_class(scale):
    schedule = NoiseSchedule("toy")
    points = _points()
    labels = torch.tensor([0, 0, 1, 1])
    model = GaussianMixtureDenoiser(schedule, points, stds=0.0, weights=WEIGHTS, labels=labels)
    x = sample(model, (600, *SHAPE), schedule, "toy", cond={"label": torch.tensor([1])},
               uncond={"label": torch.tensor([-1])}, guidance_scale=scale, seed=6, device="cpu", progress=False)
    dist, freq = _nearest(x, points)
    assert float(dist.max()) < 1e-3
    assert float(freq[:2].sum()) == 0.0  # only class 1
    if scale == 1.0:  # plain conditional sampling keeps the within-class proportions 3 : 4
        assert abs(float(freq[2]) - 3 / 7) < 0.07
