"""Time to quality: train the toy text-to-video model from scratch until joint adherence >= 0.9.

    python benchmarks/time_to_quality.py                     # toy preset, this machine's best device
    python benchmarks/time_to_quality.py --eval-every 250 --max-steps 8000 --out runs/ttq
    python benchmarks/time_to_quality.py --preset toy_abspos --lr 2e-3 --warmup 100 --max-steps 4000
    python benchmarks/time_to_quality.py --preset toy_layout_fpscond --lr 2e-3 --warmup 100 --max-steps 4000 \
        --images-per-clip 8 --high-noise-share 0.5 --image-timesteps own --loss-norm-bins 20
        # the best recipe so far: joint 0.91 / 0.85 (256 prompts, training / held-out) after 87 min of 4000 steps

Every ``--eval-every`` steps the EMA model generates clips for ``--eval-n`` prompts of
training attribute combinations (25 DDIM steps, the model's guidance scale) and the
judges measure joint prompt adherence; the run stops at the first measurement at or
above ``--target``. The table reports training wall time (evaluations excluded, the
one-off latent encoding listed apart), steps and clips seen. The learning-rate schedule
is the full run's (``--max-steps``), so the stop is an early stop of the shipped recipe.

Minutes depend on the machine as much as on the recipe: machines sold as "2 cores" have run
the same training step in 0.73 s and in 2.2 s. Before training, the script times a fixed
reference step (``bench_unet.py``'s vdlearn U-Net at its default size: batch 8, no images;
median of 5 steps) and prints it beside the table, so that runs on different machines can
be compared (``--no-reference`` skips it).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from vdlearn.device import describe_device, get_device
from vdlearn.training.t2v import T2VTrainConfig, train


def reference_step_seconds(device: str = "auto", steps: int = 5) -> float:
    """Median wall time of ``bench_unet.py``'s vdlearn training step (toy width, batch 8, 8 frames of 8x8)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_unet import build, inputs, make_step, sync, vdlearn_config

    dev = get_device(device)
    size = argparse.Namespace(batch=8, frames=8, size=8, tokens=16)
    torch.manual_seed(0)
    model = build("vdlearn", 32, dev)
    x, t, ctx = inputs(size, dev, vdlearn_config(32))
    step = make_step("vdlearn", model, torch.optim.AdamW(model.parameters(), lr=1e-4), x, t, ctx)
    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        sync(dev)
        t0 = time.perf_counter()
        step()
        sync(dev)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="toy")
    p.add_argument("--target", type=float, default=0.9)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--eval-n", type=int, default=64)
    p.add_argument("--max-steps", type=int, default=T2VTrainConfig.steps)
    p.add_argument("--batch-size", type=int, default=T2VTrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=T2VTrainConfig.lr)
    p.add_argument("--warmup", type=int, default=T2VTrainConfig.warmup)
    p.add_argument("--cache-clips", type=int, default=T2VTrainConfig.cache_clips)
    p.add_argument("--images-per-clip", type=int, default=T2VTrainConfig.images_per_clip,
                   help="joint image-video training (LaVie sec. 3.4): single frames per clip")
    p.add_argument("--high-noise-share", type=float, default=T2VTrainConfig.high_noise_share,
                   help="share of every batch's clips drawn at t >= --high-noise-from")
    p.add_argument("--high-noise-from", type=int, default=T2VTrainConfig.high_noise_from)
    p.add_argument("--image-timesteps", default=T2VTrainConfig.image_timesteps, choices=("clip", "own"),
                   help="appended images share their clip's timestep, or draw their own")
    p.add_argument("--image-t-from", type=int, default=T2VTrainConfig.image_t_from,
                   help="with --image-timesteps own: the images' timesteps come from [from, to)")
    p.add_argument("--image-t-to", type=int, default=T2VTrainConfig.image_t_to, help="(0: the top of the ladder)")
    p.add_argument("--ema-decay", type=float, default=T2VTrainConfig.ema_decay)
    p.add_argument("--min-lr-ratio", type=float, default=T2VTrainConfig.min_lr_ratio,
                   help="final learning rate as a share of the peak (1: constant after the warm-up)")
    p.add_argument("--adam-beta2", type=float, default=T2VTrainConfig.adam_beta2)
    p.add_argument("--min-snr-gamma", type=float, default=T2VTrainConfig.min_snr_gamma,
                   help="Min-SNR-gamma loss weighting (0: off)")
    p.add_argument("--loss-norm-bins", type=int, default=T2VTrainConfig.loss_norm_bins,
                   help="weight each frame by 1 / (running mean loss of its timestep bin) in this many bins (0: off)")
    p.add_argument("--mixed-precision", default=T2VTrainConfig.mixed_precision,
                   help="auto (bf16 on GPUs that support it, fp32 on a CPU), bf16 (also on a CPU) or no")
    p.add_argument("--out", default="runs/time_to_quality")
    p.add_argument("--no-reference", action="store_true", help="skip timing the reference step")
    a = p.parse_args(argv)
    reference = None if a.no_reference else reference_step_seconds()

    cfg = T2VTrainConfig(preset=a.preset, steps=a.max_steps, batch_size=a.batch_size, lr=a.lr, warmup=a.warmup,
                         cache_clips=a.cache_clips, images_per_clip=a.images_per_clip, ema_decay=a.ema_decay,
                         high_noise_share=a.high_noise_share, high_noise_from=a.high_noise_from,
                         image_timesteps=a.image_timesteps, image_t_from=a.image_t_from, image_t_to=a.image_t_to,
                         mixed_precision=a.mixed_precision, min_lr_ratio=a.min_lr_ratio, adam_beta2=a.adam_beta2,
                         min_snr_gamma=a.min_snr_gamma, loss_norm_bins=a.loss_norm_bins,
                         eval_every=a.eval_every, eval_every_n=a.eval_n, target=a.target, eval_n=0)
    out = Path(a.out)
    if (out / "checkpoint.safetensors").exists():
        (out / "checkpoint.safetensors").unlink()  # always from scratch
    t0 = time.time()
    meta = train(cfg, out, progress=True)
    total = time.time() - t0
    rows = list(csv.DictReader((out / "adherence.csv").open())) if (out / "adherence.csv").exists() else []
    reached = meta["metrics"].get("target_reached")
    print()
    print(f"device: {describe_device()}  ({platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)")
    if reference is not None:
        print(f"machine speed: the reference step (bench_unet.py, vdlearn U-Net, batch 8) takes {reference:.3f} s")
    print(f"{'step':>6s} {'train s':>9s} {'joint':>7s} {'object':>7s} {'colour':>7s} {'dir':>6s} {'speed':>6s}")
    for r in rows:
        print(f"{int(r['step']):6d} {float(r['train_seconds']):9.1f} {float(r['joint']):7.3f} {float(r['object']):7.3f} "
              f"{float(r['colour']):7.3f} {float(r['direction']):6.3f} {float(r['speed']):6.3f}")
    training = meta["training"]
    if reached:
        print(f"\njoint adherence {reached['joint']:.3f} >= {a.target} after {reached['step']} steps "
              f"({reached['step'] * a.batch_size} clips): {reached['train_seconds'] / 60:.1f} min of training, "
              f"plus {training['latent_cache_minutes']:.1f} min encoding the latent cache; "
              f"{total / 60:.1f} min wall in all (with the evaluations)")
    else:
        print(f"\ntarget {a.target} not reached in {a.max_steps} steps ({total / 60:.1f} min wall)")
    print(json.dumps({"reached": reached, "training": training, "reference_step_seconds": reference}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
