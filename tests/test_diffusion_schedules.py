"""Schedules equal diffusers' betas; VideoCrafter's scale_arr and buffers follow the official rule."""

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from vdlearn.diffusion import NoiseSchedule, ScheduleConfig

DIFFUSERS_NAMES = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}


@pytest.mark.parametrize("kind,start,end", [
    ("linear", 1e-4, 0.02), ("scaled_linear", 0.00085, 0.012), ("cosine", 0.0, 0.0),
])
@pytest.mark.parametrize("zero_snr", [False, True])
def test_betas_and_alphas_cumprod_equal_diffusers(kind, start, end, zero_snr):
    ours = NoiseSchedule(ScheduleConfig(beta_schedule=kind, beta_start=start or 1e-4, beta_end=end or 0.02,
                                        zero_terminal_snr=zero_snr))
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule=DIFFUSERS_NAMES[kind],
                        beta_start=start or 1e-4, beta_end=end or 0.02, rescale_betas_zero_snr=zero_snr)
    assert ours.betas.dtype == torch.float32
    torch.testing.assert_close(ours.betas, ref.betas, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.alphas_cumprod, ref.alphas_cumprod, atol=1e-5, rtol=0)
    if zero_snr:
        assert float(ours.alphas_cumprod[-1]) == pytest.approx(0.0, abs=1e-12)


def test_buffers_are_computed_in_float64_then_stored_float32():
    s = NoiseSchedule("videocrafter")
    betas64 = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    ab64 = np.cumprod(1 - betas64)
    assert torch.equal(s.alphas_cumprod, torch.from_numpy(ab64).float())
    # a float32 cumprod drifts away from it in the last bits
    ab32 = torch.cumprod(1 - torch.from_numpy(betas64).float(), 0)
    assert not torch.equal(ab32, s.alphas_cumprod)


def _official_scale_arr(scale_b, fix_bug, n=1000, mid=400):
    """The documented rule: concat(linspace(1, scale_b, 400), full(K, scale_b)), K = 600 or 1000."""
    tail = n - mid if fix_bug else n
    return np.concatenate([np.linspace(1.0, scale_b, mid), np.full(tail, scale_b)])


@pytest.mark.parametrize("preset,scale_b,fix_bug,length", [
    ("videocrafter", 0.7, False, 1400), ("videocrafter1_1024", 0.3, True, 1000),
])
def test_scale_arr_matches_the_official_rule(preset, scale_b, fix_bug, length):
    s = NoiseSchedule(preset)
    official = s.videocrafter_buffers()["scale_arr"]
    assert official.shape == (length,)
    expected = torch.from_numpy(_official_scale_arr(scale_b, fix_bug)).float()
    torch.testing.assert_close(official, expected, atol=0, rtol=0)
    torch.testing.assert_close(s.scale_arr, expected[:1000], atol=0, rtol=0)
    assert s.scale_arr[0] == 1.0 and s.scale_arr[399] == pytest.approx(scale_b) and bool((s.scale_arr[400:] == scale_b).all())


def test_videocrafter_buffers_have_the_checkpoint_key_names():
    # the 12 schedule buffers of an official checkpoint (reference videocrafter.md, section 3) + scale_arr
    names = {"betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
             "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
             "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2"}
    bufs = NoiseSchedule("videocrafter").videocrafter_buffers()
    assert set(bufs) == names | {"scale_arr"}
    assert set(NoiseSchedule("videocrafter1_512").videocrafter_buffers()) == names
    ab = bufs["alphas_cumprod"].double()
    torch.testing.assert_close(bufs["sqrt_recipm1_alphas_cumprod"].double(), (1 / ab - 1).sqrt(), rtol=1e-6, atol=0)
    assert bufs["alphas_cumprod_prev"][0] == 1.0
    torch.testing.assert_close(bufs["alphas_cumprod_prev"][1:], bufs["alphas_cumprod"][:-1])


def test_posterior_variance_matches_diffusers_fixed_small():
    ours = NoiseSchedule("lavie_base")
    ref = DDPMScheduler(beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    for t in [1, 10, 500, 999]:
        torch.testing.assert_close(ours.posterior_variance[t], ref._get_variance(t), atol=1e-7, rtol=1e-4)


def test_snr_and_presets():
    s = NoiseSchedule("lavie_base")
    ab = s.alphas_cumprod.double()
    torch.testing.assert_close(s.snr(), (ab / (1 - ab)).float())
    vc = NoiseSchedule("videocrafter")
    t = torch.tensor([0, 200, 399, 900])
    ab = vc.alphas_cumprod[t].double()
    torch.testing.assert_close(vc.snr(t), (ab * vc.scale_arr[t].double() ** 2 / (1 - ab)).float())
    assert NoiseSchedule("toy").prediction_type == "v_prediction"
    assert NoiseSchedule("lavie_vsr").prediction_type == "v_prediction"
    assert ScheduleConfig.preset("toy", prediction_type="epsilon").prediction_type == "epsilon"


def test_bad_names_give_clear_errors():
    with pytest.raises(ValueError, match="Known presets: .*lavie_base.*videocrafter"):
        NoiseSchedule("videocrafter3")
    with pytest.raises(ValueError, match="Known schedules: linear, scaled_linear, cosine"):
        ScheduleConfig(beta_schedule="sigmoid")
    with pytest.raises(ValueError, match="prediction_type"):
        ScheduleConfig(prediction_type="eps")
    with pytest.raises(ValueError, match="out of range"):
        NoiseSchedule("toy").snr(torch.tensor([1000]))
