"""Finding an official checkpoint file: a path you give, or the Hugging Face Hub (and its cache).

Full-size weights are never shipped with vdlearn (design principle 4): they come from
the Hub only when a user asks, through :func:`huggingface_hub.hf_hub_download`, which
keeps them in the shared HF cache (``$HF_HOME/hub``, default ``~/.cache/huggingface/hub``)
so a second call does not download again. ``HF_HUB_OFFLINE=1`` (or
``local_files_only=True``) forbids any network access: only the cache is looked at.

When the file is neither where you said nor in the cache, and cannot be downloaded
(offline, no network, a firewall), :class:`CheckpointNotFoundError` says which file,
from which repository page, how to fetch it on another machine, and what to pass
(``path=...``) once it is here. It is an :class:`~vdlearn.io.InputError`: the CLI prints
it without a traceback, and it is raised ``from None`` so a notebook shows the message
rather than the hub's internal exception chain.

Taught in notebook 10_pretrained.
"""

from __future__ import annotations

import os
from pathlib import Path

from vdlearn.io import InputError
from vdlearn.pretrained.registry import PretrainedSpec, get_spec


class CheckpointNotFoundError(InputError, FileNotFoundError):
    """An official checkpoint is neither at the given path nor in the Hugging Face cache, and cannot be downloaded."""


def offline_mode() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set, now or when huggingface_hub was imported."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(constants.HF_HUB_OFFLINE) or env.strip().upper() in {"1", "ON", "YES", "TRUE"}


def download_instructions(spec: PretrainedSpec, reason: str = "") -> str:
    """What to do when ``spec``'s file is missing: the file, its page, two ways to get it, what to pass."""
    local = spec.official_path
    return (
        f"The {spec.title} checkpoint is not on this machine"
        + (f" ({reason})" if reason else "") + ".\n"
        f"  file:       {spec.filename} ({spec.size}) from {spec.repo_url}\n"
        f"  page:       {spec.url}\n"
        f"Get it on a machine with internet access, either into the Hugging Face cache:\n"
        f"    hf download {spec.repo_id} {spec.filename}\n"
        f"or into a folder of your choice (the official README uses {local}):\n"
        f"    hf download {spec.repo_id} {spec.filename} --local-dir {Path(local).parent}\n"
        f"(or download the page's file in a browser). Copy it here and pass its path:\n"
        f"    load_pipeline({spec.name!r}, path={local!r})"
    )


def checkpoint_file(
    spec: str | PretrainedSpec,
    path: str | Path | None = None,
    *,
    local_files_only: bool | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """The local file of an official checkpoint: ``path`` if given, else the Hub's cached copy.

    Args:
        spec: a :class:`PretrainedSpec` or its name (``"videocrafter2_t2v_512"``).
        path: the file, or a folder holding ``spec.filename``. Nothing is downloaded then.
        local_files_only: only look in the cache, never download; ``None`` follows
            ``HF_HUB_OFFLINE``.
        cache_dir: another Hugging Face cache folder (default: the shared one).

    Raises:
        CheckpointNotFoundError: the file is missing and cannot be fetched; the message
            names the file, its repository and the ``path=`` to pass.
    """
    spec = get_spec(spec)
    if path is not None:
        path = Path(path).expanduser()
        if path.is_dir():
            path = path / spec.filename
        if not path.is_file():
            raise CheckpointNotFoundError(download_instructions(spec, f"nothing at {path}"))
        return path

    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    if local_files_only is None:
        local_files_only = offline_mode()
    try:
        return Path(hf_hub_download(spec.repo_id, spec.filename, revision=spec.revision, cache_dir=cache_dir,
                                    local_files_only=local_files_only))
    except (OSError, EntryNotFoundError) as err:  # offline, no network, no such repository or file, gated, disk
        raise CheckpointNotFoundError(download_instructions(spec, unreachable(err, local_files_only, cache_dir))) \
            from None


def unreachable(err: Exception, local_files_only: bool, cache_dir: str | Path | None = None) -> str:
    """Why a Hub file could not be had, in one line: offline and not cached, or the download's error."""
    where = f"the Hugging Face cache {cache_dir}" if cache_dir else "the Hugging Face cache"
    how = ("offline mode: HF_HUB_OFFLINE is set or local_files_only=True" if local_files_only
           else f"download failed: {type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}")
    return f"not in {where}; {how}"


__all__ = ["CheckpointNotFoundError", "checkpoint_file", "download_instructions", "offline_mode", "unreachable"]
