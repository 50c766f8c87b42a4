r"""What a sampler needs from a network: the denoiser interface and its conditioning dict.

Taught in ``notebooks/03_diffusion_basics.ipynb``; the video U-Net of notebook 04 fits it.

A *denoiser* is any callable

    model(x, timesteps, **cond) -> prediction

* ``x``: the noisy sample $x_t$, ``(b, c, t, h, w)`` for video or ``(b, c, h, w)`` for images;
* ``timesteps``: ``(b,)`` long tensor of diffusion steps $t \in 0..N-1$;
* ``cond``: keyword tensors such as ``context=(b, n, d)`` (text tokens) and ``fps=(b,)``, or
  ``None`` values;
* returns a tensor shaped like ``x``: $\epsilon$, $v$ or $x_0$ depending on the schedule's
  ``prediction_type``.

The samplers never import a network class, so the video U-Net (notebook 03's image
preset and the temporal models of notebooks 04-10) and the exact Gaussian-mixture
denoiser of the tests all plug in alike.
Conditioning travels as a plain dict, e.g. ``cond={"context": text_emb, "fps": fps}``
and ``uncond={"context": empty_text_emb, "fps": fps}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import torch

#: Keyword conditioning for a denoiser: name -> tensor with a leading batch dim (or None).
Cond = Mapping[str, torch.Tensor | None]


@runtime_checkable
class Denoiser(Protocol):
    """``model(x (b, ...), timesteps (b,), **cond) -> (b, ...)``: see the module docstring."""

    def __call__(self, x: torch.Tensor, timesteps: torch.Tensor, **cond: torch.Tensor | None) -> torch.Tensor: ...


def expand_cond(cond: Cond | None, batch: int) -> dict[str, torch.Tensor | None]:
    """Give every conditioning tensor a batch dim of ``batch``: a batch of 1 is repeated.

    So one unconditional embedding ``(1, n, d)`` serves a whole batch.
    """
    out: dict[str, torch.Tensor | None] = {}
    for name, value in (cond or {}).items():
        if value is None:
            out[name] = None
            continue
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"Conditioning {name!r} must be a tensor or None, got {type(value).__name__}.")
        if value.ndim == 0:
            value = value.reshape(1)
        if value.shape[0] == batch:
            out[name] = value
        elif value.shape[0] == 1:
            out[name] = value.expand(batch, *value.shape[1:])
        else:
            raise ValueError(
                f"Conditioning {name!r} has batch size {value.shape[0]}, but the sample batch is {batch}. "
                f"Give one entry per sample, or a single one to share."
            )
    return out


def concat_cond(cond: Cond, uncond: Cond, batch: int) -> dict[str, torch.Tensor | None]:
    """Stack conditional and unconditional inputs along the batch: ``[cond; uncond]``, ``(2b, ...)``.

    Both dicts must have the same keys; a key that is ``None`` in one must be ``None``
    in the other; tensors must agree in every dim but the batch.
    """
    cond, uncond = expand_cond(cond, batch), expand_cond(uncond, batch)
    if set(cond) != set(uncond):
        raise ValueError(
            f"cond and uncond must have the same keys, got {sorted(cond)} and {sorted(uncond)}. "
            f"For an unconditional pass pass the 'empty' value of each key (e.g. the empty-prompt embedding)."
        )
    out: dict[str, torch.Tensor | None] = {}
    for name in cond:
        c, u = cond[name], uncond[name]
        if c is None and u is None:
            out[name] = None
        elif c is None or u is None:
            raise ValueError(f"Conditioning {name!r} is None in one of cond/uncond but not the other.")
        elif c.shape[1:] != u.shape[1:]:
            raise ValueError(
                f"Conditioning {name!r} differs in shape between cond {tuple(c.shape)} and uncond {tuple(u.shape)}; "
                f"they can only be batched together when they match (or use batched=False)."
            )
        else:
            out[name] = torch.cat([c, u.to(device=c.device, dtype=c.dtype)], dim=0)
    return out
