"""LaVie's cascade (base -> interpolation -> VSR) loads from the official file layout and samples as the scripts do.

* Files: random weights at a reduced width written in the official layouts (``lavie_*.pt`` as
  ``{"ema": official names}``; SD 1.4 and x4-upscaler folders written by transformers' ``CLIPTextModel``
  and diffusers' ``AutoencoderKL`` ``save_pretrained``), read back by the real loader
  :func:`vdlearn.pretrained.lavie_pipeline.load_lavie_pipeline`. Nothing is downloaded.
* Each stage and the cascade end to end at a tiny size (32 x 32 pixels, 4 -> 13 frames, 2 steps):
  shapes (x4 in space for VSR, 4T - 3 frames for interpolation), values in [0, 1], seeds.
* The samplers at the official settings against diffusers' schedulers configured as the official
  scripts configure them (base: ``DDPMScheduler``; VSR: ``DDIMScheduler`` from the x4 upscaler's
  scheduler config with ``beta_schedule="linear"``, and the low-res ``DDPMScheduler.add_noise``) and,
  for interpolation, guided-diffusion's ``space_timesteps`` / ``SpacedDiffusion.ddim_sample`` written
  out by hand (no library reference is installed).
* The three official sampling loops themselves (``tests/fixtures/golden/lavie/sampler_lavie_*``: the official
  base pipeline, ``ddim_sample_loop`` with ``forward_with_cfg`` and the VSR pipeline in 8-frame chunks, run with
  a stand-in U-Net): the same stand-in in vdlearn's stages gives the same latents.
* The conditioning the official scripts build: the 61-frame index map, the ", 4k." suffix and the
  "None" / "" / "blur, worst quality" unconditional prompts, the 8-frame VSR chunks, noise level 50.
* Memory savers give the same video; bad inputs and missing files give errors that say what to do.
"""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch
import videocrafter_fakes as fakes
from test_golden_official import read_golden

from vdlearn.diffusion import NoiseSchedule, Sampler
from vdlearn.io import InputError
from vdlearn.models.unet import UNetConfig, VideoUNet
from vdlearn.pipelines.lavie import (
    LaVieBasePipeline,
    LaVieCascade,
    LaVieInterpolationPipeline,
    LaVieVSRPipeline,
    interpolation_frame_map,
    interpolation_read_indices,
)
from vdlearn.pretrained.hub import CheckpointNotFoundError
from vdlearn.pretrained.lavie import to_official
from vdlearn.pretrained.lavie_pipeline import load_lavie_pipeline, vsr_schedules

PROMPT = "a teddy bear walking on the street, 2k, high quality"
#: Reduced U-Nets: every structural flag of the official presets, two levels, width 32.
SMALL = {"model_channels": 32, "channel_mult": (1, 2), "num_res_blocks": 1, "attention_heads": 2,
         "norm_groups": 8, "context_dim": 32}
CONFIGS = {"base": UNetConfig.preset("lavie_base", **SMALL, attention_levels=(0,)),
           "interpolation": UNetConfig.preset("lavie_interpolation", **SMALL, attention_levels=(0,)),
           "vsr": UNetConfig.preset("lavie_vsr", **SMALL, attention_levels=(1,), cross_only_levels=(1,))}
#: stabilityai/stable-diffusion-x4-upscaler scheduler/ and low_res_scheduler/ scheduler_config.json as the
#: Hub lists them (these files are not in the LaVie repository; vsr/sample.py reads the first from
#: pretrained_models/stable-diffusion-x4-upscaler and overrides beta_schedule with "linear").
X4_SCHEDULER = {"_class_name": "DDIMScheduler", "beta_start": 0.0001, "beta_end": 0.02,
                "beta_schedule": "scaled_linear", "clip_sample": False, "num_train_timesteps": 1000,
                "prediction_type": "v_prediction", "set_alpha_to_one": False, "skip_prk_steps": True,
                "steps_offset": 1, "trained_betas": None}
X4_LOW_RES = {"_class_name": "DDPMScheduler", "beta_start": 0.0001, "beta_end": 0.02,
              "beta_schedule": "scaled_linear", "clip_sample": False, "num_train_timesteps": 1000,
              "trained_betas": None, "variance_type": "fixed_small"}
TINY = {"height": 32, "width": 32, "num_frames": 4, "num_inference_steps": 2}


# ------------------------------------------------------------------------------------ the files
def _text_encoder(folder, act: str, seed: int, pad: str | None = None) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=77, hidden_act=act, projection_dim=32)
    CLIPTextModel(cfg).save_pretrained(folder / "text_encoder")
    if pad is not None:  # the x4 upscaler's tokenizer pads with "!" (id 0)
        (folder / "tokenizer").mkdir()
        (folder / "tokenizer" / "special_tokens_map.json").write_text(json.dumps({"pad_token": pad}))
        (folder / "tokenizer" / "vocab.json").write_text(json.dumps({"!": 0, "<|endoftext|>": 49407}))


def _vae(folder, levels: int, seed: int) -> None:
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
                  up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=(8, 16, 16, 16)[:levels],
                  layers_per_block=1, latent_channels=4, norm_num_groups=8).save_pretrained(folder / "vae")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """``pretrained_models/`` as the official README lays it out, every file at a reduced width."""
    root = tmp_path_factory.mktemp("pretrained_models")
    for i, (stage, config) in enumerate(CONFIGS.items()):
        model = fakes.randomize(VideoUNet(config), 10 + i)
        torch.save({"ema": to_official(model)}, root / f"lavie_{stage}.pt")  # as released: {"ema": ...}, fp32
    sd14, x4 = root / "stable-diffusion-v1-4", root / "stable-diffusion-x4-upscaler"
    _text_encoder(sd14, "quick_gelu", 1)
    _vae(sd14, 4, 2)  # KL-f8
    _text_encoder(x4, "gelu", 3, pad="!")
    _vae(x4, 3, 4)  # KL-f4
    for sub, cfg in (("scheduler", X4_SCHEDULER), ("low_res_scheduler", X4_LOW_RES)):
        (x4 / sub).mkdir()
        (x4 / sub / "scheduler_config.json").write_text(json.dumps(cfg))
    return root


@pytest.fixture(scope="module")
def cascade(root) -> LaVieCascade:
    pipe = load_lavie_pipeline(root, unet_configs=CONFIGS)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def base_frames(cascade):
    return cascade.base(PROMPT, generator=gen(), **TINY).frames  # (1, 4, 32, 32, 3)


# ------------------------------------------------------------------------------------ loading
def test_loader_reads_the_official_layout(root, cascade):
    assert isinstance(cascade.base, LaVieBasePipeline) and isinstance(cascade.interpolation, LaVieInterpolationPipeline)
    assert isinstance(cascade.vsr, LaVieVSRPipeline)
    saved = torch.load(root / "lavie_vsr.pt", weights_only=True)["ema"]
    assert all(torch.equal(saved[k], v) for k, v in to_official(cascade.vsr.unet).items())
    assert cascade.base.text_encoder is cascade.interpolation.text_encoder  # one SD 1.4 text encoder and VAE
    assert cascade.base.vae.config.scale_factor == 0.18215 and cascade.vsr.vae.config.scale_factor == 0.08333
    assert cascade.base.vae.downsample_factor == 8 and cascade.vsr.vae.downsample_factor == 4
    assert cascade.base.text_encoder.config.pad_id == 49407 and cascade.vsr.text_encoder.config.pad_id == 0
    assert cascade.base.text_encoder.config.activation == "quick_gelu" and cascade.vsr.text_encoder.config.activation == "gelu"
    # the VSR sampler as vsr/sample.py builds it from the x4 folder: linear betas, v-prediction, 981..1, alpha_bar_0
    vsr = cascade.vsr
    assert vsr.schedule.prediction_type == "v_prediction"
    torch.testing.assert_close(vsr.schedule.betas.double(), torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
    assert (vsr.sampler_config.offset, vsr.sampler_config.final, vsr.sampler_config.eta) == (1, "first", 0.0)
    assert cascade.base.sampler_config.method == "ddpm" and cascade.interpolation.sampler_config.spacing == "spaced"


def test_transformers_text_encoder_matches_after_loading(root, cascade):
    from transformers import CLIPTextModel

    ref = CLIPTextModel.from_pretrained(root / "stable-diffusion-x4-upscaler" / "text_encoder").eval()
    tokens = cascade.vsr.text_encoder.tokenize(["blur, worst quality"])
    assert tokens[0, -1] == 0  # padded with "!" as the x4 tokenizer does
    with torch.no_grad():
        torch.testing.assert_close(cascade.vsr.text_encoder(tokens), ref(tokens).last_hidden_state, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------ the stages end to end
def test_base_stage_shapes_range_and_seed(cascade, base_frames):
    assert base_frames.shape == (1, 4, 32, 32, 3) and base_frames.dtype == np.float32
    assert 0 <= base_frames.min() and base_frames.max() <= 1 and base_frames.std() > 0.01
    np.testing.assert_array_equal(cascade.base(PROMPT, generator=gen(), **TINY).frames, base_frames)
    assert not np.allclose(cascade.base(PROMPT, generator=gen(1), **TINY).frames, base_frames)


def record_unet(monkeypatch, pipe):
    """Every U-Net call's inputs (x, t, context, concat, noise_level)."""
    calls = []
    plain = type(pipe.unet).forward

    def spy(self, x, t, context=None, fps=None, **kw):
        calls.append({"x": x.clone(), "t": t.clone(), "context": context.clone(), **{k: v.clone() for k, v in kw.items()}})
        return plain(self, x, t, context, fps, **kw)

    monkeypatch.setattr(type(pipe.unet), "forward", spy)
    return calls


def test_base_uses_the_empty_negative_prompt_first_in_the_batch(cascade, monkeypatch):
    calls = record_unet(monkeypatch, cascade.base)
    cascade.base(PROMPT, generator=gen(), output_type="latent", **TINY)
    text = cascade.base.text_encoder
    with torch.no_grad():
        expected = torch.cat([text.encode([""]), text.encode([PROMPT])])  # pipeline_videogen: [uncond; cond]
    assert len(calls) == 2 and calls[0]["t"].tolist() == [500, 500]  # leading spacing: 500, 0
    torch.testing.assert_close(calls[0]["context"], expected)


def test_interpolation_stage_conditioning_and_shapes(cascade, base_frames, monkeypatch):
    calls = record_unet(monkeypatch, cascade.interpolation)
    out = cascade.interpolation(PROMPT, video=base_frames, num_inference_steps=2, generator=gen(3)).frames
    assert out.shape == (1, 13, 32, 32, 3) and 0 <= out.min() and out.max() <= 1  # 4T - 3 frames
    text = cascade.base.text_encoder
    with torch.no_grad():  # [cond; uncond] (forward_with_cfg), the prompt with ", 4k.", the literal "None"
        expected = torch.cat([text.encode([PROMPT + ", 4k."]), text.encode(["None"])])
    torch.testing.assert_close(calls[0]["context"], expected)
    concat = calls[0]["concat"]  # (2, 4, 13, 4, 4): the conditioning latent on the index map
    assert concat.shape == (2, 4, 13, 4, 4) and torch.equal(concat[0], concat[1])
    frame_map = interpolation_frame_map(4)
    for j in range(13):
        torch.testing.assert_close(concat[:, :, j], concat[:, :, int((frame_map == frame_map[j]).nonzero()[0])])
    assert not torch.allclose(concat[:, :, 0], concat[:, :, 3])  # frame 0 and frame 1 of the input differ
    again = cascade.interpolation(PROMPT, video=base_frames, num_inference_steps=2, generator=gen(3)).frames
    np.testing.assert_array_equal(again, out)


def test_interpolation_condition_latent_is_the_official_posterior_sample(cascade, base_frames):
    """Hand computation of ``auto_inpainting_copy_no_mask``: encode the 4T-3 read, sample, keep 0, 4, .., map."""
    pipe = cascade.interpolation
    video = torch.from_numpy(base_frames).permute(0, 4, 1, 2, 3) * 2 - 1  # (1, 3, 4, 32, 32)
    read = video[:, :, interpolation_read_indices(4)]  # (1, 3, 13, 32, 32): the 13-frame read
    posterior = pipe.vae.encode(read)
    g = gen(5)
    eps = torch.randn((13, 4, 4, 4), generator=g).reshape(1, 13, 4, 4, 4).permute(0, 2, 1, 3, 4)  # (b f) c h w
    z = (posterior.mean + posterior.std * eps) * 0.18215  # latent_dist.sample().mul_(0.18215)
    lr_indice = torch.arange(0, 4 * 4 - 2, 4)  # range(0, 62, 4) for 16 frames
    copied = z.index_select(2, lr_indice).repeat_interleave(4, dim=2)[:, :, 1:-2]
    with torch.no_grad():
        ours = pipe._condition_latent(video, gen(5))
    torch.testing.assert_close(ours, copied, atol=1e-5, rtol=1e-5)


def test_the_official_61_frame_map():
    read = np.linspace(0, 15, 61, dtype=int)  # interpolation/sample.py: get_input of the 16-frame mp4
    np.testing.assert_array_equal(interpolation_read_indices(16), read)
    assert read[list(range(0, 62, 4))].tolist() == list(range(16))  # lr_indice picks the input frames
    frame_map = interpolation_frame_map(16)
    assert len(frame_map) == 61
    assert frame_map[:8].tolist() == [0, 0, 0, 1, 1, 1, 1, 2] and frame_map[-6:].tolist() == [14, 14, 14, 14, 15, 15]
    assert torch.equal(frame_map, torch.arange(16).repeat_interleave(4)[1:-2])


def test_vsr_stage_chunks_noise_level_and_x4_size(cascade, monkeypatch):
    calls = record_unet(monkeypatch, cascade.vsr)
    low = torch.rand(1, 3, 10, 8, 8, generator=gen(7)) * 2 - 1  # 10 frames: official chunks of 8, then 2
    out = cascade.vsr(PROMPT, video=low, num_inference_steps=2, generator=gen(8)).frames
    assert out.shape == (1, 10, 32, 32, 3) and 0 <= out.min() and out.max() <= 1  # x4 in space
    assert [c["x"].shape[2] for c in calls] == [8, 8, 2, 2]  # 2 steps per chunk, [uncond; cond] batched
    assert all(c["noise_level"].tolist() == [50, 50] and c["concat"].shape[1] == 3 for c in calls)
    assert [int(c["t"][0]) for c in calls[:2]] == [501, 1]  # leading + steps_offset 1
    text = cascade.vsr.text_encoder
    with torch.no_grad():
        expected = torch.cat([text.encode(["blur, worst quality"]), text.encode([PROMPT])])
    torch.testing.assert_close(calls[0]["context"], expected)
    again = cascade.vsr(PROMPT, video=low, num_inference_steps=2, generator=gen(8)).frames
    np.testing.assert_array_equal(again, out)
    # the low-res input is noise-augmented to level 50 with noise drawn first from the generator
    g = gen(8)
    eps = torch.randn(1, 3, 8, 8, 8, generator=g)
    ab = torch.cumprod(1 - torch.linspace(1e-4**0.5, 0.02**0.5, 1000, dtype=torch.float64) ** 2, 0)[50]
    torch.testing.assert_close(calls[0]["concat"][0], (ab.sqrt() * low[:, :, :8] + (1 - ab).sqrt() * eps)[0].float())


def test_cascade_runs_the_stages_in_order_and_stops_after_any(cascade, base_frames):
    out = cascade(PROMPT, generator=gen(), **TINY).frames
    assert out.shape == (1, 13, 128, 128, 3) and 0 <= out.min() and out.max() <= 1  # 4 -> 13 frames, 32 -> 128 px
    only_base = cascade(PROMPT, generator=gen(), stages=("base",), **TINY).frames
    np.testing.assert_array_equal(only_base, base_frames)
    # base then interpolation with one generator = the two stage pipelines called one after the other
    g = gen()
    first = cascade.base(PROMPT, generator=g, output_type="pt", **TINY).frames  # (1, 4, 3, 32, 32) in [0, 1]
    video = first.permute(0, 2, 1, 3, 4) * 2 - 1
    by_hand = cascade.interpolation(PROMPT, video=video, num_inference_steps=2, generator=g).frames
    chained = cascade(PROMPT, generator=gen(), stages=("base", "interpolation"), **TINY).frames
    np.testing.assert_allclose(chained, by_hand, atol=1e-5)  # the hand path rounds through [0, 1] and back
    assert cascade(PROMPT, video=base_frames, stages=("vsr",), num_inference_steps=1,
                   generator=gen()).frames.shape == (1, 4, 128, 128, 3)


# ------------------------------------------------------------------------------------ the samplers at the official settings
def test_base_sampler_is_the_official_diffusers_ddpm():
    from diffusers import DDPMScheduler

    # base/sample.py: DDPMScheduler.from_pretrained(sd14/scheduler, beta_start=1e-4, beta_end=0.02,
    # beta_schedule="linear"); SD 1.4's config adds clip_sample=False (variance fixed_small by default).
    # diffusers 0.16 (LaVie's pin) had no steps_offset in DDPMScheduler, so the config's steps_offset=1 did
    # nothing: 980 .. 0. A current diffusers honours it (981 .. 1): the preset keeps the pinned behaviour.
    ref = DDPMScheduler(beta_start=1e-4, beta_end=0.02, beta_schedule="linear", clip_sample=False)
    ref.set_timesteps(50)
    newer = DDPMScheduler(beta_start=1e-4, beta_end=0.02, beta_schedule="linear", clip_sample=False, steps_offset=1)
    newer.set_timesteps(50)
    assert newer.timesteps[0] == 981 and newer.timesteps[-1] == 1
    ours = Sampler(NoiseSchedule("lavie_base"), "lavie_base")
    assert ours.timesteps.tolist() == ref.timesteps.tolist() == list(range(980, -1, -20))
    torch.testing.assert_close(ours.schedule.alphas_cumprod.float(), ref.alphas_cumprod, atol=1e-6, rtol=1e-5)
    x, e = torch.randn(1, 4, 2, 4, 4, generator=gen(1)), torch.randn(1, 4, 2, 4, 4, generator=gen(2))
    g_ref, g_ours = gen(3), gen(3)
    for i, t in enumerate(ref.timesteps):
        expected = ref.step(e, t, x, generator=g_ref).prev_sample
        noise = torch.randn(x.shape, generator=g_ours) if int(t) > 0 else None  # diffusers draws for t > 0
        torch.testing.assert_close(ours.step(e, x, i, noise=noise).prev_sample, expected, atol=1e-5, rtol=1e-5)
        x = expected


def test_vsr_sampler_is_the_official_diffusers_ddim(root):
    from diffusers import DDIMScheduler, DDPMScheduler

    config = dict(X4_SCHEDULER, beta_schedule="linear")  # vsr/sample.py: config["beta_schedule"] = "linear"
    ref = DDIMScheduler.from_config(config)
    ref.set_timesteps(50)
    schedule, sampler_config, low_res = vsr_schedules(root / "stable-diffusion-x4-upscaler")
    ours = Sampler(schedule, sampler_config)
    assert ours.timesteps.tolist() == ref.timesteps.tolist() == list(range(981, 0, -20))
    x, v = torch.randn(1, 4, 2, 4, 4, generator=gen(1)), torch.randn(1, 4, 2, 4, 4, generator=gen(2))
    for i, t in enumerate(ref.timesteps):  # eta 0 (the pipeline's default), v-prediction, last step onto alpha_bar_0
        expected = ref.step(v, t, x, eta=0.0).prev_sample
        torch.testing.assert_close(ours.step(v, x, i).prev_sample, expected, atol=1e-5, rtol=1e-5)
        x = expected
    # the noise augmentation: low_res_scheduler.add_noise(image, noise, noise_level=50)
    lr_ref = DDPMScheduler.from_config(X4_LOW_RES)
    from vdlearn.diffusion.process import q_sample

    img, eps = torch.rand(1, 3, 2, 4, 4) * 2 - 1, torch.randn(1, 3, 2, 4, 4)
    level = torch.tensor([50])
    torch.testing.assert_close(q_sample(low_res, img, level, noise=eps), lr_ref.add_noise(img, eps, level))


def _guided_diffusion_space_timesteps(n: int, count: int) -> list[int]:
    """``space_timesteps(n, str(count))`` of guided-diffusion's ``respace.py``, one section, by hand."""
    frac_stride = (n - 1) / (count - 1)
    cur, taken = 0.0, []
    for _ in range(count):
        taken.append(round(cur))
        cur += frac_stride
    return taken


def test_interpolation_sampler_is_guided_diffusions_spaced_ddim():
    kept = _guided_diffusion_space_timesteps(1000, 50)
    ours = Sampler(NoiseSchedule("lavie_interpolation"), "lavie_interpolation")
    assert ours.timesteps.tolist() == sorted(kept, reverse=True) and kept[:3] == [0, 20, 41] and kept[-1] == 999
    # SpacedDiffusion: new betas 1 - ac_t / ac_last over the kept steps; DDIM (eta 0) on the respaced process,
    # the model called with the original timestep (timestep_map); alphas_cumprod_prev starts at 1.0
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)  # get_named_beta_schedule("linear", 1000)
    ac = np.cumprod(1 - betas)
    new_betas, last = [], 1.0
    for i in kept:
        new_betas.append(1 - ac[i] / last)
        last = ac[i]
    spaced_ac = np.cumprod(1 - np.array(new_betas))
    np.testing.assert_allclose(spaced_ac, ac[kept], rtol=1e-12)
    spaced_prev = np.append(1.0, spaced_ac[:-1])
    x, e = torch.randn(1, 4, 2, 4, 4, generator=gen(1)), torch.randn(1, 4, 2, 4, 4, generator=gen(2))
    for step, index in enumerate(range(49, -1, -1)):  # ddim_sample_loop_progressive: indices 49 .. 0
        a, a_prev = spaced_ac[index], spaced_prev[index]
        x0 = (x.double() - np.sqrt(1 - a) * e.double()) / np.sqrt(a)  # _predict_xstart_from_eps, no clipping
        eps = (x.double() / np.sqrt(a) - x0) / np.sqrt(1 / a - 1)  # _predict_eps_from_xstart
        expected = (x0 * np.sqrt(a_prev) + np.sqrt(1 - a_prev) * eps).float()  # eq. 12, sigma = 0
        assert int(ours.timesteps[step]) == kept[index]
        torch.testing.assert_close(ours.step(e, x, step).prev_sample, expected, atol=1e-5, rtol=1e-5)
        x = expected


# ------------------------------------------------------------------------------------ the official loops (golden)
#: alpha_bar_t of linear betas 1e-4 -> 0.02 over 1000 steps (LaVie's base and interpolation)
LINEAR_ALPHAS_CUMPROD = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)


def _stand_in(x, t, context, concat=None, noise_level=None, epsilon=False):
    """The stand-in denoiser of ``tests/fixtures/golden/README.md`` ("LaVie's sampling loops"): a fixed function
    of the U-Net's inputs that mixes frames and rows and reads the context, so that an order slip shows."""
    b = x.shape[0]
    t = torch.as_tensor(t, device=x.device).float().reshape(-1).expand(b).reshape(b, 1, 1, 1, 1)
    c = context.float().mean(dim=(1, 2)).reshape(b, 1, 1, 1, 1)
    out = 0.7 * torch.tanh(x) + 0.2 * x.roll(1, dims=2) - 0.1 * x.roll(1, dims=3) + 0.5 * c + 3e-4 * t - 0.05
    if concat is not None:
        out = out + 0.3 * concat.float().mean(dim=1, keepdim=True)
    if noise_level is not None:
        out = out + 1e-3 * noise_level.float().reshape(b, 1, 1, 1, 1)
    if not epsilon:
        return out
    # epsilon models: the noise that takes x_t to the clean guess ``out`` under linear betas, so that x_0 stays bounded
    a = LINEAR_ALPHAS_CUMPROD[t.reshape(-1).long()].float().reshape(b, 1, 1, 1, 1)
    return (x - a.sqrt() * out) / (1 - a).sqrt()


class _StandInUNet(torch.nn.Module):
    """``_stand_in`` behind the U-Net interface the stages call: ``unet(x, t, context, concat=, noise_level=)``."""

    def __init__(self, config: UNetConfig, epsilon: bool):
        super().__init__()
        self.config, self.epsilon = config, epsilon
        self.time_embed = torch.nn.Module()
        self.time_embed.linear_1 = torch.nn.Linear(1, 1)  # where the pipelines read the device and dtype

    def forward(self, x, t, context, concat=None, noise_level=None):
        return _stand_in(x, t, context, concat=concat, noise_level=noise_level, epsilon=self.epsilon)


@contextlib.contextmanager
def _with_stand_in(stage):
    real = stage.unet
    stage.unet = _StandInUNet(real.config, epsilon=stage.schedule.prediction_type == "epsilon")
    try:
        yield stage
    finally:
        stage.unet = real


def _golden(name: str) -> tuple[dict, dict]:
    return read_golden(f"lavie/sampler_{name}.safetensors")


def test_base_loop_matches_the_official_pipeline(cascade):
    g, meta = _golden("lavie_base")
    ours = Sampler(NoiseSchedule("lavie_base"), "lavie_base")
    assert ours.timesteps.tolist() == g["timesteps"].tolist()
    torch.testing.assert_close(ours.schedule.alphas_cumprod.float(), g["alphas_cumprod"], atol=1e-6, rtol=1e-5)
    with _with_stand_in(cascade.base) as pipe:  # 50 DDPM steps, CFG 7.5 on [uncond; cond], noise from the generator
        out = pipe(prompt_embeds=g["cond"], negative_prompt_embeds=g["uncond"], latents=g["x_T"].clone(),
                   height=64, width=64, num_frames=3, num_inference_steps=meta["num_inference_steps"],
                   guidance_scale=meta["guidance_scale"], generator=gen(meta["generator_seed"]),
                   output_type="latent").frames  # (1, 4, 3, 8, 8)
    torch.testing.assert_close(out, g["latents"], atol=1e-4, rtol=1e-4)


def test_interpolation_loop_matches_the_official_spaced_ddim(cascade):
    g, meta = _golden("lavie_interpolation")
    pipe = cascade.interpolation
    sampler = pipe._sampler(50, meta["guidance_scale"])
    assert sampler.timesteps.tolist() == g["timestep_map"].flip(0).tolist()  # the respaced steps, visited 999 .. 0
    torch.testing.assert_close(pipe.schedule.alphas_cumprod[sampler.timesteps].float(), g["alphas_cumprod"].flip(0))
    with _with_stand_in(pipe):  # spaced DDIM (eta 0), CFG 4 on [cond; uncond], the condition concatenated
        out = pipe._run_sampler(sampler, g["x_T"].clone(), None, g["cond"], g["uncond"], meta["guidance_scale"],
                                uncond_first=False, concat=g["condition"])  # (1, 4, 5, 8, 8)
    torch.testing.assert_close(out, g["latents"], atol=1e-4, rtol=1e-4)


def test_vsr_loop_matches_the_official_pipeline_in_chunks(cascade):
    g, meta = _golden("lavie_vsr")
    pipe = cascade.vsr
    assert Sampler(pipe.schedule, pipe.sampler_config).timesteps.tolist() == g["timesteps"].tolist()
    torch.testing.assert_close(pipe.schedule.alphas_cumprod.float(), g["alphas_cumprod"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(pipe.low_res_schedule.alphas_cumprod.float(), g["low_res_alphas_cumprod"],
                               atol=1e-6, rtol=1e-5)
    # 10 frames: chunks of 8 and 2, each a whole run (low-res noise, then x_T) with one generator
    with _with_stand_in(pipe):
        out = pipe(prompt_embeds=g["cond"], negative_prompt_embeds=g["uncond"], video=g["video"],
                   num_inference_steps=meta["num_inference_steps"], guidance_scale=meta["guidance_scale"],
                   noise_level=meta["noise_level"], generator=gen(meta["generator_seed"]),
                   output_type="latent").frames  # (1, 4, 10, 8, 8)
    torch.testing.assert_close(out[0].transpose(0, 1), g["latents"], atol=1e-4, rtol=1e-4)  # official: (T, 4, h, w)


# ------------------------------------------------------------------------------------ memory savers and dtypes
def _fresh(root, stages):
    pipe = load_lavie_pipeline(root, unet_configs=CONFIGS, stages=stages)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("saver", ["model_offload", "sequential_offload", "attention_slicing", "decode_chunk"])
def test_each_memory_saver_gives_the_same_base_video(root, base_frames, saver):
    pipe = _fresh(root, ("base",)).base
    kwargs = {}
    if saver == "model_offload":
        pipe.enable_model_cpu_offload(device="cpu")
    elif saver == "sequential_offload":
        pipe.enable_sequential_cpu_offload(device="cpu")
    elif saver == "attention_slicing":
        pipe.enable_attention_slicing(1)
    else:
        kwargs["decode_chunk_size"] = 1
    out = pipe(PROMPT, generator=gen(), **TINY, **kwargs).frames
    np.testing.assert_allclose(out, base_frames, atol=1e-5)
    if saver.endswith("offload"):
        assert {p.device.type for p in pipe.unet.parameters()} == {"meta"}  # waiting off the execution device


def test_memory_savers_on_the_vsr_stage_and_a_shared_cascade_offload(root, cascade, base_frames):
    low = torch.rand(1, 3, 10, 8, 8, generator=gen(7)) * 2 - 1
    plain = cascade.vsr(PROMPT, video=low, num_inference_steps=1, generator=gen(8)).frames
    pipe = _fresh(root, ("base", "interpolation", "vsr"))
    pipe.enable_model_cpu_offload(device="cpu")  # one offload over the shared text encoder / VAE
    out = pipe.vsr(PROMPT, video=low, num_inference_steps=1, generator=gen(8), decode_chunk_size=1).frames
    np.testing.assert_allclose(out, plain, atol=1e-5)
    chained = pipe(PROMPT, generator=gen(), stages=("base", "interpolation"), **TINY).frames
    expected = cascade(PROMPT, generator=gen(), stages=("base", "interpolation"), **TINY).frames
    np.testing.assert_allclose(chained, expected, atol=1e-5)
    pipe.to("cpu")  # offloading ends: real weights again
    assert {p.device.type for p in pipe.base.text_encoder.parameters()} == {"cpu"}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(root, dtype):
    pipe = load_lavie_pipeline(root, unet_configs=CONFIGS, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.base.dtype == dtype and pipe.vsr.dtype == dtype
    assert next(pipe.vsr.vae.parameters()).dtype == torch.float32  # the x4 VAE decodes in float32 (vsr/sample.py)
    out = pipe(PROMPT, generator=gen(), num_inference_steps=1, height=32, width=32, num_frames=2).frames
    assert out.shape == (1, 5, 128, 128, 3) and np.isfinite(out).all()


def test_exported_where_users_look():
    import vdlearn.pipelines
    import vdlearn.pretrained

    assert vdlearn.pretrained.load_lavie_pipeline is load_lavie_pipeline
    assert vdlearn.pipelines.LaVieCascade is LaVieCascade


# ------------------------------------------------------------------------------------ bad inputs
def test_bad_inputs_are_refused_with_clear_messages(cascade, base_frames):
    with pytest.raises(InputError, match="num_frames must be 13 for a video of 4 frames"):
        cascade.interpolation(PROMPT, video=base_frames, num_frames=16)
    with pytest.raises(InputError, match=r"multiples of 16 .*got 40x32"):  # 8 (VAE) x 2 (U-Net halvings), reduced
        cascade.base(PROMPT, height=40, width=32)
    with pytest.raises(InputError, match=r"multiples of 8 .*input must be a multiple of 2; got an input of 5x5"):
        cascade.vsr(PROMPT, video=torch.zeros(1, 3, 2, 5, 5))  # reduced VSR: x4 VAE x 2 halvings (official: 32, 8)
    with pytest.raises(InputError, match="noise_level must lie in 0..350"):
        cascade.vsr(PROMPT, video=torch.zeros(1, 3, 2, 8, 8), noise_level=400)
    with pytest.raises(InputError, match="needs video="):
        cascade.interpolation(PROMPT)
    with pytest.raises(InputError, match=r"\(b, 3, frames, H, W\) in \[-1, 1\]"):
        cascade.vsr(PROMPT, video=torch.full((1, 3, 2, 8, 8), 3.0))
    with pytest.raises(InputError, match="run in the order"):
        cascade(PROMPT, stages=("interpolation", "base"))
    with pytest.raises(InputError, match="pass video="):
        cascade(PROMPT, stages=("vsr",))
    with pytest.raises(InputError, match="num_frames must equal the input video's 4 frames"):
        cascade.vsr(PROMPT, video=base_frames, num_frames=8)


def test_full_size_checks_name_the_official_multiples():
    with torch.device("meta"):
        unet = VideoUNet(UNetConfig.preset("lavie_base"))
    from vdlearn.models.vae import AutoencoderKL, VAEConfig

    with torch.device("meta"):
        vae = AutoencoderKL(VAEConfig.preset("lavie"))
        x4 = AutoencoderKL(VAEConfig.preset("sd_x4_upscaler"))
        vsr_unet = VideoUNet(UNetConfig.preset("lavie_vsr"))
    assert LaVieBasePipeline(unet, vae, torch.nn.Linear(1, 1), NoiseSchedule("lavie_base")).size_multiple == 64
    vsr = LaVieVSRPipeline(vsr_unet, x4, torch.nn.Linear(1, 1), NoiseSchedule("lavie_vsr"),
                           NoiseSchedule("lavie_vsr_low_res"))
    assert vsr.size_multiple == 32  # 320 x 512 -> 1280 x 2048: the low-res input a multiple of 8


@pytest.mark.parametrize(("missing", "names"), [
    ("lavie_base.pt", ["lavie_base.pt", "Vchitect/LaVie", "pretrained_models/lavie_base.pt"]),
    ("stable-diffusion-v1-4", ["CompVis/stable-diffusion-v1-4", "pretrained_models/stable-diffusion-v1-4"]),
    ("stable-diffusion-x4-upscaler", ["stabilityai/stable-diffusion-x4-upscaler", "hf download"]),
])
def test_a_missing_file_names_itself_its_repository_and_its_place(root, tmp_path, missing, names):
    for p in root.iterdir():  # a copy of the folder without one entry (links are enough)
        if p.name != missing:
            (tmp_path / p.name).symlink_to(p, target_is_directory=p.is_dir())
    with pytest.raises(CheckpointNotFoundError) as err:
        load_lavie_pipeline(tmp_path, unet_configs=CONFIGS)
    assert all(n in str(err.value) for n in names), str(err.value)
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, InputError)


def test_a_missing_sub_folder_and_no_files_at_all(root, tmp_path):
    (tmp_path / "stable-diffusion-v1-4").mkdir()  # an empty SD 1.4 folder: no text_encoder/config.json
    with pytest.raises(CheckpointNotFoundError, match="text_encoder/config.json"):
        load_lavie_pipeline(base=root / "lavie_base.pt", sd14=tmp_path / "stable-diffusion-v1-4",
                            unet_configs=CONFIGS)
    with pytest.raises(CheckpointNotFoundError, match="sd14 file is not on this machine: not in the Hugging Face"):
        load_lavie_pipeline(base=root / "lavie_base.pt", unet_configs=CONFIGS, cache_dir=tmp_path / "empty",
                            local_files_only=True)  # not given, not under a root: the Hub's cache, offline
    with pytest.raises(ValueError, match="non-empty selection"):
        load_lavie_pipeline(root, stages=())


def _hub_cache(cache, root, leave_out: str | None = None):
    """A Hugging Face cache (the hub's own folder layout) holding ``root``'s files under their repositories."""
    from vdlearn.pretrained.lavie_pipeline import LAVIE_FILES

    commit = "0123456789abcdef0123456789abcdef01234567"
    for what, (name, repo) in LAVIE_FILES.items():
        if what == leave_out:
            continue
        folder = cache / f"models--{repo.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / "main").write_text(commit)
        snapshot = folder / "snapshots" / commit
        if what in ("sd14", "x4"):  # a diffusers repository: the snapshot is the folder
            snapshot.parent.mkdir(parents=True, exist_ok=True)
            snapshot.symlink_to(root / name, target_is_directory=True)
        else:
            snapshot.mkdir(parents=True, exist_ok=True)
            (snapshot / name).symlink_to(root / name)


def test_without_a_folder_every_file_comes_from_the_hugging_face_cache(root, cascade, tmp_path, monkeypatch):
    """No root and no files: the Hub route; offline, the cache alone gives the same cascade as the folder."""
    _hub_cache(tmp_path, root)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # local_files_only=None follows HF_HUB_OFFLINE: no network
    hub = load_lavie_pipeline(unet_configs=CONFIGS, cache_dir=tmp_path)
    for stage in ("base", "interpolation", "vsr"):
        a, b = getattr(hub, stage), getattr(cascade, stage)
        for part in ("unet", "vae", "text_encoder"):
            sa, sb = getattr(a, part).state_dict(), getattr(b, part).state_dict()
            assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), (stage, part)
    assert torch.equal(hub.vsr.schedule.betas, cascade.vsr.schedule.betas)  # the x4 scheduler config was read


@pytest.mark.parametrize(("leave_out", "names"), [
    ("vsr", ["lavie_vsr.pt", "Vchitect/LaVie", "offline mode", "hf download Vchitect/LaVie lavie_vsr.pt"]),
    ("x4", ["stabilityai/stable-diffusion-x4-upscaler", "offline mode", "--include 'scheduler/scheduler_config.json'"]),
])
def test_a_file_missing_from_the_cache_offline_says_what_to_download(root, tmp_path, leave_out, names):
    _hub_cache(tmp_path, root, leave_out=leave_out)
    with pytest.raises(CheckpointNotFoundError) as err:
        load_lavie_pipeline(unet_configs=CONFIGS, cache_dir=tmp_path, local_files_only=True)
    assert all(n in str(err.value) for n in names), str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no hub traceback chained to it
