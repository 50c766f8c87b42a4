"""Measuring a text-to-video model with the judges: ``vdlearn eval --checkpoint ...``.

The model generates one clip for each of ``n`` prompts from two sets, and the judges
(:mod:`vdlearn.eval.judge`) score them:

* **training combinations**: captions of the toy world's ``test`` split, whose
  object-colour pairs all occur in training (the clips themselves are new);
* **held-out combinations**: captions of the ``heldout`` split, object-colour pairs the
  model never saw together (red 7, ... : ``ToyWorld.heldout_pairs``). Doing well here
  means the model composes words rather than memorising captions.

For each set: prompt adherence (per attribute and joint), picture quality
(sharpness, noise, watermark), temporal measures (flicker, jerk), and the Frechet
distance of the generated clips to real clean clips and to real low-quality clips of
the same prompts. The same figures for *real* clean clips (and for their VAE
reconstructions, the best a latent model can do) are reported beside them, so every
number has its reference.

Taught in notebook 05_text_to_video.
"""

from __future__ import annotations

import time

import torch

from vdlearn.eval.judge import Judge

SPLITS = {"train_combinations": "test", "heldout_combinations": "heldout"}


def evaluate_t2v(model, n: int = 256, *, guidance_scale: float | None = None, num_steps: int = 25,
                 seed: int = 0, world_seed: int = 0, judge: Judge | None = None, references: bool = True,
                 progress: bool = True) -> dict:
    """The judges' report on ``model`` (a :class:`vdlearn.pipelines.t2v.TextToVideo`).

    Returns ``{"train_combinations": {...}, "heldout_combinations": {...}, "settings": {...}}``;
    each set holds ``adherence``, ``quality``, ``temporal``, ``frechet_to_clean``,
    ``frechet_to_lowq`` and, with ``references=True``, the same for the real clips
    (``real``) and their VAE reconstructions (``vae_reconstruction``).
    """
    from vdlearn.data import ToyWorld, WorldConfig

    judge = judge or Judge.load()
    world = ToyWorld(WorldConfig.preset(model.config.world), seed=world_seed)
    w = model.config.guidance_scale if guidance_scale is None else guidance_scale
    report: dict = {"settings": {"n": n, "guidance_scale": w, "num_steps": num_steps, "seed": seed,
                                 "world": model.config.world, "world_seed": world_seed}}
    for name, split in SPLITS.items():
        clean = world.batch(range(n), split=split, regime="clean")
        lowq = world.batch(range(n), split=split, regime="lowq")
        prompts, fps = clean["caption"], clean["fps"]
        t0 = time.time()
        videos = model.generate(prompts, fps=fps, guidance_scale=w, num_steps=num_steps, seed=seed,
                                progress=progress)  # (n, 3, t, h, w)
        seconds = time.time() - t0
        entry = _score(judge, videos, prompts, fps, clean["video"], lowq["video"])
        entry["generation_seconds"] = round(seconds, 1)
        if references:
            with torch.no_grad():
                vae = model.vae
                recon = vae.decode_latents(vae.encode_latents(clean["video"].to(vae.device))).clamp(-1, 1).cpu()
            # a second, independent set of real clips for the real-vs-real Frechet distance
            other = world.batch(range(n, 2 * n), split=split, regime="clean")["video"]
            entry["real"] = _score(judge, clean["video"], prompts, fps, other, lowq["video"])
            entry["vae_reconstruction"] = _score(judge, recon, prompts, fps, other, lowq["video"])
        report[name] = entry
    return report


def fps_response(model, fps_values=(4, 8, 16), n: int = 64, *, guidance_scale: float | None = None,
                 num_steps: int = 25, seed: int = 0, world_seed: int = 0) -> dict:
    r"""Does the fps input change the motion as it does in the world? (VideoCrafter1 sec. 3.2)

    The same ``n`` captions (test split) are generated at every frame rate in ``fps_values``
    and rendered by the world at the same rates. The tracker measures each clip's median
    displacement per frame (pixels at the 32-pixel scale). In the world a caption's speed is
    fixed in pixels per *second*, so the displacement per frame falls as ``1 / fps``: a
    slope of -1 for ``log(px per frame)`` against ``log(fps)``. Through the tracker real clips
    measure about -0.9 (the median step length of a centroid that wobbles by a fraction of a
    pixel reads half-pixel steps a little long); a model that ignores fps measures 0. Returns
    per-fps medians and both slopes::

        {"fps": [4, 8, 16], "model_px_per_frame": [...], "data_px_per_frame": [...],
         "model_slope": ..., "data_slope": ...}
    """
    import math

    from vdlearn.data import ToyWorld, WorldConfig
    from vdlearn.eval.tracker import track

    world = ToyWorld(WorldConfig.preset(model.config.world), seed=world_seed)
    prompts = world.batch(range(n), split="test", regime="clean")["caption"]
    rows = {"fps": [int(f) for f in fps_values], "model_px_per_frame": [], "data_px_per_frame": []}
    for f in fps_values:
        videos = model.generate(prompts, fps=int(f), guidance_scale=guidance_scale, num_steps=num_steps, seed=seed,
                                progress=False)  # (n, 3, t, h, w)
        real = torch.cat([world.from_caption(c, indices=(i,), fps=int(f))["video"] for i, c in enumerate(prompts)])
        for key, clips in (("model_px_per_frame", videos), ("data_px_per_frame", real)):
            per_frame = track(clips, int(f)).step_px_per_s / f  # (n,) px per frame at the 32-pixel scale
            rows[key].append(float(per_frame.nanmedian()))
    logf = [math.log(f) for f in fps_values]

    def slope(ys):
        ly = [math.log(max(y, 1e-6)) for y in ys]
        mx, my = sum(logf) / len(logf), sum(ly) / len(ly)
        return sum((x - mx) * (y - my) for x, y in zip(logf, ly)) / sum((x - mx) ** 2 for x in logf)

    rows["model_slope"], rows["data_slope"] = slope(rows["model_px_per_frame"]), slope(rows["data_px_per_frame"])
    return rows


def ladder_probe(model, t_starts=(200, 400, 600, 800, 999), n: int = 96, *, split: str = "train",
                 guidance_scale: float | None = None, num_steps: int = 25, seed: int = 0, world_seed: int = 0,
                 judge: Judge | None = None) -> list[dict]:
    r"""Where along the noise ladder does a model lose the motion? (SDEdit, Meng et al. 2022)

    ``n`` real clips (clean, fps as the world draws them) are encoded, noised to each
    ``t_start`` and finished by the model with their own captions (``generate(init_latents=,
    t_start=)``, the same noise for every start). From a low start the clip's own layout and
    motion survive and only the model's fine detail is judged; from ``t_start`` near the top
    the model decides everything, as in plain generation. The row where adherence or jerk
    breaks away from the real clips' says which noise levels a recipe has to train better.
    Returns one dict per row: ``{"clips": "real" | "vae" | t, "adherence": {...}, "jerk": px}``, where
    ``t`` is the ladder step the clips were finished from (the first at or below each ``t_start``).
    Taught in notebook 05_text_to_video.
    """
    from vdlearn.data import ToyWorld, WorldConfig
    from vdlearn.diffusion import Sampler, SamplerConfig
    from vdlearn.io import InputError

    # each row is labelled with the ladder step it starts from; a start below the ladder fails here, before any work
    ladder = Sampler(model.schedule, SamplerConfig.preset(model.config.sampler, num_steps=num_steps))
    try:
        starts = [int(ladder.timesteps[ladder.first_index(t)]) for t in t_starts]
    except ValueError as err:
        raise InputError(f"{err} Take more steps (num_steps, `vdlearn eval --steps`; {num_steps} now) "
                         f"or higher t_starts.") from None
    judge = judge or Judge.load()
    world = ToyWorld(WorldConfig.preset(model.config.world), seed=world_seed)
    batch = world.batch(range(n), split=split, regime="clean")
    videos, prompts, fps = batch["video"], batch["caption"], batch["fps"]  # (n, 3, t, h, w)
    vae = model.vae
    with torch.no_grad():
        latents = vae.encode_latents(videos.to(vae.device)).cpu()  # (n, 4, t, h', w')
        recon = vae.decode_latents(latents.to(vae.device)).clamp(-1, 1).cpu()

    def row(name, clips):
        return {"clips": name, "adherence": judge.adherence(clips, prompts, fps),
                "jerk": judge.temporal(clips, fps)["jerk"]}

    rows = [row("real", videos), row("vae", recon)]
    for t in starts:
        clips = model.generate(prompts, fps=fps, guidance_scale=guidance_scale, num_steps=num_steps, seed=seed,
                               init_latents=latents, t_start=t, progress=False)
        rows.append(row(t, clips.cpu()))
    return rows


def format_fps_response(rows: dict) -> str:
    """A plain-text table of :func:`fps_response`: displacement per frame at each fps, and both slopes."""
    lines = ["fps   model px/frame   data px/frame"]
    for f, m, d in zip(rows["fps"], rows["model_px_per_frame"], rows["data_px_per_frame"]):
        lines.append(f"{f:3d}   {m:14.2f}   {d:13.2f}")
    lines.append(f"slope of log px/frame against log fps: model {rows['model_slope']:.2f}, "
                 f"data {rows['data_slope']:.2f} (-1: the world's own units; 0: the fps is ignored)")
    return "\n".join(lines)


def format_ladder(rows: list[dict]) -> str:
    """A plain-text table of :func:`ladder_probe`'s rows."""
    keys = ("object", "colour", "direction", "speed", "joint")
    lines = [f"{'clips':>16s} " + " ".join(f"{k:>9s}" for k in keys) + "  jerk (px)"]
    for r in rows:
        name = r["clips"] if isinstance(r["clips"], str) else f"finished from {r['clips']}"
        lines.append(f"{name:>16s} " + " ".join(f"{r['adherence'][k]:9.3f}" for k in keys) + f"  {r['jerk']:9.2f}")
    return "\n".join(lines)


def _score(judge: Judge, videos, prompts, fps, clean, lowq) -> dict:
    out = {"adherence": judge.adherence(videos, prompts, fps)}
    out["quality"] = judge.quality(videos)
    out["temporal"] = judge.temporal(videos, fps)
    out["frechet_to_clean"] = judge.frechet(videos, clean)
    out["frechet_to_lowq"] = judge.frechet(videos, lowq)
    return out


def format_report(report: dict) -> str:
    """A plain-text table of :func:`evaluate_t2v`'s report."""
    lines = []
    s = report["settings"]
    lines.append(f"{s['n']} prompts per set, guidance {s['guidance_scale']}, {s['num_steps']} DDIM steps, seed {s['seed']}")
    head = f"{'':28s}{'object':>8s}{'colour':>8s}{'dir':>8s}{'speed':>8s}{'joint':>8s}{'FD clean':>10s}{'FD lowq':>9s}" \
           f"{'sharp':>7s}{'noise':>8s}{'flicker':>8s}"
    lines.append(head)
    for name in SPLITS:
        if name not in report:
            continue
        entry = report[name]
        rows = [("generated", entry)] + [(k.replace("_", " "), entry[k]) for k in ("vae_reconstruction", "real")
                                         if k in entry]
        for label, e in rows:
            a = e["adherence"]
            lines.append(
                f"{name.replace('_combinations', '') + ': ' + label:28s}"
                + "".join(f"{a[k]:8.3f}" for k in ("object", "colour", "direction", "speed", "joint"))
                + f"{e['frechet_to_clean']:10.2f}{e['frechet_to_lowq']:9.2f}"
                + f"{e['quality']['sharpness']:7.3f}{e['quality']['noise']:8.4f}{e['temporal']['flicker']:8.4f}"
            )
    return "\n".join(lines)
