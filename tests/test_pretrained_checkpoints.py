"""Loading whole official VideoCrafter checkpoints: layout, files, wrappings, and the errors a user meets.

* Full size, on the meta device: what :func:`vdlearn.pretrained.checkpoints.checkpoint_layout`
  expects equals, name for name and shape for shape, the manifests of the official
  checkpoints (``tests/fixtures/keys/*.full.txt``, copied from ``/reference/keys``: the
  official ``LatentDiffusion`` built from each inference yaml), and a meta-device checkpoint
  with those tensors passes the check.
* Reduced width, real tensors (``videocrafter_fakes.py``): the official state dict of
  seeded vdlearn modules, written to a file in every official wrapping, loads back into
  exactly the same weights and the same video.
* Every way a file can be wrong gives one message listing every bad key of every part;
  a missing file offline gives the download instructions, never the hub's traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import videocrafter_fakes as fakes
from safetensors.torch import save_file

from vdlearn.diffusion import NoiseSchedule
from vdlearn.io import CheckpointMismatchError, InputError
from vdlearn.models.unet.resblock import GroupNorm32
from vdlearn.pretrained import load_pipeline
from vdlearn.pretrained.checkpoints import (
    check_checkpoint,
    checkpoint_layout,
    split_checkpoint,
)
from vdlearn.pretrained.hub import CheckpointNotFoundError, checkpoint_file
from vdlearn.pretrained.registry import PRETRAINED

KEYS = Path(__file__).parent / "fixtures" / "keys"
NAMES = ["videocrafter2_t2v_512", "videocrafter1_t2v_1024", "videocrafter1_i2v_512"]
#: Tensors per part in the official files (the manifests' counts; /reference/videocrafter.md section 3).
PART_SIZES = {
    "videocrafter2_t2v_512": {"schedule": 13, "unet": 1484, "vae": 248, "text_encoder": 294},
    "videocrafter1_t2v_1024": {"schedule": 13, "unet": 1200, "vae": 248, "text_encoder": 294},
    "videocrafter1_i2v_512": {"schedule": 13, "unet": 1516, "vae": 248, "text_encoder": 294,
                              "image_encoder": 398, "image_resampler": 51},
}


def manifest(name: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in (KEYS / f"{name}.full.txt").read_text().splitlines():
        key, shape = line.split("\t")
        out[key] = tuple(int(s) for s in shape.strip("[]").split(",") if s.strip())
    return out


def meta_checkpoint(name: str, schedule: str | None = None) -> dict[str, torch.Tensor]:
    """A full-size checkpoint of ``name`` on the meta device (no memory), with real schedule buffers."""
    buffers = NoiseSchedule(schedule or PRETRAINED[name].schedule).videocrafter_buffers()
    return {k: buffers[k] if k in buffers and tuple(buffers[k].shape) == s else torch.empty(s, device="meta")
            for k, s in manifest(name).items()}


# ------------------------------------------------------------------------------ full size, meta device
@pytest.mark.parametrize("name", NAMES)
def test_full_size_layout_is_the_official_manifest(name):
    expected = manifest(name)
    layout = checkpoint_layout(name)
    ours = {p.full(k): s for p in layout.values() for k, s in {**p.required, **p.optional}.items()}
    assert sorted(set(expected) - set(ours)) == [] and sorted(set(ours) - set(expected)) == []
    assert {k: (s, expected[k]) for k, s in ours.items() if s != expected[k]} == {}
    # the only tensors allowed to be absent are CLIP's unused heads (text_projection, ln_post, ...)
    optional = {p.full(k) for p in layout.values() for k in p.optional}
    assert all(k.startswith(("cond_stage_model.", "embedder.")) for k in optional)


@pytest.mark.parametrize("name", NAMES)
def test_full_size_meta_checkpoint_passes_and_splits_into_its_parts(name):
    parts = check_checkpoint(meta_checkpoint(name), name)
    assert {k: len(v) for k, v in parts.items() if v} == PART_SIZES[name]
    assert parts["unknown"] == {}
    assert "scale_arr" in parts["schedule"] and "input_blocks.1.0.in_layers.2.weight" in parts["unet"]


def test_another_models_file_lists_every_bad_key_of_every_part_in_one_message():
    """VideoCrafter1-1024's file given as VideoCrafter2, with a text key lost and a VAE tensor of the wrong shape."""
    state = meta_checkpoint("videocrafter1_t2v_1024")
    del state["cond_stage_model.model.transformer.resblocks.3.mlp.c_fc.bias"]
    state["first_stage_model.decoder.conv_out.weight"] = torch.empty(3, 64, 3, 3, device="meta")
    state["model_ema.decay"] = torch.empty((), device="meta")
    with pytest.raises(CheckpointMismatchError) as info:
        check_checkpoint(state, "videocrafter2_t2v_512", what="checkpoint model.ckpt")
    msg = str(info.value)
    assert msg.startswith("The checkpoint model.ckpt does not match videocrafter2_t2v_512")
    for part in ("U-Net:", "VAE:", "text encoder:", "schedule buffers:", "1 keys outside this model's parts"):
        assert part in msg.splitlines()[0], part
    assert "missing keys (" in msg and "unexpected keys (" in msg and "shape mismatches (" in msg
    assert "model.diffusion_model.input_blocks.1.0.temopral_conv.conv1.0.weight" in msg  # VC2's temporal conv
    assert "relative_position_k.embeddings_table" in msg  # VC1's Shaw tables
    assert "cond_stage_model.model.transformer.resblocks.3.mlp.c_fc.bias" in msg
    assert "first_stage_model.decoder.conv_out.weight: expected (3, 128, 3, 3), checkpoint (3, 64, 3, 3)" in msg
    assert "scale_arr: expected (1400,), checkpoint (1000,)" in msg  # the schedule tells the two apart
    assert "model_ema.decay" in msg
    assert "load_pipeline('videocrafter1_t2v_1024', path=...)" in msg  # names the checkpoint it looks like


def test_schedule_buffers_with_other_values_are_refused():
    state = fakes.official_state_dict("videocrafter2_t2v_512")
    state["scale_arr"] = NoiseSchedule("videocrafter", scale_b=0.3).videocrafter_buffers()["scale_arr"]  # VC1's 0.3
    state["betas"] = NoiseSchedule("lavie_base").videocrafter_buffers()["betas"]  # DDPM's linear betas
    with pytest.raises(CheckpointMismatchError) as info:
        check_checkpoint(state, fakes.reduced_spec("videocrafter2_t2v_512"))
    msg = str(info.value)
    assert "2 schedule buffers with other values" in msg.splitlines()[0]
    assert "scale_arr: differs from vdlearn's 'videocrafter' schedule" in msg and "betas: differs" in msg
    assert "missing keys" not in msg  # every key is there: only the values are wrong


def test_split_puts_every_key_in_exactly_one_part():
    state = fakes.official_state_dict("videocrafter1_i2v_512")
    parts = split_checkpoint(state)
    assert sum(len(p) for p in parts.values()) == len(state) and parts["unknown"] == {}
    assert set(parts["image_encoder"]) >= {"visual.conv1.weight", "token_embedding.weight"}  # leftovers included
    assert "latents" in parts["image_resampler"] and "token_embedding.weight" in parts["text_encoder"]


# ------------------------------------------------------------------------------ reduced width, real files
def _save(state: dict, path: Path, wrapping: str) -> Path:
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(fakes.wrap(state, wrapping), path)
    return path


def _same_weights(name: str, pipe) -> None:
    """``pipe``'s components hold exactly the weights of the reduced in-memory modules of ``name``."""
    expected = fakes.reduced_modules(name)
    assert pipe.components.keys() == expected.keys()
    for part, module in expected.items():
        ours, theirs = module.state_dict(), pipe.components[part].state_dict()
        assert ours.keys() == theirs.keys(), part
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), part


@pytest.mark.parametrize("wrapping", ["raw", "state_dict", "module", "safetensors"])
def test_each_official_wrapping_loads_the_same_weights(tmp_path, wrapping):
    name = "videocrafter2_t2v_512"
    suffix = ".safetensors" if wrapping == "safetensors" else ".ckpt"
    path = _save(fakes.official_state_dict(name), tmp_path / f"model{suffix}", wrapping)
    loaded = load_pipeline(fakes.reduced_spec(name), path=path)
    _same_weights(name, loaded)
    assert loaded.schedule.config == NoiseSchedule("videocrafter").config and loaded.defaults.fps == 28


@pytest.mark.parametrize("name", ["videocrafter2_t2v_512", "videocrafter1_i2v_512"])
def test_loaded_file_makes_the_same_video_as_the_in_memory_model(tmp_path, name):
    state = fakes.official_state_dict(name)
    if name == "videocrafter1_i2v_512":  # the official I2V file is stored in fp16
        state = {k: v.half() for k, v in state.items()}
    torch.save(fakes.wrap(state, "state_dict"), tmp_path / "model.ckpt")
    loaded = load_pipeline(fakes.reduced_spec(name), path=tmp_path)  # a folder holding model.ckpt
    loaded.set_progress_bar_config(disable=True)
    ours = fakes.reduced_pipeline(name)
    if name == "videocrafter1_i2v_512":  # the same fp16 rounding of every weight
        for module in ours.components.values():
            module.load_state_dict({k: v.half().float() for k, v in module.state_dict().items()})
    kwargs = dict(fakes.SMALL, image=torch.rand(1, 3, 40, 56) * 2 - 1) if ours.is_image_to_video else fakes.SMALL
    a = ours("a boat on the sea", generator=torch.Generator().manual_seed(3), **kwargs).frames
    b = loaded("a boat on the sea", generator=torch.Generator().manual_seed(3), **kwargs).frames
    assert a.shape == (1, 4, 64, 64, 3) and a.std() > 0.01
    assert (a == b).all()


def test_dtype_casts_every_component(tmp_path):
    name = "videocrafter2_t2v_512"
    path = _save(fakes.official_state_dict(name), tmp_path / "model.safetensors", "raw")
    pipe = load_pipeline(fakes.reduced_spec(name), path=path, dtype=torch.bfloat16)
    norms = {id(p) for m in pipe.unet.modules() if isinstance(m, GroupNorm32) for p in m.parameters()}
    dtypes = {p.dtype for m in pipe.components.values() for p in m.parameters() if id(p) not in norms}
    assert dtypes == {torch.bfloat16} and pipe.dtype == torch.bfloat16
    assert {p.dtype for m in pipe.unet.modules() if isinstance(m, GroupNorm32) for p in m.parameters()} == {
        torch.float32}  # GroupNorm32 computes in float32, as VideoCrafter's


def test_a_damaged_file_is_named_not_unpickled(tmp_path):
    name = "videocrafter2_t2v_512"
    path = tmp_path / "model.ckpt"
    torch.save(fakes.official_state_dict(name), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # an interrupted download
    with pytest.raises(InputError, match=r"Cannot read the checkpoint .*model\.ckpt"):
        load_pipeline(fakes.reduced_spec(name), path=path)


# ------------------------------------------------------------------------------ finding the file
def test_missing_file_offline_says_which_file_from_where_and_what_to_pass(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointNotFoundError) as info:
        load_pipeline("videocrafter2_t2v_512", cache_dir=tmp_path)
    err = info.value
    msg = str(err)
    assert isinstance(err, InputError) and isinstance(err, FileNotFoundError)
    assert "model.ckpt (7.4 GB) from https://huggingface.co/VideoCrafter/VideoCrafter2" in msg
    assert "https://huggingface.co/VideoCrafter/VideoCrafter2/blob/main/model.ckpt" in msg
    assert "hf download VideoCrafter/VideoCrafter2 model.ckpt" in msg and "HF_HUB_OFFLINE" in msg
    assert "load_pipeline('videocrafter2_t2v_512', path='checkpoints/base_512_v2/model.ckpt')" in msg
    assert err.__cause__ is None and err.__suppress_context__  # no hub traceback chained to it


@pytest.mark.parametrize("name", NAMES)
def test_a_wrong_path_gets_the_same_instructions(tmp_path, name):
    spec = PRETRAINED[name]
    with pytest.raises(CheckpointNotFoundError) as info:
        checkpoint_file(name, tmp_path / "nowhere" / "model.ckpt")
    msg = str(info.value)
    assert f"nothing at {tmp_path / 'nowhere' / 'model.ckpt'}" in msg
    assert spec.repo_url in msg and spec.official_path in msg and f"load_pipeline({name!r}" in msg


def test_the_hugging_face_cache_is_used_offline(tmp_path, monkeypatch):
    """A file already in the HF cache (the hub's own folder layout) is found without any network."""
    name = "videocrafter2_t2v_512"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--VideoCrafter--VideoCrafter2"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "model.ckpt").write_bytes(b"weights")
    assert checkpoint_file(name, cache_dir=tmp_path, local_files_only=True) == snapshot / "model.ckpt"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # local_files_only=None follows HF_HUB_OFFLINE
    assert checkpoint_file(fakes.reduced_spec(name), cache_dir=tmp_path) == snapshot / "model.ckpt"  # same repo


def test_registry_holds_the_official_settings():
    """The files and run-script settings of the official README and scripts (AILab-CVC/VideoCrafter @ 11bcd76)."""
    vc2, vc1, i2v = (PRETRAINED[n] for n in NAMES)
    assert (vc2.repo_id, vc1.repo_id, i2v.repo_id) == ("VideoCrafter/VideoCrafter2", "VideoCrafter/Text2Video-1024",
                                                       "VideoCrafter/Image2Video-512")
    assert {s.filename for s in (vc2, vc1, i2v)} == {"model.ckpt"}
    assert (vc2.sampling.height, vc2.sampling.width, vc1.sampling.height, vc1.sampling.width) == (320, 512, 576, 1024)
    assert (vc2.sampling.fps, vc1.sampling.fps, i2v.sampling.fps) == (28, 28, 8)
    for spec in (vc2, vc1, i2v):
        s = spec.sampling
        assert (s.num_frames, s.num_inference_steps, s.guidance_scale, s.eta, spec.seed) == (16, 50, 12.0, 1.0, 123)
        assert spec.unet == spec.name
    assert [s.is_i2v for s in (vc2, vc1, i2v)] == [False, False, True]
