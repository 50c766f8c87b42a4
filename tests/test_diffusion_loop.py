"""The sampling loop: seeded determinism, callbacks, conditioning plumbing, errors."""

import pytest
import torch

from vdlearn.diffusion import (
    NoiseSchedule,
    Sampler,
    SamplerConfig,
    TrajectoryRecorder,
    sample,
)


class VideoNet(torch.nn.Module):
    """Records what it is called with; a smooth function of its inputs (U-Net signature)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, timesteps, context=None, fps=None):
        self.seen.append((tuple(x.shape), timesteps.dtype, timesteps.tolist(), None if context is None else tuple(context.shape),
                          None if fps is None else fps.tolist()))
        shift = 0 if context is None else context.mean((1, 2)).reshape(-1, 1, 1, 1, 1)
        return 0.3 * torch.tanh(x) + 0.1 * shift


SHAPE = (2, 4, 3, 8, 8)  # (b, c, t, h, w)


@pytest.mark.parametrize("preset", ["videocrafter", "lavie_base", "toy"])
def test_same_seed_same_video_other_seed_other_video(preset):
    schedule = NoiseSchedule("lavie_base" if preset == "lavie_base" else "videocrafter")
    sampler = Sampler(schedule, preset, num_steps=10, guidance_scale=1.0)
    a = sample(VideoNet(), SHAPE, schedule, sampler, seed=7, device="cpu", progress=False)
    b = sample(VideoNet(), SHAPE, schedule, sampler, seed=7, device="cpu", progress=False)
    c = sample(VideoNet(), SHAPE, schedule, sampler, seed=8, device="cpu", progress=False)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-2
    d = sample(VideoNet(), SHAPE, schedule, sampler, generator=torch.Generator().manual_seed(7), device="cpu", progress=False)
    assert torch.equal(a, d)


def test_callback_sees_every_step_and_model_gets_the_interface():
    schedule = NoiseSchedule("videocrafter")
    net = VideoNet()
    rec = TrajectoryRecorder(every=4)
    steps = []
    context, empty = torch.randn(2, 5, 16), torch.zeros(1, 5, 16)
    fps = torch.tensor([8, 24])
    out = sample(net, SHAPE, schedule, Sampler(schedule, "videocrafter", num_steps=10),
                 cond={"context": context, "fps": fps}, uncond={"context": empty}, seed=0, device="cpu",
                 progress=False, callback=lambda s: (steps.append((s.index, s.t, s.t_prev)), rec(s)))
    assert out.shape == SHAPE
    assert [s[1] for s in steps] == list(range(901, 0, -100)) and steps[-1][2] == 0
    assert rec.t == [901, 501, 101, 1] and rec.stacked("x").shape == (4, *SHAPE)
    # the videocrafter preset makes two calls per step (cond, then uncond); fps is shared with uncond
    assert len(net.seen) == 20
    shape, dtype, t, ctx, f = net.seen[1]
    assert shape == SHAPE and dtype == torch.long and t == [901, 901] and ctx == (2, 5, 16) and f == [8, 24]


def test_guidance_batched_in_one_call_gives_the_same_samples():
    schedule = NoiseSchedule("lavie_base")
    cond, uncond = {"context": torch.randn(2, 5, 16)}, {"context": torch.zeros(1, 5, 16)}
    runs = {}
    for batched in (True, False):
        net = VideoNet()
        cfg = SamplerConfig(method="ddim", num_steps=8, guidance_scale=7.5, batched_guidance=batched)
        runs[batched] = sample(net, SHAPE, schedule, cfg, cond=cond, uncond=uncond, seed=1, device="cpu", progress=False)
        assert len(net.seen) == (8 if batched else 16)
        assert net.seen[0][0][0] == (4 if batched else 2)
    torch.testing.assert_close(runs[True], runs[False], atol=1e-6, rtol=0)
    no_guidance = sample(VideoNet(), SHAPE, schedule, SamplerConfig(num_steps=8), cond=cond, uncond=uncond, seed=1,
                         device="cpu", progress=False)
    assert (no_guidance - runs[True]).abs().max() > 1e-3


def test_x_T_and_errors():
    schedule = NoiseSchedule("toy")
    x_T = torch.randn(SHAPE)
    a = sample(VideoNet(), SHAPE, schedule, "toy", x_T=x_T, device="cpu", progress=False)
    b = sample(VideoNet(), SHAPE, schedule, "toy", x_T=x_T, device="cpu", progress=False)
    assert torch.equal(a, b)  # DDIM eta 0 from the same start is deterministic
    with pytest.raises(ValueError, match="x_T has shape"):
        sample(VideoNet(), SHAPE, schedule, "toy", x_T=torch.randn(1, 4, 3, 8, 8), progress=False)
    with pytest.raises(ValueError, match="either seed or generator"):
        sample(VideoNet(), SHAPE, schedule, "toy", seed=1, generator=torch.Generator(), progress=False)
    with pytest.raises(ValueError, match="different schedule"):
        sample(VideoNet(), SHAPE, schedule, Sampler(NoiseSchedule("toy"), "toy"), progress=False)
    with pytest.raises(ValueError, match="Known presets"):
        sample(VideoNet(), SHAPE, schedule, "dpm++", progress=False)
    with pytest.warns(UserWarning, match="no effect without uncond"):
        sample(VideoNet(), SHAPE, schedule, SamplerConfig(num_steps=2, guidance_scale=7.5), progress=False)


def test_t_start_runs_the_tail_of_the_ladder_from_the_given_sample():
    """SDEdit: ``t_start`` skips the steps above it; the rest are the plain loop's steps."""
    schedule = NoiseSchedule("videocrafter")
    sampler = Sampler(schedule, "videocrafter", num_steps=10, guidance_scale=1.0, eta=0.0)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    seen = []
    out = sample(VideoNet(), SHAPE, schedule, sampler, x_T=x, t_start=550, device="cpu", progress=False,
                 callback=lambda s: seen.append(s.t))
    assert seen == [501, 401, 301, 201, 101, 1]  # ladder 901, 801, ..., 1: the first kept is at or below 550
    assert sampler.first_index(550) == 4 and sampler.first_index(901) == 0 and sampler.first_index(2000) == 0
    # the same as stepping by hand from index 4 with the same network
    net, y = VideoNet(), x.clone()
    for i in range(4, len(sampler)):
        t = torch.full((SHAPE[0],), int(sampler.timesteps[i]), dtype=torch.long)
        y = sampler.step(net(y, t), y, i).prev_sample
    assert torch.allclose(out, y, atol=1e-6)
    # a start above the ladder's top is the whole ladder
    full = sample(VideoNet(), SHAPE, schedule, sampler, x_T=x, device="cpu", progress=False)
    assert torch.equal(full, sample(VideoNet(), SHAPE, schedule, sampler, x_T=x, t_start=999, device="cpu",
                                    progress=False))
    with pytest.raises(ValueError, match="below every timestep"):
        sample(VideoNet(), SHAPE, schedule, sampler, x_T=x, t_start=0, device="cpu", progress=False)
    with pytest.raises(ValueError, match="needs x_T"):
        sample(VideoNet(), SHAPE, schedule, sampler, t_start=500, device="cpu", progress=False)
