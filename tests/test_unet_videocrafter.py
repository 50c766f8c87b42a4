"""The official VideoCrafter key layout: every full preset maps one-to-one onto the manifests.

The manifests in ``tests/fixtures/keys/`` list every tensor (name and shape) of the official
U-Nets (``model.diffusion_model.`` stripped), built from AILab-CVC/VideoCrafter @ 11bcd76.
"""

from pathlib import Path

import pytest
import torch

from vdlearn.io import DEEPSPEED_PREFIX, CheckpointMismatchError
from vdlearn.models.unet import UNetConfig, VideoUNet
from vdlearn.pretrained.videocrafter import (
    UNET_PREFIX,
    detect_preset,
    from_official,
    load_videocrafter_unet,
    official_names,
    official_shapes,
    to_official,
)

KEYS = Path(__file__).parent / "fixtures" / "keys"
PRESETS = ["videocrafter2_t2v_512", "videocrafter1_t2v_1024", "videocrafter1_i2v_512"]


def manifest(name: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in (KEYS / f"{name}.unet.txt").read_text().splitlines():
        key, shape = line.split("\t")
        out[key] = tuple(int(s) for s in shape.strip("[]").split(",") if s.strip())
    return out


@pytest.mark.parametrize("preset", PRESETS)
def test_full_preset_maps_one_to_one_onto_the_official_manifest(preset):
    with torch.device("meta"):
        model = VideoUNet.from_preset(preset)
    names = official_names(model)
    assert len(set(names.values())) == len(names) == len(model.state_dict())  # one-to-one
    expected = manifest(preset)
    got = official_shapes(model)
    assert sorted(set(expected) - set(got)) == []  # nothing missing
    assert sorted(set(got) - set(expected)) == []  # nothing extra
    assert {k: v for k, v in got.items() if expected[k] != v} == {}  # same shapes
    assert detect_preset(expected) == preset


def full_manifest(preset: str) -> dict[str, tuple[int, ...]]:
    """The official key manifest of a full preset (VideoCrafter1 512 is the 1024 layout without fps)."""
    if preset == "videocrafter1_t2v_512":
        return {k: v for k, v in manifest("videocrafter1_t2v_1024").items() if not k.startswith("fps_embedding.")}
    return manifest(preset)


#: Reduced width: only widths change (every structural flag of the preset is kept).
NARROW = {"model_channels": 16, "head_channels": 8, "context_dim": 32, "norm_groups": 8}


@pytest.mark.parametrize("preset", PRESETS + ["videocrafter1_t2v_512"])
def test_full_preset_layout_runs_at_reduced_width(preset):
    """Each full preset's layout, narrowed: one forward, and the official key layout still maps."""
    torch.manual_seed(0)
    model = VideoUNet.from_preset(preset, **NARROW).eval()
    with torch.no_grad():
        for p in model.parameters():  # wake the zero-initialised output layers
            p.normal_(0, 0.2)
    full = full_manifest(preset)
    got = official_shapes(model)
    assert sorted(set(full) ^ set(got)) == []  # the same official names as the full-size checkpoint
    assert {k: v for k, v in got.items() if len(v) != len(full[k])} == {}  # the same kinds of tensor
    # the narrow widths: model_channels 320 -> 16, context_dim 1024 -> 32
    assert got["input_blocks.0.0.weight"] == (16, 4, 3, 3) and full["input_blocks.0.0.weight"] == (320, 4, 3, 3)
    assert got["input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] == (16, 32)
    assert detect_preset(got) == preset

    cfg = model.config
    tokens = cfg.text_context_len + 4 if cfg.image_cross_attention else 5
    x = torch.randn(2, 4, 3, 16, 8)  # (b, c, t, h, w): 3 downsamplings need h, w divisible by 8
    with torch.no_grad():
        out = model(x, torch.tensor([999, 10]), torch.randn(2, tokens, 32), fps=torch.tensor([28, 8]))
        other_caption = model(x, torch.tensor([999, 10]), torch.randn(2, tokens, 32), fps=torch.tensor([28, 8]))
    assert out.shape == (2, 4, 3, 16, 8) and torch.isfinite(out).all()
    assert (out - other_caption).abs().max() > 1e-3  # the caption reaches the output


def test_videocrafter1_512_is_the_1024_layout_without_fps():
    with torch.device("meta"):
        model = VideoUNet.from_preset("videocrafter1_t2v_512")
    expected = {k: v for k, v in manifest("videocrafter1_t2v_1024").items() if not k.startswith("fps_embedding.")}
    assert official_shapes(model) == expected


def test_official_typo_and_conv1d_shapes():
    with torch.device("meta"):
        model = VideoUNet.from_preset("videocrafter2_t2v_512")
    names = official_names(model)
    assert names["down_stages.0.res.temporal_conv.convs.0.weight"] == "input_blocks.1.0.temopral_conv.conv1.2.weight"
    assert names["down_stages.0.res.temporal_conv.convs.3.weight"] == "input_blocks.1.0.temopral_conv.conv4.3.weight"
    assert names["down_stages.2.resample.conv.weight"] == "input_blocks.3.0.op.weight"
    assert names["up_stages.2.resample.conv.weight"] == "output_blocks.2.1.conv.weight"
    assert official_shapes(model)["init_attn.0.proj_in.weight"] == (512, 320, 1)
    assert tuple(model.init_attn.proj_in.weight.shape) == (512, 320)


def small_model(**kw):
    cfg = UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(0,), head_channels=16,
                     norm_groups=8, context_dim=24, init_attention_heads=2, **kw)
    torch.manual_seed(0)
    model = VideoUNet(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model.eval()


@pytest.mark.parametrize("kw", [{}, {"temporal_position": "relative", "temporal_conv": False},
                                {"image_cross_attention": True}])
def test_round_trip_official_and_back(kw):
    model = small_model(**kw)
    official = to_official(model)
    back = from_official(official, model)
    assert back.keys() == model.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("layout", ["deepspeed", "state_dict", "raw"])
def test_loader_accepts_the_three_checkpoint_layouts(layout, tmp_path):
    model = small_model()
    full = {UNET_PREFIX + k: v.half() for k, v in to_official(model).items()}  # fp16, like the I2V release
    full |= {"betas": torch.zeros(1000), "scale_arr": torch.ones(1400),
             "first_stage_model.decoder.conv_out.weight": torch.zeros(3, 128, 3, 3)}  # not the U-Net: ignored
    ckpt = {"deepspeed": {"module": {DEEPSPEED_PREFIX + k: v for k, v in full.items()}},
            "state_dict": {"state_dict": full, "epoch": 3},
            "raw": full}[layout]
    path = tmp_path / "model.ckpt"
    torch.save(ckpt, path)
    loaded = load_videocrafter_unet(path, model.config)
    got = loaded.state_dict()
    for k, v in model.state_dict().items():
        assert got[k].dtype == torch.float32
        torch.testing.assert_close(got[k], v.half().float())
    x = torch.randn(1, 4, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, 5, torch.randn(1, 4, 24), fps=8).shape, x.shape)


def test_truncated_or_wrong_checkpoint_lists_missing_and_unexpected_keys():
    model = small_model()
    official = to_official(model)
    broken = dict(official)
    del broken["input_blocks.1.0.in_layers.2.weight"]
    broken["input_blocks.1.0.temporal_conv.conv1.2.weight"] = broken.pop("input_blocks.1.0.temopral_conv.conv1.2.weight")
    broken["out.2.weight"] = torch.zeros(4, 32, 1, 1)
    with pytest.raises(CheckpointMismatchError) as err:
        load_videocrafter_unet(broken, model.config)
    msg = str(err.value)
    assert "missing keys (2)" in msg and "input_blocks.1.0.in_layers.2.weight" in msg
    assert "unexpected keys (1)" in msg and "input_blocks.1.0.temporal_conv.conv1.2.weight" in msg
    assert "out.2.weight: model (4, 32, 3, 3) vs checkpoint (4, 32, 1, 1)" in msg


def test_wrong_preset_is_reported_not_loaded():
    vc1 = small_model(temporal_position="relative", temporal_conv=False)
    with pytest.raises(CheckpointMismatchError, match="relative_position_k"):
        load_videocrafter_unet(to_official(vc1), small_model().config)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="Download it first"):
        load_videocrafter_unet(tmp_path / "nope.ckpt", "videocrafter2_t2v_512")
