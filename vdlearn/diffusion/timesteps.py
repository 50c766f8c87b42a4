r"""Which of the $N$ training steps a sampler visits: timestep spacing.

Taught in ``notebooks/03_diffusion_basics.ipynb`` (section "DDPM vs DDIM").

A model trained on $N = 1000$ steps is sampled with $S \ll N$ of them (DDIM, Song et
al. 2021, sec. 4.2: any increasing sub-sequence $\tau$ of $0..N-1$ defines a valid
shorter process). *Which* sub-sequence is a convention, and the official models
differ. For $S = 50$, $N = 1000$:

=============  ==========================================  =====================================
spacing        rule                                        used by
=============  ==========================================  =====================================
``uniform``    ``range(0, N, N // S) + 1``: 981, 961, .., 1  VideoCrafter1/2 DDIM (LDM's "uniform";
                                                           the +1 is in the official rule)
``quad``       ``floor(linspace(0, sqrt(0.8 N), S)^2) + 1``  LDM's "quad" option
``leading``    ``arange(S) * (N // S)``: 980, 960, .., 0    diffusers default; LaVie base (DDPM)
``trailing``   ``round(arange(N, 0, -N / S)) - 1``: 999..19  diffusers; Lin et al. 2023, Table 2
``linspace``   ``round(linspace(0, N - 1, S))``: 999..0     diffusers
``spaced``     ``round(i (N - 1) / (S - 1))``, i = 0..S-1:    guided-diffusion's SpacedDiffusion
               999, 979, .., 41, 20, 0                     (``space_timesteps(N, "S")``); LaVie
                                                           interpolation
=============  ==========================================  =====================================

``offset`` is then added to every rule (diffusers' ``steps_offset``; LaVie's VSR uses
``leading`` with offset 1, which also gives 981..1).

Two official quirks are kept on purpose: ``uniform`` gives *more* than $S$ steps
when $S$ does not divide $N$ (e.g. 31 for $S = 30$: ``range(0, 1000, 33)``), as in
VideoCrafter; ``quad`` can repeat its smallest steps (a step from $t$ to itself leaves the sample unchanged in
DDIM). The sequences are returned from high noise to low, the order
they are visited in.

**The step after the last one.** Every step goes from $t$ to the next timestep in the
sequence; after the last one there are two conventions for $\bar\alpha_{prev}$:
``"one"`` (clean data, $\bar\alpha = 1$; DDPM, diffusers' default
``set_alpha_to_one=True``, guided-diffusion) or ``"first"`` ($\bar\alpha_0$, i.e. step 0;
VideoCrafter's DDIM, diffusers' ``set_alpha_to_one=False``). In the arrays below
"clean data" is the timestep ``-1``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

SPACINGS = ("uniform", "quad", "leading", "trailing", "linspace", "spaced")
FINAL_CONVENTIONS = ("one", "first")


def make_timesteps(num_train_timesteps: int, num_steps: int, spacing: str = "leading", offset: int = 0) -> torch.Tensor:
    """The timesteps a sampler visits, from high noise to low: a ``(S,)`` long tensor.

    >>> make_timesteps(1000, 50, "uniform")[:3].tolist(), make_timesteps(1000, 50, "uniform")[-1].item()
    ([981, 961, 941], 1)
    """
    n, s = num_train_timesteps, num_steps
    if spacing not in SPACINGS:
        raise ValueError(f"Unknown timestep spacing {spacing!r}. Known spacings: {', '.join(SPACINGS)}.")
    if not 1 <= s <= n:
        raise ValueError(f"num_steps must lie in 1 .. {n} (the training steps), got {s}.")
    if spacing == "uniform":
        # LDM / VideoCrafter: stride N // S from 0, then +1 ("to get the final alpha values right")
        steps = np.arange(0, n, n // s) + 1
    elif spacing == "quad":
        steps = (np.linspace(0, math.sqrt(n * 0.8), s) ** 2).astype(np.int64) + 1
    elif spacing == "leading":
        steps = np.arange(s) * (n // s)
    elif spacing == "trailing":
        steps = np.round(np.arange(n, 0, -n / s)).astype(np.int64) - 1
    elif spacing == "linspace":
        steps = np.round(np.linspace(0, n - 1, s))
    else:  # spaced
        steps = spaced_timesteps(n, [s])
    steps = np.sort(np.asarray(steps, dtype=np.int64) + offset)[::-1].copy()  # decreasing
    if steps.min() < 0 or steps.max() > n - 1:
        raise ValueError(
            f"Spacing {spacing!r} with offset {offset} gives timesteps {int(steps.min())}..{int(steps.max())}, "
            f"outside 0..{n - 1}. Lower the offset or the number of steps (the 'uniform' and 'quad' rules add 1 "
            f"themselves, so they reach at most N - 1 steps)."
        )
    return torch.from_numpy(steps)


def spaced_timesteps(num_train_timesteps: int, section_counts: list[int]) -> np.ndarray:
    r"""guided-diffusion's respacing: split $0..N-1$ into equal sections, take evenly spread steps in each.

    Section $j$ of size $m_j$ contributes $\mathrm{start}_j + \mathrm{round}(i\,(m_j - 1)/(c_j - 1))$,
    $i = 0..c_j - 1$. One section of 50 gives LaVie interpolation's 0, 20, 41, .., 979, 999.
    Returned increasing.
    """
    n, k = num_train_timesteps, len(section_counts)
    size, extra = divmod(n, k)
    steps, start = [], 0
    for j, count in enumerate(section_counts):
        m = size + (1 if j < extra else 0)
        if not 1 <= count <= m:
            raise ValueError(f"Cannot take {count} steps from a section of {m} steps.")
        stride = (m - 1) / (count - 1) if count > 1 else 1.0
        # positions 0, stride, 2 stride, ... summed one by one as guided-diffusion does, so that float
        # rounding (and Python's round-half-to-even) picks exactly the same steps in a tie
        positions = itertools.accumulate([0.0] + [stride] * (count - 1))
        steps += [start + round(p) for p in positions]
        start += m
    return np.asarray(sorted(set(steps)), dtype=np.int64)


def previous_timesteps(timesteps: torch.Tensor, final: str = "one") -> torch.Tensor:
    """For each visited timestep, the one the step lands on: the next in the list, then -1 or 0.

    ``final="one"``: the last step lands on clean data (-1, $\\bar\\alpha = 1$);
    ``final="first"``: on step 0 ($\\bar\\alpha_0$, VideoCrafter).
    """
    if final not in FINAL_CONVENTIONS:
        raise ValueError(f"Unknown final convention {final!r}; expected one of {', '.join(FINAL_CONVENTIONS)}.")
    last = torch.tensor([-1 if final == "one" else 0], dtype=torch.long)
    return torch.cat([timesteps[1:].long(), last])
