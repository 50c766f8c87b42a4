"""The VAE training entry: CLI files, exact resume, NaN stop, decoder fine-tuning; the shipped model."""

import argparse
import math
import json

import pytest
import torch

from vdlearn.models.vae import AutoencoderKL, load_toy_vae, shipped_vae_path
from vdlearn.training import vae as T


def tiny_config(**changes) -> T.VAETrainConfig:
    base = dict(preset="tiny", steps=4, batch_frames=8, frames_per_clip=4, ckpt_every=2, warmup=2,
                eval_clips=0, device="cpu", clips_per_batch=2, clip_frames=4)
    return T.VAETrainConfig(**{**base, **changes})


def parse(argv: list[str]) -> argparse.Namespace:
    return T.add_arguments(argparse.ArgumentParser()).parse_args(argv)


def test_main_trains_and_writes_the_files(tmp_path):
    out = tmp_path / "run"
    code = T.main(parse(["--preset", "tiny", "--steps", "3", "--out", str(out), "--batch-frames", "8",
                         "--eval-clips", "2", "--ckpt-every", "2", "--quiet"]))
    assert code == 0
    for name in ("vae.safetensors", "vae.json", "checkpoint.safetensors", "checkpoint.json"):
        assert (out / name).exists(), name
    meta = json.loads((out / "vae.json").read_text())
    assert meta["config"]["name"] == "tiny" and meta["metrics"]["steps"] == 3
    assert meta["command"].startswith("vdlearn train vae --preset tiny --steps 3")
    assert meta["metrics"]["scale_factor"] == pytest.approx(1 / meta["metrics"]["latent_std"])
    assert "psnr_heldout_clean" in meta["metrics"] and "commit" in meta and "hardware" in meta
    vae = AutoencoderKL.load(out / "vae.safetensors")
    assert vae.scale_factor == pytest.approx(meta["metrics"]["scale_factor"])

    # the temporal decoder starts from it
    code = T.main(parse(["--temporal-decoder", "--vae", str(out / "vae.safetensors"), "--steps", "2",
                         "--out", str(tmp_path / "t"), "--clips-per-batch", "2", "--clip-frames", "4",
                         "--eval-clips", "0", "--quiet"]))
    assert code == 0
    video_vae = AutoencoderKL.load(tmp_path / "t" / "vae.safetensors")
    assert video_vae.is_temporal and video_vae.scale_factor == vae.scale_factor
    for key, value in vae.encoder.state_dict().items():  # the encoder stayed frozen
        assert torch.equal(video_vae.encoder.state_dict()[key], value)


def test_main_reports_bad_arguments(tmp_path, capsys):
    assert T.main(parse(["--temporal-decoder", "--steps", "1", "--out", str(tmp_path), "--quiet"])) == 1
    assert "--vae" in capsys.readouterr().err
    assert T.main(parse(["--resume", "--preset", "tiny", "--steps", "1", "--out", str(tmp_path / "x"),
                         "--quiet"])) == 1
    assert "no checkpoint" in capsys.readouterr().err


class Interrupt(Exception):
    pass


def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(tmp_path):
    cfg = tiny_config(steps=5)
    full_losses = []
    full = T.train_vae(cfg, tmp_path / "full", progress=False, on_step=lambda s, r: full_losses.append(r["loss"]))

    def stop_after_3(step, record):
        if step == 3:  # the checkpoint of step 2 exists; step 3 is lost, as in a crash
            raise Interrupt

    with pytest.raises(Interrupt):
        T.train_vae(cfg, tmp_path / "cut", progress=False, on_step=stop_after_3)
    assert json.loads((tmp_path / "cut" / "checkpoint.json").read_text())["step"] == 2
    resumed_losses = []
    resumed = T.train_vae(cfg, tmp_path / "cut", resume=True, progress=False,
                          on_step=lambda s, r: resumed_losses.append(r["loss"]))
    assert resumed_losses == full_losses[2:]  # same batches, same noise, same optimizer state: same numbers
    history = json.loads((tmp_path / "cut" / "checkpoint.json").read_text())["history"]
    assert [h[1] for h in history] == full_losses
    for key, value in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


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
    code = T.main(parse(["--preset", "tiny", "--steps", "6", "--out", str(out), "--batch-frames", "8",
                         "--ckpt-every", "2", "--eval-clips", "0", "--quiet"]))
    assert code == 2
    err = capsys.readouterr().err
    assert "nan at step 3" in err and "step 2" in err and "--lr" in err
    state = json.loads((out / "checkpoint.json").read_text())
    assert state["step"] == 2 and all(h[1] == h[1] for h in state["history"])  # no NaN stored
    assert not (out / "vae.safetensors").exists()


def test_learning_rate_schedule():
    cfg = tiny_config(steps=100, warmup=10, lr=1e-3, min_lr=1e-5)
    assert T.learning_rate(0, cfg) == pytest.approx(1e-4)
    assert T.learning_rate(9, cfg) == pytest.approx(1e-3)
    assert T.learning_rate(55, cfg) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 0.5)))
    assert T.learning_rate(100, cfg) == pytest.approx(1e-5)


def test_the_shipped_toy_vae_reconstructs_held_out_clips():
    from vdlearn.data import ToyWorld
    from vdlearn.training.vae_eval import heldout_clips, psnr, reconstruct

    vae = load_toy_vae("toy32")
    metrics = vae.meta["metrics"]
    assert metrics["psnr_heldout_clean"] >= 30.0 and metrics["adherence_recon_joint"] >= 0.95
    assert vae.scale_factor == pytest.approx(metrics["scale_factor"])
    assert shipped_vae_path("toy32").stat().st_size < 10e6
    clips = heldout_clips(ToyWorld("toy32", seed=0), 8)["video"]
    assert psnr(reconstruct(vae, clips), clips).mean() >= 29.0  # measured again here, on a few clips


def test_the_shipped_temporal_decoder_flickers_less_on_noisy_latents():
    from vdlearn.data import ToyWorld
    from vdlearn.eval import flicker
    from vdlearn.training.vae_eval import heldout_clips

    per_frame, temporal = load_toy_vae("toy32"), load_toy_vae("toy32", temporal=True)
    assert temporal.is_temporal and temporal.scale_factor == per_frame.scale_factor
    for key, value in per_frame.encoder.state_dict().items():  # fine-tuned with the encoder frozen
        assert torch.equal(temporal.encoder.state_dict()[key], value)
    clips = heldout_clips(ToyWorld("toy32", seed=0), 8)["video"]
    with torch.no_grad():
        latents = per_frame.encode_latents(clips)
        noisy = latents + 0.2 * torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))
        f_per_frame = flicker(per_frame.decode_latents(noisy).clamp(-1, 1)).mean()
        f_temporal = flicker(temporal.decode_latents(noisy).clamp(-1, 1)).mean()
    assert f_temporal < f_per_frame
