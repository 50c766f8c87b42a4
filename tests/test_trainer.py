"""The training engine: exact resume, NaN handling, EMA, logs, and several processes."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from tiny_training import main as run  # noqa: E402

from vdlearn.io import load_checkpoint  # noqa: E402
from vdlearn.training.trainer import TrainerConfig, TrainingDiverged, learning_rate  # noqa: E402


def test_interrupted_and_resumed_run_gives_the_same_losses(tmp_path):
    full = run([str(tmp_path / "full"), "--steps", "30"])
    part = run([str(tmp_path / "split"), "--steps", "30", "--stop-at", "13"])
    assert part.step == 13 and len(part.history) == 13
    resumed = run([str(tmp_path / "split"), "--steps", "30", "--resume"])
    assert resumed.history == full.history  # bit-for-bit the same sequence of losses
    a = full.accelerator.unwrap_model(full.model).state_dict()
    b = resumed.accelerator.unwrap_model(resumed.model).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(full.ema.shadow[k], resumed.ema.shadow[k]) for k in a)
    rows = list(csv.DictReader((tmp_path / "split" / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(30))  # the log has no duplicated steps
    assert full.history[-1] < 0.5 * full.history[0]  # and it does learn


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"(?s)nan at step 6.*step 4"):
        run([str(tmp_path), "--steps", "10", "--nan-at", "6", "--ckpt-every", "4"])
    state, meta = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert meta["step"] == 4 and all(torch.isfinite(v).all() for v in state.values())


def test_resume_without_checkpoint_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run([str(tmp_path), "--resume"])


def test_learning_rate_schedule():
    cfg = TrainerConfig(steps=100, lr=1.0, warmup=10, min_lr_ratio=0.1)
    assert learning_rate(0, cfg) == pytest.approx(0.1) and learning_rate(9, cfg) == pytest.approx(1.0)
    assert learning_rate(100, cfg) == pytest.approx(0.1)
    assert learning_rate(55, cfg) == pytest.approx(0.55)


def launch_two_processes(out, port: int, *args: str, timeout: int = 300) -> None:
    """Run tests/scripts/tiny_training.py OUT ARGS under `accelerate launch` with two CPU (gloo) processes."""
    script = str(Path(__file__).parent / "scripts" / "tiny_training.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent.parent)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
           script, str(out), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path):
    launch_two_processes(tmp_path / "two", 29533, "--steps", "6")
    single = run([str(tmp_path / "one"), "--steps", "6"])
    two = torch.load(tmp_path / "two" / "result.pt", weights_only=True)
    assert two["history"] == pytest.approx(single.history, rel=1e-5, abs=1e-7)
    s1 = single.accelerator.unwrap_model(single.model).state_dict()
    for k, v in two["state"].items():
        assert torch.allclose(v, s1[k], atol=1e-6), k


@pytest.mark.slow
def test_two_processes_train_the_text_to_video_model_like_one(tmp_path):
    """The same check on the real task: text encoder + video U-Net under DDP (gloo), tiny preset."""
    launch_two_processes(tmp_path / "two", 29534, "--steps", "3", "--task", "t2v", timeout=600)
    single = run([str(tmp_path / "one"), "--steps", "3", "--task", "t2v"])
    two = torch.load(tmp_path / "two" / "result.pt", weights_only=True)
    assert len(two["history"]) == 3
    assert two["history"] == pytest.approx(single.history, rel=1e-4)
    s1 = single.accelerator.unwrap_model(single.model).state_dict()
    worst = max((v - s1[k]).abs().max().item() for k, v in two["state"].items())
    assert worst < 1e-5, worst
