"""The assembled video U-Net: diffusers equivalence, image mode, inflation, parameter groups, errors."""

import dataclasses

import pytest
import torch
from diffusers import UNet3DConditionModel

from vdlearn.models.unet import UNET_PRESETS, UNetConfig, VideoUNet, inflate

SMALL = {"model_channels": 32, "channel_mult": (1, 2), "num_res_blocks": 1, "attention_levels": (0,), "head_channels": 16,
             "norm_groups": 8, "context_dim": 24, "init_attention_heads": 2}


def randomize(model, scale=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


def small(**kw):
    return VideoUNet(UNetConfig(**{**SMALL, **kw}))


def inputs(b=2, t=4, hw=8, n=5, d=24, c=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, c, t, hw, hw, generator=g), torch.tensor([7, 640])[:b],
            torch.randn(b, n, d, generator=g))


# --- the whole network against diffusers' UNet3DConditionModel -----------------------------------
def diffusers_names(cfg: UNetConfig) -> dict[str, str]:
    """vdlearn name prefix -> diffusers UNet3DConditionModel prefix, written out level by level."""
    m = {"time_embed.linear_1": "time_embedding.linear_1", "time_embed.linear_2": "time_embedding.linear_2",
         "conv_in": "conv_in", "init_attn": "transformer_in", "out_norm": "conv_norm_out", "conv_out": "conv_out",
         "mid.res1": "mid_block.resnets.0", "mid.res2": "mid_block.resnets.1", "mid.spatial": "mid_block.attentions.0",
         "mid.temporal": "mid_block.temp_attentions.0",
         "mid.res1.temporal_conv": "mid_block.temp_convs.0", "mid.res2.temporal_conv": "mid_block.temp_convs.1"}
    levels, n = len(cfg.channel_mult), cfg.num_res_blocks
    i = 0
    for lvl in range(levels):
        for j in range(n):
            d = f"down_blocks.{lvl}"
            m |= {f"down_stages.{i}.res": f"{d}.resnets.{j}", f"down_stages.{i}.res.temporal_conv": f"{d}.temp_convs.{j}",
                  f"down_stages.{i}.spatial": f"{d}.attentions.{j}", f"down_stages.{i}.temporal": f"{d}.temp_attentions.{j}"}
            i += 1
        if lvl < levels - 1:
            m[f"down_stages.{i}.resample.conv"] = f"down_blocks.{lvl}.downsamplers.0.conv"
            i += 1
    i = 0
    for u in range(levels):
        for j in range(n + 1):
            d = f"up_blocks.{u}"
            m |= {f"up_stages.{i}.res": f"{d}.resnets.{j}", f"up_stages.{i}.res.temporal_conv": f"{d}.temp_convs.{j}",
                  f"up_stages.{i}.spatial": f"{d}.attentions.{j}", f"up_stages.{i}.temporal": f"{d}.temp_attentions.{j}",
                  f"up_stages.{i}.resample.conv": f"{d}.upsamplers.0.conv"}
            i += 1
    return m


def rename_inside(rest: str) -> str:
    import re

    for a, b in [(r"^norm1\.", "norm1."), (r"^emb_proj\.", "time_emb_proj."), (r"^skip\.", "conv_shortcut."),
                 (r"^blocks\.", "transformer_blocks."), (r"\.to_out\.", ".to_out.0."),
                 (r"ff\.proj_in", "ff.net.0.proj"), (r"ff\.proj_out", "ff.net.2"),
                 (r"^norms\.(\d)", lambda m: f"conv{int(m.group(1)) + 1}.0"), (r"^convs\.0", "conv1.2"),
                 (r"^convs\.(\d)", lambda m: f"conv{int(m.group(1)) + 1}.3")]:
        rest = re.sub(a, b, rest)
    return rest


def test_full_unet_matches_diffusers_unet3d():
    """Every width a perfect square of the head size, so both libraries split heads alike."""
    cfg = UNetConfig(model_channels=64, channel_mult=(1, 1, 1), num_res_blocks=1, attention_levels=(0, 1),
                     head_channels=8, norm_groups=32, context_dim=24, init_attention_heads=8, fps_cond=False)
    ours = VideoUNet(cfg).eval()
    ref = UNet3DConditionModel(in_channels=4, out_channels=4, block_out_channels=(64, 64, 64), layers_per_block=1,
                               down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
                               up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
                               norm_num_groups=32, cross_attention_dim=24, attention_head_dim=8)
    randomize(ref).eval()
    prefixes = sorted(diffusers_names(cfg).items(), key=lambda kv: -len(kv[0]))
    theirs, mapped = ref.state_dict(), {}
    for name, t in ours.state_dict().items():
        ours_p, their_p = next((a, b) for a, b in prefixes if name.startswith(a + "."))
        mapped[name] = theirs[their_p + "." + rename_inside(name[len(ours_p) + 1:])]
    assert len(mapped) == len(theirs)
    ours.load_state_dict(mapped)
    x, t, ctx = inputs(t=4, hw=8)
    with torch.no_grad():
        expected = ref(x, t, encoder_hidden_states=ctx, return_dict=False)[0]
        torch.testing.assert_close(ours(x, t, ctx), expected, rtol=1e-4, atol=1e-5)
        ours.channels_last = False
        torch.testing.assert_close(ours(x, t, ctx), expected, rtol=1e-4, atol=1e-5)


# --- presets -------------------------------------------------------------------------------------
def test_toy_preset_is_a_few_million_parameters_and_runs():
    model = VideoUNet.from_preset("toy")
    n = model.count_parameters()
    assert 1e6 < n["total"] < 10e6 and n["temporal"] > 0
    x = torch.randn(2, 4, 8, 16, 16)  # 16x16 latents work as well as 8x8
    out = model(x, torch.tensor([1, 999]), torch.randn(2, 3, 64), fps=torch.tensor([4, 8]))
    assert out.shape == x.shape and out.is_contiguous()


def test_presets_are_data_and_overridable():
    cfg = UNetConfig.preset("toy", in_channels=8, out_channels=4)
    assert cfg.in_channels == 8 and UNET_PRESETS["toy"].in_channels == 4  # the preset itself is untouched
    with pytest.raises(KeyError, match="Available"):
        UNetConfig.preset("videocrafter3")
    for name, cfg in UNET_PRESETS.items():
        assert dataclasses.is_dataclass(cfg) and type(cfg) is UNetConfig, name


# --- image mode, joint training, inflation -------------------------------------------------------
def test_image_mode_equals_image_unet_per_frame():
    video = randomize(small()).eval()
    image = VideoUNet(video.config.image_only()).eval()
    image.load_state_dict({k: v for k, v in video.state_dict().items() if k in image.state_dict()})
    x, t, ctx = inputs()
    with torch.no_grad():
        per_frame = torch.cat([image(x[:, :, i:i + 1], t, ctx) for i in range(x.shape[2])], dim=2)
        got = video(x, t, ctx, temporal=False)  # no fps needed: image mode skips the fps embedding too
    assert (got - per_frame).abs().max() <= 1e-6
    with torch.no_grad():
        assert (video(x, t, ctx, fps=8) - per_frame).abs().max() > 1e-3  # temporal layers do act


def test_inflate_is_exactly_the_image_model_per_frame():
    image = randomize(VideoUNet(UNetConfig(**SMALL).image_only()), seed=3).eval()
    video = inflate(image).eval()
    assert video.config.temporal_conv and video.config.temporal_attention and video.config.fps_cond
    assert video.count_parameters()["temporal"] > 0
    x, t, ctx = inputs(t=5)
    with torch.no_grad():
        per_frame = torch.cat([image(x[:, :, i:i + 1], t, ctx) for i in range(5)], dim=2)
        out = video(x, t, ctx, fps=12)
        assert torch.equal(out, image(x, t, ctx))  # the image U-Net on the folded frames, bit for bit
    assert (out - per_frame).abs().max() <= 1e-6  # one call per frame: only summation order differs
    # the equality is not an accident of dead temporal layers: once they train, it breaks
    with torch.no_grad():
        for p in video.parameter_groups()["temporal"]:
            p.add_(0.05 * torch.randn_like(p))
        assert (video(x, t, ctx, fps=12) - per_frame).abs().max() > 1e-3


def test_inflate_with_positions_and_rejects_spatial_changes():
    image = randomize(VideoUNet(UNetConfig(**SMALL).image_only()), seed=4).eval()
    video = inflate(image, temporal_position="rope_bias", temporal_conv=False).eval()
    x, t, ctx = inputs()
    with torch.no_grad():
        per_frame = torch.cat([image(x[:, :, i:i + 1], t, ctx) for i in range(4)], dim=2)
        assert (video(x, t, ctx, fps=8) - per_frame).abs().max() <= 1e-6
    with pytest.raises(ValueError, match="model_channels"):
        inflate(image, model_channels=64)


def test_joint_image_video_batch():
    """The last frames as independent images: temporal layers see only the video frames."""
    model = randomize(small(), seed=5).eval()
    x, t, ctx = inputs(t=6)
    with torch.no_grad():
        joint = model(x, t, ctx, fps=8, num_images=2)
        video_only = model(x[:, :, :4], t, ctx, fps=8)
        images = model(x[:, :, 4:], t, ctx, fps=8, temporal=False)
    assert (joint[:, :, :4] - video_only).abs().max() <= 1e-5
    assert (joint[:, :, 4:] - images).abs().max() <= 1e-5


def test_per_frame_context_equals_shared_context():
    model = randomize(small(), seed=6).eval()
    x, t, ctx = inputs()
    with torch.no_grad():
        shared = model(x, t, ctx, fps=8)
        per_frame = model(x, t, ctx[:, None].expand(-1, 4, -1, -1), fps=8)
    assert (shared - per_frame).abs().max() <= 1e-5


def test_concat_channels_extend_conv_in():
    model = small(concat_channels=4)
    assert model.conv_in.in_channels == 8
    x, t, ctx = inputs()
    assert model(x, t, ctx, fps=8, concat=torch.randn_like(x)).shape == x.shape
    with pytest.raises(ValueError, match="extra condition channels"):
        model(x, t, ctx, fps=8)


# --- parameter groups ---------------------------------------------------------------------------
def test_parameter_groups_partition_and_freeze():
    model = small()
    groups = model.named_parameter_groups()
    names = set(groups["spatial"]) | set(groups["temporal"])
    assert names == {n for n, _ in model.named_parameters()}
    assert not set(groups["spatial"]) & set(groups["temporal"])
    for name in groups["temporal"]:
        assert "temporal" in name or name.startswith(("init_attn.", "fps_embed.")), name
    for name in groups["spatial"]:
        assert "temporal" not in name and not name.startswith(("init_attn.", "fps_embed.")), name

    model.freeze("temporal")  # VideoCrafter2's spatial-only fine-tuning
    x, t, ctx = inputs()
    randomize(model)
    model(x, t, ctx, fps=8).square().mean().backward()
    assert all(p.grad is None for p in model.parameter_groups()["temporal"])
    assert all(p.grad is not None for p in model.parameter_groups()["spatial"])
    model.unfreeze("temporal")
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="spatial"):
        model.freeze("motion")


def test_gradient_checkpointing_gives_the_same_gradients():
    x, t, ctx = inputs()
    grads = []
    for ckpt in (False, True):
        model = randomize(small(gradient_checkpointing=ckpt, dropout=0.0, temporal_conv_dropout=0.0), seed=7)
        model.train()
        model(x, t, ctx, fps=8).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


# --- errors -------------------------------------------------------------------------------------
def test_bad_inputs_give_clear_errors():
    model = small()
    x, t, ctx = inputs()
    with pytest.raises(ValueError, match=r"\(b, c, t, h, w\).*x\[:, :, None\]"):
        model(x[:, :, 0], t, ctx, fps=8)
    with pytest.raises(ValueError, match="Expected 4 input channels"):
        model(torch.randn(2, 3, 4, 8, 8), t, ctx, fps=8)
    with pytest.raises(ValueError, match="divisible by 2"):
        model(torch.randn(2, 4, 4, 7, 8), t, ctx, fps=8)
    with pytest.raises(ValueError, match="fps"):
        model(x, t, ctx)
    with pytest.raises(ValueError, match="context"):
        model(x, t, None, fps=8)
    with pytest.raises(ValueError, match=r"\(batch, tokens, 24\)"):
        model(x, t, torch.randn(2, 5, 16), fps=8)
    with pytest.raises(ValueError, match="timesteps"):
        model(x, torch.tensor([1, 2, 3]), ctx, fps=8)
    with pytest.raises(ValueError, match="num_images"):
        model(x, t, ctx, fps=8, num_images=9)
    with pytest.raises(ValueError, match="divisible"):
        UNetConfig(model_channels=30)
    with pytest.raises(ValueError, match="temporal_position"):
        UNetConfig(temporal_position="sinusoid")
