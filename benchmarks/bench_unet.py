"""Training-step speed and peak memory: vdlearn's VideoUNet vs diffusers' UNet3DConditionModel.

Both networks are built at the same width, depth and input (the ``toy`` preset's layout,
without the fps embedding that diffusers' model lacks; the parameter counts are printed
and must agree), then timed on the same batch for a full training step: forward, MSE
loss, backward, AdamW step. The two models alternate step by step, so background load
on a shared machine hits both alike; the table reports medians.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` during the timed steps; on CPU
(Linux) the growth of the resident set in a fresh subprocess per model, from after the
model and optimizer are built to the peak of three steps (glibc's mmap threshold is fixed
so that freed activations leave the resident set, as they would on a GPU).

Usage::

    python benchmarks/bench_unet.py                     # toy size, CPU or the first GPU
    python benchmarks/bench_unet.py --device cpu --threads 2 --steps 10
    python benchmarks/bench_unet.py --batch 4 --frames 16 --size 16 --width 64
    python benchmarks/bench_unet.py --precision bf16    # both under bf16 autocast

(The attention head split differs: diffusers' UNet3D uses ``attention_head_dim`` as the
number of spatial heads and as the temporal head width; the parameter count and the work
per layer are the same.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from vdlearn.device import describe_device, get_device
from vdlearn.models.unet import UNetConfig, VideoUNet


def vdlearn_config(width: int) -> UNetConfig:
    return UNetConfig.preset("toy", model_channels=width, fps_cond=False, dropout=0.0)


def build(which: str, width: int, device: torch.device) -> torch.nn.Module:
    cfg = vdlearn_config(width)
    if which == "vdlearn":
        model = VideoUNet(cfg)
    else:
        from diffusers import UNet3DConditionModel

        levels = len(cfg.channel_mult)
        attn = ["CrossAttnDownBlock3D" if i in cfg.attention_levels else "DownBlock3D" for i in range(levels)]
        model = UNet3DConditionModel(
            in_channels=cfg.in_channels, out_channels=cfg.out_ch,
            down_block_types=tuple(attn),
            up_block_types=tuple(b.replace("Down", "Up") for b in reversed(attn)),
            block_out_channels=tuple(cfg.model_channels * m for m in cfg.channel_mult),
            layers_per_block=cfg.num_res_blocks, norm_num_groups=cfg.norm_groups,
            cross_attention_dim=cfg.context_dim,
            # transformer_in: 8 heads x attention_head_dim = vdlearn's init_attn width
            attention_head_dim=cfg.init_attention_heads * cfg.head_channels // 8,
        )
    return model.to(device)


def make_step(which, model, opt, x, t, ctx, precision="fp32"):
    def step():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            if which == "vdlearn":
                out = model(x, t, ctx)
            else:
                out = model(x, t, encoder_hidden_states=ctx, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(out.float(), x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def inputs(args, device, cfg):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, cfg.in_channels, args.frames, args.size, args.size, generator=g).to(device)
    t = torch.randint(0, 1000, (args.batch,), generator=g).to(device)
    ctx = torch.randn(args.batch, args.tokens, cfg.context_dim, generator=g).to(device)
    return x, t, ctx


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def rss_child(args) -> None:
    """Subprocess entry: print the resident-set growth (MiB) of a few training steps of one model.

    Linux only. The peak is the kernel's high-water mark ``VmHWM`` of this process, reset
    (``/proc/self/clear_refs``) after the model and optimizer are built. ``ru_maxrss`` would
    not do: it carries over the parent's resident set from before ``exec``.
    """
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    torch.manual_seed(0)
    model = build(args.child, args.width, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, t, ctx = inputs(args, device, vdlearn_config(args.width))
    step = make_step(args.child, model, opt, x, t, ctx, args.precision)
    base = _proc_status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    for _ in range(3):
        step()
    peak = _proc_status_kib("VmHWM")
    print(json.dumps({"peak_mib": (peak - base) / 1024}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=8, help="latent height = width")
    p.add_argument("--tokens", type=int, default=16, help="context tokens")
    p.add_argument("--width", type=int, default=32, help="model_channels (toy: 32)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="bf16: both models under bf16 autocast (vdlearn's attention product stays fp32 on a CPU)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return rss_child(args)

    device = get_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    cfg = vdlearn_config(args.width)
    names = ("vdlearn", "diffusers")
    models, steps, params = {}, {}, {}
    x, t, ctx = inputs(args, device, cfg)
    for name in names:
        torch.manual_seed(0)
        models[name] = build(name, args.width, device)
        params[name] = sum(p.numel() for p in models[name].parameters())
        opt = torch.optim.AdamW(models[name].parameters(), lr=1e-4)
        steps[name] = make_step(name, models[name], opt, x, t, ctx, args.precision)
    if params["vdlearn"] != params["diffusers"]:
        raise SystemExit(f"Parameter counts differ ({params}): the configs are not matched.")

    for name in names:
        for _ in range(args.warmup):
            steps[name]()
    sync(device)
    times = {n: [] for n in names}
    cpu = {n: [] for n in names}
    peak = {}
    for i in range(args.steps):
        for name in names if i % 2 == 0 else names[::-1]:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            steps[name]()
            sync(device)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            if device.type == "cuda":
                peak[name] = max(peak.get(name, 0), torch.cuda.max_memory_allocated(device) / 2**20)
    if device.type != "cuda":
        for name in names:
            cmd = [sys.executable, __file__, "--child", name] + [
                f"--{k}={getattr(args, k)}" for k in ("threads", "batch", "frames", "size", "tokens", "width", "precision")
            ]
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
            peak[name] = json.loads(out.strip().splitlines()[-1])["peak_mib"]

    med = {n: statistics.median(times[n]) for n in names}
    med_cpu = {n: statistics.median(cpu[n]) for n in names}
    clips = args.batch
    print(f"device: {describe_device(device)}" + (f", {args.threads} threads" if device.type == "cpu" else ""))
    print(f"input: batch {args.batch} x {cfg.in_channels} ch x {args.frames} frames x {args.size}x{args.size}, "
          f"context {args.tokens} x {cfg.context_dim}; width {args.width}, mult {cfg.channel_mult}, "
          f"{cfg.num_res_blocks} res block/level; {params['vdlearn'] / 1e6:.2f}M parameters each; "
          f"{args.precision}; median of {args.steps} steps")
    print()
    print(f"| {'model':<30} | {'step (s)':>9} | {'clips/s':>8} | {'CPU s/step':>10} | {'peak mem (MiB)':>14} |")
    print(f"|{'-' * 32}|{'-' * 11}|{'-' * 10}|{'-' * 12}|{'-' * 16}|")
    labels = {"vdlearn": "vdlearn VideoUNet", "diffusers": "diffusers UNet3DConditionModel"}
    for n in names:
        print(f"| {labels[n]:<30} | {med[n]:>9.3f} | {clips / med[n]:>8.2f} | {med_cpu[n]:>10.3f} | {peak[n]:>14.1f} |")
    print()
    print(f"speed-up, wall time (diffusers / vdlearn): {med['diffusers'] / med['vdlearn']:.2f}x; "
          f"CPU time: {med_cpu['diffusers'] / med_cpu['vdlearn']:.2f}x; "
          f"peak memory (vdlearn / diffusers): {peak['vdlearn'] / peak['diffusers']:.2f}")


if __name__ == "__main__":
    main()
