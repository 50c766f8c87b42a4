"""Seeded weights for the golden-output tests: the same numbers from a seed and a name, on any machine.

The golden outputs in ``tests/fixtures/golden/`` are outputs of the official
implementation at reduced width on random weights. Even at reduced width an official
U-Net has millions of parameters, too many to ship, so the weights are not stored:
every tensor is a pure function of ``(seed, official name, shape)``, computed with
integer arithmetic only (no random number generator, so no library version or device
can change it). The run that made a golden file built its weights with this module and
recorded :func:`state_dict_digest` of them; a test rebuilds them and checks the digest
before comparing outputs.

The rule, per tensor of ``n`` elements, for ``i = 0 .. n-1``::

    u_i = (mix((mix(i) + crc32(f"{seed}:{name}")) mod 2^32) + 0.5) / 2^32     # in (0, 1)
    r_i = 2 u_i - 1                                                          # in (-1, 1)
    weight (ndim >= 2):      r_i * sqrt(3 / fan_in)     fan_in = n / shape[0] (variance 1 / fan_in)
    norm gain (1-D .weight): 1 + 0.2 r_i
    bias (1-D otherwise):    0.1 r_i

``mix`` is a 32-bit integer hash (two rounds of ``x = ((x >> 16) ^ x) * 0x45d9f3b``, then
``(x >> 16) ^ x``, all mod 2^32).
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Mapping, Sequence

import torch

_MASK = 0xFFFFFFFF


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash on an int64 tensor of values in ``[0, 2^32)`` (products stay below 2^63)."""
    for _ in range(2):
        x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK
    return (x >> 16) ^ x


def seeded_uniform(seed: int, name: str, numel: int) -> torch.Tensor:
    """``numel`` float64 values in (-1, 1), a pure function of ``(seed, name)``."""
    key = zlib.crc32(f"{seed}:{name}".encode())
    i = torch.arange(numel, dtype=torch.int64)
    h = _mix((_mix(i) + key) & _MASK)
    return (h.double() + 0.5) / 2.0**32 * 2 - 1


def seeded_tensor(seed: int, name: str, shape: Sequence[int]) -> torch.Tensor:
    """The float32 tensor ``name`` of ``shape`` under the rule in the module docstring."""
    shape = tuple(int(s) for s in shape)
    numel = math.prod(shape)
    r = seeded_uniform(seed, name, numel)
    if len(shape) >= 2:
        values = r * math.sqrt(3.0 / (numel // shape[0]))
    elif name.endswith("weight"):
        values = 1 + 0.2 * r
    else:
        values = 0.1 * r
    return values.to(torch.float32).reshape(shape)


def seeded_state_dict(shapes: Mapping[str, Sequence[int]], seed: int) -> dict[str, torch.Tensor]:
    """``{name: seeded_tensor(seed, name, shape)}`` for every entry of ``shapes``."""
    return {name: seeded_tensor(seed, name, shape) for name, shape in shapes.items()}


def state_dict_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the names, shapes and float32 bytes of every tensor, in sorted name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}{tuple(t.shape)}".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def lavie_golden_model(path, preset: str, reduced: Mapping, official_commit: str, freqs: str = "rotary_emb.freqs"):
    """A LaVie U-Net golden file's model: ``(model, golden tensors, official-named weights)``.

    Reads ``path`` (inputs, outputs and the official run's metadata), checks that the official
    layout at the recorded reduced width is vdlearn's, rebuilds the seeded weights (checked
    against their digest), adds the official run's shared rotary frequencies and loads it all
    through :func:`vdlearn.pretrained.lavie.from_official`, wrapped as the released files are.
    A missing golden file fails the test (it does not skip).
    """
    import json
    from pathlib import Path

    import pytest
    from safetensors import safe_open

    from vdlearn.models.unet import VideoUNet
    from vdlearn.pretrained.lavie import from_official, official_shapes

    path = Path(path)
    if not path.exists():
        pytest.fail(f"Golden file {path} is missing. It is part of the repository; restore it from git, or "
                    f"regenerate it with the script in tests/fixtures/golden/README.md (section LaVie).")
    with safe_open(str(path), "pt") as f:
        g = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        meta = {k: json.loads(v) for k, v in f.metadata().items()}
    assert meta["official_commit"] == official_commit and meta["preset"] == preset
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in meta["vdlearn_overrides"].items()} == dict(reduced)
    shapes = {k: tuple(v) for k, v in meta["official_shapes"].items()}
    with torch.device("meta"):  # no time spent on a random initialisation
        model = VideoUNet.from_preset(preset, **reduced)
    assert official_shapes(model) == shapes  # the official layout at reduced width is vdlearn's
    weights = seeded_state_dict({k: s for k, s in shapes.items() if not k.endswith(freqs)}, meta["weight_seed"])
    assert state_dict_digest(weights) == meta["seeded_weights_sha256"], "golden_weights.py changed?"
    # the official run's rotary frequencies (rotary_embedding_torch's own numbers), as in a real checkpoint
    weights |= {k: g["rotary_freqs"] for k in shapes if k.endswith(freqs)}
    model.load_state_dict(from_official({"ema": weights}, model), assign=True)  # wrapped as the released files
    return model.eval(), g, weights
