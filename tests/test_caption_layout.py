"""The caption layout (vdlearn/models/unet/layout.py) and fine-tuning a trained model with it."""

import pytest
import torch

from vdlearn.io import CheckpointMismatchError
from vdlearn.models.unet import CaptionLayout, CaptionLayoutUNet, UNetConfig, VideoUNet
from vdlearn.pipelines.t2v import TextToVideo
from vdlearn.training.t2v import T2VTask, T2VTrainConfig, init_from, latent_cache, train
from vdlearn.training.trainer import Trainer, TrainerConfig

SMALL = {"model_channels": 16, "channel_mult": (1, 2), "attention_levels": (0,), "head_channels": 8, "norm_groups": 8,
         "context_dim": 32, "init_attention_heads": 2, "temporal_conv_dropout": 0.0}


def _inputs(b=2, t=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 4, t, 8, 8, generator=g), torch.tensor([10, 900][:b]),
            torch.randn(b, 5, 32, generator=g), torch.full((b,), 8))


def test_a_fresh_layout_changes_nothing():
    torch.manual_seed(0)
    plain = VideoUNet(UNetConfig.preset("toy", **SMALL)).eval()
    torch.manual_seed(1)
    with_layout = CaptionLayoutUNet(UNetConfig.preset("toy", **SMALL), (4, 8, 8)).eval()
    missing, unexpected = with_layout.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("caption_layout.") for k in missing)
    with torch.no_grad():
        plain.conv_out.weight.normal_(0, 0.05)  # a U-Net whose output is not zero
        with_layout.conv_out.weight.copy_(plain.conv_out.weight)
        x, t, ctx, fps = _inputs()
        assert torch.equal(plain(x, t, ctx, fps), with_layout(x, t, ctx, fps))


def test_the_layout_depends_on_caption_frame_and_place():
    torch.manual_seed(0)
    layout = CaptionLayout(context_dim=32, channels=16, frames=4, height=8, width=8, rank=3)
    assert sum(p.numel() for p in layout.proj.parameters()) == 3 * 16 + 16
    with torch.no_grad():
        layout.proj.weight.normal_()
        _, _, ctx, _ = _inputs()
        out = layout(ctx)  # (b*t, c, h, w)
    assert out.shape == (2 * 4, 16, 8, 8)
    video = out.reshape(2, 4, 16, 8, 8)
    assert (video[0] - video[1]).abs().max() > 1e-3  # two captions, two layouts
    assert (video[0, 0] - video[0, 3]).abs().max() > 1e-3  # first and last frame differ
    assert (video[0, :, :, 0, 0] - video[0, :, :, 7, 7]).abs().max() > 1e-3  # two corners differ


def test_a_layout_that_reads_the_fps_gives_each_frame_rate_its_own_layout():
    """``fps_dim > 0`` (preset toy_layout_fpscond): the same caption at 4 and 16 fps, two layouts."""
    torch.manual_seed(0)
    layout = CaptionLayout(context_dim=32, channels=16, frames=4, height=8, width=8, rank=3, fps_dim=16)
    with torch.no_grad():
        layout.proj.weight.normal_()
        _, _, ctx, _ = _inputs()
        ctx = ctx[:1].expand(2, -1, -1)  # one caption twice
        out = layout(ctx, torch.tensor([4, 16])).reshape(2, 4, 16, 8, 8)
        assert (out[0] - out[1]).abs().max() > 1e-3
        same = layout(ctx, torch.tensor([8, 8])).reshape(2, 4, 16, 8, 8)
        assert torch.equal(same[0], same[1])
    with pytest.raises(ValueError, match="pass fps"):
        layout(ctx)
    with pytest.raises(ValueError, match="fps_cond"):
        CaptionLayoutUNet(UNetConfig.preset("toy", **{**SMALL, "fps_cond": False}), (4, 8, 8), fps_dim=16)
    model = TextToVideo.from_preset("toy_layout_fpscond")
    assert model.unet.caption_layout.fps_dim == 32 and model.config.world == "toy32_8f_fps"


def test_layout_misuse_is_explained():
    with pytest.raises(ValueError, match="frames, height, width"):
        CaptionLayoutUNet(UNetConfig.preset("toy", **SMALL), (4, 8))
    with pytest.raises(ValueError, match="context_dim"):
        CaptionLayoutUNet(UNetConfig.preset("toy", **{**SMALL, "context_dim": None}), (4, 8, 8))
    unet = CaptionLayoutUNet(UNetConfig.preset("toy", **SMALL), (4, 8, 8)).eval()
    x, t, ctx, fps = _inputs()
    with pytest.raises(ValueError, match=r"\(4, 8, 8\)"):
        unet(x[:, :, :3], t, ctx, fps)  # 3 frames
    with pytest.raises(ValueError, match="image"):
        unet(x, t, ctx, fps, temporal=False)
    with pytest.raises(ValueError, match="one caption per video"):
        unet(x, t, ctx[:, None].expand(-1, 4, -1, -1), fps)


def test_init_loads_a_trained_model_and_names_the_fresh_modules(tmp_path):
    cfg = T2VTrainConfig(preset="tiny", steps=2, batch_size=2, cache_clips=4, eval_n=0, device="cpu")
    train(cfg, tmp_path / "base", progress=False)
    base = TextToVideo.load(tmp_path / "base" / "t2v.safetensors")
    grown = TextToVideo.from_preset("tiny_layout")
    fresh = init_from(grown, tmp_path / "base" / "t2v.safetensors")
    assert fresh and all(name.startswith("unet.caption_layout.") for name in fresh)
    x = torch.randn(2, 4, 8, 8, 8)
    tokens = base.tokenize(["a red 3 moving left quickly", "a blue circle moving up slowly"])
    with torch.no_grad():  # the layout starts silent: the grown model predicts what the trained one does
        torch.testing.assert_close(grown.eval()(x, torch.tensor([100, 950]), tokens, torch.tensor([8, 8])),
                                   base(x, torch.tensor([100, 950]), tokens, torch.tensor([8, 8])))
    with pytest.raises(CheckpointMismatchError, match="other shapes"):
        init_from(TextToVideo.from_preset("toy"), tmp_path / "base" / "t2v.safetensors")
    with pytest.raises(CheckpointMismatchError, match="not a finished"):
        init_from(grown, tmp_path / "base" / "checkpoint.safetensors")


def test_fresh_modules_get_their_learning_rate_scale(tmp_path):
    model = TextToVideo.from_preset("tiny_layout")
    cache = latent_cache(model, T2VTrainConfig(preset="tiny_layout", cache_clips=4), None, progress=False)
    task = T2VTask(model, cache, batch_size=2)
    fresh = [n for n, _ in model.named_parameters() if n.startswith("unet.caption_layout.")]
    trainer = Trainer(model, task, TrainerConfig(steps=1, lr=1e-3, warmup=0, device="cpu"),
                      tmp_path, progress=False, lr_scales={n: 10.0 for n in fresh})
    trainer.fit()
    lrs = sorted(g["lr"] for g in trainer.optimizer.param_groups)
    assert len(lrs) == 2 and lrs[1] == pytest.approx(10 * lrs[0])
    with pytest.raises(ValueError, match="does not train"):
        Trainer(model, task, TrainerConfig(steps=1), tmp_path / "x", progress=False, lr_scales={"nope": 2.0})


def test_high_noise_share_moves_only_the_asked_timesteps():
    model = TextToVideo.from_preset("tiny")
    cache = latent_cache(model, T2VTrainConfig(preset="tiny", cache_clips=4), None, progress=False)
    plain = T2VTask(model, cache, batch_size=64).batch(0, torch.Generator().manual_seed(3))
    again = T2VTask(model, cache, batch_size=64, high_noise_share=0.0).batch(0, torch.Generator().manual_seed(3))
    assert torch.equal(plain["t"], again["t"])  # the default draws nothing extra
    high = T2VTask(model, cache, batch_size=64, high_noise_share=0.25, high_noise_from=900)
    b = high.batch(0, torch.Generator().manual_seed(3))
    assert (b["t"][:16] >= 900).all() and torch.equal(b["t"][16:], plain["t"][16:])
    with pytest.raises(ValueError, match="high_noise_share"):
        T2VTask(model, cache, batch_size=4, high_noise_share=1.5)


def test_the_paper_unet_has_no_layout_path():
    """The layout lives in a subclass: the paper U-Net's forward runs only ``conv_in`` as its stem."""
    plain = VideoUNet(UNetConfig.preset("toy", **SMALL))
    assert not any(isinstance(m, CaptionLayout) for m in plain.modules())
    assert "caption_layout" not in UNetConfig.__dataclass_fields__
    assert isinstance(TextToVideo.from_preset("tiny_layout").unet, CaptionLayoutUNet)
    assert type(TextToVideo.from_preset("tiny").unet) is VideoUNet
