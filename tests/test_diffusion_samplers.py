"""DDPM and DDIM steps equal diffusers; timestep ladders equal the official ones; VideoCrafter's
scale_arr DDIM equals a from-the-formula implementation written here."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from vdlearn.diffusion import (
    NoiseSchedule,
    Sampler,
    SamplerConfig,
    ScheduleConfig,
    ddim_step,
    ddpm_step,
    make_timesteps,
    sample,
    spaced_timesteps,
)

SCHEDULES = [  # (our config, diffusers kwargs)
    ({"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}, {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}),
    ({"beta_schedule": "scaled_linear"}, {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}),
    ({"beta_schedule": "cosine"}, {"beta_schedule": "squaredcos_cap_v2"}),
]
SHAPE = (2, 4, 3, 6, 6)  # (b, c, t, h, w)


def _inputs(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(SHAPE, generator=g) * 1.3, torch.randn(SHAPE, generator=g)  # model output, sample


@pytest.mark.parametrize("ours,ref_kwargs", SCHEDULES)
@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("clip", [False, True])
def test_ddpm_step_equals_diffusers(ours, ref_kwargs, kind, clip):
    schedule = NoiseSchedule(ScheduleConfig(prediction_type=kind, **ours))
    ref = DDPMScheduler(prediction_type=kind, clip_sample=clip, variance_type="fixed_small", **ref_kwargs)
    ref.set_timesteps(50)
    for k, t in enumerate([980, 740, 500, 20, 0]):
        out, x = _inputs(k)
        expected = ref.step(out, t, x, generator=torch.Generator().manual_seed(100 + k))
        t_prev = int(ref.previous_timestep(t))
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(100 + k))
        got = ddpm_step(schedule, out, x, t, t_prev, clip_x0=1.0 if clip else None, noise=noise)
        torch.testing.assert_close(got.prev_sample, expected.prev_sample, atol=1e-5, rtol=0)
        torch.testing.assert_close(got.pred_x0, expected.pred_original_sample, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("ours,ref_kwargs", SCHEDULES)
@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("alpha_to_one", [True, False])
def test_ddim_step_equals_diffusers(ours, ref_kwargs, kind, eta, alpha_to_one):
    schedule = NoiseSchedule(ScheduleConfig(prediction_type=kind, **ours))
    ref = DDIMScheduler(prediction_type=kind, clip_sample=False, set_alpha_to_one=alpha_to_one, **ref_kwargs)
    ref.set_timesteps(50)
    for k, t in enumerate([980, 620, 300, 20, 0]):
        out, x = _inputs(k)
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(200 + k))
        expected = ref.step(out, t, x, eta=eta, variance_noise=noise if eta > 0 else None)
        prev = t - 1000 // 50  # diffusers' DDIM rule; below 0 means "after the last step"
        t_prev = prev if prev >= 0 else (-1 if alpha_to_one else 0)
        got = ddim_step(schedule, out, x, t, t_prev, eta=eta, noise=noise)
        torch.testing.assert_close(got.prev_sample, expected.prev_sample, atol=1e-5, rtol=0)


def test_ddim_clipping_equals_diffusers():
    schedule = NoiseSchedule("stable_diffusion")
    ref = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=True)
    ref.set_timesteps(20)
    out, x = _inputs(7)
    for t in [950, 450, 0]:
        expected = ref.step(out, t, x, eta=0.0)
        got = ddim_step(schedule, out, x, t, t - 50 if t >= 50 else -1, clip_x0=1.0)
        torch.testing.assert_close(got.prev_sample, expected.prev_sample, atol=1e-5, rtol=0)
        assert float(got.pred_x0.abs().max()) <= 1.0


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [50, 25, 30])
def test_timesteps_equal_diffusers(spacing, steps):
    for cls in (DDIMScheduler, DDPMScheduler):
        ref = cls(timestep_spacing=spacing)
        ref.set_timesteps(steps)
        assert make_timesteps(1000, steps, spacing).tolist() == ref.timesteps.tolist()
    ref = DDIMScheduler(timestep_spacing="leading", steps_offset=1)
    ref.set_timesteps(steps)
    assert make_timesteps(1000, steps, "leading", offset=1).tolist() == ref.timesteps.tolist()


def test_official_timestep_sequences():
    # VideoCrafter DDIM, 50 steps (videocrafter.md section 4): range(0, 1000, 20) + 1, visited 981 -> 1,
    # and the last step lands on t = 0
    vc = Sampler(NoiseSchedule("videocrafter"), "videocrafter")
    assert vc.timesteps.tolist() == [981 - 20 * i for i in range(50)]
    assert vc.prev_timesteps.tolist() == [961 - 20 * i for i in range(49)] + [0]
    # LaVie base: diffusers DDPM, 50 steps, 980, 960, ..., 0 (lavie.md), then clean data
    lb = Sampler(NoiseSchedule("lavie_base"), "lavie_base")
    assert lb.timesteps.tolist() == list(range(980, -1, -20))
    assert lb.prev_timesteps[-1] == -1
    # LaVie interpolation: SpacedDiffusion "50" = {0, 20, 41, ..., 979, 999} (lavie.md): 50 points spread
    # evenly over 0..999 and rounded
    li = Sampler(NoiseSchedule("lavie_interpolation"), "lavie_interpolation").timesteps.tolist()
    expected = sorted({int(v) for v in np.round(np.linspace(0, 999, 50))}, reverse=True)
    assert li == expected
    assert li[-3:] == [41, 20, 0] and li[:2] == [999, 979] and len(li) == 50
    # LaVie VSR: diffusers DDIM with steps_offset 1 -> 981 .. 1
    assert Sampler(NoiseSchedule("lavie_vsr"), "lavie_vsr").timesteps.tolist() == [981 - 20 * i for i in range(50)]
    # guided-diffusion's multi-section respacing: 300 steps as [10, 15, 20] strides each 100-step third
    sections = spaced_timesteps(300, [10, 15, 20])
    for lo, count in [(0, 10), (100, 15), (200, 20)]:
        part = sections[(sections >= lo) & (sections < lo + 100)]
        assert len(part) == count and part[0] == lo and part[-1] == lo + 99
    # the official 'uniform' rule keeps its quirk: 31 steps when 30 are asked for
    assert len(make_timesteps(1000, 30, "uniform")) == 31


def _videocrafter_reference(num_steps=50, scale_b=0.7):
    """VideoCrafter's DDIM with scale_arr, straight from the formulas in videocrafter.md sections 2 and 4."""
    betas = np.linspace(np.sqrt(0.00085), np.sqrt(0.012), 1000) ** 2
    ab = np.cumprod(1.0 - betas)
    scale_arr = np.concatenate([np.linspace(1.0, scale_b, 400), np.full(1000, scale_b)])
    ts = np.arange(0, 1000, 1000 // num_steps) + 1  # 1, 21, ..., 981
    a, a_prev = ab[ts], np.concatenate([[ab[0]], ab[ts[:-1]]])
    sc, sc_prev = scale_arr[ts], np.concatenate([[scale_arr[0]], scale_arr[ts[:-1]]])

    def step(x, e, index, eta, noise):  # index into ts (0 = the last step, t = 1)
        sigma = eta * np.sqrt((1 - a_prev[index]) / (1 - a[index]) * (1 - a[index] / a_prev[index]))
        pred_x0 = (x - np.sqrt(1 - a[index]) * e) / np.sqrt(a[index]) / sc[index]
        direction = np.sqrt(1 - a_prev[index] - sigma**2) * e
        return np.sqrt(a_prev[index]) * sc_prev[index] * pred_x0 + direction + sigma * noise, pred_x0

    return ts, step


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("preset,scale_b", [("videocrafter", 0.7), ("videocrafter1_1024", 0.3)])
def test_videocrafter_scale_arr_ddim_equals_the_formula(eta, preset, scale_b):
    ts, ref_step = _videocrafter_reference(scale_b=scale_b)
    sampler = Sampler(NoiseSchedule(preset), "videocrafter", eta=eta)
    assert sampler.timesteps.tolist() == ts[::-1].tolist()
    for i in range(len(sampler)):
        e, x = _inputs(i)
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(300 + i))
        got = sampler.step(e, x, i, noise=noise)
        expected, expected_x0 = ref_step(x.double().numpy(), e.double().numpy(), len(ts) - 1 - i, eta, noise.double().numpy())
        torch.testing.assert_close(got.prev_sample.double(), torch.from_numpy(expected), atol=1e-5, rtol=0)
        torch.testing.assert_close(got.pred_x0.double(), torch.from_numpy(expected_x0), atol=1e-4, rtol=1e-5)


def test_videocrafter_step_differs_from_plain_ddim():
    """The scale correction matters: the same inputs through plain DDIM give a different sample."""
    e, x = _inputs(0)
    with_scale = Sampler(NoiseSchedule("videocrafter"), "videocrafter", eta=0.0).step(e, x, 30)
    plain = Sampler(NoiseSchedule("videocrafter1_512"), "videocrafter", eta=0.0).step(e, x, 30)
    assert (with_scale.prev_sample - plain.prev_sample).abs().max() > 0.1


def _toy_model(x, t, **_):
    return torch.tanh(0.5 * x) + 0.001 * t.float().reshape(-1, *([1] * (x.ndim - 1)))


@pytest.mark.parametrize("method", ["ddim", "ddpm"])
def test_full_sampling_loop_equals_a_diffusers_loop(method):
    kind = "v_prediction"
    schedule = NoiseSchedule("lavie_base", prediction_type=kind)
    cfg = SamplerConfig(method=method, num_steps=20, spacing="leading", eta=0.0)
    ref_cls = DDIMScheduler if method == "ddim" else DDPMScheduler
    ref = ref_cls(beta_schedule="linear", beta_start=1e-4, beta_end=0.02, prediction_type=kind, clip_sample=False)
    ref.set_timesteps(20)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(SHAPE, generator=g)
    for t in ref.timesteps:
        out = _toy_model(x, torch.full((SHAPE[0],), int(t)))
        x = ref.step(out, t, x, generator=g).prev_sample
    ours = sample(_toy_model, SHAPE, schedule, cfg, seed=5, device="cpu", progress=False)
    torch.testing.assert_close(ours, x, atol=1e-5, rtol=0)


def test_sampler_errors():
    s = NoiseSchedule("toy")
    out, x = _inputs(0)
    with pytest.raises(ValueError, match="Known spacings"):
        SamplerConfig(spacing="karras")
    with pytest.raises(ValueError, match="Known presets"):
        SamplerConfig.preset("euler")
    with pytest.raises(ValueError, match="t_prev < t"):
        ddpm_step(s, out, x, 10, 10)
    with pytest.raises(ValueError, match="t_prev <= t"):
        ddim_step(s, out, x, 10, 30)
    with pytest.raises(ValueError, match="out of range"):
        ddim_step(s, out, x, 1000, 10)
    with pytest.raises(ValueError, match="shape of the sample"):
        ddim_step(s, out[:1], x, 10, 0)
    with pytest.raises(ValueError, match="scale_arr"):
        Sampler(NoiseSchedule("videocrafter"), "lavie_base")
    with pytest.raises(ValueError, match="num_steps"):
        make_timesteps(1000, 1001)
