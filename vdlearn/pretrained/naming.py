"""Renaming tensors between an official checkpoint layout and vdlearn's: the two shared steps.

Every converter in :mod:`vdlearn.pretrained` does the same two things with its own table of
names:

* :func:`names_from_module_map` turns a table of module prefixes
  (``("down_stages.1.res", "input_blocks.2.0", "res")``) into one official name per tensor
  of a vdlearn model (VideoCrafter: ``videocrafter.py``; LaVie: ``lavie.py``);
* :func:`rename_checked` reads a checkpoint through a ``{official name: vdlearn name}`` table
  and collects every missing, unexpected and wrong-shape key, so that the converter raises
  one :func:`vdlearn.io.mismatch_error` listing them all (OpenCLIP: ``openclip.py``;
  transformers' CLIP: ``hf_clip.py``).

Taught in notebook 10_pretrained.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch


def names_from_module_map(
    names: Iterable[str], module_map: Iterable[tuple[str, str, str]],
    rename: Callable[[str, str, str], str], unmapped: Callable[[str], Exception],
) -> dict[str, str]:
    """``{vdlearn name: official name}`` for every name of ``names`` (a state dict's keys), one-to-one.

    ``module_map`` holds ``(vdlearn prefix, official prefix, kind)``; the longest matching
    prefix wins and ``rename(kind, rest, name)`` renames what follows it (``rest``) inside
    that kind of module. A name no prefix covers raises ``unmapped(name)``.
    """
    prefixes = sorted(module_map, key=lambda p: -len(p[0]))  # longest prefix first
    out = {}
    for name in names:
        for ours, theirs, kind in prefixes:
            if name.startswith(ours + "."):
                out[name] = f"{theirs}.{rename(kind, name[len(ours) + 1:], name)}"
                break
        else:
            raise unmapped(name)
    if len(set(out.values())) != len(out):
        raise AssertionError("Two vdlearn tensors map to one official name: the converter is broken.")
    return out


@dataclass
class Renamed:
    """What :func:`rename_checked` found in a checkpoint (keys in the messages are checkpoint keys)."""

    converted: dict[str, torch.Tensor]  # {vdlearn name: tensor}, shapes checked
    kept: dict[str, torch.Tensor]  # {official name: tensor} of the ``kept`` names, shapes checked
    missing: list[str]
    unexpected: list[str]
    shapes: list[str]  # "key: expected (..), checkpoint (..)"

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shapes)


def rename_checked(
    state_dict: Mapping[str, torch.Tensor], names: Mapping[str, str], own: Mapping[str, torch.Tensor],
    kept: Mapping[str, tuple[int, ...]] | None = None, kept_required: bool = True, prefix: str = "",
) -> Renamed:
    """Rename the tensors of ``state_dict`` under ``prefix`` with ``names`` (``{official: vdlearn}``).

    ``own`` is the vdlearn module's state dict (the expected shapes). ``kept`` names official
    tensors that are not renamed one-to-one (stacked or dropped by the caller): their shapes
    are checked against ``kept`` and they come back in :attr:`Renamed.kept`; with
    ``kept_required=False`` they may also be absent. Keys outside ``prefix`` are ignored.
    """
    kept = kept or {}
    converted, found, unexpected, shapes = {}, {}, [], []
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name in kept:
            expected = tuple(kept[name])
        elif name in names:
            expected = tuple(own[names[name]].shape)
        else:
            unexpected.append(key)
            continue
        if tuple(value.shape) != expected:
            shapes.append(f"{key}: expected {expected}, checkpoint {tuple(value.shape)}")
        elif name in kept:
            found[name] = value
        else:
            converted[names[name]] = value
    wrong = {s.split(":")[0] for s in shapes}
    missing = [prefix + n for n, ours in names.items() if ours not in converted and prefix + n not in wrong]
    if kept_required:
        missing += [prefix + n for n in kept if n not in found and prefix + n not in wrong]
    return Renamed(converted, found, missing, unexpected, shapes)


__all__ = ["Renamed", "names_from_module_map", "rename_checked"]
