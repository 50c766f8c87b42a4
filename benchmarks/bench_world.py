"""How fast does the toy world render? Prints clips per second for each regime and size.

    python benchmarks/bench_world.py [--seconds 3] [--batch 256] [--threads 2]

Target: at least 1,000 clips/s of 16 x 32 x 32 clean clips on a 2-core CPU, so data
never limits training.
"""

from __future__ import annotations

import argparse
import time

import torch

from vdlearn.data import ToyWorld


def measure(world: ToyWorld, kind: str, batch: int, seconds: float) -> float:
    render = (lambda i: world.images(range(i, i + batch))) if kind == "image" else \
        (lambda i: world.batch(range(i, i + batch), regime=kind))
    render(0)  # warm-up: glyph caches
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        render(n + batch)
        n += batch
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    print(f"{'preset':<10} {'frames':>6} {'size':>5} {'regime':<7} {'clips/s':>9}")
    for preset in ("toy32", "toy32_8f", "toy64"):
        world = ToyWorld(preset)
        for kind in ("clean", "lowq", "image"):
            rate = measure(world, kind, args.batch, args.seconds)
            frames = 1 if kind == "image" else world.config.frames
            print(f"{preset:<10} {frames:>6} {world.config.size:>5} {kind:<7} {rate:>9.0f}")


if __name__ == "__main__":
    main()
