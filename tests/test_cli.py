"""The vdlearn command line, run as a user would run it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def run(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "vdlearn", *args], check=False, capture_output=True, text=True,
                            timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"vdlearn {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.mark.parametrize("sub", [[], ["world"], ["judge"], ["train"], ["train", "judges"], ["train", "t2v"],
                                 ["train", "vae"], ["train", "denoiser"], ["sample"], ["eval"], ["ship"]])
def test_help_explains_every_command(sub):
    out = run(*sub, "--help").stdout
    assert "usage: vdlearn" in out
    if sub == ["judge"]:
        assert "--prompt" in out and "adherence" in out
    if sub == ["world"]:
        assert "--regime" in out and "heldout" in out
    if sub == ["sample"]:
        assert "--prompt" in out and "--guidance" in out
    if sub == ["train", "t2v"]:
        assert "--resume" in out and "--cond-drop" in out
    if sub in (["train", "vae"], ["train", "denoiser"], ["train", "judges"]):  # every trainer resumes exactly
        assert "--resume" in out


def test_world_then_judge_round_trip(tmp_path):
    out = run("world", "--n", "6", "--out", str(tmp_path), "--split", "test").stdout
    assert "wrote 6 files" in out
    records = json.loads((tmp_path / "captions.json").read_text())
    files = [str(tmp_path / r["file"]) for r in records]
    assert all(f.endswith(".gif") for f in files)
    report = json.loads(run("judge", *files, "--captions", str(tmp_path / "captions.json"), "--json").stdout)
    assert report["summary"]["adherence"]["n"] == 6
    assert report["summary"]["adherence"]["joint"] >= 5 / 6
    # the same clips judged against a wrong prompt mostly miss
    wrong = json.loads(run("judge", *files, "--prompt", "a white star moving up slowly", "--json").stdout)
    assert wrong["summary"]["adherence"]["joint"] <= 1 / 6


def test_judge_says_what_is_wrong_with_a_prompt(tmp_path):
    run("world", "--n", "1", "--out", str(tmp_path))
    f = next(tmp_path.glob("*.gif"))
    bad = run("judge", str(f), "--prompt", "a purple 3 moving left", check=False)
    assert bad.returncode != 0 and "vocabulary" in bad.stderr


@pytest.mark.slow
def test_train_then_sample_then_eval_a_tiny_text_to_video_model(tmp_path):
    out = tmp_path / "run"
    run("train", "t2v", "--preset", "tiny", "--steps", "3", "--batch-size", "2", "--cache-clips", "8",
        "--eval-n", "4", "--eval-steps", "2", "--out", str(out), "--quiet")
    meta = json.loads((out / "t2v.json").read_text())
    assert meta["command"].startswith("vdlearn train t2v --preset tiny --steps 3")
    assert meta["metrics"]["eval"]["train_combinations"]["adherence"]["n"] == 4
    ckpt = str(out / "t2v.safetensors")
    said = run("sample", "--checkpoint", ckpt, "--prompt", "a red 3 moving left quickly", "--prompt",
               "a blue circle moving up slowly", "--steps", "2", "--out", str(tmp_path / "x.gif")).stdout
    files = sorted(p.name for p in tmp_path.glob("x_*.gif"))
    assert len(files) == 2 and "the judges see" in said, (files, said)
    report = run("eval", "--checkpoint", ckpt, "--n", "4", "--steps", "2", "--no-references").stdout
    assert "train: generated" in report and "heldout: generated" in report
    # --temporal-decoder: the same latents through the video decoder, so the same prompts and other pictures
    frame, video = (json.loads(run("eval", "--checkpoint", ckpt, "--n", "4", "--steps", "2", "--no-references",
                                   "--json", *flag).stdout)["train_combinations"] for flag in ([], ["--temporal-decoder"]))
    assert frame["adherence"]["n"] == video["adherence"]["n"] == 4
    assert frame["temporal"]["flicker"] != video["temporal"]["flicker"]
    words = run("eval", "--checkpoint", ckpt, "--words", "--n", "4").stdout
    assert "direction" in words and "empty prompt" in words and "%" in words, words
    ladder = run("eval", "--checkpoint", ckpt, "--ladder", "--n", "4", "--steps", "5").stdout  # 999, 799, ..., 199
    assert "finished from 999" in ladder and "real" in ladder and "jerk" in ladder, ladder
    fps = json.loads(run("eval", "--checkpoint", ckpt, "--fps-response", "--n", "4", "--steps", "2", "--json").stdout)
    assert fps["fps"] == [4, 8, 16] and len(fps["model_px_per_frame"]) == len(fps["data_px_per_frame"]) == 3
    assert fps["data_slope"] < -0.5, fps  # real clips move fewer pixels per frame at a higher frame rate
    said = run("eval", "--checkpoint", ckpt, "--fps-response", "--n", "4", "--steps", "2").stdout
    assert "slope of log px/frame" in said and "data" in said, said
    bad = run("sample", "--checkpoint", ckpt, "--prompt", "a red 3 moving sideways", check=False)
    assert bad.returncode != 0 and "sideways" in bad.stderr and "vocabulary" in bad.stderr
    wrong = run("eval", "--checkpoint", str(out / "checkpoint.safetensors"), "--n", "2", check=False)
    assert wrong.returncode != 0 and "training state" in wrong.stderr

    # ship: half the bytes, the weights rounded to float16, measured again, the float32 figures kept
    half = tmp_path / "half.safetensors"
    said = run("ship", ckpt, str(half), "--n", "4", "--quiet").stdout
    assert "wrote" in said and "float32" in said
    from vdlearn.io import load_checkpoint

    full_w, _ = load_checkpoint(ckpt)
    half_w, half_meta = load_checkpoint(half)
    assert half_meta["stored_dtype"] == "float16" and half_meta["command"] == meta["command"]
    assert half_meta["ship"]["metrics_float32"]["eval"] == meta["metrics"]["eval"]
    assert half_meta["metrics"]["eval"]["train_combinations"]["adherence"]["n"] == 4
    assert all(torch.equal(half_w[k], v.half()) for k, v in full_w.items() if v.is_floating_point())
    assert half.stat().st_size < 0.6 * Path(ckpt).stat().st_size
    from vdlearn.pipelines.t2v import TextToVideo

    assert next(TextToVideo.load(half).parameters()).dtype == torch.float32
    same = run("ship", ckpt, ckpt, check=False)
    assert same.returncode == 2 and "another file" in same.stderr
