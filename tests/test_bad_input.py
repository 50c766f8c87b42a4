"""A catalogue of what a user can get wrong, and what vdlearn says (issue 14).

Every bad input is refused before any work starts, with one message (``vdlearn CMD: error: ...``)
and exit code 2; no run is ever silently wrong. Grouped by kind: arguments of the commands,
files, videos, the public API, and training runs (resume, atomic checkpoints, locks, divergence).
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from vdlearn.cli import main
from vdlearn.io import InputError, load_checkpoint, save_checkpoint
from vdlearn.training.trainer import Trainer, TrainerConfig, TrainingDiverged

PROMPT = "a red 3 moving left quickly"


def fails(capsys, *argv: str) -> str:
    """Run ``vdlearn ARGV`` in-process; it must exit with 2 and one message. Returns the message."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    return err


# ------------------------------------------------------------------ arguments of `vdlearn sample`
@pytest.mark.parametrize("args, words", [
    (["--prompt", ""], ["--prompt is empty"]),
    (["--prompt", "a red 3 moving sideways"], ["sideways", "vocabulary"]),
    (["--prompt", PROMPT, "--fps", "0"], ["--fps 0"]),
    (["--prompt", PROMPT, "--fps", "-8"], ["--fps -8"]),
    (["--prompt", PROMPT, "--fps", "1000"], ["--fps 1000", "50"]),
    (["--prompt", PROMPT, "--seed", str(2**63)], ["--seed", "2**63-1"]),
    (["--prompt", PROMPT, "--seed", "-1"], ["--seed -1"]),
    (["--prompt", PROMPT, "--n", "0"], ["--n 0"]),
    (["--prompt", PROMPT, "--steps", "0"], ["--steps 0"]),
    (["--prompt", PROMPT, "--guidance", "-2"], ["--guidance -2", ">= 0"]),
    (["--prompt", PROMPT, "--scale", "0"], ["--scale 0"]),
    (["--prompt", PROMPT, "--out", "clip.avi"], ["--out clip.avi", ".mp4", ".gif"]),
])
def test_sample_refuses_bad_arguments_before_loading_a_model(capsys, monkeypatch, args, words):
    monkeypatch.setattr("vdlearn.cli._load_t2v", lambda *a: pytest.fail("the model was loaded"))
    err = fails(capsys, "sample", *args)
    assert all(w in err for w in words), err


def test_eval_and_world_refuse_zero_counts(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("vdlearn.cli._load_t2v", lambda *a: pytest.fail("the model was loaded"))
    assert "--n 0" in fails(capsys, "eval", "--n", "0")
    assert "--seed -3" in fails(capsys, "eval", "--seed", "-3")
    assert "--n 0" in fails(capsys, "world", "--n", "0", "--out", str(tmp_path))
    assert "--start -1" in fails(capsys, "world", "--start", "-1", "--out", str(tmp_path))


def test_debug_shows_the_traceback(monkeypatch):
    with pytest.raises(InputError, match="--n 0"):
        main(["--debug", "sample", "--prompt", PROMPT, "--n", "0"])
    monkeypatch.setenv("VDLEARN_DEBUG", "1")
    with pytest.raises(InputError):
        main(["sample", "--prompt", PROMPT, "--n", "0"])


# ------------------------------------------------------------------ checkpoint files
def test_a_checkpoint_that_is_not_safetensors_is_refused_not_swapped(capsys, tmp_path):
    (tmp_path / "model.pt").write_bytes(b"pickle")
    (tmp_path / "model.safetensors").write_bytes(b"")  # the file beside it is never loaded instead
    err = fails(capsys, "sample", "--prompt", PROMPT, "--checkpoint", str(tmp_path / "model.pt"))
    assert "model.pt" in err and "not a .safetensors file" in err


def test_a_missing_checkpoint_is_named(capsys, tmp_path):
    err = fails(capsys, "sample", "--prompt", PROMPT, "--checkpoint", str(tmp_path / "none.safetensors"))
    assert "No --checkpoint at" in err and "none.safetensors" in err


def test_a_truncated_safetensors_is_named(capsys, tmp_path):
    save_checkpoint(tmp_path / "m.safetensors", {"w": torch.zeros(100)}, {"kind": "x"})
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(data[: len(data) // 2])
    err = fails(capsys, "eval", "--checkpoint", str(tmp_path / "m.safetensors"))
    assert "m.safetensors" in err and "truncated" in err


def test_a_corrupt_json_sidecar_is_named(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "old.safetensors"))  # a file without metadata inside
    (tmp_path / "old.json").write_text("{not json")
    with pytest.raises(InputError, match=r"old\.json is not valid json"):
        load_checkpoint(tmp_path / "old.safetensors")


# ------------------------------------------------------------------ videos given to `vdlearn judge`
def test_judge_refuses_an_empty_video_file(capsys, tmp_path):
    (tmp_path / "clip.gif").write_bytes(b"")
    assert "clip.gif is empty" in fails(capsys, "judge", str(tmp_path / "clip.gif"), "--prompt", PROMPT)


def test_judge_refuses_a_corrupt_video_file(capsys, tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"not a video at all")
    err = fails(capsys, "judge", str(tmp_path / "clip.mp4"), "--prompt", PROMPT)
    assert "Cannot read the video file" in err and "clip.mp4" in err


def test_judge_refuses_a_corrupt_captions_file(capsys, tmp_path):
    np.save(tmp_path / "clip.npy", np.zeros((8, 32, 32, 3), np.float32))
    (tmp_path / "captions.json").write_text("[{")
    err = fails(capsys, "judge", str(tmp_path / "clip.npy"), "--captions", str(tmp_path / "captions.json"))
    assert "captions.json is not valid json" in err


def test_judge_refuses_a_video_of_the_wrong_size(capsys, tmp_path):
    np.save(tmp_path / "wide.npy", np.zeros((8, 20, 48, 3), np.float32))  # would be squashed to 32x32
    err = fails(capsys, "judge", str(tmp_path / "wide.npy"), "--prompt", PROMPT)
    assert "48x20" in err and "distort" in err


def test_judge_refuses_videos_in_0_255(capsys, tmp_path):
    np.save(tmp_path / "bytes.npy", np.full((8, 32, 32, 3), 200, np.uint8))
    err = fails(capsys, "judge", str(tmp_path / "bytes.npy"), "--prompt", PROMPT)
    assert "[-1, 1]" in err and "127.5" in err


def test_judge_refuses_a_bad_fps_and_prompt(capsys, tmp_path):
    np.save(tmp_path / "clip.npy", np.zeros((8, 32, 32, 3), np.float32))
    assert "--fps 0" in fails(capsys, "judge", str(tmp_path / "clip.npy"), "--prompt", PROMPT, "--fps", "0")
    assert "--prompt is empty" in fails(capsys, "judge", str(tmp_path / "clip.npy"), "--prompt", " ")
    assert "No prompt for" in fails(capsys, "judge", str(tmp_path / "clip.npy"))


# ------------------------------------------------------------------ the public API
def test_the_judge_api_refuses_values_outside_minus_one_one():
    from vdlearn.eval.judge import Judge

    judge = Judge.load()
    with pytest.raises(InputError, match="Scale them first"):
        judge.adherence(torch.full((1, 3, 8, 32, 32), 255.0), [PROMPT])
    with pytest.raises(InputError, match="NaN"):
        judge.quality(torch.full((1, 3, 8, 32, 32), float("nan")))


def test_the_judge_api_refuses_frames_that_are_not_square():
    """A 32 x 64 clip would be squashed to 32 x 32 and its speed read at the wrong scale."""
    from vdlearn.eval.judge import Judge

    judge = Judge.load()
    with pytest.raises(InputError, match="32 x 64"):
        judge.describe(torch.zeros(1, 3, 8, 32, 64))
    assert len(judge.describe(torch.zeros(1, 3, 8, 64, 64))) == 1  # a 64 x 64 world clip is judged


def test_generate_refuses_bad_steps_seeds_and_fps():
    from vdlearn.pipelines.t2v import TextToVideo

    model = TextToVideo.from_preset("tiny")
    with pytest.raises(InputError, match="num_steps"):
        model.generate([PROMPT], num_steps=0)
    with pytest.raises(InputError, match="seed"):
        model.generate([PROMPT], seed=2**63, num_steps=1)
    with pytest.raises(InputError, match="fps"):
        model.generate([PROMPT], fps=0, num_steps=1)
    with pytest.raises(ValueError, match="vocabulary"):
        model.generate(["a red 3 moving sideways"], num_steps=1)


# ------------------------------------------------------------------ training runs
class Line:
    """The smallest task: fit y = 2x."""

    def batch(self, step, generator):
        x = torch.randn(8, 1, generator=generator)
        return {"x": x, "y": 2 * x}

    def loss(self, model, batch):
        return ((model(batch["x"]) - batch["y"]) ** 2).mean()


def line_trainer(out, lr=1e-2, steps=6, task=None, **kwargs) -> Trainer:
    torch.manual_seed(0)
    cfg = TrainerConfig(steps=steps, lr=lr, warmup=0, ckpt_every=kwargs.pop("ckpt_every", 2), log_every=1,
                        ema_decay=0.9, device="cpu", mixed_precision="no", grad_clip=kwargs.pop("grad_clip", 1.0))
    return Trainer(torch.nn.Linear(1, 1), task or Line(), cfg, out, progress=False, **kwargs)


def test_bad_loop_settings_are_refused_before_training(tmp_path):
    with pytest.raises(InputError, match=r"--steps 0.*--lr -1"):
        line_trainer(tmp_path, lr=-1.0, steps=0)


@pytest.mark.parametrize("args, words", [
    (["--steps", "0"], ["--steps 0"]),
    (["--high-noise-share", "1.5"], ["--high-noise-share", "[0, 1]"]),
    (["--images-per-clip", "-1"], ["--images-per-clip", "0 or more"]),
    (["--image-timesteps", "each"], ["--image-timesteps", "'clip'", "'own'"]),
    (["--image-timesteps", "own", "--image-t-from", "900", "--image-t-to", "200"], ["--image-t-from", "0 <= from < to"]),
    (["--images-per-clip", "2", "--image-t-from", "200"], ["--image-timesteps own"]),
    (["--loss-norm-bins", "2000"], ["--loss-norm-bins", "up to 1000"]),
    (["--loss-norm-bins", "20", "--min-snr-gamma", "5"], ["--loss-norm-bins", "--min-snr-gamma", "one of them"]),
])
def test_t2v_training_refuses_bad_settings_before_the_latent_cache(capsys, tmp_path, args, words):
    err = fails(capsys, "train", "t2v", "--preset", "tiny", *args, "--out", str(tmp_path), "--quiet")
    assert all(w in err for w in words), err
    assert not (tmp_path / "latent_cache.safetensors").exists()


def test_resume_refuses_changed_settings_and_lists_them(tmp_path):
    line_trainer(tmp_path).fit(stop_at=2)
    with pytest.raises(InputError, match=r"(?s)other settings.*lr: 0\.01 -> 0\.001.*--allow-changed-settings"):
        line_trainer(tmp_path, lr=1e-3).fit(resume=True)
    line_trainer(tmp_path, steps=8).fit(resume=True)  # a longer run is the same run: allowed


def test_an_allowed_change_of_settings_is_recorded(tmp_path):
    line_trainer(tmp_path).fit(stop_at=2)
    trainer = line_trainer(tmp_path, lr=1e-3, allow_changed_settings=True)
    trainer.fit(resume=True)
    _, meta = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert meta["settings_history"][0]["step"] == 2
    assert meta["settings_history"][0]["changed"]["lr"] == [0.01, 0.001]
    assert "settings changed on --resume at step 2" in trainer.honest_command("vdlearn train x")


def test_weights_and_metadata_are_one_atomic_file(tmp_path, monkeypatch):
    """A kill between writing the weights and writing the json cannot make a resume inexact."""
    from vdlearn import io

    full = line_trainer(tmp_path / "full").fit()
    line_trainer(tmp_path / "cut").fit(stop_at=2)
    stale = (tmp_path / "cut" / "checkpoint.json").read_text()
    real = io._atomic_write

    def killed_before_the_json(path, write):
        if path.suffix == ".json":
            raise KeyboardInterrupt  # the process dies here: new weights, old json
        real(path, write)

    monkeypatch.setattr(io, "_atomic_write", killed_before_the_json)
    with pytest.raises(KeyboardInterrupt):
        line_trainer(tmp_path / "cut").fit(resume=True, stop_at=4)
    monkeypatch.setattr(io, "_atomic_write", real)
    assert (tmp_path / "cut" / "checkpoint.json").read_text() == stale  # the sidecar says step 2 ...
    _, meta = load_checkpoint(tmp_path / "cut" / "checkpoint.safetensors")
    assert meta["step"] == 4  # ... but the metadata read is the one written with the weights
    assert line_trainer(tmp_path / "cut").fit(resume=True) == full


def test_a_folder_in_use_by_a_live_run_is_refused(tmp_path):
    (tmp_path / ".lock").write_text(f"1 {os.uname().nodename}\n")  # pid 1 is always alive
    with pytest.raises(InputError, match=r"in use by another run \(pid 1"):
        line_trainer(tmp_path).fit()


def test_a_stale_lock_is_taken_over_with_a_note(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    (tmp_path / ".lock").write_text(f"{dead.stdout.strip()} {os.uname().nodename}\n")
    line_trainer(tmp_path, steps=2).fit()
    assert "taking over" in capsys.readouterr().err and not (tmp_path / ".lock").exists()


class InfiniteGradient(Line):
    """Finite loss, infinite gradient (sqrt at 0): the step leaves NaN weights behind."""

    def loss(self, model, batch):
        return model.weight.abs().sqrt().sum() * 0 + model.bias.sub(model.bias.detach()).abs().sqrt().sum()


def test_a_checkpoint_with_non_finite_weights_is_never_written(tmp_path):
    with pytest.raises(TrainingDiverged, match="weights became nan"):
        line_trainer(tmp_path, task=InfiniteGradient(), grad_clip=0.0, ckpt_every=1).fit()
    assert not (tmp_path / "checkpoint.safetensors").exists()


def test_divergence_exits_with_2_and_a_resume_command_that_works(tmp_path, capsys, monkeypatch):
    import vdlearn.training.vae as T

    real_loss = T.vae_loss

    def poisoned(*args, **kwargs):
        terms = real_loss(*args, **kwargs)
        if poisoned.calls >= 3:
            terms["loss"] = terms["loss"] * float("nan")
        poisoned.calls += 1
        return terms

    poisoned.calls = 0
    monkeypatch.setattr(T, "vae_loss", poisoned)
    out = str(tmp_path / "vae")
    argv = ["train", "vae", "--preset", "tiny", "--steps", "4", "--out", out, "--batch-frames", "8",
            "--ckpt-every", "2", "--eval-clips", "0", "--quiet"]
    err = fails(capsys, *argv)
    assert "nan at step 3" in err and "last good checkpoint" in err
    command = err.split("For example: ")[1].split("\n")[0]
    assert "--resume --allow-changed-settings --lr" in command
    monkeypatch.setattr(T, "vae_loss", real_loss)
    assert main(command.split()[1:]) == 0  # the advice works
    _, meta = load_checkpoint(tmp_path / "vae" / "checkpoint.safetensors")
    assert meta["step"] == 4 and "lr" in meta["settings_history"][0]["changed"]
