"""The VideoCrafter pipeline samples exactly as the official scripts do, and every memory saver changes nothing.

* Against the official code: the pipeline, given the golden files' contexts, reproduces the
  official ``DDIMSampler`` runs of ``tests/fixtures/golden/ddim_*.safetensors`` (scale_arr,
  CFG as two calls, eta, the same noise draws), and it equals a hand-written DDIM + CFG loop
  (the formulas of ``lvdm/models/samplers/ddim.py``, per-frame ``decode_first_stage_2DAE``)
  over the same modules.
* Seeds: the same generator gives the same video; another seed another.
* Memory savers on CPU, with the CPU as the "execution device": model offload and sequential
  offload move the weights (the others wait as meta placeholders, which the tests check
  while each component or layer runs) and give the same frames; attention slicing and
  decoding a frame at a time give the same frames within fp32 rounding.
* Image-to-video runs with 77 text + 16 image tokens, the unconditional half with the zero image.

All at reduced width (``videocrafter_fakes.py``): 64 x 64 pixels, 4 frames, 2 DDIM steps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import videocrafter_fakes as fakes
from test_golden_official import ATOL, RTOL, SCHEDULES, golden_unet, read_golden

from vdlearn.diffusion import NoiseSchedule
from vdlearn.io import InputError
from vdlearn.models.unet.attention import Attention
from vdlearn.pipelines.video_io import export_to_video
from vdlearn.pipelines.videocrafter import VideoCrafterPipeline

T2V, I2V = "videocrafter2_t2v_512", "videocrafter1_i2v_512"
PROMPT = "A tiger walks in the forest, photorealistic, 4k, high definition"


@pytest.fixture(scope="module")
def t2v():
    return fakes.reduced_pipeline(T2V)


@pytest.fixture(scope="module")
def plain_frames(t2v):
    """The plain path's frames (seed 0), against which every saver is compared."""
    return t2v(PROMPT, generator=torch.Generator().manual_seed(0), **fakes.SMALL).frames


def devices(module) -> set[str]:
    return {p.device.type for p in module.parameters()}


# ------------------------------------------------------------------------------ the official sampler
@pytest.mark.parametrize("preset", list(SCHEDULES))
def test_pipeline_reproduces_the_official_ddim_run(preset):
    g, meta = read_golden(f"ddim_{preset}.safetensors")
    unet, _, _ = golden_unet(preset)  # the official weights at reduced width (test_golden_official.py)
    spare = fakes.reduced_modules(T2V)  # a VAE and a text encoder the latent output never uses
    pipe = VideoCrafterPipeline(unet, spare["vae"], spare["text_encoder"], NoiseSchedule(SCHEDULES[preset]))
    pipe.set_progress_bar_config(disable=True)
    _, _, frames, h, w = meta["shape"]
    out = pipe(prompt_embeds=g["context"], negative_prompt_embeds=g["uncond_context"], fps=g["fps"].tolist(),
               height=8 * h, width=8 * w, num_frames=frames, num_inference_steps=meta["ddim_steps"],
               guidance_scale=meta["guidance_scale"], eta=meta["ddim_eta"],
               generator=torch.Generator().manual_seed(meta["sample_seed"]), output_type="latent").frames
    scale = g["samples"].abs().max().item()  # guidance 12 on random weights reaches |x| ~ 100 (see the golden test)
    torch.testing.assert_close(out, g["samples"], atol=3 * ATOL * scale, rtol=RTOL)


def official_loop(pipe, prompt, steps, guidance, eta, fps, generator, shape) -> np.ndarray:
    """``batch_ddim_sampling`` and ``DDIMSampler.p_sample_ddim`` written out by hand, then per-frame decoding."""
    text, unet, vae = pipe.text_encoder, pipe.unet, pipe.vae
    cond = text(text.tokenize([prompt]))  # (1, 77, d)
    uncond = text(text.tokenize([""]))  # uncond_type: empty_seq
    ab, scale_arr = pipe.schedule.alphas_cumprod.tolist(), pipe.schedule.scale_arr.tolist()
    ts = [t + 1 for t in range(0, 1000, 1000 // steps)]  # make_ddim_timesteps("uniform"): 1, 501 for 2 steps
    a = [ab[t] for t in ts]
    a_prev = [ab[0]] + [ab[t] for t in ts[:-1]]
    sigma = [eta * ((1 - p) / (1 - c) * (1 - c / p)) ** 0.5 for c, p in zip(a, a_prev, strict=True)]
    s = [scale_arr[t] for t in ts]
    s_prev = [scale_arr[0]] + [scale_arr[t] for t in ts[:-1]]
    fps = torch.tensor([fps])
    x = torch.randn(shape, generator=generator)  # x_T
    for i in reversed(range(len(ts))):
        t = torch.tensor([ts[i]])
        e_c, e_u = unet(x, t, cond, fps), unet(x, t, uncond, fps)
        e = e_u + guidance * (e_c - e_u)
        pred_x0 = (x - (1 - a[i]) ** 0.5 * e) / a[i] ** 0.5
        direction = (1 - a_prev[i] - sigma[i] ** 2) ** 0.5 * e
        noise = sigma[i] * torch.randn(shape, generator=generator)  # noise_like: drawn at every step
        pred_x0 = pred_x0 / s[i]
        x = a_prev[i] ** 0.5 * s_prev[i] * pred_x0 + direction + noise
    video = torch.stack([vae.decode(x[:, :, f] / 0.18215) for f in range(shape[2])], dim=2)  # frame by frame
    return ((video.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1).numpy()  # (1, T, H, W, 3)


def test_pipeline_equals_a_hand_written_ddim_loop(t2v):
    with torch.no_grad():
        expected = official_loop(t2v, PROMPT, 2, 12.0, 1.0, 28, torch.Generator().manual_seed(5), (1, 4, 4, 8, 8))
    frames = t2v(PROMPT, generator=torch.Generator().manual_seed(5), **fakes.SMALL).frames  # defaults: cfg 12, eta 1, fps 28
    assert frames.shape == (1, 4, 64, 64, 3) and frames.dtype == np.float32 and 0.05 < frames.std()
    np.testing.assert_allclose(frames, expected, atol=2e-5, rtol=0)


def test_same_generator_same_video_other_seed_other_video(t2v, plain_frames):
    again = t2v(PROMPT, generator=torch.Generator().manual_seed(0), **fakes.SMALL).frames
    other = t2v(PROMPT, generator=torch.Generator().manual_seed(1), **fakes.SMALL).frames
    assert (again == plain_frames).all()
    assert np.abs(other - plain_frames).mean() > 0.01


# ------------------------------------------------------------------------------ memory savers
def test_model_offload_moves_each_component_only_while_it_works(plain_frames):
    pipe = fakes.reduced_pipeline(T2V)
    pipe.enable_model_cpu_offload(device="cpu")  # the CPU plays the GPU; the others wait as meta placeholders
    assert all(devices(m) == {"meta"} for m in pipe.components.values())
    seen = {}

    def placement(name):
        def hook(module, args):
            seen.setdefault(name, {n: devices(m) for n, m in pipe.components.items()})
        return hook

    handles = [getattr(pipe, n).register_forward_pre_hook(placement(n)) for n in ("text_encoder", "unet")]
    handles.append(pipe.vae.decoder.register_forward_pre_hook(placement("vae")))
    frames = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **fakes.SMALL).frames
    for h in handles:
        h.remove()
    for name, placed in seen.items():
        assert placed == {n: ({"cpu"} if n == name else {"meta"}) for n in pipe.components}, name
    assert set(seen) == {"text_encoder", "unet", "vae"}
    assert all(devices(m) == {"meta"} for m in pipe.components.values())  # everything offloaded after the call
    assert (frames == plain_frames).all()
    pipe.to("cpu")  # offloading ends: the real weights are back
    assert all(devices(m) == {"cpu"} for m in pipe.components.values())
    reference = fakes.reduced_modules(T2V)["unet"].state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in pipe.unet.state_dict().items())


def test_sequential_offload_moves_each_layer_only_during_its_forward(plain_frames):
    pipe = fakes.reduced_pipeline(T2V)
    pipe.enable_sequential_cpu_offload(device="cpu")
    unet = pipe.unet
    seen = []

    def during_conv_out(module, args):  # runs after the offload hook has brought conv_out's weights
        seen.append((devices(unet.conv_out), devices(unet.conv_in), devices(unet.mid.res1.conv1),
                     devices(pipe.vae), devices(pipe.text_encoder.blocks)))

    handle = unet.conv_out.register_forward_pre_hook(during_conv_out)
    frames = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **fakes.SMALL).frames
    handle.remove()
    assert seen == [({"cpu"}, {"meta"}, {"meta"}, {"meta"}, {"meta"})] * 4  # 2 steps x (cond + uncond)
    # containers' own tensors (OpenCLIP's token positions) stay on the execution device; every layer is offloaded
    assert pipe.text_encoder.pos_embed.device.type == "cpu" and devices(unet) == {"meta"}
    assert (frames == plain_frames).all()


def test_attention_slicing_gives_the_same_video(monkeypatch, plain_frames):
    calls = []
    plain_forward = Attention.forward

    def counted(self, *args, **kwargs):
        calls.append(args[0].shape[0])  # query sequences in this call
        return plain_forward(self, *args, **kwargs)

    monkeypatch.setattr(Attention, "forward", counted)
    pipe = fakes.reduced_pipeline(T2V)
    pipe.enable_attention_slicing(slice_size=2)
    frames = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **fakes.SMALL).frames
    assert max(calls) <= 2  # no attention call saw more than 2 sequences (plain: up to 64 pixels x 1 video)
    np.testing.assert_allclose(frames, plain_frames, atol=1e-5, rtol=0)
    pipe.disable_attention_slicing()
    calls.clear()
    pipe(PROMPT, generator=torch.Generator().manual_seed(0), **fakes.SMALL)
    assert max(calls) == 64  # temporal attention: one sequence per latent pixel (8 x 8)


def test_decoding_a_frame_at_a_time_gives_the_same_video(t2v, plain_frames):
    frames = t2v(PROMPT, generator=torch.Generator().manual_seed(0), decode_chunk_size=1, **fakes.SMALL).frames
    np.testing.assert_allclose(frames, plain_frames, atol=1e-5, rtol=0)  # other batch sizes, other fp32 rounding


# ------------------------------------------------------------------------------ image-to-video
def test_image_to_video_uses_77_text_and_16_image_tokens():
    pipe = fakes.reduced_pipeline(I2V)
    image = (np.random.default_rng(0).random((48, 80, 3)) * 255).astype(np.uint8)  # any size: resized to 64 x 64
    contexts = []
    handle = pipe.unet.register_forward_pre_hook(lambda m, args: contexts.append(args[2].clone()))
    frames = pipe("horses are walking on the grassland", image=image, generator=torch.Generator().manual_seed(0),
                  **fakes.SMALL).frames
    handle.remove()
    assert frames.shape == (1, 4, 64, 64, 3) and np.isfinite(frames).all()
    assert [tuple(c.shape) for c in contexts] == [(1, 93, 64)] * 4  # cond, uncond per step
    cond, uncond = contexts[0], contexts[1]
    enc, res = pipe.image_encoder, pipe.image_resampler
    with torch.no_grad():
        pixels = torch.nn.functional.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1,
                                                 size=(64, 64), mode="bilinear", align_corners=False)
        image_tokens = res(enc(enc.preprocess(pixels)))
        zero_tokens = res(enc(enc.preprocess(torch.zeros(1, 3, 224, 224))))  # funcs.py: the zero image
        text = pipe.text_encoder
        torch.testing.assert_close(cond[:, :77], text(text.tokenize(["horses are walking on the grassland"])))
        torch.testing.assert_close(uncond[:, :77], text(text.tokenize([""])))
    torch.testing.assert_close(cond[:, 77:], image_tokens)
    torch.testing.assert_close(uncond[:, 77:], zero_tokens)


def test_image_to_video_under_both_offloads_gives_the_same_video():
    """The image tower and the resampler travel like the rest (their own tensors stay with their forward)."""
    image = torch.rand(1, 3, 40, 56) * 2 - 1
    frames = []
    for saver in (None, "enable_model_cpu_offload", "enable_sequential_cpu_offload"):
        pipe = fakes.reduced_pipeline(I2V)
        if saver:
            getattr(pipe, saver)(device="cpu")
        frames.append(pipe("a horse", image=image, generator=torch.Generator().manual_seed(4), **fakes.SMALL).frames)
        if saver:
            assert devices(pipe.image_encoder.blocks) == devices(pipe.image_resampler.layers) == {"meta"}
    assert (frames[0] == frames[1]).all() and (frames[0] == frames[2]).all()


def test_image_to_video_needs_an_image_and_text_to_video_refuses_one(t2v):
    with pytest.raises(InputError, match="image-to-video model: pass image="):
        fakes.reduced_pipeline(I2V)("a horse", **fakes.SMALL)
    with pytest.raises(InputError, match="text-to-video model"):
        t2v("a horse", image=torch.zeros(1, 3, 64, 64), **fakes.SMALL)


# ------------------------------------------------------------------------------ outputs and inputs
def test_output_types_and_export(t2v, tmp_path):
    one = dict(fakes.SMALL, num_inference_steps=1, guidance_scale=1.0)  # one U-Net call
    latents = t2v(PROMPT, generator=torch.Generator().manual_seed(2), output_type="latent", **one).frames
    pt = t2v(PROMPT, generator=torch.Generator().manual_seed(2), output_type="pt", **one).frames
    pil = t2v(PROMPT, generator=torch.Generator().manual_seed(2), output_type="pil", **one).frames
    frames, = t2v(PROMPT, generator=torch.Generator().manual_seed(2), return_dict=False, **one)
    assert latents.shape == (1, 4, 4, 8, 8)
    assert pt.shape == (1, 4, 3, 64, 64) and np.allclose(pt.permute(0, 1, 3, 4, 2).numpy(), frames)
    assert len(pil) == 1 and len(pil[0]) == 4 and pil[0][0].size == (64, 64)
    assert (np.asarray(pil[0][1]) == (frames[0, 1] * 255).astype(np.uint8)).all()
    gif = export_to_video(frames[0], tmp_path / "clip.gif", fps=8)
    from PIL import Image

    with Image.open(gif) as im:
        assert im.n_frames == 4
    mp4 = export_to_video(pil[0], tmp_path / "clip.mp4", fps=8)
    assert mp4.stat().st_size > 0 and mp4.suffix in (".mp4", ".gif")


@pytest.mark.parametrize(("name", "dtype", "output_type"), [(T2V, torch.bfloat16, "np"), (T2V, torch.float16, "latent"),
                                                        (I2V, torch.bfloat16, "latent")],
                         ids=["t2v-bf16", "t2v-fp16", "i2v-bf16"])
def test_half_precision_weights_sample(name, dtype, output_type):
    pipe = fakes.reduced_pipeline(name).to(dtype=dtype)
    image = torch.zeros(1, 3, 64, 64) if pipe.is_image_to_video else None
    out = pipe(PROMPT, image=image, generator=torch.Generator().manual_seed(0), num_inference_steps=1,
               guidance_scale=2.0, height=64, width=64, num_frames=4, output_type=output_type).frames
    assert pipe.dtype == dtype and torch.isfinite(torch.as_tensor(out)).all()
    assert tuple(out.shape) == ((1, 4, 64, 64, 3) if output_type == "np" else (1, 4, 4, 8, 8))


def test_bad_sizes_and_batches_are_refused(t2v):
    with pytest.raises(InputError, match="multiples of 64"):
        t2v(PROMPT, height=100, width=64)
    with pytest.raises(InputError, match="Got 2 negative prompts for 3 prompts"):
        t2v(["a", "b", "c"], negative_prompt=["x", "y"], **fakes.SMALL)
    with pytest.raises(InputError, match="fps must be one positive frame rate"):
        t2v(PROMPT, fps=[8, 16], **fakes.SMALL)
    with pytest.raises(InputError, match="num_inference_steps=3 does not fit VideoCrafter's uniform timesteps"):
        t2v(PROMPT, height=64, width=64, num_frames=4, num_inference_steps=3)  # 1, 334, 667, 1000: no t = 1000
    with pytest.raises(InputError, match="latents must have shape"):
        t2v(PROMPT, latents=torch.zeros(1, 4, 4, 16, 16), **fakes.SMALL)
