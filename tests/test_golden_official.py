"""vdlearn equals the official VideoCrafter code: golden outputs at reduced width, compared in CI.

The files in ``tests/fixtures/golden/`` are outputs of the official implementation
(AILab-CVC/VideoCrafter, commit in each file's metadata and in the folder's README) at
reduced width on seeded weights: the U-Nets of VideoCrafter2 T2V 512, VideoCrafter1 T2V
1024 and 512 and VideoCrafter1 I2V 512, the LDM KL-f8 autoencoder, and the official
``DDIMSampler`` with ``scale_arr`` and classifier-free guidance. Each file holds the
inputs, the outputs, the official tensor names and shapes, and a digest of the weights;
the weights themselves are rebuilt from the seed (``golden_weights.py``), passed through
vdlearn's own converters (official names -> vdlearn names) and run by vdlearn.

A missing golden file fails these tests: see ``tests/fixtures/golden/README.md`` for the
command that regenerates them.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from golden_weights import seeded_state_dict, state_dict_digest
from safetensors import safe_open

from vdlearn.diffusion import NoiseSchedule, Sampler, sample
from vdlearn.models.unet import UNetConfig, VideoUNet
from vdlearn.models.vae import VAEConfig
from vdlearn.pretrained.vae_layouts import load_ldm_vae
from vdlearn.pretrained.videocrafter import load_videocrafter_unet, official_shapes

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
OFFICIAL_COMMIT = "11bcd76fc62fb98b9715b994afe45b4fa081120c"  # AILab-CVC/VideoCrafter
UNET_PRESETS = ["videocrafter2_t2v_512", "videocrafter1_t2v_1024", "videocrafter1_t2v_512", "videocrafter1_i2v_512"]
#: Each file's official config values that were changed ("reduced width"), in vdlearn's names.
REDUCED = {"model_channels": 32, "head_channels": 16, "context_dim": 64}
#: The schedule preset of each official config.
SCHEDULES = {"videocrafter2_t2v_512": "videocrafter", "videocrafter1_t2v_1024": "videocrafter1_1024"}
# fp32 agreement. Different but equivalent kernels (SDPA vs einsum attention, channels-last
# convolutions, split GEGLU matmuls) reorder float sums, so bit equality is not expected.
ATOL = 1e-5
RTOL = 1e-5


def read_golden(name: str) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Tensors and (json-decoded) metadata of a golden file; a missing file fails the test."""
    path = GOLDEN / name
    if not path.exists():
        pytest.fail(f"Golden file {path} is missing. It is part of the repository; restore it from git, "
                    f"or regenerate it with the command in {GOLDEN / 'README.md'}.")
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        meta = {k: json.loads(v) for k, v in f.metadata().items()}  # every value is JSON
    return tensors, meta


def official_weights(meta: dict, shapes_key: str = "official_shapes", digest_key: str = "weights_sha256") -> dict:
    """The official state dict the golden run used, rebuilt from the seed and checked against its digest."""
    weights = seeded_state_dict(meta[shapes_key], meta["weight_seed"])
    assert state_dict_digest(weights) == meta[digest_key], (
        "The weights rebuilt from the seed differ from those of the official run: golden_weights.py changed?")
    return weights


def max_diff(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return (ours.double() - theirs.double()).abs().max().item()


@functools.cache
def golden_unet(preset: str) -> tuple[VideoUNet, dict, dict]:
    """vdlearn's U-Net at the golden file's reduced width, loaded with the official weights."""
    tensors, meta = read_golden(f"unet_{preset}.safetensors")
    config = UNetConfig.preset(preset, **REDUCED)
    with torch.device("meta"):
        layout = VideoUNet(config)
    # the official layout at reduced width is exactly vdlearn's: same names, same shapes
    expected = {k: tuple(v) for k, v in meta["official_shapes"].items()}
    got = official_shapes(layout)
    assert sorted(set(expected) - set(got)) == [] and sorted(set(got) - set(expected)) == []
    assert {k: v for k, v in got.items() if expected[k] != v} == {}
    model = load_videocrafter_unet(official_weights(meta), config)  # through vdlearn's converter
    return model, tensors, meta


@pytest.fixture(scope="module", autouse=True)
def _free_golden_unets():
    yield
    golden_unet.cache_clear()  # four reduced U-Nets hold about 250 MB


def test_golden_folder_is_small_and_complete():
    """The VideoCrafter files are all there; every golden file (other sources too) is named in the README."""
    names = sorted(p.name for p in GOLDEN.glob("*.safetensors") if p.name.startswith(("unet_", "ddim_", "vae_")))
    expected = sorted([f"unet_{p}.safetensors" for p in UNET_PRESETS]
                      + [f"ddim_{p}.safetensors" for p in SCHEDULES] + ["vae_ldm_kl_f8.safetensors"])
    assert names == expected
    every = [p for p in GOLDEN.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in every) < 2_500_000
    readme = (GOLDEN / "README.md").read_text()
    assert all(p.name in readme for p in every if p.suffix == ".safetensors")
    for name in names:  # one official commit for all, the one the README names
        commit = read_golden(name)[1]["official_commit"]
        assert commit == OFFICIAL_COMMIT and commit in (GOLDEN / "README.md").read_text(), name


@pytest.mark.parametrize("preset", UNET_PRESETS)
def test_unet_matches_official(preset):
    model, g, meta = golden_unet(preset)
    assert meta["preset"] == preset and meta["overrides"]["model_channels"] == REDUCED["model_channels"]
    cond = {"context": g["context"]}
    if model.config.fps_cond:
        cond["fps"] = g["fps"]
    with torch.no_grad():
        eps = model(g["x"], g["timesteps"], **cond)
    assert g["eps"].abs().max() > 0.5  # a live network: the official output is far from zero
    torch.testing.assert_close(eps, g["eps"], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("preset", ["videocrafter2_t2v_512", "videocrafter1_t2v_1024", "videocrafter1_i2v_512"])
def test_fps_path_matches_official(preset):
    """fps as VideoCrafter embeds it: sinusoid of fps -> fps_embedding MLP -> added to the time embedding."""
    model, g, _ = golden_unet(preset)
    with torch.no_grad():
        eps = model(g["x"], g["timesteps"], g["context"], fps=g["fps_other"])
    # the official output moves with fps by far more than the tolerance, and vdlearn moves with it
    assert max_diff(g["eps_fps_other"], g["eps"]) > 1e-2
    torch.testing.assert_close(eps, g["eps_fps_other"], atol=ATOL, rtol=RTOL)


def test_unet_without_fps_cond_has_no_fps_path():
    model, g, meta = golden_unet("videocrafter1_t2v_512")
    assert not model.config.fps_cond and "eps_fps_other" not in g
    assert not any(k.startswith("fps_embedding.") for k in meta["official_shapes"])


def test_vae_matches_official():
    g, meta = read_golden("vae_ldm_kl_f8.safetensors")
    cfg = VAEConfig.preset("videocrafter", base_channels=meta["overrides"]["ch"])
    vae = load_ldm_vae(official_weights(meta), cfg)  # through vdlearn's LDM converter
    assert meta["scale_factor"] == vae.scale_factor == 0.18215
    with torch.no_grad():
        posterior = vae.encode(g["video"])  # (b, 4, t, h/8, w/8): per frame
        mean = posterior.mean.permute(0, 2, 1, 3, 4).flatten(0, 1)  # official: (b*t, 4, h/8, w/8)
        logvar = posterior.logvar.permute(0, 2, 1, 3, 4).flatten(0, 1)
        recon = vae.decode(posterior.mean).permute(0, 2, 1, 3, 4).flatten(0, 1)
        decoded = vae.decode_latents(g["latents"])  # official decode_first_stage: z / 0.18215, per frame
    torch.testing.assert_close(mean, g["posterior_mean"], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(logvar, g["posterior_logvar"], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(recon, g["reconstruction"], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(decoded, g["decoded"], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("preset", list(SCHEDULES))
def test_schedule_buffers_match_official(preset):
    g, meta = read_golden(f"ddim_{preset}.safetensors")
    schedule = NoiseSchedule(SCHEDULES[preset])
    assert schedule.use_scale == meta["use_scale"] and schedule.config.scale_b == meta["scale_b"]
    assert schedule.config.fix_scale_bug == meta["fix_scale_bug"]
    buffers = schedule.videocrafter_buffers()
    for name in ("betas", "alphas_cumprod", "scale_arr"):
        assert buffers[name].shape == g[name].shape, name  # scale_arr: 1400 (VideoCrafter2) or 1000 (VC1-1024)
        torch.testing.assert_close(buffers[name], g[name], atol=0, rtol=0)


@pytest.mark.parametrize("preset", list(SCHEDULES))
def test_ddim_loop_matches_official(preset):
    """The official DDIMSampler (scale_arr, CFG as two calls, eta) against vdlearn's sample(), same seed."""
    g, meta = read_golden(f"ddim_{preset}.safetensors")
    model, _, unet_meta = golden_unet(preset)
    assert meta["unet_weights_sha256"] == unet_meta["weights_sha256"]  # the U-Net of the unet_ file
    schedule = NoiseSchedule(SCHEDULES[preset])
    sampler = Sampler(schedule, "videocrafter", num_steps=meta["ddim_steps"], eta=meta["ddim_eta"],
                      guidance_scale=meta["guidance_scale"])
    assert sampler.timesteps.tolist() == g["ddim_timesteps"].flip(0).tolist()  # 801, 601, .. 1 (+1 offset)

    # the starting noise: vdlearn draws x_T first from the seed, as the official sampler does
    x_T = torch.randn(meta["shape"], generator=torch.Generator().manual_seed(meta["sample_seed"]))
    torch.testing.assert_close(x_T, g["x_T"], atol=0, rtol=0)
    cond = {"context": g["context"], "fps": g["fps"]}
    pred_x0 = []
    out = sample(model, meta["shape"], schedule, sampler, cond=cond, uncond={"context": g["uncond_context"]},
                 seed=meta["sample_seed"], device="cpu", progress=False,
                 callback=lambda step: pred_x0.append(step.pred_x0.clone()))
    # Guidance 12 on random weights drives the samples to |x| ~ 100, and it multiplies the U-Net's
    # fp32 rounding (~4e-6) by ~25 at every step: the tolerance is relative to the magnitude
    # reached (measured: 5e-6 of it; the sampler arithmetic alone agrees to 4e-7 of it).
    scale = g["samples"].abs().max().item()
    assert scale > 10
    torch.testing.assert_close(out, g["samples"], atol=3 * ATOL * scale, rtol=RTOL)
    torch.testing.assert_close(pred_x0[-1], g["pred_x0"], atol=3 * ATOL * scale, rtol=RTOL)
