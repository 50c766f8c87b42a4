"""Absolute frame positions (AnimateDiff's sinusoid) in temporal attention, against diffusers."""

import torch

from vdlearn.models.unet import Attention, UNetConfig, VideoUNet
from vdlearn.models.unet.positions import sincos_2d_positions, sinusoidal_positions


def test_the_sinusoid_equals_diffusers_animatediff_encoding():
    from diffusers.models.embeddings import SinusoidalPositionalEmbedding

    ref = SinusoidalPositionalEmbedding(48, max_seq_length=32)
    x = torch.zeros(1, 16, 48)
    assert torch.allclose(sinusoidal_positions(16, 48), ref(x)[0], atol=1e-6)


def test_absolute_attention_is_plain_attention_on_x_plus_pe():
    torch.manual_seed(0)
    absolute = Attention(32, None, heads=2, dim_head=16, position="absolute")
    plain = Attention(32, None, heads=2, dim_head=16)
    plain.load_state_dict(absolute.state_dict())  # no extra parameters: the sinusoid is fixed
    assert set(absolute.state_dict()) == set(plain.state_dict())
    x = torch.randn(3, 8, 32)  # (b*h*w, frames, channels)
    assert torch.allclose(absolute(x), plain(x + sinusoidal_positions(8, 32)), atol=1e-6)


def test_absolute_positions_tell_frames_apart():
    """Without positions temporal attention is permutation-equivariant; with the sinusoid it is not,
    and even identical frames get different outputs."""
    torch.manual_seed(0)
    attn = Attention(32, None, heads=2, dim_head=16, position="absolute")
    none = Attention(32, None, heads=2, dim_head=16)
    none.load_state_dict(attn.state_dict())
    x = torch.randn(2, 8, 32)
    perm = torch.randperm(8)
    assert torch.allclose(none(x[:, perm]), none(x)[:, perm], atol=1e-5)
    assert (attn(x[:, perm]) - attn(x)[:, perm]).abs().max() > 1e-2
    same = torch.randn(1, 1, 32).expand(1, 8, 32)  # eight copies of one frame
    assert (none(same)[0, 0] - none(same)[0, 7]).abs().max() < 1e-6  # no positions: all frames alike
    out = attn(same)
    assert (out[0, 0] - out[0, 7]).abs().max() > 1e-3  # measured 4e-3 at this random initialisation


def test_a_video_unet_with_absolute_positions_runs_and_uses_them():
    cfg = UNetConfig.preset("toy", model_channels=16, context_dim=32, head_channels=8, init_attention_heads=2,
                            temporal_position="absolute", temporal_conv=False)
    torch.manual_seed(0)
    unet = VideoUNet(cfg).eval()
    with torch.no_grad():
        for p in unet.parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(0, 0.05)  # zero-initialised outputs would hide the temporal layers
        x = torch.randn(1, 4, 1, 8, 8).expand(1, 4, 6, 8, 8).contiguous()  # six identical frames
        out = unet(x, torch.tensor([500]), torch.randn(1, 5, 32), fps=8)
    assert out.shape == x.shape
    assert (out[:, :, 0] - out[:, :, 5]).abs().max() > 1e-3  # the frames know where they are


# --- Latte's 2-D sin-cos positions in the spatial transformers (preset toy_latte_pos) -------------
def test_2d_table_equals_diffusers_dit_latte_table():
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    for size, dim in ((8, 64), (4, 32)):
        ref = get_2d_sincos_pos_embed(dim, (size, size), base_size=size, output_type="pt").double()
        assert torch.allclose(sincos_2d_positions(size, size, dim, dtype=torch.float64), ref, atol=1e-12)


def test_spatial_positions_add_the_table_after_proj_in_and_break_translation_symmetry():
    from vdlearn.models.unet.transformer import SpatialTransformer

    torch.manual_seed(0)
    plain = SpatialTransformer(32, 2, 16, context_dim=24, norm_groups=8)
    placed = SpatialTransformer(32, 2, 16, context_dim=24, norm_groups=8, position="absolute")
    placed.load_state_dict(plain.state_dict())  # no extra parameters
    torch.nn.init.normal_(plain.proj_out.weight, std=0.1)
    placed.proj_out.weight.data.copy_(plain.proj_out.weight)
    ctx = torch.randn(2, 5, 24)
    x = torch.randn(2, 32, 1, 1).expand(2, 32, 8, 8).contiguous()  # the same feature at every place
    out_plain, out_placed = plain(x, ctx), placed(x, ctx)
    # without positions every place gets the same output; with them, the places differ
    assert torch.allclose(out_plain, out_plain[:, :, :1, :1].expand_as(out_plain), atol=1e-5)
    assert (out_placed - out_placed[:, :, :1, :1]).abs().amax() > 1e-2
    # and the difference is exactly the table entering after proj_in
    tokens = plain.proj_in(plain.norm(x).permute(0, 2, 3, 1).reshape(2, 64, 32)) + sincos_2d_positions(8, 8, 32)
    for block in plain.blocks:
        tokens = block(tokens, ctx)
    ref = x + plain.proj_out(tokens).reshape(2, 8, 8, 32).permute(0, 3, 1, 2)
    assert torch.allclose(out_placed, ref, atol=1e-5)


def test_spatial_position_is_checked():
    import pytest

    with pytest.raises(ValueError, match="spatial_position"):
        UNetConfig.preset("toy", spatial_position="rope")
    unet = VideoUNet.from_preset("toy", spatial_position="absolute")
    out = unet(torch.randn(1, 4, 8, 8, 8), torch.tensor([500]), torch.randn(1, 10, 64), fps=torch.tensor([8]))
    assert out.shape == (1, 4, 8, 8, 8)
