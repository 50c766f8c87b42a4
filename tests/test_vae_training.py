"""The VAE training entry: CLI files, resume through the one loop, NaN stop, decoder fine-tuning; the shipped model.

Exact resume, the NaN stop and two processes are tested for the VAE and temporal-decoder
tasks with every other task in ``tests/test_trainer.py``; here is what ``train_vae`` adds.
"""

import argparse
import json
import math

import pytest
import torch

from vdlearn.models.vae import AutoencoderKL, load_toy_vae, shipped_vae_path
from vdlearn.training import vae as T


def tiny_config(**changes) -> T.VAETrainConfig:
    base = {"preset": "tiny", "steps": 4, "batch_frames": 8, "frames_per_clip": 4, "ckpt_every": 2, "warmup": 2,
            "eval_clips": 0, "device": "cpu", "clips_per_batch": 2, "clip_frames": 4}
    return T.VAETrainConfig(**{**base, **changes})


def parse(argv: list[str]) -> argparse.Namespace:
    return T.add_arguments(argparse.ArgumentParser()).parse_args(argv)


def test_main_trains_and_writes_the_files(tmp_path):
    out = tmp_path / "run"
    code = T.main(parse(["--preset", "tiny", "--steps", "3", "--out", str(out), "--batch-frames", "8",
                         "--eval-clips", "2", "--ckpt-every", "2", "--mix", "1", "1", "0", "--quiet"]))
    assert code == 0
    for name in ("vae.safetensors", "vae.json", "checkpoint.safetensors", "checkpoint.json", "log.csv"):
        assert (out / name).exists(), name
    meta = json.loads((out / "vae.json").read_text())
    assert meta["config"]["name"] == "tiny" and meta["metrics"]["steps"] == 3
    # the recorded command runs this very configuration again (flags for every changed field)
    assert meta["command"] == (f"vdlearn train vae --preset tiny --steps 3 --batch-frames 8 --mix 1.0 1.0 0.0 "
                               f"--ckpt-every 2 --eval-clips 2 --out {out}")
    assert T.config_from_args(parse(meta["command"].split()[3:])) == T.VAETrainConfig(**{
        **meta["train_config"], "mix": tuple(meta["train_config"]["mix"])})
    assert "psnr_heldout_clean" in meta["metrics"] and "commit" in meta and "hardware" in meta
    vae = AutoencoderKL.load(out / "vae.safetensors")
    assert vae.scale_factor == pytest.approx(meta["metrics"]["scale_factor"])  # the measured scale is the model's

    # the temporal decoder starts from it
    code = T.main(parse(["--temporal-decoder", "--vae", str(out / "vae.safetensors"), "--steps", "2",
                         "--out", str(tmp_path / "t"), "--clips-per-batch", "2", "--clip-frames", "4",
                         "--eval-clips", "0", "--temporal-only", "--quiet"]))
    assert code == 0
    video_vae = AutoencoderKL.load(tmp_path / "t" / "vae.safetensors")
    assert video_vae.is_temporal and video_vae.scale_factor == vae.scale_factor
    for key, value in vae.state_dict().items():  # --temporal-only: every per-frame weight stayed as it was
        assert torch.equal(video_vae.state_dict()[key], value), key
    assert "--temporal-decoder --temporal-only" in json.loads((tmp_path / "t" / "vae.json").read_text())["command"]


def test_main_reports_bad_arguments(tmp_path, capsys):
    from vdlearn.cli import main

    assert main(["train", "vae", "--temporal-decoder", "--steps", "1", "--out", str(tmp_path), "--quiet"]) == 2
    assert "--vae" in capsys.readouterr().err
    assert main(["train", "vae", "--resume", "--preset", "tiny", "--steps", "1", "--out", str(tmp_path / "x"),
                 "--quiet"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_an_interrupted_and_resumed_run_writes_the_same_model(tmp_path):
    full = T.train_vae(tiny_config(), tmp_path / "full", progress=False)
    T.train_vae(tiny_config(), tmp_path / "cut", progress=False, stop_at=2)
    assert not (tmp_path / "cut" / "vae.safetensors").exists()  # an interrupted run leaves only its checkpoint
    resumed = T.train_vae(tiny_config(), tmp_path / "cut", resume=True, progress=False)
    for key, value in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    assert json.loads((tmp_path / "cut" / "vae.json").read_text())["loss_curve"] == full.meta["loss_curve"]


def test_resume_refuses_changed_settings(tmp_path):
    T.train_vae(tiny_config(steps=2), tmp_path, progress=False)
    with pytest.raises(ValueError, match="lr"):
        T.train_vae(tiny_config(steps=3, lr=0.5), tmp_path, resume=True, progress=False)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    real_loss = T.vae_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        terms = real_loss(*args, **kwargs)
        if calls["n"] >= 4:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(T, "vae_loss", poisoned)
    out = tmp_path / "nan"
    from vdlearn.cli import main

    code = main(["train", "vae", "--preset", "tiny", "--steps", "6", "--out", str(out), "--batch-frames", "8",
                 "--ckpt-every", "2", "--eval-clips", "0", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "nan at step 3" in err and "step 2" in err and "--lr" in err
    state = json.loads((out / "checkpoint.json").read_text())
    assert state["step"] == 2 and all(math.isfinite(h) for h in state["history"])  # no NaN stored
    assert not (out / "vae.safetensors").exists()


def test_the_shipped_toy_vae_reconstructs_held_out_clips():
    from vdlearn.data import ToyWorld
    from vdlearn.training.vae_eval import heldout_clips, psnr, reconstruct

    vae = load_toy_vae("toy32")  # fails, does not skip, when data/vae/toy32 is missing
    assert shipped_vae_path("toy32").stat().st_size < 10e6
    clips = heldout_clips(ToyWorld("toy32", seed=0), 8)["video"]
    # measured again on 8 clips: the recorded figure (64 clips) minus 2.1 dB, two standard errors of an
    # 8-clip mean (the per-clip PSNR varies with a standard deviation of about 3 dB)
    assert psnr(reconstruct(vae, clips), clips).mean() >= vae.meta["metrics"]["psnr_heldout_clean"] - 2.1


def test_the_shipped_temporal_decoder_flickers_less_on_noisy_latents():
    from vdlearn.data import ToyWorld
    from vdlearn.eval import flicker
    from vdlearn.training.vae_eval import heldout_clips

    per_frame, temporal = load_toy_vae("toy32"), load_toy_vae("toy32", temporal=True)
    assert temporal.is_temporal and temporal.scale_factor == per_frame.scale_factor
    # fine-tuned with the encoder frozen; the shipped copy stores its weights in float16 (data/vae/README.md)
    assert temporal.meta["stored_dtype"] == "float16"
    for key, value in per_frame.encoder.state_dict().items():
        assert torch.equal(temporal.encoder.state_dict()[key], value.half().float())
    clips = heldout_clips(ToyWorld("toy32", seed=0), 8)["video"]
    with torch.no_grad():
        latents = per_frame.encode_latents(clips)
        noisy = latents + 0.2 * torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))
        f_per_frame = flicker(per_frame.decode_latents(noisy).clamp(-1, 1)).mean()
        f_temporal = flicker(temporal.decode_latents(noisy).clamp(-1, 1)).mean()
    assert f_temporal < f_per_frame
