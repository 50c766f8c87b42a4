r"""Classifier-free guidance: one network, two passes, one extrapolation.

Taught in ``notebooks/03_diffusion_basics.ipynb`` (section "Guidance") and used by every
text-to-video notebook after it.

Ho & Salimans 2022 ("Classifier-Free Diffusion Guidance", eq. 6, where the weight is
written $1 + w$) train a single network
both with the condition $c$ and without it (the condition is replaced by an "empty"
one with probability $p_{uncond}$, see :func:`drop_condition`), then sample with

$$\tilde\epsilon(x_t, c) = \epsilon(x_t, \varnothing) + w\,\big(\epsilon(x_t, c) - \epsilon(x_t, \varnothing)\big).$$

$w = 1$ is the plain conditional model; $w > 1$ pushes samples towards what makes
the condition likely, trading diversity for prompt adherence. The combination is
linear, so it is the same whether the network predicts $\epsilon$, $v$ or $x_0$.
VideoCrafter uses $w = 12$, LaVie's base model 7.5, its interpolation model 4.

**Batching.** The two passes share $x_t$ and $t$, so they can run as one forward call
on a batch of $2b$: ``[cond; uncond]``. That is what LaVie does and what
:func:`guided_prediction` does by default (``batched=True``); VideoCrafter makes two
separate calls, which needs half the peak memory (``batched=False``). Both give the
same numbers up to floating-point noise (tested).

What "empty" means is the model's choice: VideoCrafter embeds the empty prompt ``""``
(``uncond_type: empty_seq``), LaVie's interpolation model the string ``"None"``, the
I2V model a zero image. Keys missing from ``uncond`` (e.g. ``fps``) are shared with
``cond``.

**Guidance rescale** (Lin et al. 2023, sec. 3.4, optional): large $w$ inflates the
standard deviation of the prediction and over-saturates images; rescaling the
guided output to the conditional output's per-sample std, mixed in with weight
$\phi$, counters it.
"""

from __future__ import annotations

import torch

from vdlearn.diffusion.denoiser import Cond, Denoiser, concat_cond, expand_cond


def combine_guidance(out_cond: torch.Tensor, out_uncond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    r"""$\hat u + w(\hat c - \hat u)$ (Ho & Salimans 2022, eq. 6, with their $1 + w$ written $w$)."""
    # $\tilde\epsilon = \epsilon_\varnothing + w\,(\epsilon_c - \epsilon_\varnothing)$
    return out_uncond + guidance_scale * (out_cond - out_uncond)


def rescale_guidance(guided: torch.Tensor, out_cond: torch.Tensor, phi: float) -> torch.Tensor:
    r"""Lin et al. 2023, sec. 3.4: match the guided output's per-sample std to the conditional one's."""
    dims = tuple(range(1, guided.ndim))
    # $\hat x_{rescaled} = \hat x_{cfg} \cdot \mathrm{std}(\hat x_c) / \mathrm{std}(\hat x_{cfg})$
    rescaled = guided * (out_cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    # $\hat x = \phi\, \hat x_{rescaled} + (1-\phi)\, \hat x_{cfg}$
    return phi * rescaled + (1 - phi) * guided


def guided_prediction(
    model: Denoiser,
    x: torch.Tensor,
    t: torch.Tensor,
    cond: Cond | None = None,
    uncond: Cond | None = None,
    guidance_scale: float = 1.0,
    *,
    guidance_rescale: float = 0.0,
    batched: bool = True,
) -> torch.Tensor:
    """The network's prediction at ``(x, t)`` with classifier-free guidance.

    ``x``: (b, ...); ``t``: (b,) long. Without ``uncond`` or with ``guidance_scale == 1``
    it is a single conditional call. Otherwise the conditional and unconditional passes
    run as one call on ``2b`` samples (``batched=True``) or as two calls.
    """
    b = x.shape[0]
    cond = expand_cond(cond, b)
    if uncond is None or guidance_scale == 1.0:
        return model(x, t, **cond)
    unknown = set(uncond) - set(cond)
    if unknown:
        raise ValueError(
            f"uncond has keys {sorted(unknown)} that cond lacks (cond keys: {sorted(cond)}). "
            f"Give the conditional value of every key the unconditional pass changes."
        )
    uncond = {**cond, **expand_cond(uncond, b)}  # keys not in uncond (e.g. fps) are shared
    if batched:
        both = concat_cond(cond, uncond, b)  # each (2b, ...)
        out = model(torch.cat([x, x]), torch.cat([t, t]), **both)  # (2b, ...)
        _check_output(out, (2 * b, *x.shape[1:]))
        out_cond, out_uncond = out.chunk(2)
    else:
        out_cond = model(x, t, **cond)
        out_uncond = model(x, t, **uncond)
    guided = combine_guidance(out_cond, out_uncond, guidance_scale)
    if guidance_rescale > 0:
        guided = rescale_guidance(guided, out_cond, guidance_rescale)
    return guided


def _check_output(out: torch.Tensor, shape: tuple[int, ...]) -> None:
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(shape):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"The denoiser must return a tensor shaped like its input {tuple(shape)}, got {got}.")


def drop_condition(
    cond: Cond,
    uncond: Cond,
    p: float,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor | None]:
    """Training side of CFG: replace each sample's condition by the empty one with probability ``p``.

    Only the keys present in ``uncond`` are dropped (VideoCrafter's unconditional input
    replaces the text and keeps ``fps``); a sample is dropped for all of them at once. Returns a new dict.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"Drop probability p must lie in [0, 1], got {p}.")
    batch = _batch_size(cond)
    cond = expand_cond(cond, batch)
    unknown = set(uncond) - set(cond)
    if unknown:
        raise ValueError(f"uncond has keys {sorted(unknown)} that cond lacks (cond keys: {sorted(cond)}).")
    uncond = expand_cond(uncond, batch)
    device = next(v.device for v in cond.values() if v is not None)
    drop = torch.rand(batch, generator=generator, device=generator.device if generator else "cpu").to(device) < p  # (b,)
    out = dict(cond)
    for name, u in uncond.items():
        c = cond[name]
        if c is None or u is None:
            if c is not u:
                raise ValueError(f"Conditioning {name!r} is None in one of cond/uncond but not the other.")
            continue
        mask = drop.reshape(batch, *([1] * (c.ndim - 1)))
        out[name] = torch.where(mask, u.to(device=c.device, dtype=c.dtype), c)
    return out


def _batch_size(cond: Cond) -> int:
    sizes = {v.shape[0] for v in cond.values() if isinstance(v, torch.Tensor) and v.ndim > 0}
    if not sizes:
        raise ValueError("cond holds no tensor with a batch dimension.")
    return max(sizes)
