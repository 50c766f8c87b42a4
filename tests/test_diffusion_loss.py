"""The training loss: right target for each parameterisation, weights, determinism."""

import pytest
import torch

from vdlearn.diffusion import (
    NoiseSchedule,
    TimestepLossNormalizer,
    diffusion_loss,
    min_snr_weights,
    q_sample,
)
from vdlearn.models.unet import VideoUNet


def _oracle(schedule, x0):
    """A 'network' that knows x0, so it can output the exact target from (x_t, t): the loss must be 0."""

    def model(x_t, t, **cond):
        assert cond == {} or all(v is None for v in cond.values())
        b = x_t.shape[0]
        ab = schedule.alphas_cumprod[t].reshape(b, *([1] * (x_t.ndim - 1)))
        s = schedule.scale_arr[t].reshape(b, *([1] * (x_t.ndim - 1)))
        eps = (x_t - ab.sqrt() * s * x0) / (1 - ab).sqrt()
        kind = schedule.prediction_type
        if kind == "epsilon":
            return eps
        if kind == "sample":
            return x0
        return ab.sqrt() * eps - (1 - ab).sqrt() * s * x0

    return model


@pytest.mark.parametrize("preset", ["toy", "lavie_base", "videocrafter", "lavie_vsr"])
@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_the_exact_prediction_has_zero_loss_and_others_do_not(preset, kind):
    schedule = NoiseSchedule(preset, prediction_type=kind)
    x0 = torch.randn(6, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    t = torch.tensor([0, 3, 200, 500, 800, 999])
    assert float(diffusion_loss(_oracle(schedule, x0), x0, schedule, t=t)) < 1e-6  # float32 rounding only
    wrong_kind = {"epsilon": "v_prediction", "v_prediction": "epsilon", "sample": "epsilon"}[kind]
    wrong = NoiseSchedule(preset, prediction_type=wrong_kind)
    assert float(diffusion_loss(_oracle(wrong, x0), x0, schedule, t=t)) > 1e-2


def test_loss_value_and_weights_by_hand():
    schedule = NoiseSchedule("lavie_base")
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(3, 3, 4, 4, generator=g), torch.randn(3, 3, 4, 4, generator=g)
    t = torch.tensor([10, 400, 900])
    zero = lambda x, t, **c: torch.zeros_like(x)
    out = diffusion_loss(zero, x0, schedule, t=t, noise=noise, return_details=True)
    torch.testing.assert_close(out.per_sample, noise.pow(2).flatten(1).mean(1))
    torch.testing.assert_close(out.x_t, q_sample(schedule, x0, t, noise))
    w = torch.tensor([1.0, 0.0, 2.0])
    weighted = diffusion_loss(zero, x0, schedule, t=t, noise=noise, weights=w)
    torch.testing.assert_close(weighted, (noise.pow(2).flatten(1).mean(1) * w).mean())


def test_per_frame_weights_weight_each_frame_by_hand():
    """A joint image-video batch has a timestep per frame; Min-SNR weights then come one per frame."""
    schedule = NoiseSchedule("toy")
    g = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(2, 4, 3, 4, 4, generator=g), torch.randn(2, 4, 3, 4, 4, generator=g)
    t = torch.tensor([[5, 5, 700], [300, 300, 999]])  # (b, frames): a clip of two frames plus one image
    zero = lambda x, t, **c: torch.zeros_like(x)
    w = min_snr_weights(schedule, t, 5.0)  # (2, 3)
    out = diffusion_loss(zero, x0, schedule, t=t, noise=noise, weights=w, return_details=True)
    per_frame = out.target.pow(2).mean(dim=(1, 3, 4))  # (b, frames)
    torch.testing.assert_close(out.per_sample, (per_frame * w).mean(dim=1))
    assert not torch.allclose(out.per_sample, per_frame.mean(dim=1) * w.mean(dim=1))  # the weights are per frame
    with pytest.raises(ValueError, match="one per frame"):
        diffusion_loss(zero, x0, schedule, t=t, noise=noise, weights=torch.ones(2, 2))

def test_min_snr_weights():
    s = NoiseSchedule("toy")
    t = torch.tensor([1, 100, 500, 990])
    snr = s.snr(t)
    torch.testing.assert_close(min_snr_weights(s, t, 5.0), snr.clamp(max=5) / (snr + 1))
    torch.testing.assert_close(min_snr_weights(s, t, 5.0, "epsilon"), snr.clamp(max=5) / snr)
    assert float(min_snr_weights(s, torch.tensor([999]), 5.0, "sample")) < 1e-3


def test_timestep_loss_normalizer_by_hand():
    """Running means per bin of timesteps; the weights are their mean over the bins divided by each."""
    norm = TimestepLossNormalizer(1000, bins=4, decay=0.5)  # bins [0, 250), [250, 500), [500, 750), [750, 1000)
    t = torch.tensor([[10, 10, 900], [300, 300, 999]])  # (b, frames)
    torch.testing.assert_close(norm.weights(t), torch.ones(2, 3))  # nothing seen yet: every weight is 1
    norm.update(t, torch.tensor([[0.1, 0.3, 1.0], [0.4, 0.4, 3.0]]))
    mean = torch.tensor([0.2, 0.4, 0.0, 2.0], dtype=torch.float64)  # first sight: the step's mean per bin
    torch.testing.assert_close(norm.mean, mean)
    norm.update(torch.tensor([5, 800]), torch.tensor([0.6, 1.0]))  # then 0.5 * old + 0.5 * new
    mean = torch.tensor([0.4, 0.4, 0.0, 1.5], dtype=torch.float64)
    torch.testing.assert_close(norm.mean, mean)
    seen_mean = (0.4 + 0.4 + 1.5) / 3
    w = norm.weights(torch.tensor([0, 260, 600, 999]))
    torch.testing.assert_close(w, torch.tensor([seen_mean / 0.4, seen_mean / 0.4, 1.0, seen_mean / 1.5]))
    fresh = TimestepLossNormalizer(1000, bins=4, decay=0.5)
    fresh.load_state_dict(norm.state_dict())
    torch.testing.assert_close(fresh.weights(t), norm.weights(t))
    with pytest.raises(ValueError, match="bins"):
        TimestepLossNormalizer(1000, bins=8).load_state_dict(norm.state_dict())


def test_loss_is_reproducible_with_a_generator_and_checks_inputs():
    schedule = NoiseSchedule("toy")
    net = VideoUNet.from_preset("toy_image", model_channels=8, channel_mult=(1, 2), attention_levels=(1,),
                                head_channels=8)  # notebook 03's denoiser, narrower
    x0 = torch.rand(4, 3, 1, 8, 8) * 2 - 1  # four one-frame videos
    a = diffusion_loss(net, x0, schedule, generator=torch.Generator().manual_seed(3))
    b = diffusion_loss(net, x0, schedule, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="out of range"):
        diffusion_loss(net, x0, schedule, t=torch.tensor([0, 1, 2, 1000]))
    with pytest.raises(ValueError, match="one timestep per sample"):
        diffusion_loss(net, x0, schedule, t=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="no cross-attention conditioning"):
        diffusion_loss(net, x0, schedule, cond={"context": torch.zeros(4, 2, 3)})
