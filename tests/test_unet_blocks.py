"""The U-Net's building blocks against independent references.

diffusers' ModelScope blocks (ResnetBlock2D, TemporalConvLayer, Transformer2DModel,
TransformerTemporalModel) share VideoCrafter2's structure, so with mapped weights they must
give the same numbers. Relative positions (VideoCrafter1), LaVie's rotary + bucket bias and
dual cross-attention are checked against plain einsum implementations written here.
"""

import math
import re

import pytest
import torch
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.resnet import ResnetBlock2D, TemporalConvLayer
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel

from vdlearn.models.unet import (
    Attention,
    ResBlock,
    SpatialTransformer,
    TemporalConvBlock,
    TemporalTransformer,
    sinusoidal_embedding,
)
from vdlearn.models.unet.positions import t5_relative_bucket


def randomize(module, scale=0.2, seed=0):
    """Random weights everywhere (also in the zero-initialised output layers)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return module.eval()


def load_renamed(dst, src, rules):
    """Copy ``src``'s weights into ``dst``, renaming vdlearn names with regex ``rules``."""
    theirs = src.state_dict()
    mapped = {}
    for name, t in dst.state_dict().items():
        other = name
        for pattern, repl in rules:
            other = re.sub(pattern, repl, other)
        mapped[name] = theirs[other].reshape(t.shape)
    assert len(mapped) == len(theirs), "every reference tensor must be used exactly once"
    dst.load_state_dict(mapped)
    return dst.eval()


TRANSFORMER_RULES = [(r"^blocks\.", "transformer_blocks."), (r"\.to_out\.", ".to_out.0."),
                     (r"ff\.proj_in", "ff.net.0.proj"), (r"ff\.proj_out", "ff.net.2")]
TCONV_RULES = [(r"norms\.(\d)", lambda m: f"conv{int(m.group(1)) + 1}.0"),
               (r"convs\.0", "conv1.2"), (r"convs\.(\d)", lambda m: f"conv{int(m.group(1)) + 1}.3")]


# --- embeddings ---------------------------------------------------------------------------------
def test_sinusoid_is_cos_then_sin_like_diffusers_flip():
    t = torch.tensor([0.0, 1.0, 17.0, 999.0])
    ours = sinusoidal_embedding(t, 320)
    ref = get_timestep_embedding(t, 320, flip_sin_to_cos=True, downscale_freq_shift=0)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert torch.allclose(ours[0, :160], torch.ones(160)) and torch.allclose(ours[0, 160:], torch.zeros(160))
    # the first frequency is 1: column 0 is cos(t), column 160 is sin(t)
    torch.testing.assert_close(ours[:, 0], torch.cos(t))
    torch.testing.assert_close(ours[:, 160], torch.sin(t))


def test_sinusoid_rejects_2d_input():
    with pytest.raises(ValueError, match="1-D"):
        sinusoidal_embedding(torch.zeros(2, 3), 8)


# --- convolutional blocks -----------------------------------------------------------------------
@pytest.mark.parametrize("channels_last", [False, True])
def test_temporal_conv_block_matches_diffusers(channels_last):
    ref = randomize(TemporalConvLayer(32, 32, dropout=0.1, norm_num_groups=8))
    ours = load_renamed(TemporalConvBlock(32, dropout=0.1, norm_groups=8), ref, TCONV_RULES)
    x = torch.randn(2 * 5, 32, 4, 3)  # (b*t, c, h, w) with t = 5
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ours(x, 5), ref(x, num_frames=5), rtol=1e-5, atol=1e-5)


def test_temporal_conv_block_starts_as_identity_and_mixes_frames_once_trained():
    block = TemporalConvBlock(16, norm_groups=4).eval()
    x = torch.randn(3 * 4, 16, 2, 2)
    assert torch.equal(block(x, 4), x)
    randomize(block)
    x2 = x.clone()
    x2[0] += 1.0  # change frame 0 of video 0
    diff = (block(x2, 4) - block(x, 4)).abs().flatten(1).amax(1)
    assert diff[1] > 1e-4  # frame 1 of the same video sees it ...
    assert diff[4:].max() == 0  # ... other videos do not


def test_resblock_matches_diffusers_resnet_plus_temporal_conv():
    res_ref = randomize(ResnetBlock2D(in_channels=32, out_channels=64, temb_channels=40, groups=8, eps=1e-5), seed=1)
    conv_ref = randomize(TemporalConvLayer(64, 64, norm_num_groups=8), seed=2)
    ours = ResBlock(32, 40, 64, temporal_conv=True, norm_groups=8)
    rules = [(r"^norm1", "r.norm1"), (r"^conv1", "r.conv1"), (r"^emb_proj", "r.time_emb_proj"),
             (r"^norm2", "r.norm2"), (r"^conv2", "r.conv2"), (r"^skip", "r.conv_shortcut"),
             (r"^temporal_conv\.", "c.")] + TCONV_RULES
    both = torch.nn.ModuleDict({"r": res_ref, "c": conv_ref})
    load_renamed(ours, both, rules)
    x, emb = torch.randn(2 * 3, 32, 4, 4), torch.randn(2 * 3, 40)
    ref = conv_ref(res_ref(x, emb), num_frames=3)
    torch.testing.assert_close(ours(x, emb, 3), ref, rtol=1e-5, atol=1e-5)


def test_resblock_norms_are_per_frame_and_eps_as_official():
    block = randomize(ResBlock(16, 8, 16, temporal_conv=False, norm_groups=4))
    assert block.norm1.eps == 1e-5 and block.norm2.eps == 1e-5
    x, emb = torch.randn(4, 16, 3, 3), torch.randn(4, 8)
    x2 = x.clone()
    x2[0] *= 5
    assert torch.equal(block(x2, emb, 4)[1:], block(x, emb, 4)[1:])  # other frames untouched
    assert TemporalConvBlock(16, norm_groups=4).norms[0].eps == 1e-5


# --- transformers -------------------------------------------------------------------------------
def test_spatial_transformer_matches_diffusers_transformer2d():
    ref = randomize(Transformer2DModel(num_attention_heads=2, attention_head_dim=16, in_channels=32,
                                       cross_attention_dim=24, norm_num_groups=8, use_linear_projection=True))
    ours = load_renamed(SpatialTransformer(32, 2, 16, context_dim=24, norm_groups=8), ref, TRANSFORMER_RULES)
    b, t = 2, 3
    x = torch.randn(b * t, 32, 4, 4)
    ctx = torch.randn(b, 7, 24)
    expected = ref(x, encoder_hidden_states=ctx.repeat_interleave(t, 0), return_dict=False)[0]
    # one context per video (folded into the queries) and one per frame give the same numbers
    torch.testing.assert_close(ours(x, ctx), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours(x, ctx.repeat_interleave(t, 0)), expected, rtol=1e-5, atol=1e-5)
    assert ours.norm.eps == 1e-6


def test_temporal_transformer_matches_diffusers_transformer_temporal():
    ref = randomize(TransformerTemporalModel(num_attention_heads=2, attention_head_dim=16, in_channels=32,
                                             norm_num_groups=8))
    ours = load_renamed(TemporalTransformer(32, 2, 16, norm_groups=8), ref, TRANSFORMER_RULES)
    x = torch.randn(2 * 5, 32, 3, 2)
    expected = ref(x, num_frames=5, return_dict=False)[0]
    torch.testing.assert_close(ours(x, 5), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours(x.contiguous(memory_format=torch.channels_last), 5), expected,
                               rtol=1e-5, atol=1e-5)
    assert ours.norm.eps == 1e-6


def test_temporal_norm_spans_frames_spatial_norm_does_not():
    temporal = randomize(TemporalTransformer(16, 2, 8, norm_groups=4))
    x = torch.randn(4, 16, 2, 2)  # one video of 4 frames
    x2 = x.clone()
    x2[0] *= 10
    seq, seq2 = temporal.to_sequences(x, 4), temporal.to_sequences(x2, 4)  # (h*w, t, c)
    assert not torch.allclose(seq[:, 1], seq2[:, 1])  # frame 1 normalised with frame 0's statistics
    spatial = randomize(SpatialTransformer(16, 2, 8, norm_groups=4))
    assert torch.equal(spatial(x2)[1:], spatial(x)[1:])


# --- attention: positions and dual cross-attention ------------------------------------------------
def heads_of(t, h):
    return t.unflatten(-1, (h, -1)).transpose(1, 2)  # (B, h, L, d)


def test_shaw_relative_attention_matches_einsum_reference():
    torch.manual_seed(0)
    heads, d, T, max_d = 2, 8, 20, 6  # T > 2*max_d + 1: clipping matters
    attn = randomize(Attention(16, None, heads, d, position="relative", max_distance=max_d))
    x = torch.randn(3, T, 16)
    q, k, v = (heads_of(f(x), heads) for f in (attn.to_q, attn.to_k, attn.to_v))
    idx = torch.tensor([[min(max(j - i, -max_d), max_d) + max_d for j in range(T)] for i in range(T)])
    rk, rv = attn.rel_pos_k.table[idx], attn.rel_pos_v.table[idx]  # (T, T, d)
    logits = torch.einsum("bhid,bhjd->bhij", q, k) + torch.einsum("bhid,ijd->bhij", q, rk)
    p = (logits / math.sqrt(d)).softmax(-1)
    out = torch.einsum("bhij,bhjd->bhid", p, v) + torch.einsum("bhij,ijd->bhid", p, rv)
    expected = attn.to_out(out.transpose(1, 2).flatten(2))
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)
    assert attn.rel_pos_k.table.shape == (2 * max_d + 1, d)


def reference_t5_bucket(rel, num_buckets=32, max_distance=32):
    """T5's bucket of one relative distance j - i, written out with Python scalars."""
    n = -rel
    half = num_buckets // 2
    offset = half if n < 0 else 0
    n = abs(n)
    exact = half // 2
    if n < exact:
        return offset + n
    big = exact + int(math.log(n / exact) / math.log(max_distance / exact) * (half - exact))
    return offset + min(big, half - 1)


def test_t5_buckets_match_scalar_reference():
    d = torch.arange(-70, 71)
    ours = t5_relative_bucket(d, 32, 32)
    assert ours.tolist() == [reference_t5_bucket(int(r)) for r in d]


@pytest.mark.parametrize("dim_head", [40, 16])  # 40: only the first 32 channels rotate
def test_lavie_rope_plus_bias_matches_complex_number_reference(dim_head):
    torch.manual_seed(0)
    heads, T = 4, 12
    attn = randomize(Attention(heads * dim_head, None, heads, dim_head, position="rope_bias"))
    x = torch.randn(2, T, heads * dim_head)
    q, k, v = (heads_of(f(x), heads) for f in (attn.to_q, attn.to_k, attn.to_v))
    rot = min(32, dim_head)

    def rope(t):  # channel pairs (2p, 2p+1) as complex numbers, times exp(i * n * theta_p)
        pairs = torch.view_as_complex(t[..., :rot].reshape(*t.shape[:-1], rot // 2, 2).contiguous())
        theta = 10000.0 ** (-torch.arange(0, rot, 2).float() / rot)
        phase = torch.polar(torch.ones(T, rot // 2), torch.arange(T).float()[:, None] * theta)
        return torch.cat([torch.view_as_real(pairs * phase).flatten(-2), t[..., rot:]], dim=-1)

    bias = torch.tensor([[reference_t5_bucket(j - i) for j in range(T)] for i in range(T)])
    bias = attn.rel_bias.embedding.weight[bias].permute(2, 0, 1)  # (heads, T, T)
    logits = torch.einsum("bhid,bhjd->bhij", rope(q / math.sqrt(dim_head)), rope(k)) + bias
    out = torch.einsum("bhij,bhjd->bhid", logits.softmax(-1), v)
    expected = attn.to_out(out.transpose(1, 2).flatten(2))
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)


def test_dual_cross_attention_adds_text_and_image_branches():
    torch.manual_seed(0)
    attn = randomize(Attention(32, 24, 2, 16, image_context=True, text_context_len=5, image_scale=1.0))
    x, ctx = torch.randn(3, 10, 32), torch.randn(3, 5 + 4, 24)

    def plain(kp, vp, c):
        q, k, v = heads_of(attn.to_q(x), 2), heads_of(kp(c), 2), heads_of(vp(c), 2)
        p = (torch.einsum("bhid,bhjd->bhij", q, k) / 4.0).softmax(-1)
        return torch.einsum("bhij,bhjd->bhid", p, v).transpose(1, 2).flatten(2)

    expected = attn.to_out(plain(attn.to_k, attn.to_v, ctx[:, :5]) + plain(attn.to_k_ip, attn.to_v_ip, ctx[:, 5:]))
    torch.testing.assert_close(attn(x, ctx), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="text tokens followed by image tokens"):
        attn(x, ctx[:, :5])


def test_attention_errors_speak_clearly():
    attn = Attention(32, 24, 2, 16)
    with pytest.raises(ValueError, match="needs a context"):
        attn(torch.randn(2, 4, 32))
    with pytest.raises(ValueError, match=r"\(batch, tokens, 24\)"):
        attn(torch.randn(2, 4, 32), torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match="position must be one of"):
        Attention(32, None, 2, 16, position="sinusoidal")


@pytest.mark.parametrize("position", ["none", "relative", "rope_bias"])
def test_frame_order_only_matters_with_positions(position):
    """Temporal self-attention without positions is permutation-equivariant over frames."""
    torch.manual_seed(0)
    attn = randomize(Attention(32, None, 2, 16, position=position))
    x = torch.randn(4, 8, 32)
    perm = torch.randperm(8)
    equivariant = torch.allclose(attn(x[:, perm]), attn(x)[:, perm], atol=1e-5)
    assert equivariant == (position == "none")


def test_attention_probs_match_forward():
    attn = randomize(Attention(32, None, 2, 16, position="rope_bias"))
    x = torch.randn(3, 6, 32)
    p = attn.attention_probs(x)  # (B, h, L, L)
    torch.testing.assert_close(p.sum(-1), torch.ones(3, 2, 6))
    v = heads_of(attn.to_v(x), 2)
    torch.testing.assert_close(attn.to_out((p @ v).transpose(1, 2).flatten(2)), attn(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("position", ["none", "rope_bias"])
def test_attention_under_cpu_bf16_autocast_runs_its_product_in_fp32(position, monkeypatch):
    """Under bf16 autocast on a CPU the attention product runs in fp32 (the CPU bf16 flash backward is
    several times slower); the result is the fp32 one rounded to bf16, and gradients flow."""
    import vdlearn.models.unet.attention as attention_module

    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append(q.dtype)
        return real(q, k, v, **kw)

    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", spy)
    attn = randomize(Attention(32, 24 if position == "none" else None, 2, 16, position=position)).train()
    x = torch.randn(3, 6, 32, requires_grad=True)
    context = torch.randn(3, 5, 24) if position == "none" else None
    reference = attn(x, context)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x, context)
    assert out.dtype == torch.bfloat16 and seen == [torch.float32, torch.float32]
    torch.testing.assert_close(out.float(), reference, rtol=0.05, atol=0.05)
    out.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
