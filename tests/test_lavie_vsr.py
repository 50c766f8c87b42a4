"""LaVie's video super-resolution U-Net (``lavie_vsr``) as a preset of VideoUNet: official keys, golden outputs.

* The full preset maps one-to-one onto the official key manifest (``tests/fixtures/keys/lavie_vsr.unet.txt``,
  the state dict inside ``lavie_vsr.pt``), on the meta device, with the official parameter count.
* Golden output (``tests/fixtures/golden/lavie/unet_lavie_vsr.safetensors``): the official
  ``UNet3DVSRModel`` of Vchitect/LaVie ``vsr/`` at reduced width on seeded weights; vdlearn loads the same
  official-named weights through :func:`vdlearn.pretrained.lavie.from_official` and must give the same
  v-prediction (fp32, ``atol = rtol = 1e-5``). See ``tests/fixtures/golden/README.md``.
* The VSR-specific parts: the noise-level input, the temporal ResBlock and module against their
  definitions, image mode and joint image-video frames, the converter's errors.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from golden_weights import lavie_golden_model

from vdlearn.io import CheckpointMismatchError
from vdlearn.models.unet import UNetConfig, VideoUNet, inflate
from vdlearn.models.unet.resblock import TemporalResBlock, TemporalResModule
from vdlearn.models.unet.transformer import BlockTemporalAttention, SpatialTransformer
from vdlearn.pretrained.lavie import (
    VSR_SHARED_FREQS,
    detect_preset,
    from_official,
    load_lavie_unet,
    official_names,
    official_shapes,
    rotary_frequencies,
    to_official,
)

KEYS = Path(__file__).parent / "fixtures" / "keys"
GOLDEN = Path(__file__).parent / "fixtures" / "golden" / "lavie" / "unet_lavie_vsr.safetensors"
OFFICIAL_COMMIT = "6ce851e98be2ad2ddb7df177ab31f18194b0ceff"  # Vchitect/LaVie
FREQS = "rotary_emb.freqs"
#: The golden file's reduced width in vdlearn's names (official: block_out_channels (32, 64, 64, 128),
#: attention_head_dim 2, cross_attention_dim 64). Two heads: the official RotaryEmbedding(32) needs heads of
#: at least 32 channels; 32 is the narrowest width the official 32-group GroupNorms allow.
REDUCED = {"model_channels": 32, "channel_mult": (1, 2, 2, 4), "attention_heads": 2, "context_dim": 64}
ATOL = RTOL = 1e-5  # as tests/test_lavie_unet.py; measured 6.9e-6 at most on outputs of magnitude ~3.7


def manifest() -> dict[str, tuple[int, ...]]:
    out = {}
    for line in (KEYS / "lavie_vsr.unet.txt").read_text().splitlines():
        key, shape = line.split("\t")
        out[key] = tuple(int(s) for s in shape.strip("()[]").split(",") if s.strip())
    return out


def meta_model(**overrides) -> VideoUNet:
    with torch.device("meta"):
        return VideoUNet.from_preset("lavie_vsr", **overrides)


# --- full size: the official key layout -----------------------------------------------------------------
def test_full_preset_maps_one_to_one_onto_the_official_manifest():
    model = meta_model()
    names = official_names(model)
    assert len(set(names.values())) == len(names) == len(model.state_dict())  # one-to-one
    expected, got = manifest(), official_shapes(model)
    assert len(expected) == 1158
    assert sorted(set(expected) - set(got)) == []  # nothing missing
    assert sorted(set(got) - set(expected)) == []  # nothing extra
    assert {k: v for k, v in got.items() if expected[k] != v} == {}  # same shapes
    # the only official tensors vdlearn does not store: 16 per-block rotary frequency copies + the shared module's
    assert set(expected) - set(names.values()) == set(rotary_frequencies(model))
    assert len(rotary_frequencies(model)) == 17 and VSR_SHARED_FREQS in rotary_frequencies(model)
    assert detect_preset({k: torch.empty(s, device="meta") for k, s in expected.items()}) == "lavie_vsr"


def test_full_parameter_count_and_layout_facts():
    model = meta_model()
    counts = model.count_parameters()
    # 691.0M, of which 473.4M 2D (the x4 upscaler's); the official count includes 17 (16,) rotary tables
    assert counts["total"] + 17 * 16 == 691_036_692 and round(counts["spatial"] / 1e6, 1) == 473.4
    shapes = official_shapes(model)
    assert shapes["conv_in.weight"] == (256, 7, 3, 3)  # 4 latent + 3 low-res RGB channels
    assert shapes["class_embedding.weight"] == (1000, 1024)  # the noise level, added to the time embedding
    assert "down_blocks.0.attentions.0.norm.weight" not in shapes  # no attention at the widest level ...
    assert "down_blocks.3.attentions.1.proj_in.weight" in shapes  # ... and attention at the deepest
    assert shapes["down_blocks.1.attentions.0.proj_in.weight"] == (512, 512)  # linear projection
    # attn1 attends to the 1024-wide text at levels 1 and 2, to the pixels at level 3 and in the middle
    assert shapes["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k.weight"] == (512, 1024)
    assert shapes["up_blocks.1.attentions.2.transformer_blocks.0.attn1.to_k.weight"] == (512, 1024)
    assert shapes["down_blocks.3.attentions.0.transformer_blocks.0.attn1.to_k.weight"] == (1024, 1024)
    assert shapes["mid_block.attentions.0.transformer_blocks.0.attn1.to_k.weight"] == (1024, 1024)
    assert shapes["mid_temporal_block.resblocks_3d_t.conv1.weight"] == (1024, 1024, 5, 1, 1)
    assert shapes["up_blocks.2.attentions.0.resblock_temporal.conv1.weight"] == (512, 512, 3, 1, 1)
    modules = [m for m in model.modules() if isinstance(m, TemporalResModule)]
    assert len(modules) == 9  # after each of 4 down levels, the middle, each of 4 up levels
    attn = [m.attn for m in model.modules() if isinstance(m, BlockTemporalAttention)]
    assert len(attn) == 16 and all(a.heads == 8 and a.position == "rope_bias" and a.rotary.dim == 32 for a in attn)
    transformers = [m for m in model.modules() if isinstance(m, SpatialTransformer)]
    assert len(transformers) == 16 and all(isinstance(t.temporal_conv, TemporalResBlock) for t in transformers)
    names = official_names(model)
    assert names["down_temporal_modules.0.temporal_res.emb_proj.weight"] == (
        "down_temporal_blocks.0.resblocks_3d_t.time_emb_proj.weight")
    assert names["up_stages.3.spatial.blocks.0.temporal.norm.weight"] == (
        "up_blocks.1.attentions.0.transformer_blocks.0.norm_temporal.weight")


# --- golden output of the official code ----------------------------------------------------------------
@functools.cache
def golden() -> tuple[VideoUNet, dict, dict]:
    """vdlearn's VSR U-Net at the golden reduced width, loaded with the official run's weights via from_official."""
    return lavie_golden_model(GOLDEN, "lavie_vsr", REDUCED, OFFICIAL_COMMIT, FREQS)


@pytest.fixture(scope="module", autouse=True)
def _free_golden_model():
    yield
    golden.cache_clear()


def run_golden(model: VideoUNet, g: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(g["x"], g["timesteps"], g["context"], concat=g["low_res"], noise_level=g["noise_level"])


def test_golden_file_is_small_and_documented():
    assert GOLDEN.stat().st_size < 300_000
    readme = (GOLDEN.parent.parent / "README.md").read_text()
    assert "unet_lavie_vsr.safetensors" in readme and "make_golden_lavie_vsr.py" in readme


def test_vsr_unet_matches_official():
    model, g, _ = golden()
    v = run_golden(model, g)
    assert g["v"].abs().max() > 0.5  # a live network: the official output is far from zero
    torch.testing.assert_close(v, g["v"], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("change", [
    {"cross_only_levels": ()},  # attn1 a self-attention everywhere (same weight shapes at this width)
    {"video_group_norm": False},  # per-frame GroupNorm instead of LaVie's 5-D one
    {"temporal_position": "none"},  # no rotary positions, no T5 bias
])
def test_each_vsr_option_matters_for_the_golden_output(change):
    """The same official weights in a config with one option changed miss the official output by far."""
    _, g, weights = golden()
    other = meta_model(**REDUCED, **change)
    if "temporal_position" in change:  # the bias tables and frequencies are gone from the layout
        weights = {k: v for k, v in weights.items() if "time_rel_pos_bias" not in k and not k.endswith(FREQS)}
    other.load_state_dict(from_official(weights, other), assign=True)
    assert (run_golden(other.eval(), g) - g["v"]).abs().max() > 1e-2


def test_noise_level_reaches_the_output():
    model, g, _ = golden()
    with torch.no_grad():
        other = model(g["x"], g["timesteps"], g["context"], concat=g["low_res"], noise_level=g["noise_level"] - 1)
    assert (other - g["v"]).abs().max() > 1e-3


# --- small models: converter, inputs, the VSR modules ---------------------------------------------------
SMALL = {"model_channels": 16, "channel_mult": (1, 2), "num_res_blocks": 1, "attention_levels": (0, 1),
         "cross_only_levels": (0,), "attention_heads": 2, "norm_groups": 8, "context_dim": 24,
         "noise_level_classes": 40, "max_noise_level": 30}


def small(seed: int = 0, **kw) -> VideoUNet:
    model = VideoUNet(UNetConfig.preset("lavie_vsr", **{**SMALL, **kw}))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # wake the zero-initialised output layers
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def small_inputs(t: int = 5, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, t, 8, 8, generator=g)
    low_res = torch.randn(2, 3, t, 8, 8, generator=g)
    return x, torch.tensor([3, 700]), torch.randn(2, 6, 24, generator=g), low_res, torch.tensor([0, 30])


def test_round_trip_official_and_back():
    model = small()
    official = to_official(model)
    assert set(official) == set(official_shapes(model)) and VSR_SHARED_FREQS in official
    back = from_official(official, model)
    assert back.keys() == model.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())
    without = {k: v for k, v in official.items() if not k.endswith(FREQS)}  # the frequencies are optional
    assert from_official(without, model).keys() == back.keys()


def test_wrong_checkpoint_lists_missing_unexpected_and_wrong_shapes_in_one_message():
    model = small()
    official = to_official(model)
    official.pop("mid_temporal_block.shift_conv.weight")
    official["down_blocks.0.attentions.0.transformer_blocks.0.attn_temp.to_q.weight"] = torch.zeros(16, 16)  # base name
    official["class_embedding.weight"] = torch.zeros(1000, 64)  # the full-size table
    with pytest.raises(CheckpointMismatchError) as err:
        from_official({"ema": official}, model)
    text = str(err.value)
    assert "missing keys (1)" in text and "mid_temporal_block.shift_conv.weight" in text
    assert "unexpected keys (1)" in text and "attn_temp.to_q.weight" in text
    assert "shape mismatches (1)" in text and "class_embedding.weight: model (40, 64) vs checkpoint (1000, 64)" in text
    assert "lavie_vsr" in text  # the hint names the pairing of files and presets


def test_shared_rotary_frequencies_that_differ_are_refused():
    model = small()
    official = to_official(model)
    official[VSR_SHARED_FREQS] = official[VSR_SHARED_FREQS] * 2
    with pytest.raises(CheckpointMismatchError, match="rotary frequencies"):
        from_official(official, model)


def test_load_lavie_unet_reads_the_released_file_layout(tmp_path):
    model = small()
    path = tmp_path / "lavie_vsr.pt"
    torch.save({"ema": to_official(model)}, path)  # as released: {"ema": flat state dict}, fp32
    loaded = load_lavie_unet(path, model.config)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    x, t, ctx, low_res, level = small_inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, ctx, concat=low_res, noise_level=level),
                                   model(x, t, ctx, concat=low_res, noise_level=level))
    assert detect_preset(torch.load(path, weights_only=True)) == "lavie_vsr"


def test_noise_level_input_errors_speak_to_the_learner():
    model = small()
    x, t, ctx, low_res, _ = small_inputs()
    with pytest.raises(ValueError, match="pass noise_level"):
        model(x, t, ctx, concat=low_res)
    with pytest.raises(ValueError, match=r"0\.\.30"):
        model(x, t, ctx, concat=low_res, noise_level=31)  # the official check: level <= max_noise_level
    with pytest.raises(ValueError, match="integers"):
        model(x, t, ctx, concat=low_res, noise_level=0.5)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        model(x, t, ctx, concat=low_res, noise_level=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="3 extra condition channels"):
        model(x, t, ctx, noise_level=5)  # the low-res video is missing
    base = VideoUNet(UNetConfig.preset("lavie_base", model_channels=32, channel_mult=(1,), attention_levels=(0,),
                                       attention_heads=2, context_dim=24))
    with pytest.raises(ValueError, match="no noise-level embedding"):
        base(x, t, ctx, noise_level=5)
    with pytest.raises(ValueError, match="cross_only_levels"):
        UNetConfig.preset("lavie_vsr", cross_only_levels=(0,))  # level 0 has no attention in the VSR layout
    with pytest.raises(ValueError, match="max_noise_level"):
        UNetConfig.preset("lavie_vsr", max_noise_level=1000)


def test_temporal_res_block_is_its_3d_convolution_definition():
    torch.manual_seed(0)
    b, c, t, h, w = 2, 16, 6, 3, 4
    block = TemporalResBlock(c, kernel=5, emb_dim=12, norm_groups=4).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        video = torch.randn(b, c, t, h, w)
        emb = torch.randn(b, 12)
        folded = video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # (b*t, c, h, w)
        got = block(folded, t, emb.repeat_interleave(t, 0)).reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)
        # by hand on the 5-D video: GroupNorm over (c/g, t, h, w), Conv3d (5,1,1) and (3,1,1), the embedding
        y = F.conv3d(F.silu(F.group_norm(video, 4, block.norm1.weight, block.norm1.bias, 1e-6)),
                     block.conv1.weight, block.conv1.bias, padding=(2, 0, 0))
        y = y + block.emb_proj(F.silu(emb))[:, :, None, None, None]
        y = F.conv3d(F.silu(F.group_norm(y, 4, block.norm2.weight, block.norm2.bias, 1e-6)),
                     block.conv2.weight, block.conv2.bias, padding=(1, 0, 0))
    torch.testing.assert_close(got, video + y, atol=1e-5, rtol=1e-5)


def test_image_mode_is_the_image_unet_on_every_frame():
    """temporal=False: no temporal attention, ResBlocks along time or level modules, per-frame GroupNorm."""
    model = small()
    image = VideoUNet(model.config.image_only()).eval()
    assert not any(isinstance(m, (TemporalResBlock, TemporalResModule)) for m in image.modules())
    image.load_state_dict({k: v for k, v in model.state_dict().items() if k in image.state_dict()})
    x, t, ctx, low_res, level = small_inputs()
    with torch.no_grad():
        got = model(x, t, ctx, concat=low_res, noise_level=level, temporal=False)
        per_frame = torch.cat([image(x[:, :, i:i + 1], t, ctx, concat=low_res[:, :, i:i + 1], noise_level=level)
                               for i in range(x.shape[2])], dim=2)
        video = model(x, t, ctx, concat=low_res, noise_level=level)
    torch.testing.assert_close(got, per_frame, atol=1e-5, rtol=1e-5)
    assert (video - got).abs().max() > 1e-3  # in video mode the frames do talk to each other


def test_joint_images_skip_every_temporal_layer():
    """num_images=2: the video frames are the video alone, the images are image mode."""
    model = small()
    x, t, ctx, low_res, level = small_inputs(t=6)
    with torch.no_grad():
        joint = model(x, t, ctx, concat=low_res, noise_level=level, num_images=2)
        video = model(x[:, :, :4], t, ctx, concat=low_res[:, :, :4], noise_level=level)
        images = model(x[:, :, 4:], t, ctx, concat=low_res[:, :, 4:], noise_level=level, temporal=False)
    torch.testing.assert_close(joint[:, :, :4], video, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(joint[:, :, 4:], images, atol=1e-5, rtol=1e-5)


def test_inflated_vsr_temporal_layers_start_as_the_identity():
    """An image U-Net inflated with all of LaVie VSR's temporal layers (per-frame norms) equals it per frame."""
    image = small(seed=3, video_group_norm=False, block_temporal_attention="none", transformer_temporal_conv=False,
                  level_temporal_modules=False)
    video = inflate(image, image.config, block_temporal_attention="after_cross", transformer_temporal_conv=True,
                    level_temporal_modules=True).eval()
    temporal_names = set(video.named_parameter_groups()["temporal"])
    assert any(".temporal_conv." in n for n in temporal_names) and any("temporal_modules." in n for n in temporal_names)
    x, t, ctx, low_res, level = small_inputs()
    with torch.no_grad():
        per_frame = torch.cat([image(x[:, :, i:i + 1], t, ctx, concat=low_res[:, :, i:i + 1], noise_level=level)
                               for i in range(x.shape[2])], dim=2)
        torch.testing.assert_close(video(x, t, ctx, concat=low_res, noise_level=level), per_frame,
                                   atol=1e-5, rtol=1e-5)


# --- the x4 upscaler's autoencoder, which LaVie's VSR stage decodes with ---------------------------------
#: stabilityai/stable-diffusion-x4-upscaler vae/config.json, as LaVie's vsr/configs/vae_config.json repeats it
X4_VAE_CONFIG = {
    "act_fn": "silu", "block_out_channels": [128, 256, 512], "down_block_types": ["DownEncoderBlock2D"] * 3,
    "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3, "scaling_factor": 0.08333,
}


def test_x4_upscaler_vae_preset_is_the_official_config_and_key_layout():
    diffusers = pytest.importorskip("diffusers")
    from vdlearn.models.vae import AutoencoderKL, VAEConfig
    from vdlearn.pretrained import vae_layouts

    cfg = VAEConfig.preset("sd_x4_upscaler")
    assert vae_layouts.config_from_diffusers(X4_VAE_CONFIG).replace(name="sd_x4_upscaler") == cfg
    assert cfg.downsample_factor == 4 and cfg.scale_factor == 0.08333  # KL-f4: 320x512 latents -> 1280x2048 video
    with torch.device("meta"):
        ours = AutoencoderKL(cfg)
        theirs = diffusers.AutoencoderKL(**X4_VAE_CONFIG)
    exported = vae_layouts.vdlearn_to_diffusers(ours.state_dict(), cfg)
    assert {k: tuple(v.shape) for k, v in exported.items()} == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert sum(p.numel() for p in ours.parameters()) == 55_325_927


def test_x4_upscaler_vae_equals_diffusers_at_reduced_width():
    diffusers = pytest.importorskip("diffusers")
    from vdlearn.pretrained import vae_layouts

    reference = diffusers.AutoencoderKL(**{**X4_VAE_CONFIG, "block_out_channels": [32, 64, 128]})
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in reference.named_parameters():  # random weights, norms around 1, biases around 0
            noise = torch.randn(p.shape, generator=g)
            if p.dim() > 1:
                p.copy_(noise / p[0].numel() ** 0.5)
            else:
                p.copy_(float("norm" in name and name.endswith("weight")) + 0.1 * noise)
    reference.eval()
    ours = vae_layouts.load_diffusers_vae(reference).eval()
    assert ours.config.scale_factor == 0.08333 and ours.config.channel_mult == (1, 2, 4)
    x = torch.rand(1, 3, 32, 24, generator=g) * 2 - 1
    z = torch.randn(1, 4, 8, 6, generator=g)  # f = 4
    with torch.no_grad():
        posterior = reference.encode(x).latent_dist
        mine = ours.encode(x)
        torch.testing.assert_close(mine.mean, posterior.mean, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(mine.logvar, posterior.logvar, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(ours.decode(z), reference.decode(z).sample, atol=1e-4, rtol=1e-4)
