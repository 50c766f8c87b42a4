"""Classifier-free guidance: batched equals two passes; the combination and condition dropout."""

import pytest
import torch

from vdlearn.diffusion import (
    combine_guidance,
    drop_condition,
    guided_prediction,
    rescale_guidance,
)


class CondNet(torch.nn.Module):
    """A small nonlinear video denoiser that uses context and fps, with the U-Net's signature; counts calls."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = torch.nn.Parameter(torch.randn(8, 4, generator=g) * 0.3)
        self.calls = []

    def forward(self, x, timesteps, context=None, fps=None):
        self.calls.append(x.shape[0])
        b = x.shape[0]
        h = torch.tanh(x * (1 + 0.001 * timesteps.float()).reshape(b, 1, 1, 1, 1))
        if context is not None:
            h = h + torch.sin(context.mean(1) @ self.proj).reshape(b, 4, 1, 1, 1)
        if fps is not None:
            h = h * (1 + 0.01 * fps.float()).reshape(b, 1, 1, 1, 1)
        return h


def _inputs(b=3):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, 4, 5, 6, 6, generator=g)
    t = torch.tensor([10, 500, 990])[:b]
    cond = {"context": torch.randn(b, 7, 8, generator=g), "fps": torch.tensor([8, 16, 24])[:b]}
    uncond = {"context": torch.randn(1, 7, 8, generator=g)}  # one empty-prompt embedding shared; fps shared
    return x, t, cond, uncond


@pytest.mark.parametrize("scale", [0.0, 4.0, 12.0])
def test_batched_guidance_equals_two_separate_passes(scale):
    x, t, cond, uncond = _inputs()
    net = CondNet()
    batched = guided_prediction(net, x, t, cond, uncond, scale, batched=True)
    assert net.calls == [6]  # one call on 2b
    net.calls.clear()
    separate = guided_prediction(net, x, t, cond, uncond, scale, batched=False)
    assert net.calls == [3, 3]
    torch.testing.assert_close(batched, separate, atol=1e-6, rtol=0)
    # and both equal the formula on the two outputs computed by hand
    out_c = net(x, t, **cond)
    out_u = net(x, t, context=uncond["context"].expand(3, -1, -1), fps=cond["fps"])
    torch.testing.assert_close(batched, out_u + scale * (out_c - out_u), atol=1e-6, rtol=0)


def test_scale_one_or_no_uncond_is_one_conditional_call():
    x, t, cond, uncond = _inputs()
    net = CondNet()
    out = guided_prediction(net, x, t, cond, uncond, 1.0)
    assert net.calls == [3]
    torch.testing.assert_close(out, net(x, t, **cond))
    net.calls.clear()
    guided_prediction(net, x, t, cond, None, 7.5)
    assert net.calls == [3]


def test_combine_and_rescale():
    c, u = torch.full((2, 3), 2.0), torch.full((2, 3), 1.0)
    assert torch.equal(combine_guidance(c, u, 3.0), torch.full((2, 3), 4.0))
    g = torch.Generator().manual_seed(0)
    c, guided = torch.randn(2, 3, 4, 4, generator=g), 5 * torch.randn(2, 3, 4, 4, generator=g)
    torch.testing.assert_close(rescale_guidance(guided, c, 0.0), guided)
    full = rescale_guidance(guided, c, 1.0)
    torch.testing.assert_close(full.flatten(1).std(1), c.flatten(1).std(1))


def test_guidance_input_errors():
    x, t, cond, uncond = _inputs()
    net = CondNet()
    with pytest.raises(ValueError, match="keys"):
        guided_prediction(net, x, t, {"fps": cond["fps"]}, uncond, 5.0)
    with pytest.raises(ValueError, match="batch size 2"):
        guided_prediction(net, x, t, {"context": cond["context"][:2]}, None, 1.0)
    with pytest.raises(ValueError, match="differs in shape"):
        guided_prediction(net, x, t, cond, {"context": torch.zeros(1, 5, 8)}, 5.0)


def test_drop_condition():
    g = torch.Generator().manual_seed(0)
    cond = {"context": torch.randn(400, 3, 2, generator=g), "fps": torch.arange(400)}
    uncond = {"context": torch.zeros(1, 3, 2)}
    kept = drop_condition(cond, uncond, 0.0)
    assert torch.equal(kept["context"], cond["context"])
    dropped = drop_condition(cond, uncond, 1.0)
    assert torch.equal(dropped["context"], torch.zeros(400, 3, 2)) and torch.equal(dropped["fps"], cond["fps"])
    some = drop_condition(cond, uncond, 0.2, generator=torch.Generator().manual_seed(1))
    frac = (some["context"].abs().sum((1, 2)) == 0).float().mean().item()
    assert 0.13 < frac < 0.27
    again = drop_condition(cond, uncond, 0.2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(some["context"], again["context"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        drop_condition(cond, uncond, 1.5)
