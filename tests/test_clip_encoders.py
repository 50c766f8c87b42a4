"""The CLIP encoders equal their references: open_clip / VideoCrafter (golden outputs) and transformers.

* tokenizer: ids identical to ``open_clip.tokenize`` on awkward captions (golden), and to
  transformers' ``CLIPTokenizer`` with SD's padding (directly);
* VideoCrafter's OpenCLIP text tower (penultimate block + ``ln_final``), image tower (kornia
  preprocessing, all 257 tokens) and Resampler: golden outputs of the official
  ``FrozenOpenCLIPEmbedder`` / ``FrozenOpenCLIPImageEmbedderV2`` / ``ip_resampler.Resampler`` at
  reduced width, loaded through vdlearn's official-name converters;
* LaVie's CLIP ViT-L text encoder: transformers' ``CLIPTextModel`` at reduced width, directly;
* full-size key and shape coverage on the meta device against ``reference/keys`` manifests;
* wrong checkpoints and wrong inputs give one clear error.

How the golden files were made: ``tests/fixtures/golden/README.md`` (section "CLIP encoders").
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import math
from pathlib import Path

import pytest
import torch
from golden_weights import seeded_state_dict, seeded_uniform, state_dict_digest
from safetensors import safe_open

from vdlearn.io import CheckpointMismatchError, InputError
from vdlearn.models.bpe import NUM_MERGES, VOCAB_PATH, BPETokenizer
from vdlearn.models.clip import (
    OpenCLIPImageConfig,
    OpenCLIPImageEncoder,
    OpenCLIPTextConfig,
    OpenCLIPTextEncoder,
)
from vdlearn.models.resampler import Resampler, ResamplerConfig
from vdlearn.pretrained.hf_clip import load_lavie_text_encoder, text_from_transformers
from vdlearn.pretrained.openclip import (
    image_from_official,
    official_image_shapes,
    official_resampler_shapes,
    official_text_shapes,
    resampler_from_official,
    text_from_official,
    to_official,
)

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
OFFICIAL_COMMIT = "11bcd76fc62fb98b9715b994afe45b4fa081120c"  # AILab-CVC/VideoCrafter
ATOL = RTOL = 1e-5
KEYS = Path(__file__).parent / "fixtures" / "keys"  # the official key manifests (name<TAB>shape per line)
#: The golden image embedder still holds the leftovers of its (reduced) deleted text tower.
REDUCED_TEXT = OpenCLIPTextConfig.preset("openclip_reduced")


@functools.cache
def read_golden(name: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata of a golden file (read once per session; callers do not modify them)."""
    path = GOLDEN / name
    if not path.exists():
        pytest.fail(f"Golden file {path} is missing; regenerate it with the command in {GOLDEN / 'README.md'}.")
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, {k: json.loads(v) for k, v in f.metadata().items()}  # noqa: SIM118


def official_weights(meta: dict) -> dict[str, torch.Tensor]:
    """The official state dict of the golden run, rebuilt from the seed and checked against its digest."""
    return dict(_official_weights(json.dumps(meta, sort_keys=True)))


@functools.cache
def _official_weights(meta_json: str) -> dict[str, torch.Tensor]:
    meta = json.loads(meta_json)
    weights = seeded_state_dict(meta["official_shapes"], meta["weight_seed"])
    assert state_dict_digest(weights) == meta["weights_sha256"], "seeded weights differ from the golden run's"
    assert meta["official_commit"] == OFFICIAL_COMMIT
    return weights


def seeded_input(meta: dict, name: str, shape) -> torch.Tensor:
    return seeded_uniform(meta["weight_seed"], name, math.prod(shape)).float().reshape(shape)


def assert_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    assert theirs.abs().max() > 0.1  # a live output, not zeros
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=RTOL)


# ----------------------------------------------------------------------------- tokenizer
def test_tokenizer_ids_equal_open_clip():
    tensors, meta = read_golden("openclip_tokenize.safetensors")
    captions, expected = meta["captions"], tensors["ids"]
    ids = BPETokenizer()(captions)
    assert ids.dtype == torch.long and ids.shape == (len(captions), 77)
    assert torch.equal(ids, expected)
    assert ids[1, :3].tolist() == [49406, 49407, 0]  # "" -> start, end, padding 0
    long = [i for i, c in enumerate(captions) if len(c) > 300]
    assert long and all(ids[i, -1] == 49407 and (ids[i] != 0).all() for i in long)  # cut, end kept


def test_tokenizer_with_sd_padding_equals_transformers():
    from transformers import CLIPTokenizer

    ours = BPETokenizer(pad_id=49407)
    vocab = {s: i for i, s in enumerate(ours.symbols)}
    vocab["<|startoftext|>"] = vocab.pop("<start_of_text>")  # transformers' names for ids 49406, 49407
    vocab["<|endoftext|>"] = vocab.pop("<end_of_text>")
    with gzip.open(VOCAB_PATH) as f:
        merges = [tuple(line.split()) for line in f.read().decode("utf-8").split("\n")[1 : NUM_MERGES + 1]]
    theirs = CLIPTokenizer(vocab=vocab, merges=merges)
    captions = ["a red 3 moving left quickly", "", "Two BLUE circles, bouncing!", "a " * 90]
    expected = theirs(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert torch.equal(ours(captions), expected)
    assert ours.decode(ours(["Two BLUE circles, bouncing!"])[0].tolist()) == "two blue circles , bouncing !"


def test_encoder_tokenize_uses_the_preset_padding():
    small = {"width": 64, "heads": 1, "mlp_width": 64, "layers": 2}
    videocrafter = OpenCLIPTextEncoder(OpenCLIPTextConfig.preset("openclip_vit_h14", **small))
    lavie = OpenCLIPTextEncoder(OpenCLIPTextConfig.preset("clip_vit_l14", **small))
    assert videocrafter.tokenize("a cat")[0, 4].item() == 0
    assert lavie.tokenize("a cat")[0, 4].item() == 49407
    assert torch.equal(videocrafter.tokenize("a cat")[0, :4], lavie.tokenize("a cat")[0, :4])


# ----------------------------------------------------------------------------- text tower
def test_text_tower_equals_official_penultimate_layer():
    tensors, meta = read_golden("openclip_text.safetensors")
    encoder = text_from_official(official_weights(meta)).eval()  # config read from the shapes
    assert (encoder.config.width, encoder.config.layers, encoder.config.heads) == (128, 3, 2)
    assert encoder.config.output_layer == "penultimate" and encoder.config.blocks_run == 2
    tokens = encoder.tokenize(meta["captions"])
    assert torch.equal(tokens, tensors["tokens"])
    with torch.no_grad():
        assert_close(encoder(tokens), tensors["penultimate"])
        assert_close(encoder.encode(meta["captions"]), tensors["penultimate"])


def test_text_tower_equals_official_last_layer_and_the_rule_matters():
    tensors, meta = read_golden("openclip_text.safetensors")
    weights = official_weights(meta)
    config = dataclasses.replace(OpenCLIPTextConfig.preset("openclip_reduced"), output_layer="last")
    encoder = text_from_official(weights, config=config).eval()
    with torch.no_grad():
        last = encoder(tensors["tokens"][:2])
    assert_close(last, tensors["last"])
    assert (last - tensors["penultimate"][:2]).abs().max() > 0.1  # the two rules give different features


def test_text_round_trip_to_official_names():
    _, meta = read_golden("openclip_text.safetensors")
    weights = official_weights(meta)
    back = to_official(text_from_official(weights))
    unused = {"cond_stage_model.model.text_projection", "cond_stage_model.model.logit_scale"}
    assert set(back) == set(weights) - unused
    assert all(torch.equal(back[k], weights[k]) for k in back)


# ----------------------------------------------------------------------------- image tower
def test_image_tower_equals_official():
    tensors, meta = read_golden("openclip_image.safetensors")
    encoder = image_from_official(official_weights(meta), text=REDUCED_TEXT).eval()
    assert (encoder.config.width, encoder.config.layers, encoder.config.heads) == (160, 3, 2)
    assert encoder.config.num_tokens == 257
    with torch.no_grad():
        for name, shape in meta["images"].items():  # shrink (antialiased), grow, mixed
            images = seeded_input(meta, f"image:{name}", shape)
            pre = encoder.preprocess(images)
            assert pre.shape == (1, 3, 224, 224)
            assert_close(pre[..., ::7, ::7], tensors[f"preprocessed_{name}"])
            if f"tokens_{name}" in tensors:
                assert_close(encoder(pre), tensors[f"tokens_{name}"])  # (1, 257, 160)
        # the unconditional image of I2V guidance: zeros in [-1, 1], i.e. mid-grey
        assert_close(encoder.encode(torch.zeros(1, 3, 224, 224)), tensors["tokens_unconditional"])


# ----------------------------------------------------------------------------- resampler
def test_resampler_equals_official():
    tensors, meta = read_golden("ip_resampler.safetensors")
    resampler = resampler_from_official(official_weights(meta)).eval()
    assert dataclasses.asdict(resampler.config) | {"name": None} == dataclasses.asdict(
        ResamplerConfig(name=None, **meta["resampler"]))
    with torch.no_grad():
        assert_close(resampler(seeded_input(meta, "resampler:input", (2, 50, 160))), tensors["output"])
    # the I2V checkpoint is stored in fp16: its tensors are copied into the fp32 module
    half = resampler_from_official({k: v.half() for k, v in official_weights(meta).items()})
    assert all(p.dtype == torch.float32 for p in half.parameters())
    torch.testing.assert_close(half.queries, resampler.queries, atol=1e-3, rtol=1e-3)


# ----------------------------------------------------------------------------- LaVie (transformers)
def _reduced_clip_text_model():
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=3,
                            num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu")
    torch.manual_seed(0)
    model = CLIPTextModel(config).eval()
    with torch.no_grad():  # make every tensor live (default init has zero biases and unit norms)
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def test_lavie_text_encoder_equals_transformers(tmp_path):
    model = _reduced_clip_text_model()
    model.save_pretrained(tmp_path / "text_encoder")
    encoder = load_lavie_text_encoder(tmp_path).eval()  # the folder above text_encoder/ is accepted
    assert encoder.config.output_layer == "last" and encoder.config.activation == "quick_gelu"
    tokens = encoder.tokenize(["a red 3 moving left quickly", "", "two blue circles"])
    assert tokens[1, 2] == 49407  # SD pads with <end_of_text>
    with torch.no_grad():
        expected = model(tokens).last_hidden_state
        assert expected.abs().max() > 0.1
        torch.testing.assert_close(encoder(tokens), expected, atol=ATOL, rtol=RTOL)
    # the names in SD 1.4's files: "text_model." prefix and the old position_ids buffer
    files = {"text_model." + k: v for k, v in model.state_dict().items()}
    files["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    with torch.no_grad():
        from_files = text_from_transformers(files, model.config.to_dict()).eval()  # heads from config.json
        torch.testing.assert_close(from_files(tokens), expected, atol=ATOL, rtol=RTOL)


def test_lavie_preset_is_sd14_clip_vit_l14():
    from transformers import CLIPTextConfig, CLIPTextModel

    c = OpenCLIPTextConfig.preset("clip_vit_l14")
    hf = CLIPTextConfig()  # transformers' default is OpenAI CLIP ViT-B/32's text tower; SD 1.4 differs:
    hf.update({"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12})
    with torch.device("meta"):
        theirs = CLIPTextModel(hf)
        ours = OpenCLIPTextEncoder(c)
    counts = {sum(p.numel() for p in m.parameters()) for m in (ours, theirs)}
    assert counts == {123_060_480}  # SD 1.4's text encoder: 123.06M parameters
    assert (c.width, c.layers, c.heads, c.pad_id, c.output_layer) == (768, 12, 12, 49407, "last")


# ----------------------------------------------------------------------------- full-size coverage (meta)
def manifest(name: str, prefix: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in (KEYS / name).read_text().splitlines():
        key, shape = line.split("\t")
        if key.startswith(prefix):
            out[key] = tuple(json.loads(shape))
    return out


@pytest.mark.parametrize("checkpoint", ["videocrafter2_t2v_512", "videocrafter1_t2v_1024", "videocrafter1_i2v_512"])
def test_full_size_text_covers_official_keys(checkpoint):
    expected = manifest(f"{checkpoint}.full.txt", "cond_stage_model.")
    assert len(expected) == 294
    assert official_text_shapes(OpenCLIPTextConfig.preset("openclip_vit_h14")) == expected
    with torch.device("meta"):  # the converter accepts the full layout and infers the preset's geometry
        encoder = text_from_official({k: torch.empty(s) for k, s in expected.items()})
    preset = OpenCLIPTextConfig.preset("openclip_vit_h14")
    assert dataclasses.replace(encoder.config, name=preset.name) == preset
    assert sum(p.numel() for p in encoder.parameters()) == 352_984_064  # the heads held (no text_projection)


def test_full_size_image_and_resampler_cover_official_keys():
    embedder = manifest("videocrafter1_i2v_512.full.txt", "embedder.")
    assert len(embedder) == 398
    assert official_image_shapes(OpenCLIPImageConfig.preset("openclip_vit_h14")) == embedder
    resampler = manifest("videocrafter1_i2v_512.full.txt", "image_proj_model.")
    assert len(resampler) == 51
    assert official_resampler_shapes(ResamplerConfig.preset("videocrafter1_i2v")) == resampler
    with torch.device("meta"):
        image = image_from_official({k: torch.empty(s, dtype=torch.float16) for k, s in embedder.items()})
        res = resampler_from_official({k: torch.empty(s) for k, s in resampler.items()})
        tokens = res(image(torch.empty(1, 3, 224, 224)))
    assert dataclasses.replace(image.config, name="openclip_vit_h14") == OpenCLIPImageConfig.preset("openclip_vit_h14")
    assert dataclasses.replace(res.config, name="videocrafter1_i2v") == ResamplerConfig.preset("videocrafter1_i2v")
    assert tokens.shape == (1, 16, 1024)  # 16 image tokens, appended after the 77 text tokens
    assert sum(p.numel() for p in image.parameters()) == 630_763_520


# ----------------------------------------------------------------------------- bad checkpoints, bad inputs
def _break(weights: dict, prefix: str, drop: str, reshape: str) -> dict:
    bad = dict(weights)
    del bad[prefix + drop]
    bad[prefix + reshape] = torch.zeros(3, 3)
    bad[prefix + "surprise.weight"] = torch.zeros(1)
    return bad


@pytest.mark.parametrize("golden, load, prefix, drop, reshape", [
    ("openclip_text.safetensors", text_from_official, "cond_stage_model.model.",
     "transformer.resblocks.1.attn.in_proj_weight", "ln_final.weight"),
    ("openclip_image.safetensors", functools.partial(image_from_official, text=REDUCED_TEXT), "embedder.model.",
     "visual.ln_pre.bias", "visual.transformer.resblocks.2.mlp.c_fc.weight"),
    ("ip_resampler.safetensors", resampler_from_official, "image_proj_model.",
     "layers.1.0.to_kv.weight", "norm_out.bias"),
])
def test_wrong_checkpoint_lists_every_mismatch(golden, load, prefix, drop, reshape):
    _, meta = read_golden(golden)
    weights = official_weights(meta)
    config = {"openclip_text.safetensors": OpenCLIPTextConfig.preset("openclip_reduced"),
              "openclip_image.safetensors": OpenCLIPImageConfig.preset("openclip_reduced"),
              "ip_resampler.safetensors": ResamplerConfig.preset("reduced")}[golden]
    with pytest.raises(CheckpointMismatchError) as err:
        load(_break(weights, prefix, drop, reshape), config=config)
    message = str(err.value)
    assert "missing keys (1)" in message and prefix + drop in message
    assert "unexpected keys (1)" in message and prefix + "surprise.weight" in message
    assert "shape mismatches (1)" in message and prefix + reshape in message and "(3, 3)" in message


def test_wrong_checkpoint_for_lavie_lists_every_mismatch():
    state = _reduced_clip_text_model().state_dict()
    bad = _break(state, "", "encoder.layers.0.self_attn.k_proj.bias", "final_layer_norm.weight")
    with pytest.raises(CheckpointMismatchError) as err:
        text_from_transformers(bad)
    message = str(err.value)
    assert "missing keys (1)" in message and "encoder.layers.0.self_attn.k_proj.bias" in message
    assert "unexpected keys (1)" in message and "surprise.weight" in message
    assert "shape mismatches (1)" in message and "final_layer_norm.weight" in message


def test_checkpoint_without_the_encoder_says_so():
    with pytest.raises(CheckpointMismatchError, match="no OpenCLIP image tower under 'embedder.model.'.*model."):
        image_from_official({"model.diffusion_model.out.2.weight": torch.zeros(1)})


def test_wrong_inputs_give_clear_errors():
    text = OpenCLIPTextEncoder(OpenCLIPTextConfig.preset("openclip_reduced", layers=2))
    with pytest.raises(InputError, match=r"shape \(b, 77\)"):
        text(torch.zeros(2, 10, dtype=torch.long))
    with pytest.raises(InputError, match="must lie in"):
        text(torch.full((1, 77), 50_000))
    with pytest.raises(TypeError, match="caption"):
        text.tokenize([3])
    image = OpenCLIPImageEncoder(OpenCLIPImageConfig.preset("openclip_reduced", layers=1))
    with pytest.raises(InputError, match=r"\[-1, 1\]"):
        image.preprocess(torch.full((1, 3, 64, 64), 255.0))
    with pytest.raises(InputError, match="preprocess"):
        image(torch.zeros(1, 3, 64, 64))
    with pytest.raises(InputError, match=r"\(b, n, 160\)"):
        Resampler(ResamplerConfig.preset("reduced"))(torch.zeros(1, 5, 1280))
