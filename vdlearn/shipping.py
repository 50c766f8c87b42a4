r"""Shipping a trained model in half precision: ``vdlearn ship SOURCE DEST``.

``data/`` must stay small (under 30 MB) and every model in it must carry the figures it was
measured at. The course's models train in float32; their weights are then stored in float16,
half the bytes, and **measured again exactly as stored** (the weights are rounded to float16
and read back as float32, which is what :func:`vdlearn.io.load_checkpoint` and the model's
``load`` give a learner). The json keeps everything the training run recorded (config,
training time, the command that trained it) with the measured figures replaced by the new
ones; ``ship`` records the float32 figures they replace, this command, the commit and the time.

One function per kind of model, each re-running the measurement its trainer made:

- text-to-video (``vdlearn.t2v``): the judges' report, :func:`vdlearn.eval.generation.evaluate_t2v`;
- image denoiser (``vdlearn.image_denoiser``): the held-out loss of notebook 03;
- VAE (``vdlearn.vae``): reconstruction PSNR and the judges on reconstructions, plus the decoder
  comparison for a temporal decoder.

Rounding a weight to float16 moves it by at most one part in 2048; for the toy models the
re-measured figures are in ``data/*/README.md`` beside the float32 ones.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from vdlearn.io import (
    InputError,
    checkpoint_path,
    git_commit,
    hardware,
    load_checkpoint,
)

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@torch.no_grad()
def round_weights(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Replace every floating-point weight by its value in ``dtype``, kept in float32."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            t.copy_(t.to(dtype).to(t.dtype))


def _t2v(src: Path, n: int, dtype: torch.dtype, progress: bool):
    from vdlearn.eval.generation import evaluate_t2v
    from vdlearn.pipelines.t2v import TextToVideo

    model = TextToVideo.load(src)
    round_weights(model, dtype)
    report = evaluate_t2v(model, n=n, num_steps=25, references=False, progress=progress)
    old = model.meta.get("metrics", {}).get("eval")
    meta = {k: v for k, v in model.meta.items() if k not in ("kind", "t2v_config", "stored_dtype")}
    meta["metrics"] = {**meta.get("metrics", {}), "eval": report}
    return meta, {"eval": old}, lambda path, m: model.save(path, m, dtype=dtype), _t2v_summary(report, old)


def _t2v_summary(now: dict, was: dict | None) -> list[str]:
    lines = []
    for split in ("train_combinations", "heldout_combinations"):
        a, b = now[split]["adherence"], (was or {}).get(split, {}).get("adherence", {})
        lines.append(f"{split}: " + ", ".join(f"{k} {a[k]:.3f}" + (f" (float32 {b[k]:.3f})" if k in b else "")
                                            for k in ("object", "colour", "direction", "speed", "joint")))
    return lines


def _denoiser(src: Path, n: int, dtype: torch.dtype, progress: bool):
    from vdlearn.io import save_checkpoint
    from vdlearn.training.image_denoiser import heldout_loss, load_image_denoiser

    model, schedule = load_image_denoiser(src)
    round_weights(model, dtype)
    old = model.meta["metrics"]["heldout"]
    now = heldout_loss(model, schedule, n=old["n"], world_seed=old["world_seed"])
    meta = {k: v for k, v in model.meta.items() if k != "stored_dtype"}
    meta["metrics"] = {**meta["metrics"], "heldout": now}

    def save(path, m):
        return save_checkpoint(path, model.state_dict(), m, dtype=dtype)

    summary = [f"held-out loss {now['loss']:.5f} (float32 {old['loss']:.5f}) on {now['n']} frames"]
    return meta, {"heldout": old}, save, summary


def _vae(src: Path, n: int, dtype: torch.dtype, progress: bool):
    from vdlearn.io import save_checkpoint
    from vdlearn.models.vae import AutoencoderKL
    from vdlearn.training.vae import VAETrainConfig, _world_for
    from vdlearn.training.vae_eval import (
        compare_decoders,
        evaluate_reconstruction,
        format_table,
    )

    vae = AutoencoderKL.load(src)
    round_weights(vae, dtype)
    meta = {k: v for k, v in vae.meta.items() if k != "stored_dtype"}
    cfg = VAETrainConfig(**meta["train_config"])
    world = _world_for(cfg, vae.config)
    old = dict(meta["metrics"])
    new = evaluate_reconstruction(vae, world, n_clips=old["eval_clips"])
    if "decoder_rows" in old:  # a decoder fine-tuned on video: compared with the one it started from
        base = AutoencoderKL.load(cfg.vae, device=vae.device)
        rows = compare_decoders({"per-frame (start)": base, old["decoder_rows"][-1]["decoder"]: vae}, world,
                                n_clips=old["eval_clips"])
        new.update(decoder_rows=rows, decoder_table=format_table(rows))
    meta["metrics"] = {**old, **new}
    replaced = {k: old[k] for k in new if k in old}

    def save(path, m):
        return save_checkpoint(path, vae.state_dict(), m, dtype=dtype)

    summary = [f"{k}: {new[k]:.4f} (float32 {old[k]:.4f})" for k in new
               if isinstance(new[k], float) and isinstance(old.get(k), float)]
    return meta, replaced, save, summary


KINDS = {"vdlearn.t2v": _t2v, "vdlearn.image_denoiser": _denoiser, "vdlearn.vae": _vae}


def ship(source: str | Path, dest: str | Path, dtype: str = "float16", n: int = 256,
         progress: bool = True) -> tuple[Path, list[str]]:
    """Write ``dest``: the model at ``source`` with ``dtype`` weights, measured again; returns the path and a summary.

    ``n``: prompts per set for a text-to-video model (the other kinds repeat their recorded measurement).
    """
    if dtype not in DTYPES:
        raise InputError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}.")
    src, dst = checkpoint_path(source, "model"), Path(dest)
    if dst.suffix != ".safetensors":
        raise InputError(f"{dst}: the shipped copy must be a .safetensors file.")
    if dst.resolve() == src.resolve():
        raise InputError(f"{dst}: write the half-precision copy to another file than its source.")
    if n < 1:
        raise InputError(f"--n {n}: give at least 1.")
    _, header = load_checkpoint(src)
    kind = header.get("kind")
    if kind not in KINDS:
        raise InputError(f"{src} is a {kind!r} file; vdlearn ship stores models of the kinds {', '.join(KINDS)}.")
    start = time.time()
    meta, replaced, save, summary = KINDS[kind](src, n, DTYPES[dtype], progress)
    command = f"vdlearn ship {source} {dest} --dtype {dtype}" + (f" --n {n}" if kind == "vdlearn.t2v" else "")
    info: dict[str, Any] = {"dtype": dtype, "source": str(src), "command": command, "commit": git_commit(),
                            "hardware": hardware(), "eval_seconds": round(time.time() - start, 1),
                            "metrics_float32": replaced}
    path = save(dst, {**meta, "ship": info})
    return path, summary


__all__ = ["DTYPES", "KINDS", "round_weights", "ship"]
