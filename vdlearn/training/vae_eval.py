r"""Measuring an autoencoder: PSNR, what the judges read, and flicker.

* **PSNR** of a reconstruction $\hat x$ of a clip $x$ (both mapped to [0, 1]):
  $10\log_{10}(1/\mathrm{MSE})$ over the whole clip, averaged over clips. 30 dB is an
  RMS error of about 3% of the pixel range.
* **Adherence on reconstructions**: the judges (:class:`vdlearn.eval.Judge`) read
  object, colour, direction and speed from the reconstructed clips and compare with the
  captions. An autoencoder for diffusion must keep exactly what the prompts talk about.
* **Decoder comparison**: the per-frame decoder and the temporal decoder decode the same
  latents, exact and perturbed by ``sigma * eps`` in scaled latent units (a diffusion
  model's latents are never exact); PSNR against the original clip, the judges'
  temporal measures (flicker, background flicker) and identity agreement.

Measured on the toy world's ``heldout`` split (object-colour pairs never seen in
training), clean regime. Taught in ``notebooks/02_latent_space.ipynb``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from vdlearn.models.vae import AutoencoderKL


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-item PSNR in dB of tensors in [-1, 1] (compared in [0, 1]): shape ``(b,)``."""
    a = ((x.float() + 1) / 2).clamp(0, 1)
    b = ((y.float() + 1) / 2).clamp(0, 1)
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


def heldout_clips(world, n_clips: int, start: int = 0, regime: str = "clean") -> dict:
    """The evaluation clips: indices ``start .. start+n`` of the world's ``heldout`` split."""
    return world.batch(range(start, start + n_clips), split="heldout", regime=regime)


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, video: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """Encode (posterior mean) and decode clips ``(b, 3, t, H, W)``, a few clips at a time."""
    outs = []
    for chunk in video.split(batch):
        chunk = chunk.to(vae.device)
        outs.append(vae.decode(vae.encode(chunk).mode()).clamp(-1, 1).cpu())
    return torch.cat(outs)


def _load_judge():
    try:
        from vdlearn.eval import Judge

        return Judge.load()
    except (FileNotFoundError, ImportError, OSError):
        return None


@torch.no_grad()
def evaluate_reconstruction(vae: AutoencoderKL, world, n_clips: int = 64, judge=None) -> dict:
    """PSNR and judged adherence of reconstructions of held-out clean clips (and of the originals)."""
    batch = heldout_clips(world, n_clips)
    video, captions, fps = batch["video"], batch["caption"], batch["fps"]
    recon = reconstruct(vae, video)
    p = psnr(recon, video)
    metrics = {"psnr_heldout_clean": p.mean().item(), "psnr_heldout_clean_min": p.min().item(),
               "eval_clips": n_clips, "eval_split": "heldout", "eval_regime": "clean"}
    images = world.images(range(n_clips), split="heldout")["image"]  # (n, 3, H, W) high-quality stills
    metrics["psnr_heldout_images"] = psnr(reconstruct(vae, images[:, :, None])[:, :, 0], images).mean().item()
    judge = judge if judge is not None else _load_judge()
    if judge is None:
        metrics["adherence_note"] = "judges not found in data/judges; adherence not measured"
        return metrics
    on_recon = judge.adherence(recon, captions, fps)
    on_orig = judge.adherence(video, captions, fps)
    for key in ("object", "colour", "direction", "speed", "joint"):
        metrics[f"adherence_recon_{key}"] = on_recon[key]
        metrics[f"adherence_original_{key}"] = on_orig[key]
    return metrics


@torch.no_grad()
def compare_decoders(
    decoders: Mapping[str, AutoencoderKL],
    world,
    sigmas: tuple[float, ...] = (0.0, 0.1, 0.2),
    n_clips: int = 32,
    seed: int = 0,
    judge=None,
    encoder: AutoencoderKL | None = None,
) -> list[dict]:
    """Decode the same (perturbed) latents with each decoder and measure the results.

    ``decoders`` maps a name to an autoencoder; all must share the encoder and scale
    factor (a temporal decoder fine-tuned with the encoder frozen does). Latents are
    the posterior means of held-out clean clips, scaled, plus ``sigma * eps`` with the
    same ``eps`` for every decoder. Returns one row per (sigma, decoder), plus a
    ``reference`` row per sigma for the original clips.
    """
    from vdlearn.eval.temporal import background_flicker, flicker

    encoder = encoder or next(iter(decoders.values()))
    batch = heldout_clips(world, n_clips)
    video, captions, fps = batch["video"], batch["caption"], batch["fps"]
    latents = torch.cat([encoder.encode_latents(c.to(encoder.device)).cpu() for c in video.split(16)])
    judge = judge if judge is not None else _load_judge()

    def measure(clips: torch.Tensor) -> dict:
        same = clips is video  # the reference row: PSNR of a clip against itself is undefined
        row = {"psnr": None if same else psnr(clips, video).mean().item(), "flicker": flicker(clips).mean().item(),
               "background_flicker": background_flicker(clips).mean().item()}
        if judge is not None:
            t = judge.temporal(clips, fps)
            row["identity_agreement"] = t["identity_agreement"]
            row["joint_adherence"] = judge.adherence(clips, captions, fps)["joint"]
        return row

    rows = [{"sigma": None, "decoder": "original clips", **measure(video)}]
    gen = torch.Generator().manual_seed(seed)
    for sigma in sigmas:
        noisy = latents + sigma * torch.randn(latents.shape, generator=gen)
        for name, vae in decoders.items():
            decoded = torch.cat([vae.decode_latents(c.to(vae.device)).clamp(-1, 1).cpu() for c in noisy.split(16)])
            rows.append({"sigma": sigma, "decoder": name, **measure(decoded)})
    return rows


def format_table(rows: list[dict]) -> str:
    """A markdown table of :func:`compare_decoders` rows."""
    cols = [c for c in ("psnr", "flicker", "background_flicker", "identity_agreement", "joint_adherence")
            if c in rows[0]]
    head = "| sigma | decoder | " + " | ".join(cols) + " |"
    sep = "|---|---|" + "---|" * len(cols)
    lines = [head, sep]
    for r in rows:
        sigma = "-" if r["sigma"] is None else f"{r['sigma']:.2f}"
        vals = " | ".join("-" if r[c] is None else f"{r[c]:.2f}" if c == "psnr" else f"{r[c]:.4f}" for c in cols)
        lines.append(f"| {sigma} | {r['decoder']} | {vals} |")
    return "\n".join(lines)


__all__ = ["compare_decoders", "evaluate_reconstruction", "format_table", "heldout_clips", "psnr", "reconstruct"]
