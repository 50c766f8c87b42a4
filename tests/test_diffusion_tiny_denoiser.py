"""The tiny denoiser of notebook 03: shapes, learning, saving and loading, and the shipped checkpoint."""

import pytest
import torch

from vdlearn.diffusion import NoiseSchedule, diffusion_loss, sample
from vdlearn.diffusion.tiny_denoiser import (
    TinyDenoiser,
    load_tiny_denoiser,
    save_tiny_denoiser,
    toy_frames,
    train_denoiser,
)
from vdlearn.io import data_dir


def test_tiny_denoiser_shapes_and_learning():
    net = TinyDenoiser(channels=8, levels=2)
    x = torch.randn(2, 3, 5, 8, 8)
    assert net(x, torch.tensor([3, 900])).shape == x.shape  # video: frame by frame
    assert float(net(x[:, :, 0], torch.tensor([3, 900])).detach().abs().max()) == 0.0  # zero-initialised output layer
    with pytest.raises(ValueError, match="multiples of 2"):
        net(torch.randn(1, 3, 7, 8), torch.tensor([1]))
    # 4 flat-coloured images: the loss on a fixed evaluation batch must fall clearly within 60 steps
    torch.manual_seed(0)
    schedule = NoiseSchedule("toy")
    data = (torch.rand(4, 3, 1, 1) * 1.6 - 0.8).expand(4, 3, 8, 8).contiguous()

    def evaluate():
        with torch.no_grad():
            return float(diffusion_loss(net, data.repeat(16, 1, 1, 1), schedule, generator=torch.Generator().manual_seed(9)))

    before = evaluate()
    history = train_denoiser(net, data, schedule, steps=60, batch_size=8, lr=1e-2, progress=False, log_every=10)
    assert len(history) == 6
    assert evaluate() < 0.7 * before


def test_save_and_load_round_trip(tmp_path):
    net = TinyDenoiser(channels=8, levels=2)
    torch.nn.init.normal_(net.conv_out.weight)
    schedule = NoiseSchedule("toy", prediction_type="epsilon")
    path = save_tiny_denoiser(tmp_path / "tiny", net, schedule, metrics={"final_loss": 0.5}, command="test")
    loaded, loaded_schedule = load_tiny_denoiser(path)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([5, 500])
    assert torch.equal(loaded(x, t), net(x, t))
    assert loaded_schedule.config == schedule.config
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        load_tiny_denoiser(tmp_path / "missing")


def test_shipped_checkpoint_denoises_toy_frames():
    """data/tiny_denoiser_toy32 loads strictly and beats the untrained network by far on fresh toy frames."""
    assert (data_dir() / "tiny_denoiser_toy32.safetensors").exists(), "the shipped tiny denoiser is missing from data/"
    model, schedule = load_tiny_denoiser()
    frames = toy_frames(seed=123)(64, torch.Generator().manual_seed(0))  # (64, 3, 32, 32), other indices than training
    with torch.no_grad():
        trained = float(diffusion_loss(model, frames, schedule, generator=torch.Generator().manual_seed(1)))
        untrained = float(diffusion_loss(TinyDenoiser(model.config), frames, schedule,
                                         generator=torch.Generator().manual_seed(1)))
        out = sample(model, (4, 3, 32, 32), schedule, "toy", seed=0, device="cpu", progress=False)
    assert trained < 0.25 * untrained
    assert out.shape == (4, 3, 32, 32) and float(out.abs().max()) < 1.5
