"""The vdlearn command line.

    vdlearn world  --n 8 --out clips/            render toy-world clips (gif/mp4) with their captions
    vdlearn judge  clips/*.gif --captions clips/captions.json     score videos against prompts
    vdlearn train judges                          retrain the judges shipped in data/judges
    vdlearn train vae --preset toy32 ...          train the toy VAE (notebook 02)
    vdlearn train denoiser --out runs/denoiser    train the image denoiser (notebook 03)
    vdlearn train t2v --preset toy --out runs/t2v train the toy text-to-video model (notebook 05)
    vdlearn sample --prompt "a red 3 moving left quickly" --out x.mp4     generate a video
    vdlearn eval --checkpoint runs/t2v/t2v.safetensors                    the judges' report on a model
    vdlearn eval --words                                                  which caption words the model uses
    vdlearn eval --ladder --n 96                                          where along the noise ladder it loses the motion
    vdlearn ship runs/t2v/t2v.safetensors data/t2v/NAME.safetensors       store a model in float16, measured again

Every subcommand has --help. A bad input is refused before any work starts, with one message
and exit code 2 (``--debug`` or ``VDLEARN_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
from pathlib import Path

# trainers live next to what they train; each module offers add_arguments(parser) and main(args)
TRAINERS = {
    "judges": ("vdlearn.eval.train", "train the judges' networks (attribute classifier, video features)"),
    "vae": ("vdlearn.training.vae", "train the toy VAE or its temporal decoder (notebook 02)"),
    "denoiser": ("vdlearn.training.image_denoiser", "train the image denoiser, the U-Net's toy_image preset (notebook 03)"),
    "t2v": ("vdlearn.training.t2v", "train the toy text-to-video model (notebook 05)"),
}


def _need(ok: bool, message: str) -> None:
    """Refuse a bad input (an :class:`~vdlearn.io.InputError`: one message, exit code 2) before any work starts."""
    from vdlearn.io import InputError

    if not ok:
        raise InputError(message)


def _check_prompts(prompts: list[str], flag: str = "--prompt") -> None:
    from vdlearn.data.captions import parse_caption

    for p in prompts:
        _need(bool(p.strip()), f"{flag} is empty; give a toy caption such as 'a red 3 moving left quickly'.")
        parse_caption(p)  # unknown words and malformed captions fail here, with the vocabulary


def _check_generation_args(args: argparse.Namespace, count: int) -> None:
    """--n, --steps, --guidance, --seed, --fps of `sample` and `eval`."""
    from vdlearn.io import check_seed

    _need(args.n >= 1, f"--n {args.n}: give at least 1.")
    _need(args.steps is None or args.steps >= 1, f"--steps {args.steps}: DDIM needs at least 1 step.")
    _need(args.guidance is None or args.guidance >= 0,
          f"--guidance {args.guidance}: the guidance scale must be >= 0 (1: no guidance, 0: the unconditional "
          f"model; the default is the model's, 4).")
    check_seed(args.seed, count, "--seed")
    fps = getattr(args, "fps", None)
    _need(fps is None or 1 <= fps <= 50, f"--fps {fps}: give a frame rate from 1 to 50 (a gif cannot play faster); "
                                         f"the base model was trained at 4, 8 and 16.")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def cmd_world(args: argparse.Namespace) -> int:
    from vdlearn.data.world import ToyWorld, WorldConfig
    from vdlearn.viz import save_video

    _need(args.n >= 1, f"--n {args.n}: give at least 1 clip.")
    _need(args.start >= 0, f"--start {args.start}: clip indices start at 0.")
    _need(args.frames is None or args.frames >= 1, f"--frames {args.frames}: give at least 1 frame.")
    _need(args.scale >= 1, f"--scale {args.scale}: the upscaling factor is at least 1.")
    config = WorldConfig.preset(args.preset)
    if args.frames:
        from dataclasses import replace

        config = replace(config, frames=args.frames)
    world = ToyWorld(config, seed=args.seed)
    indices = range(args.start, args.start + args.n)
    if args.regime == "image":
        batch = world.images(indices, args.split)
        items, fps = batch["image"][:, :, None], [None] * args.n
    else:
        batch = world.batch(indices, args.split, args.regime)
        items, fps = batch["video"], batch["fps"].tolist()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for i, video, caption, f in zip(indices, items, batch["caption"], fps):
        path = save_video(out / f"{i:05d}_{_slug(caption)}.{args.format}", video, fps=f or 1, scale=args.scale)
        records.append({"file": path.name, "caption": caption, "fps": f, "index": i, "split": args.split,
                        "regime": args.regime, "seed": args.seed, "preset": args.preset})
        print(f"{path}  {caption}" + (f"  ({f} fps)" if f else ""))
    (out / "captions.json").write_text(json.dumps(records, indent=2) + "\n")
    print(f"wrote {len(records)} files and {out / 'captions.json'}")
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    import torch

    from vdlearn.eval.judge import Judge
    from vdlearn.io import InputError, read_json
    from vdlearn.viz import read_video

    files = [Path(f) for f in args.videos]
    _need(args.fps is None or args.fps >= 1, f"--fps {args.fps}: give a positive frame rate.")
    _need(args.size >= 1, f"--size {args.size}: give a frame size in pixels.")
    if args.prompt is not None:
        _check_prompts([args.prompt])
    by_name = {}
    if args.captions:
        records = read_json(args.captions, "--captions file")
        _need(isinstance(records, list) and all(isinstance(r, dict) and "file" in r for r in records),
              f"--captions {args.captions}: expected a list of {{'file': ..., 'caption': ...}} records "
              f"(the captions.json `vdlearn world` writes).")
        by_name = {rec["file"]: rec for rec in records}
    videos, prompts, fps = [], [], []
    for f in files:
        video, file_fps = read_video(f, size=args.size)
        rec = by_name.get(f.name, {})
        prompt = args.prompt or rec.get("caption")
        if prompt is None:
            raise InputError(f"No prompt for {f}: pass --prompt, or --captions with a captions.json that lists it.")
        videos.append(video)
        prompts.append(prompt)
        fps.append(args.fps or rec.get("fps") or (round(file_fps) if file_fps else 8))
    lengths = {v.shape[1] for v in videos}
    if len(lengths) != 1:
        raise InputError(f"All videos must have the same number of frames to be judged together; got {sorted(lengths)}.")
    batch = torch.stack(videos)
    judge = Judge.load(args.judges)
    report = judge.adherence(batch, prompts, torch.tensor(fps), details=True)
    summary = {"adherence": {k: v for k, v in report.items() if k != "clips"}, "quality": judge.quality(batch)}
    if batch.shape[2] >= 3:
        summary["temporal"] = judge.temporal(batch, torch.tensor(fps))
    if args.json:
        print(json.dumps({"summary": summary, "clips": report["clips"]}, indent=2))
        return 0
    for f, clip in zip(files, report["clips"]):
        j = clip["judged"]
        seen = f"{j['colour']} {j['object']}" + (f" moving {j['direction']} {j['speed']}" if j["direction"] else "")
        print(f"{'OK  ' if clip['match'] else 'MISS'} {f.name}: asked '{clip['prompt']}', saw '{seen}'")
    print("adherence: " + ", ".join(f"{k} {v:.3f}" for k, v in summary["adherence"].items() if isinstance(v, float)))
    for key in ("quality", "temporal"):
        if key in summary:
            print(f"{key}: " + ", ".join(f"{k} {v:.4f}" for k, v in summary[key].items()))
    return 0


def _warn_unseen_fps(model, fps: int | None) -> None:
    from vdlearn.data.world import WorldConfig

    seen = WorldConfig.preset(model.config.world).fps_choices
    if fps is not None and fps not in seen:
        print(f"warning: --fps {fps}: this model was trained at {', '.join(map(str, seen))} fps only; "
              f"other values are extrapolation.", file=sys.stderr)


def _load_t2v(checkpoint: str | None):
    from vdlearn.io import checkpoint_path
    from vdlearn.pipelines.t2v import TextToVideo

    if checkpoint:
        checkpoint = checkpoint_path(checkpoint, "--checkpoint")
        model = TextToVideo.load(checkpoint)
    else:  # the course's base model, BASE_MODEL (data/t2v/README.md)
        model = TextToVideo.load_shipped()
    return model.to(_device(None))


def _device(name):
    from vdlearn.device import get_device

    return get_device(name or "auto")


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from vdlearn.eval.judge import Judge
    from vdlearn.viz import save_video

    _check_prompts(args.prompt)
    _check_generation_args(args, args.n)
    _need(args.scale >= 1, f"--scale {args.scale}: the upscaling factor is at least 1.")
    out = Path(args.out)
    _need(out.suffix.lower() in (".mp4", ".gif"), f"--out {out}: write a .mp4 or a .gif file.")
    model = _load_t2v(args.checkpoint)
    _warn_unseen_fps(model, args.fps)
    prompts = [p for p in args.prompt for _ in range(args.n)]
    seeds = [args.seed + i for _ in args.prompt for i in range(args.n)]
    videos = torch.cat([model.generate([p], seed=s, fps=args.fps, guidance_scale=args.guidance,
                                       num_steps=args.steps, progress=len(prompts) == 1)
                        for p, s in zip(prompts, seeds)]).cpu()  # (b, 3, t, h, w)
    fps = args.fps or model.config.default_fps
    verdicts = Judge.load().adherence(videos, prompts, fps, details=True)["clips"]
    for i, (video, prompt, seed, verdict) in enumerate(zip(videos, prompts, seeds, verdicts)):
        path = out if len(prompts) == 1 else out.with_name(f"{out.stem}_{i:02d}_{_slug(prompt)}{out.suffix}")
        path = save_video(path, video, fps=fps, scale=args.scale)
        j = verdict["judged"]
        seen = f"{j['colour']} {j['object']} moving {j['direction']} {j['speed']}"
        print(f"{path}  '{prompt}' (seed {seed}); the judges see: '{seen}'{'' if verdict['match'] else '  (MISS)'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from vdlearn.eval.generation import evaluate_t2v, format_report

    _check_generation_args(args, 1)
    model = _load_t2v(args.checkpoint)
    if args.temporal_decoder:  # VideoGen's video decoder (data/vae/toy32_temporal) on the same latents
        from vdlearn.models.vae import load_toy_vae

        model.set_vae(load_toy_vae(model.config.vae, temporal=True))
    if args.words:
        from vdlearn.eval.word_probe import format_sensitivity, word_sensitivity

        result = word_sensitivity(model, n=args.n, seed=args.seed)
        print(json.dumps(result, indent=2) if args.json else format_sensitivity(result))
        return 0
    if args.ladder:
        from vdlearn.eval.generation import format_ladder, ladder_probe

        rows = ladder_probe(model, n=args.n, guidance_scale=args.guidance, num_steps=args.steps, seed=args.seed)
        print(json.dumps(rows, indent=2) if args.json else format_ladder(rows))
        return 0
    if args.fps_response:
        from vdlearn.eval.generation import format_fps_response, fps_response

        rows = fps_response(model, n=args.n, guidance_scale=args.guidance, num_steps=args.steps, seed=args.seed)
        print(json.dumps(rows, indent=2) if args.json else format_fps_response(rows))
        return 0
    report = evaluate_t2v(model, n=args.n, guidance_scale=args.guidance, num_steps=args.steps, seed=args.seed,
                          references=not args.no_references, progress=not args.json)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 0


def cmd_ship(args: argparse.Namespace) -> int:
    """Store a trained model with float16 weights (half the bytes) and measure it again as stored."""
    from vdlearn.shipping import ship

    path, summary = ship(args.source, args.dest, dtype=args.dtype, n=args.n, progress=not args.quiet)
    print("\n".join(summary))
    print(f"wrote {path} ({args.dtype})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    module = importlib.import_module(TRAINERS[args.what][0])
    return module.main(args)


_BASE_CHECKPOINT_HELP = (
    "a t2v.safetensors from `vdlearn train t2v` (default: the course's base model "
    "data/t2v/toy_layout_fpscond.safetensors: VideoCrafter2's temporal layers plus vdlearn's own fps-aware caption "
    "layout, trained from scratch at 4, 8 and 16 fps; data/t2v/README.md)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vdlearn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (also: VDLEARN_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    w = sub.add_parser("world", help="render toy-world clips to gif/mp4 with their captions",
                       description="Render clips of the toy video world, one file per clip, plus captions.json "
                                   "(file, caption, fps) that `vdlearn judge --captions` reads.")
    w.add_argument("--n", type=int, default=8, help="number of clips (default 8)")
    w.add_argument("--start", type=int, default=0, help="first clip index (clips are a function of seed and index)")
    w.add_argument("--seed", type=int, default=0, help="world seed")
    w.add_argument("--preset", default="toy32", help="world preset: toy32, toy64, toy32_8f, toy32_fps")
    w.add_argument("--frames", type=int, default=None, help="override the number of frames (8-16 typical)")
    w.add_argument("--split", default="train", choices=["train", "test", "heldout"],
                   help="attribute split: heldout draws only object-colour pairs kept out of training")
    w.add_argument("--regime", default="clean", choices=["clean", "lowq", "image"],
                   help="clean videos, low-quality videos, or high-quality still images")
    w.add_argument("--format", default="gif", choices=["gif", "mp4"], help="file format (mp4 needs ffmpeg)")
    w.add_argument("--scale", type=int, default=4, help="nearest-neighbour upscaling for viewing (default 4)")
    w.add_argument("--out", default="world_clips", help="output folder (default ./world_clips)")
    w.set_defaults(func=cmd_world)

    j = sub.add_parser("judge", help="score videos against prompts with the judges",
                       description="Score video files (.gif, .mp4, .npy, .pt) against prompts: judged object, colour, "
                                   "direction and speed; prompt adherence per attribute and joint; picture quality "
                                   "(sharpness, noise, watermark) and temporal consistency (flicker, jerk, identity).")
    j.add_argument("videos", nargs="+", help="video files")
    j.add_argument("--prompt", default=None, help="one prompt for all videos, e.g. 'a red 3 moving left quickly'")
    j.add_argument("--captions", default=None, help="captions.json mapping file names to prompts (from `vdlearn world`)")
    j.add_argument("--fps", type=int, default=None, help="frame rate the clips represent (default: from captions/file, else 8)")
    j.add_argument("--size", type=int, default=32, help="resize frames to this size before judging (default 32)")
    j.add_argument("--judges", default=None, help="folder of judge weights (default: the shipped data/judges)")
    j.add_argument("--json", action="store_true", help="print a json report")
    j.set_defaults(func=cmd_judge)

    s = sub.add_parser("sample", help="generate videos from prompts with a text-to-video model",
                       description="Generate videos from prompts with a trained text-to-video model (default: the "
                                   "course's base model, data/t2v/toy_layout_fpscond.safetensors) and print what the judges see in each.")
    s.add_argument("--prompt", action="append", required=True,
                   help="a toy caption, e.g. 'a red 3 moving left quickly' (repeat for several)")
    s.add_argument("--checkpoint", default=None, help=_BASE_CHECKPOINT_HELP)
    s.add_argument("--out", default="sample.mp4", help="output file, .mp4 (gif when no ffmpeg) or .gif")
    s.add_argument("--n", type=int, default=1, help="videos per prompt (seeds seed, seed+1, ...)")
    s.add_argument("--seed", type=int, default=0, help="noise seed: the same seed and prompt give the same video")
    s.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: the model's)")
    s.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the model's, 50)")
    s.add_argument("--fps", type=int, default=None, help="frame rate to condition on (default: the model's, 8; the base model was trained at 4, 8 and 16 fps)")
    s.add_argument("--scale", type=int, default=4, help="nearest-neighbour upscaling of the written file (default 4)")
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("eval", help="the judges' report on a text-to-video model",
                       description="Generate clips for prompts with training and held-out attribute combinations and "
                                   "print prompt adherence, picture quality, flicker and Frechet distances to clean "
                                   "and to low-quality real clips, beside the same figures for real clips.")
    e.add_argument("--checkpoint", default=None, help=_BASE_CHECKPOINT_HELP)
    e.add_argument("--n", type=int, default=256, help="prompts per set (default 256)")
    e.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: the model's)")
    e.add_argument("--steps", type=int, default=25, help="DDIM steps (default 25)")
    e.add_argument("--seed", type=int, default=0, help="noise seed")
    e.add_argument("--no-references", action="store_true", help="skip the real-clip and VAE-reconstruction rows")
    e.add_argument("--words", action="store_true",
                   help="instead of generating, probe which caption words the model uses: the rise of its denoising "
                        "loss on real clips when one word is swapped for a wrong one (vdlearn.eval.word_probe)")
    e.add_argument("--ladder", action="store_true",
                   help="instead of generating from noise, noise N real clips to t = 200 ... 999 and let the model "
                        "finish them (SDEdit): the noise levels where adherence and jerk break away from the real "
                        "clips' are the ones a recipe must train better (vdlearn.eval.generation.ladder_probe)")
    e.add_argument("--fps-response", action="store_true",
                   help="instead of the report, generate N test captions at 4, 8 and 16 fps and compare the "
                        "displacement per frame with the world's (VideoCrafter1's fps conditioning; "
                        "vdlearn.eval.generation.fps_response)")
    e.add_argument("--temporal-decoder", action="store_true",
                   help="decode with the autoencoder's video decoder (VideoGen's, data/vae/toy32_temporal) instead "
                        "of frame by frame: the same latents, decoded with temporal layers")
    e.add_argument("--json", action="store_true", help="print the full report as json")
    e.set_defaults(func=cmd_eval)

    h = sub.add_parser("ship", help="store a model in half precision and measure it again (vdlearn/shipping.py)",
                       description=(cmd_ship.__doc__ or "").strip().split("\n")[0])
    h.add_argument("source", help="a model from `vdlearn train t2v`, `train denoiser` or `train vae`")
    h.add_argument("dest", help="where to write the half-precision copy (e.g. data/t2v/toy.safetensors)")
    h.add_argument("--dtype", choices=("float16", "bfloat16"), default="float16", help="storage precision")
    h.add_argument("--n", type=int, default=256, help="text-to-video: prompts per set of the evaluation (default 256)")
    h.add_argument("--quiet", action="store_true", help="no progress bar")
    h.set_defaults(func=cmd_ship)

    t = sub.add_parser("train", help="train a model", description="Train one of vdlearn's models.")
    tsub = t.add_subparsers(dest="what", required=True, metavar="WHAT")
    for name, (module_name, help_text) in TRAINERS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that part of the course is not installed
            raise
        tp = tsub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip().split("\n")[0])
        module.add_arguments(tp)
        tp.set_defaults(func=cmd_train)
    return p


def _resume_command(argv: list[str], err) -> str:
    """The command that continues a diverged run from its last good checkpoint at a tenth of the rate."""
    lr_flag = "--peak-lr" if "--peak-lr" in " ".join(argv) else "--lr"
    words, skip = [], False
    for w in argv:
        if skip:
            skip = False
        elif w == lr_flag:
            skip = True
        elif not w.startswith(lr_flag + "=") and w not in ("--resume", "--allow-changed-settings"):
            words.append(w)
    extra = ["--resume", "--allow-changed-settings"] if err.checkpoint is not None else []
    return " ".join(["vdlearn", *words, *extra, lr_flag, f"{err.lr / 10:g}"])


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user error or a diverged run prints one message and returns 2 (no traceback)."""
    from vdlearn.training.trainer import TrainingDiverged

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError, TrainingDiverged) as err:  # InputError is a ValueError
        if args.debug or os.environ.get("VDLEARN_DEBUG"):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        if isinstance(err, TrainingDiverged) and args.command == "train":
            message = f"{message}\nFor example: {_resume_command(argv, err)}"
        print(f"vdlearn {args.command}: error: {message}\n(--debug or VDLEARN_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
