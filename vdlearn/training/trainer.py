r"""The training engine: the one loop every model of the course trains through.

The trainer knows nothing about videos. A *task* (see :class:`TrainingTask`) says how
to build the global batch of step ``s`` and how to compute the loss on a shard of it;
the trainer does the rest. The tasks today: the toy VAE and its temporal decoder
(:mod:`vdlearn.training.vae`), the judges' two networks (:mod:`vdlearn.eval.train`),
notebook 03's image denoiser (:mod:`vdlearn.training.image_denoiser`) and the
text-to-video model (:mod:`vdlearn.training.t2v`); a new model adds a task, not a loop.
What the loop does, once for all of them:

* devices through HF accelerate: the same code runs on a CPU, one GPU, and under
  ``accelerate launch`` on several GPUs (each process takes its shard of the global
  batch; gradients are averaged); bf16 autocast on GPUs that support it;
* AdamW with linear warm-up and cosine decay, gradient clipping, optional gradient
  checkpointing, an exponential moving average (EMA) of the weights;
* safetensors checkpoints with a json sidecar, written atomically, and **exact
  resume**: all randomness of step ``s`` comes from a generator seeded by
  ``(seed, s)``, so a run interrupted and resumed produces the very same losses as an
  uninterrupted one (dropout included: the global generator is re-seeded every step);
* a CSV log (and TensorBoard when it is installed), a tqdm progress bar, sample
  videos at intervals;
* a NaN or inf loss stops training with :class:`TrainingDiverged`; the last good
  checkpoint (finite loss *and* finite weights) is kept;
* runs that cannot be mixed: ``--resume`` refuses a checkpoint written with other
  settings (listing them) unless ``allow_changed_settings``, which records the change in
  the checkpoint's ``settings_history``; the weights and their json are one atomic file
  (:func:`vdlearn.io.save_checkpoint`); a live run's folder is locked (``OUT/.lock``).

Why the randomness lives in the task's ``batch`` and not in ``loss``: the noise and
timesteps of the *global* batch are drawn once and then sharded, so two processes
with half the batch each see exactly what one process with the whole batch sees (the
multi-process test relies on it). For the same reason a loss must be a mean over
samples whose parts do not depend on the rest of the shard.

The loop is :meth:`Trainer.fit`, in the spirit of nanoGPT's ``train.py``. Taught in
notebook 05_text_to_video (and used from notebooks 02 and 03).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch
from tqdm.auto import tqdm

from vdlearn.data.rng import integer_seed
from vdlearn.io import (
    InputError,
    load_checkpoint,
    load_state_dict_checked,
    lock_folder,
    save_checkpoint,
    to_jsonable,
    unlock_folder,
)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint.

    The one divergence error of the course: every task trains through :class:`Trainer`.
    ``step``, ``lr`` (the peak learning rate) and ``checkpoint`` (the last good one, or None)
    let the command line print the exact command that resumes with a lower rate.
    """

    def __init__(self, message: str, step: int = 0, lr: float = 0.0, checkpoint: Path | None = None):
        super().__init__(message)
        self.step, self.lr, self.checkpoint = step, lr, checkpoint


#: Settings a resumed run may change freely: the run's length and its bookkeeping, not its recipe.
FREE_SETTINGS = ("steps", "ckpt_every", "log_every", "sample_every", "device", "eval_clips", "eval_n", "eval_steps",
                 "eval_every", "eval_every_n", "target")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def changed_settings(saved: dict, now: dict) -> dict[str, list]:
    """``{setting: [old, new]}`` for every setting of ``now`` that differs from ``saved`` (nested dicts
    are compared leaf by leaf; a setting is named by its last part, so the same change seen in two
    places is listed once). :data:`FREE_SETTINGS` are not compared."""
    a, b = _flatten(json.loads(json.dumps(to_jsonable(saved)))), _flatten(json.loads(json.dumps(to_jsonable(now))))
    changes: dict[str, list] = {}
    for key in sorted(set(a) | set(b), key=lambda k: (k.count("."), k)):
        name = key.rsplit(".", 1)[-1]
        if name in FREE_SETTINGS or a.get(key) == b.get(key) or changes.get(name) == [a.get(key), b.get(key)]:
            continue
        changes[name if name not in changes else key] = [a.get(key), b.get(key)]
    return changes


class TrainingTask(Protocol):
    """What the trainer needs from a task."""

    def batch(self, step: int, generator: torch.Generator) -> dict:
        """The *global* batch of ``step``: tensors and lists with the batch as first axis.
        Draw every random number (noise, timesteps, dropout masks) here, from ``generator``."""

    def loss(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
        """The scalar loss on a shard of the batch (deterministic given the batch)."""


@dataclass
class TrainerConfig:
    """Optimisation and bookkeeping of one training run."""

    steps: int = 1000  # total optimisation steps (a resumed run continues up to this number)
    lr: float = 2e-4  # peak learning rate
    min_lr_ratio: float = 0.1  # final learning rate as a fraction of the peak (cosine decay)
    warmup: int = 100  # linear warm-up steps
    weight_decay: float = 0.0  # AdamW weight decay
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    grad_clip: float = 1.0  # clip the global gradient norm (0: off)
    ema_decay: float = 0.999  # EMA of the weights (0: no EMA)
    mixed_precision: str = "auto"  # "auto" (bf16 on GPUs that support it), "bf16", "fp16" or "no"
    gradient_checkpointing: bool = False  # trade compute for memory (the model must support it)
    ckpt_every: int = 500  # write OUT/checkpoint.safetensors every this many steps (and at the end)
    log_every: int = 10  # append a row to OUT/log.csv every this many steps
    sample_every: int = 0  # call the task's sample() every this many steps (0: never)
    seed: int = 0  # seed of all randomness in the run
    device: str = "auto"  # "auto", "cpu", "cuda" or "mps" (multi-GPU: use accelerate launch)


def check_trainer_config(cfg: TrainerConfig) -> TrainerConfig:
    """Refuse settings the loop cannot run (an :class:`~vdlearn.io.InputError` naming the flag) before any work."""
    problems = [
        f"--steps {cfg.steps}: give at least 1" if cfg.steps < 1 else "",
        f"--lr {cfg.lr}: give a positive learning rate" if not (math.isfinite(cfg.lr) and cfg.lr > 0) else "",
        f"--warmup {cfg.warmup}: give 0 or more steps" if cfg.warmup < 0 else "",
        f"--grad-clip {cfg.grad_clip}: give 0 (off) or a positive norm" if not cfg.grad_clip >= 0 else "",
        f"--ckpt-every {cfg.ckpt_every}: give at least 1" if cfg.ckpt_every < 1 else "",
        f"--log-every {cfg.log_every}: give at least 1" if cfg.log_every < 1 else "",
        f"--sample-every {cfg.sample_every}: give 0 (never) or more" if cfg.sample_every < 0 else "",
        f"--ema-decay {cfg.ema_decay}: give a value in [0, 1)" if not 0 <= cfg.ema_decay < 1 else "",
        f"--mixed-precision {cfg.mixed_precision!r}: give auto, bf16, fp16 or no"
        if cfg.mixed_precision not in ("auto", "bf16", "fp16", "no") else "",
        f"--device {cfg.device!r}: give auto, cpu, cuda or mps"
        if cfg.device.split(":")[0] not in ("auto", "cpu", "cuda", "mps") else "",
    ]
    problems = [p for p in problems if p]
    if problems:
        raise InputError("Cannot train with these settings: " + "; ".join(problems) + ".")
    return cfg


def learning_rate(step: int, cfg: TrainerConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * min_lr_ratio``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def add_run_arguments(parser: argparse.ArgumentParser, model_file: str = "the model") -> None:
    """``--out``, ``--resume`` and ``--allow-changed-settings``: where a run lives and how it continues."""
    parser.add_argument("--out", required=True, help=f"output folder: checkpoint.safetensors, log.csv, {model_file}")
    parser.add_argument("--resume", action="store_true", help="continue exactly from OUT/checkpoint.safetensors")
    parser.add_argument("--allow-changed-settings", action="store_true",
                        help="with --resume: continue although settings differ from the checkpoint's (recorded)")


def add_loop_arguments(parser: argparse.ArgumentParser, defaults, lr_help: str = "peak learning rate") -> None:
    """The flags every ``vdlearn train`` command shares: those the loop itself reads.

    Output folder, ``--resume``, length, learning rate, warm-up, clipping, seed, checkpoint
    and log periods, device, progress bar; the defaults come from the task's config dataclass
    ``defaults`` (which has fields of these names).
    """
    add_run_arguments(parser)
    parser.add_argument("--steps", type=int, default=defaults.steps,
                        help="optimisation steps (a resumed run continues up to this number)")
    parser.add_argument("--lr", type=float, default=defaults.lr, help=lr_help)
    parser.add_argument("--warmup", type=int, default=defaults.warmup, help="linear warm-up steps")
    parser.add_argument("--grad-clip", type=float, default=defaults.grad_clip, help="gradient-norm clip (0: off)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of initialisation and every random draw")
    parser.add_argument("--ckpt-every", type=int, default=defaults.ckpt_every, help="checkpoint period in steps")
    parser.add_argument("--log-every", type=int, default=defaults.log_every, help="OUT/log.csv period in steps")
    parser.add_argument("--device", default=defaults.device, help="auto, cpu, cuda, mps")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


class EMA:
    r"""Exponential moving average of parameters: :math:`\bar\theta \leftarrow d\,\bar\theta + (1-d)\,\theta`.

    The decay ramps up as :math:`\min(d, (1+s)/(10+s))` so early, noisy weights are
    forgotten quickly (the warm-up of LDM's ``LitEma``; guided-diffusion keeps the rate fixed).
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        state = model.state_dict()
        floats = [k for k, v in state.items() if v.dtype.is_floating_point]
        # d * shadow + (1 - d) * weight, for every tensor in one call: shadow.lerp_(weight, 1 - d)
        torch._foreach_lerp_([self.shadow[k] for k in floats], [state[k].detach().float() for k in floats], 1 - d)
        for k, v in state.items():
            if not v.dtype.is_floating_point:
                self.shadow[k].copy_(v)

    def copy_to(self, model: torch.nn.Module) -> torch.nn.Module:
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()})
        return model


def append_csv_row(path: Path, row: dict) -> None:
    """Append ``row`` to the CSV file ``path``, writing the header first if the file is new."""
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _shard(batch: dict, rank: int, world: int) -> dict:
    """Rank ``rank``'s equal slice of every batched entry."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, (torch.Tensor, list, tuple)) and len(v) > 0:
            n = len(v)
            if n % world:
                raise ValueError(f"The global batch ({n} items in {k!r}) must divide by the number of processes ({world}).")
            per = n // world
            out[k] = v[rank * per : (rank + 1) * per]
        else:
            out[k] = v
    return out


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in state["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{name}"] = value
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for key, value in meta.get("scalars", {}).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


class Trainer:
    """Train ``model`` on ``task``; see the module docstring. ``fit()`` returns the loss history."""

    def __init__(
        self, model: torch.nn.Module, task: TrainingTask, config: TrainerConfig, out_dir: str | Path,
        sample_fn: Callable[[torch.nn.Module, int], dict] | None = None, progress: bool = True,
        run_info: dict | None = None, lr_scales: dict[str, float] | None = None, name: str = "training",
        allow_changed_settings: bool = False,
    ):
        from accelerate import Accelerator

        self.config = check_trainer_config(config)
        self.task = task
        self.out = Path(out_dir)
        self.sample_fn = sample_fn
        self.progress = progress
        self.name = name  # the progress bar's label
        self.run_info = dict(run_info or {})
        self.allow_changed_settings = allow_changed_settings  # --resume may continue with other settings
        self.settings_history: list[dict] = []  # the changes of settings of every resume that allowed them
        mp = config.mixed_precision
        if mp == "auto":
            mp = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
        cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
        self.accelerator = Accelerator(mixed_precision=mp, cpu=cpu)
        if config.gradient_checkpointing:
            if not hasattr(model, "set_gradient_checkpointing"):
                raise ValueError(f"{type(model).__name__} has no set_gradient_checkpointing(); turn the option off.")
            model.set_gradient_checkpointing(True)
        self.raw_model = model
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("The model has no trainable parameters (all requires_grad=False).")
        # ``lr_scales``: parameter name -> learning-rate multiplier (e.g. modules new to a fine-tuned model)
        lr_scales = lr_scales or {}
        unknown = sorted(set(lr_scales) - {n for n, _ in named})
        if unknown:
            raise ValueError(f"lr_scales names parameters the model does not train: {unknown[:5]}")
        groups: dict[float, list] = {}
        for n, p in named:
            groups.setdefault(float(lr_scales.get(n, 1.0)), []).append(p)
        params = [{"params": ps, "lr_scale": scale} for scale, ps in groups.items()]
        # the fused kernel (one pass over every tensor) where the device has one: same update, fewer launches;
        # elsewhere (None) PyTorch's default implementation
        fused = True if self.accelerator.device.type in ("cpu", "cuda") else None
        opt = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay,
                                fused=fused)
        self.model, self.optimizer = self.accelerator.prepare(model, opt)
        self.ema = EMA(model, config.ema_decay) if config.ema_decay > 0 else None
        self.step = 0
        self.history: list[float] = []
        self.seconds = 0.0  # training time so far, over every resumed part of the run
        self._last_saved: int | None = None
        self._tb = None  # a TensorBoard writer while fit() runs, when tensorboard is installed

    # ------------------------------------------------------------- checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.safetensors"

    def save(self) -> Path | None:
        """Write the full training state (main process only); never weights that are not finite."""
        self.accelerator.wait_for_everyone()
        model = self.accelerator.unwrap_model(self.model)
        weights = list(model.state_dict().values()) + (list(self.ema.shadow.values()) if self.ema else [])
        bad = next((float(v.float().sum()) for v in weights
                    if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
        if bad is not None:  # a finite loss can still leave inf/NaN weights behind (an inf gradient)
            raise self._diverged(bad, self.step - 1, learning_rate(self.step - 1, self.config), what="weights")
        self._last_saved = self.step
        if not self.accelerator.is_main_process:
            return None
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.shadow.items()})
        task_state = self.task.state_dict() if hasattr(self.task, "state_dict") else {}
        tensors.update({f"task.{k}": v for k, v in task_state.items()})  # e.g. a loss weighting's running means
        opt_tensors, opt_meta = _flatten_optimizer(self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer)
        tensors.update(opt_tensors)
        meta = {"kind": "training_state", "step": self.step, "config": asdict(self.config), "optimizer": opt_meta,
                "history": self.history, "train_seconds": round(self.seconds, 2),
                "settings_history": self.settings_history, **self.run_info}
        return save_checkpoint(self.checkpoint_path, tensors, meta)

    def load(self, path: str | Path | None = None) -> None:
        """Restore a training state written by :meth:`save`, after checking it was written with these settings."""
        path = Path(path or self.checkpoint_path)
        if self.accelerator.is_main_process and path.parent == self.out:
            lock_folder(self.out)
        tensors, meta = load_checkpoint(path)
        if meta.get("kind") != "training_state":
            raise InputError(f"{path} is not a vdlearn training state (no 'kind: training_state').")
        self._check_settings(path, meta)
        model = self.accelerator.unwrap_model(self.model)
        device = next(model.parameters()).device
        load_state_dict_checked(model, {k[6:]: v.to(device) for k, v in tensors.items() if k.startswith("model.")},
                                "training checkpoint")
        if self.ema is not None:
            self.ema.shadow = {k[4:]: v.to(device) for k, v in tensors.items() if k.startswith("ema.")}
        task_state = {k[5:]: v for k, v in tensors.items() if k.startswith("task.")}
        if task_state or hasattr(self.task, "load_state_dict"):
            if not hasattr(self.task, "load_state_dict"):
                raise InputError(f"{path} holds a task state ({sorted(task_state)[:3]}) this task cannot take.")
            if task_state:
                self.task.load_state_dict(task_state)
        opt = self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer
        _restore_optimizer(opt, {k: v.to(device) for k, v in tensors.items() if k.startswith("optim.")}, meta["optimizer"])
        self.step = int(meta["step"])
        self.history = list(meta["history"])
        self.seconds = float(meta.get("train_seconds", 0.0))
        self._last_saved = self.step
        self.settings_history = list(meta.get("settings_history", [])) + self.settings_history

    def _check_settings(self, path: Path, meta: dict) -> None:
        """Refuse to continue a checkpoint with other settings, unless allowed (then the change is recorded)."""
        keys = ["config", *self.run_info]
        changes = changed_settings({k: meta.get(k) for k in keys},
                                   {"config": asdict(self.config), **self.run_info})
        if not changes:
            return
        listed = "\n".join(f"  {name}: {old} -> {new}" for name, (old, new) in changes.items())
        if not self.allow_changed_settings:
            raise InputError(
                f"--resume: {path} was written with other settings than this run's ({len(changes)} differ, "
                f"checkpoint -> now):\n{listed}\nUse the checkpoint's settings, start a fresh run in another --out, "
                f"or pass --allow-changed-settings to continue with the new ones (the change is recorded in the "
                f"checkpoint's settings_history).")
        import sys

        self.settings_history = [{"step": int(meta["step"]), "changed": changes,
                                  "command": " ".join(["vdlearn", *sys.argv[1:]])}]
        print(f"--resume --allow-changed-settings: continuing from step {meta['step']} with changed settings:\n"
              f"{listed}", flush=True)

    def honest_command(self, command: str) -> str:
        """``command`` (the run's reproduce command), noting the settings that changed on a resume."""
        if not self.settings_history:
            return command
        steps = ", ".join(str(h["step"]) for h in self.settings_history)
        return f"{command}  # settings changed on --resume at step {steps}: see settings_history"

    def ema_model(self) -> torch.nn.Module:
        """A copy of the model holding the EMA weights (the model itself if there is no EMA)."""
        model = self.accelerator.unwrap_model(self.model)
        return self.ema.copy_to(copy.deepcopy(model)) if self.ema is not None else model

    # ---------------------------------------------------------------- logging
    def _log_row(self, row: dict) -> None:
        if not self.accelerator.is_main_process:
            return
        append_csv_row(self.out / "log.csv", row)
        if self._tb is not None:
            for k, v in row.items():
                if k != "step":
                    self._tb.add_scalar(k, v, row["step"])

    def _truncate_log(self) -> None:
        path = self.out / "log.csv"
        if not path.exists() or not self.accelerator.is_main_process:
            return
        rows = list(csv.DictReader(path.open()))
        keep = [r for r in rows if int(r["step"]) < self.step]
        with path.open("w", newline="") as f:
            if rows:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(keep)

    # ------------------------------------------------------------------- loop
    def fit(self, resume: bool = False, stop_at: int | None = None) -> list[float]:
        """Train until ``config.steps`` (or ``stop_at``, to simulate an interruption); returns the loss history."""
        cfg, acc = self.config, self.accelerator
        self._open(resume)
        end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
        rank, world = acc.process_index, acc.num_processes
        self.model.train()
        t0, seconds0 = time.time(), self.seconds
        bar = tqdm(total=cfg.steps, initial=self.step, desc=self.name,
                   disable=not (self.progress and acc.is_main_process))
        try:
            while self.step < end:
                step = self.step
                # every random number of step s comes from (seed, s): a resumed run draws what an unbroken one drew
                gen = torch.Generator().manual_seed(integer_seed(cfg.seed, step, stream=4242))
                torch.manual_seed(integer_seed(cfg.seed * 1000 + rank, step, stream=4243))  # dropout, per process
                batch = _shard(self.task.batch(step, gen), rank, world)  # this process's share of the global batch
                lr = self._set_learning_rate(step)
                with acc.autocast():
                    loss = self.task.loss(self.model, batch)
                mean_loss = float(acc.gather(loss.detach().float().reshape(1)).mean())  # equal on every process
                if not math.isfinite(mean_loss):
                    raise self._diverged(mean_loss, step, lr)
                self.optimizer.zero_grad(set_to_none=True)
                acc.backward(loss)
                grad_norm = math.nan
                if cfg.grad_clip > 0:
                    grad_norm = float(acc.clip_grad_norm_(self.model.parameters(), cfg.grad_clip))
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update(acc.unwrap_model(self.model), step)
                self.history.append(mean_loss)
                self.step += 1
                self.seconds = seconds0 + time.time() - t0
                bar.update(1)
                if step % cfg.log_every == 0 or self.step == end:
                    self._log_row({"step": step, "loss": mean_loss, "lr": lr, "grad_norm": grad_norm,
                                   "seconds": round(time.time() - t0, 2)})
                    bar.set_postfix(loss=f"{mean_loss:.4f}")
                if cfg.sample_every and self.step % cfg.sample_every == 0 and self.sample_fn is not None:
                    self._sample()
                if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps or self.step == stop_at:
                    self.save()
        finally:
            bar.close()
            if self._tb is not None:
                self._tb.close()
            if acc.is_main_process:
                unlock_folder(self.out)
        return self.history

    def _open(self, resume: bool) -> None:
        """Create the output folder; with ``resume``, restore the checkpoint. The log is cut back to the step."""
        self.out.mkdir(parents=True, exist_ok=True)
        if self.accelerator.is_main_process:
            lock_folder(self.out)  # refuses a folder a live run is using
        if resume:
            if not self.checkpoint_path.exists():
                raise FileNotFoundError(f"--resume: no checkpoint at {self.checkpoint_path}; start without --resume.")
            self.load()
        if resume or self.step == 0:  # a fresh run in an old folder starts a fresh log
            self._truncate_log()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out / "tensorboard")) if self.accelerator.is_main_process else None
        except ImportError:
            self._tb = None

    def _set_learning_rate(self, step: int) -> float:
        lr = learning_rate(step, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def _diverged(self, value: float, step: int, lr: float, what: str = "loss") -> TrainingDiverged:
        good = self._last_saved is not None and self.checkpoint_path.exists()
        last = (f"the last good checkpoint is {self.checkpoint_path} (step {self._last_saved})" if good
                else "no checkpoint was written yet")
        then = ("then --resume --allow-changed-settings (the new rate is recorded in the checkpoint)" if good
                else "then start again")
        return TrainingDiverged(
            f"The {what} became {value} at step {step}; training stopped and {last}. Try a lower learning rate "
            f"(--lr; it was {lr:.2e} at this step), a stronger gradient clip (--grad-clip), or full precision "
            f"(mixed_precision 'no'), {then}.",
            step=step, lr=self.config.lr, checkpoint=self.checkpoint_path if good else None,
        )

    def _sample(self) -> None:
        if not self.accelerator.is_main_process:
            return
        from vdlearn.viz import save_video

        videos = self.sample_fn(self.ema_model().eval(), self.step)
        folder = self.out / "samples"
        for name, video in videos.items():
            save_video(folder / f"step{self.step:06d}_{name}.gif", video)
        (folder / f"step{self.step:06d}.json").write_text(json.dumps(to_jsonable(list(videos)), indent=1))
        self.model.train()
