"""LaVie's base and interpolation U-Nets as presets of VideoUNet: official keys, golden outputs, the new parts.

* The full presets map one-to-one onto the official key manifests (``tests/fixtures/keys/lavie_*.unet.txt``,
  the state dicts inside ``lavie_base.pt`` / ``lavie_interpolation.pt``), on the meta device.
* Golden outputs (``tests/fixtures/golden/lavie/``): the official ``UNet3DConditionModel`` of
  Vchitect/LaVie (``base/`` and ``interpolation/``) at reduced width on seeded weights; vdlearn loads
  the same official-named weights through :func:`vdlearn.pretrained.lavie.from_official` and must
  give the same noise prediction (fp32, ``atol = rtol = 1e-5``). See the folder's README.
* The two LaVie-specific operations against their definitions: the GroupNorm over all frames and
  the sparse-causal keys/values.
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
from vdlearn.models.unet.resblock import GroupNorm32, video_group_norm
from vdlearn.models.unet.transformer import (
    BlockTemporalAttention,
    TransformerBlock,
    sparse_causal_context,
)
from vdlearn.pretrained.lavie import (
    detect_preset,
    from_official,
    load_lavie_unet,
    official_names,
    official_shapes,
    rotary_frequencies,
    to_official,
)

KEYS = Path(__file__).parent / "fixtures" / "keys"
GOLDEN = Path(__file__).parent / "fixtures" / "golden" / "lavie"
OFFICIAL_COMMIT = "6ce851e98be2ad2ddb7df177ab31f18194b0ceff"  # Vchitect/LaVie
PRESETS = ["lavie_base", "lavie_interpolation"]
FREQS = ".rotary_emb.freqs"
#: The golden files' reduced width in vdlearn's names (official: block_out_channels (64, 128, 192, 192),
#: attention_head_dim 2, cross_attention_dim 64). Two heads: the official RotaryEmbedding(32) needs heads of
#: at least 32 channels, so 8 heads would need a first level 256 wide.
REDUCED = {"model_channels": 64, "channel_mult": (1, 2, 3, 3), "attention_heads": 2, "context_dim": 64}
# fp32 agreement: the same arithmetic in a different order (SDPA vs einsum attention, channels-last
# convolutions, split GEGLU matmuls); measured 5.4e-6 at most on outputs of magnitude ~2.5.
ATOL = RTOL = 1e-5


def manifest(preset: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in (KEYS / f"{preset}.unet.txt").read_text().splitlines():
        key, shape = line.split("\t")
        out[key] = tuple(int(s) for s in shape.strip("()[]").split(",") if s.strip())
    return out


def meta_model(preset: str, **overrides) -> VideoUNet:
    with torch.device("meta"):
        return VideoUNet.from_preset(preset, **overrides)


# --- full size: the official key layout -----------------------------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
def test_full_preset_maps_one_to_one_onto_the_official_manifest(preset):
    model = meta_model(preset)
    names = official_names(model)
    assert len(set(names.values())) == len(names) == len(model.state_dict())  # one-to-one
    expected, got = manifest(preset), official_shapes(model)
    assert len(expected) == {"lavie_base": 830, "lavie_interpolation": 798}[preset]
    assert sorted(set(expected) - set(got)) == []  # nothing missing
    assert sorted(set(got) - set(expected)) == []  # nothing extra
    assert {k: v for k, v in got.items() if expected[k] != v} == {}  # same shapes
    # the only official tensors vdlearn does not store: the 16 rotary frequency copies of the base model
    assert set(expected) - set(names.values()) == set(rotary_frequencies(model))
    assert len(rotary_frequencies(model)) == (16 if preset == "lavie_base" else 0)
    assert detect_preset({k: torch.empty(s, device="meta") for k, s in expected.items()}) == preset


def test_full_base_parameter_count_and_temporal_layer_facts():
    model = meta_model("lavie_base")
    counts = model.count_parameters()
    # 909.12M of which 49.6M temporal (lavie.md); the official count includes one shared (16,) rotary table
    assert counts["total"] + 16 == 909_124_116 and round(counts["temporal"] / 1e6, 1) == 49.6
    layers = [m for m in model.modules() if isinstance(m, BlockTemporalAttention)]
    assert len(layers) == 16  # one in each of SD 1.4's 16 transformer blocks
    from vdlearn.models.unet.inspection import parameter_breakdown

    kinds = parameter_breakdown(model)  # the in-block temporal attention is temporal there too
    assert kinds["temporal transformers"] + kinds["temporal convs"] == counts["temporal"]
    for layer in layers:
        attn = layer.attn
        assert attn.heads == 8 and attn.dim_head in (40, 80, 160) and attn.position == "rope_bias"
        assert attn.rotary.dim == 32  # the first 32 channels of every head rotate
        assert (attn.rel_bias.num_buckets, attn.rel_bias.max_distance) == (32, 32)
    names = official_names(model)
    assert names["down_stages.0.spatial.blocks.0.temporal.attn.rel_bias.embedding.weight"] == (
        "down_blocks.0.attentions.0.transformer_blocks.0.attn_temp.time_rel_pos_bias.relative_attention_bias.weight")
    assert names["down_stages.2.resample.conv.weight"] == "down_blocks.0.downsamplers.0.conv.weight"
    assert names["up_stages.2.resample.conv.weight"] == "up_blocks.0.upsamplers.0.conv.weight"
    assert names["up_stages.11.res.skip.weight"] == "up_blocks.3.resnets.2.conv_shortcut.weight"
    assert official_shapes(model)["down_blocks.0.attentions.0.proj_in.weight"] == (320, 320, 1, 1)  # conv projection


def test_interpolation_has_sparse_causal_attn1_and_position_free_temporal_attention_after_ff():
    model = meta_model("lavie_interpolation")
    block = model.down_stages[0].spatial.blocks[0]
    assert block.sparse_causal and block.temporal_placement == "after_ff" and block.temporal.attn.position == "none"
    assert tuple(model.conv_in.weight.shape) == (320, 8, 3, 3)  # noisy latent + conditioning latent
    base = meta_model("lavie_base").down_stages[0].spatial.blocks[0]
    assert not base.sparse_causal and base.temporal_placement == "after_cross"


def test_videocrafter_presets_do_not_map_onto_lavie_names():
    with pytest.raises(ValueError, match="not a\\s+LaVie layout"):
        official_names(meta_model("videocrafter2_t2v_512"))


# --- golden outputs of the official code ---------------------------------------------------------------
@functools.cache
def golden(preset: str) -> tuple[VideoUNet, dict, dict]:
    """vdlearn's U-Net at the golden reduced width, loaded with the official run's weights via from_official."""
    return lavie_golden_model(GOLDEN / f"unet_{preset}.safetensors", preset, REDUCED, OFFICIAL_COMMIT, FREQS)


@pytest.fixture(scope="module", autouse=True)
def _free_golden_models():
    yield
    golden.cache_clear()


def test_golden_folder_is_small_and_documented():
    files = sorted(p.name for p in GOLDEN.iterdir())
    unets = [f"unet_{p}.safetensors" for p in [*PRESETS, "lavie_vsr"]]  # VSR: tests/test_lavie_vsr.py
    loops = [f"sampler_{p}.safetensors" for p in [*PRESETS, "lavie_vsr"]]  # tests/test_lavie_pipeline.py
    assert files == sorted(unets + loops)
    assert all((GOLDEN / f).stat().st_size < 300_000 for f in files)
    assert OFFICIAL_COMMIT in (GOLDEN.parent / "README.md").read_text()


@pytest.mark.parametrize("preset", PRESETS)
def test_unet_matches_official(preset):
    model, g, _ = golden(preset)
    with torch.no_grad():
        eps = model(g["x"], g["timesteps"], g["context"], concat=g.get("concat"))
    assert g["eps"].abs().max() > 0.5  # a live network: the official output is far from zero
    torch.testing.assert_close(eps, g["eps"], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize(("preset", "change"), [
    ("lavie_base", {"video_group_norm": False}),  # per-frame GroupNorm instead of LaVie's 5-D one
    ("lavie_base", {"temporal_position": "none"}),  # no rotary positions, no T5 bias
    ("lavie_interpolation", {"sparse_causal_attention": False}),  # plain per-frame self-attention
])
def test_each_lavie_option_matters_for_the_golden_output(preset, change):
    """The same official weights in a config with one LaVie option changed miss the official output by far."""
    _, g, weights = golden(preset)
    other = meta_model(preset, **REDUCED, **change)
    if "temporal_position" in change:  # the bias tables and frequencies are gone from the layout
        weights = {k: v for k, v in weights.items() if "time_rel_pos_bias" not in k and not k.endswith(FREQS)}
    other.load_state_dict(from_official(weights, other), assign=True)
    with torch.no_grad():
        eps = other.eval()(g["x"], g["timesteps"], g["context"], concat=g.get("concat"))
    assert (eps - g["eps"]).abs().max() > 1e-2


# --- the converter: wrappings, errors, round trip -------------------------------------------------------
SMALL = {"model_channels": 32, "channel_mult": (1, 2), "num_res_blocks": 1, "attention_levels": (0,),
         "attention_heads": 2, "norm_groups": 8, "context_dim": 24}


def small(preset: str, seed: int = 0, **kw) -> VideoUNet:
    model = VideoUNet(UNetConfig.preset(preset, **SMALL, **kw))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # wake the zero-initialised output layers
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def small_inputs(model: VideoUNet, t: int = 5, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, t, 8, 8, generator=g)
    concat = torch.randn(2, 4, t, 8, 8, generator=g) if model.config.concat_channels else None
    return x, torch.tensor([3, 700]), torch.randn(2, 6, 24, generator=g), concat


@pytest.mark.parametrize("preset", PRESETS)
def test_round_trip_official_and_back(preset):
    model = small(preset)
    official = to_official(model)
    assert set(official) == set(official_shapes(model))
    back = from_official(official, model)
    assert back.keys() == model.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())
    # the rotary frequencies are optional: a state dict without them loads too
    without = {k: v for k, v in official.items() if not k.endswith(FREQS)}
    assert from_official(without, model).keys() == back.keys()


def test_wrong_checkpoint_lists_missing_unexpected_and_wrong_shapes_in_one_message():
    model = small("lavie_base")
    official = to_official(model)
    official.pop("mid_block.attentions.0.transformer_blocks.0.attn_temp.to_q.weight")
    official["class_embedding.weight"] = torch.zeros(1000, 128)  # a VSR-only tensor
    official["conv_in.weight"] = torch.zeros(32, 8, 3, 3)  # the interpolation model's conv_in
    with pytest.raises(CheckpointMismatchError) as err:
        from_official({"ema": official}, model)
    text = str(err.value)
    assert "missing keys (1)" in text and "attn_temp.to_q.weight" in text
    assert "unexpected keys (1)" in text and "class_embedding.weight" in text
    assert "shape mismatches (1)" in text and "conv_in.weight: model (32, 4, 3, 3) vs checkpoint (32, 8, 3, 3)" in text
    assert "lavie_interpolation" in text  # the hint names the pairing of files and presets


def test_rotary_frequencies_that_differ_are_refused():
    model = small("lavie_base")
    official = to_official(model)
    key = next(k for k in official if k.endswith(FREQS))
    official[key] = official[key] * 2
    with pytest.raises(CheckpointMismatchError, match="rotary frequencies"):
        from_official(official, model)


def test_load_lavie_unet_reads_the_released_file_layout(tmp_path):
    model = small("lavie_interpolation")
    path = tmp_path / "lavie_interpolation.pt"
    torch.save({"ema": to_official(model)}, path)  # as released: {"ema": flat state dict}, fp32
    assert detect_preset(torch.load(path, weights_only=True)) == "lavie_interpolation"
    loaded = load_lavie_unet(path, model.config)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    x, t, ctx, concat = small_inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, ctx, concat=concat), model(x, t, ctx, concat=concat))
    assert detect_preset({"conv_in.weight": torch.zeros(256, 7, 3, 3),
                          "class_embedding.weight": torch.zeros(1000, 1)}) == "lavie_vsr"
    with pytest.raises(CheckpointMismatchError, match="VSR"):  # a noise-level table without the 7 input channels
        detect_preset({"conv_in.weight": torch.zeros(256, 4, 3, 3), "class_embedding.weight": torch.zeros(1000, 1)})


# --- the LaVie-specific operations ----------------------------------------------------------------------
def test_video_group_norm_spans_the_frames_and_differs_from_per_frame():
    b, c, t, h, w = 2, 16, 5, 4, 3
    g = torch.Generator().manual_seed(0)
    video = torch.randn(b, c, t, h, w, generator=g) * torch.linspace(0.2, 3.0, t)[None, None, :, None, None]
    norm = GroupNorm32(4, c, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.3 * torch.randn(c, generator=g))
        norm.bias.copy_(0.3 * torch.randn(c, generator=g))
    folded = video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # (b*t, c, h, w), the U-Net's layout
    with torch.no_grad():
        ours = video_group_norm(norm, folded, t).reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)
        reference = F.group_norm(video, 4, norm.weight, norm.bias, 1e-5)  # torch's GroupNorm on the 5-D tensor
        per_frame = norm(folded).reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-6)  # statistics over (c/g, t, h, w)
    assert (ours - per_frame).abs().max() > 0.1  # LaVie's norm is not the per-frame one
    # images mixed in (the last 2 frames): the video frames together, each image alone
    with torch.no_grad():
        mixed = video_group_norm(norm, folded, t, num_images=2).reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)
        video_only = F.group_norm(video[:, :, :3], 4, norm.weight, norm.bias, 1e-5)
    torch.testing.assert_close(mixed[:, :, :3], video_only, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(mixed[:, :, 3:], per_frame[:, :, 3:], atol=1e-6, rtol=1e-6)


def test_sparse_causal_keys_are_frame_zero_and_the_previous_frame():
    b, t, length, c = 2, 5, 3, 4
    tokens = torch.arange(b * t, dtype=torch.float32)[:, None, None].expand(b * t, length, c)  # value = frame id
    kv = sparse_causal_context(tokens, t)  # (b*t, 2L, c)
    assert kv.shape == (b * t, 2 * length, c)
    frame_of = (kv[:, :, 0] % t).reshape(b, t, 2 * length)  # which frame each key came from
    sample_of = (kv[:, :, 0] // t).reshape(b, t, 2 * length)
    for i in range(t):
        assert frame_of[:, i, :length].eq(0).all() and frame_of[:, i, length:].eq(max(i - 1, 0)).all()
    assert sample_of.eq(torch.arange(b)[:, None, None]).all()  # never across videos
    mixed = sparse_causal_context(tokens, t, num_images=2)  # images attend to themselves
    frame_mixed = (mixed[:, :, 0] % t).reshape(b, t, 2 * length)
    assert frame_mixed[:, 3].eq(3).all() and frame_mixed[:, 4].eq(4).all() and frame_mixed[:, 2, length:].eq(1).all()
    assert sparse_causal_context(tokens, t, num_images=t) is tokens  # image mode: plain self-attention


def test_sparse_causal_attention_equals_attention_over_frame_zero_and_previous_frame():
    torch.manual_seed(0)
    b, t, length, dim = 1, 4, 6, 16
    block = TransformerBlock(dim, 2, 8, context_dim=None, sparse_causal=True).eval()
    x = torch.randn(b * t, length, dim)
    attn = block.attn1
    with torch.no_grad():
        got = attn(x, sparse_causal_context(x, t))
        for i in range(t):  # by hand: frame i's queries against frame 0's and frame i-1's keys and values
            src = torch.cat([x[0], x[max(i - 1, 0)]], dim=0)[None]  # (1, 2L, dim)
            q, k, v = (m(inp).unflatten(-1, (2, 8)).transpose(1, 2) for m, inp in
                       ((attn.to_q, x[i:i + 1]), (attn.to_k, src), (attn.to_v, src)))
            expected = attn.to_out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))
            torch.testing.assert_close(got[i:i + 1], expected, atol=1e-6, rtol=1e-5)
        # frame 3 sees frames 0 and 2: changing frame 1 leaves it alone, changing frame 2 does not
        out = block(x, frames=t)
        changed_1, changed_2 = x.clone(), x.clone()
        changed_1[1] += torch.randn(length, dim)  # not a constant: LayerNorm would remove it
        changed_2[2] += torch.randn(length, dim)
        assert torch.equal(block(changed_1, frames=t)[3], out[3])
        assert (block(changed_2, frames=t)[3] - out[3]).abs().max() > 1e-3


def test_frame_order_reaches_the_base_output_only_through_positions():
    """Reversing the frames reverses LaVie base's output only if its temporal attention has no positions."""
    model = small("lavie_base")
    no_positions = VideoUNet(UNetConfig.preset("lavie_base", **SMALL, temporal_position="none")).eval()
    no_positions.load_state_dict({k: v for k, v in model.state_dict().items() if k in no_positions.state_dict()})
    x, t, ctx, _ = small_inputs(model, t=6)
    with torch.no_grad():
        eps, flipped = model(x, t, ctx), model(x.flip(2), t, ctx).flip(2)
        plain, plain_flipped = no_positions(x, t, ctx), no_positions(x.flip(2), t, ctx).flip(2)
    assert (flipped - eps).abs().max() > 1e-3  # rotary + bias know the order
    torch.testing.assert_close(plain_flipped, plain, atol=1e-5, rtol=1e-5)  # without them: equivariant


@pytest.mark.parametrize("preset", PRESETS)
def test_image_mode_is_the_image_unet_on_every_frame(preset):
    """temporal=False: no temporal attention, per-frame GroupNorm, and attn1 a plain self-attention."""
    model = small(preset)
    image = VideoUNet(model.config.image_only()).eval()  # no in-block temporal attention
    image.load_state_dict({k: v for k, v in model.state_dict().items() if k in image.state_dict()})
    x, t, ctx, concat = small_inputs(model)
    with torch.no_grad():
        got = model(x, t, ctx, temporal=False, concat=concat)
        # one frame at a time: the video norm is a per-frame norm, the sparse-causal attn1 sees [itself, itself]
        per_frame = torch.cat([image(x[:, :, i:i + 1], t, ctx, concat=None if concat is None else concat[:, :, i:i + 1])
                               for i in range(x.shape[2])], dim=2)
        video = model(x, t, ctx, concat=concat)
    torch.testing.assert_close(got, per_frame, atol=1e-5, rtol=1e-5)
    assert (video - got).abs().max() > 1e-3  # in video mode the frames do talk to each other


def test_inflated_in_block_temporal_attention_starts_as_the_identity():
    """An image U-Net inflated with LaVie's in-block temporal attention (per-frame norms) equals it per frame."""
    image = small("lavie_base", video_group_norm=False, block_temporal_attention="none", seed=3)
    video = inflate(image, image.config, block_temporal_attention="after_cross").eval()
    assert video.count_parameters()["temporal"] > 0
    temporal_names = set(video.named_parameter_groups()["temporal"])
    assert temporal_names and all(".temporal." in n for n in temporal_names)
    x, t, ctx, _ = small_inputs(video)
    with torch.no_grad():
        per_frame = torch.cat([image(x[:, :, i:i + 1], t, ctx) for i in range(x.shape[2])], dim=2)
        torch.testing.assert_close(video(x, t, ctx), per_frame, atol=1e-5, rtol=1e-5)
