"""The one training loop: exact resume, the NaN stop and several processes, for every task that trains through it."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from tiny_training import TASKS
from tiny_training import main as run

from vdlearn.io import load_checkpoint
from vdlearn.training.trainer import TrainerConfig, TrainingDiverged, learning_rate

# (steps, interrupted after): the regression MLP runs long enough to show that it learns
LENGTHS = {"regression": (30, 13)}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("task", TASKS)
def test_interrupted_and_resumed_run_gives_the_same_losses(tmp_path, task):
    steps, cut = LENGTHS.get(task, (6, 3))
    common = ["--task", task, "--steps", str(steps), "--ckpt-every", "2"]
    full = run([str(tmp_path / "full"), *common])
    part = run([str(tmp_path / "split"), *common, "--stop-at", str(cut)])
    assert part.step == cut and len(part.history) == cut
    resumed = run([str(tmp_path / "split"), *common, "--resume"])
    assert resumed.history == full.history  # bit-for-bit the same sequence of losses
    unwrap = full.accelerator.unwrap_model
    assert same_weights(unwrap(full.model).state_dict(), unwrap(resumed.model).state_dict())
    if full.ema is not None:
        assert same_weights(full.ema.shadow, resumed.ema.shadow)
    rows = list(csv.DictReader((tmp_path / "split" / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(steps))  # the log has no duplicated steps
    if task == "regression":
        assert full.history[-1] < 0.5 * full.history[0]  # and it does learn


@pytest.mark.parametrize("task", TASKS)
def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, task):
    with pytest.raises(TrainingDiverged, match=r"(?s)nan at step 3.*step 2.*--lr"):
        run([str(tmp_path), "--task", task, "--steps", "6", "--nan-at", "3", "--ckpt-every", "2"])
    state, meta = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert meta["step"] == 2 and len(meta["history"]) == 2
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_resume_without_checkpoint_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run([str(tmp_path), "--resume"])


def test_a_fresh_run_in_an_old_folder_starts_a_fresh_log(tmp_path):
    run([str(tmp_path), "--steps", "4"])
    run([str(tmp_path), "--steps", "3"])
    assert [int(r["step"]) for r in csv.DictReader((tmp_path / "log.csv").open())] == [0, 1, 2]


def test_learning_rate_schedule():
    cfg = TrainerConfig(steps=100, lr=1.0, warmup=10, min_lr_ratio=0.1)
    assert learning_rate(0, cfg) == pytest.approx(0.1) and learning_rate(9, cfg) == pytest.approx(1.0)
    assert learning_rate(100, cfg) == pytest.approx(0.1)
    assert learning_rate(55, cfg) == pytest.approx(0.55)


def test_kill_9_mid_run_then_resume_gives_the_same_losses(tmp_path):
    """SIGKILL at an arbitrary moment (no clean shutdown, a stale lock left behind), then --resume."""
    steps, common = 60, ["--task", "regression", "--steps", "60", "--ckpt-every", "3"]
    full = run([str(tmp_path / "full"), *common])
    out = tmp_path / "killed"
    script = str(Path(__file__).parent / "scripts" / "tiny_training.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent.parent)}
    proc = subprocess.Popen([sys.executable, script, str(out), *common, "--step-sleep", "0.1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = out / "log.csv"
    # wait (however slow the machine) until the run is well past its first checkpoints, then kill -9
    while proc.poll() is None and not (log.exists() and len(log.read_text().splitlines()) > 20):
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(log.read_text().splitlines()) - 1
    assert 20 <= done < steps  # killed mid-run
    resumed = run([str(out), *common, "--resume"])
    assert resumed.history == full.history  # bit-for-bit the same sequence of losses
    unwrap = full.accelerator.unwrap_model
    assert same_weights(unwrap(full.model).state_dict(), unwrap(resumed.model).state_dict())
    assert same_weights(full.ema.shadow, resumed.ema.shadow)
    rows = list(csv.DictReader(log.open()))
    assert [int(r["step"]) for r in rows] == list(range(steps))  # no step logged twice after the kill


def launch_two_processes(out, port: int, *args: str, timeout: int = 600) -> None:
    """Run tests/scripts/tiny_training.py OUT ARGS as two CPU processes (DDP over gloo).

    Started with ``torch.distributed.run`` (torchrun): ``accelerate launch --cpu`` starts a
    single process whatever ``--num_processes`` says, which would make the comparison vacuous
    (the script records the number of processes it saw, and the test checks it).
    """
    script = str(Path(__file__).parent / "scripts" / "tiny_training.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent.parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           script, str(out), *args]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    """Every task, 3 steps, trained once by two processes that each take half of every global batch."""
    out = tmp_path_factory.mktemp("two_processes")
    launch_two_processes(out, 29533, "--task", "all", "--steps", "3")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_two_processes_train_like_one_with_the_same_global_batch(two_process_runs, tmp_path, task):
    single = run([str(tmp_path), "--task", task, "--steps", "3"])
    two = torch.load(two_process_runs / task / "result.pt", weights_only=True)
    assert two["processes"] == 2 and len(two["history"]) == 3
    assert two["history"] == pytest.approx(single.history, rel=1e-4)
    s1 = single.accelerator.unwrap_model(single.model).state_dict()
    assert two["state"].keys() == s1.keys()
    worst = max((v.float() - s1[k].float()).abs().max().item() for k, v in two["state"].items())
    assert worst < 1e-5, worst
