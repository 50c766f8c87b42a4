"""Official layouts: vdlearn's VAE equals diffusers' AutoencoderKL on the same weights, and every
original LDM (`first_stage_model.*`) key of the VideoCrafter2 checkpoint maps."""

from pathlib import Path

import pytest
import torch

from vdlearn.io import CheckpointMismatchError
from vdlearn.models.vae import AutoencoderKL, VAEConfig
from vdlearn.pretrained import vae_layouts as L

diffusers = pytest.importorskip("diffusers")

MANIFEST = Path(__file__).parent / "fixtures" / "keys" / "vae_ldm_first_stage.txt"


def read_manifest() -> dict[str, list[int]]:
    out = {}
    for line in MANIFEST.read_text().splitlines():
        if line and not line.startswith("#"):
            name, shape = line.split("\t")
            out[name] = [int(s) for s in shape.strip("[]").split(",")]
    return out


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fresh random weights, fast: N(0, 1/fan_in) for weights, small values around 1 / 0 for norms and biases."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.dim() > 1:
                p.copy_(noise / p[0].numel() ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)
    return model


@pytest.fixture(scope="module")
def sd_pair():
    """A randomly initialised diffusers SD autoencoder and vdlearn's copy of it (through the converter)."""
    from accelerate import init_empty_weights

    with init_empty_weights():  # skip diffusers' slow default init; random values come from randomise()
        reference = diffusers.AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
            norm_num_groups=32,
        )
    reference = randomise(reference.to_empty(device="cpu")).eval()
    ours = L.load_diffusers_vae(reference)
    return reference, ours


def test_sd_preset_equals_diffusers_autoencoder(sd_pair):
    reference, ours = sd_pair
    assert ours.config.replace(name="sd") == VAEConfig.preset("sd")
    torch.manual_seed(1)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    z = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        theirs = reference.encode(x).latent_dist
        mine = ours.encode(x)
        assert (theirs.mean - mine.mean).abs().max() <= 1e-4
        assert (theirs.logvar - mine.logvar).abs().max() <= 1e-4
        assert (reference.decode(z).sample - ours.decode(z)).abs().max() <= 1e-4
        # and as a video, frame by frame: frame 1 of a 2-frame clip is the image result
        video = torch.stack([torch.rand(1, 3, 64, 64) * 2 - 1, x], dim=2)  # (1, 3, 2, 64, 64)
        assert (ours.encode(video).mean[:, :, 1] - theirs.mean).abs().max() <= 1e-4


def test_ldm_layout_loads_the_same_model(sd_pair):
    _, ours = sd_pair
    cfg = ours.config
    full = {L.LDM_PREFIX + k: v for k, v in L.vdlearn_to_ldm(ours.state_dict(), cfg).items()}
    full["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(1)  # other parts are left alone
    full["betas"] = torch.zeros(1000)
    loaded = L.load_ldm_vae({"state_dict": full}, preset="videocrafter")
    for key, value in ours.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_every_videocrafter2_first_stage_key_maps_with_its_shape():
    manifest = read_manifest()
    assert len(manifest) == 248
    cfg = VAEConfig.preset("videocrafter")
    table = L.key_table(cfg)
    ldm_keys = {L.LDM_PREFIX + row[1] for row in table}
    assert ldm_keys == set(manifest)  # no key left over on either side
    with torch.device("meta"):
        model = AutoencoderKL(cfg)
    own = model.state_dict()
    for vd, ldm, _, conv1x1 in table:
        shape = manifest[L.LDM_PREFIX + ldm]
        expected = shape[:2] if conv1x1 else shape
        assert list(own[vd].shape) == expected, (vd, ldm)
    assert {row[0] for row in table} == set(own)  # and every vdlearn tensor is covered


def test_attention_weights_are_1x1_convs_in_ldm_and_linear_elsewhere():
    manifest = read_manifest()
    assert manifest["first_stage_model.decoder.mid.attn_1.q.weight"] == [512, 512, 1, 1]
    cfg = VAEConfig.preset("tiny")
    vae = AutoencoderKL(cfg)
    ldm = L.vdlearn_to_ldm(vae.state_dict(), cfg)
    assert ldm["encoder.mid.attn_1.proj_out.weight"].shape == (16, 16, 1, 1)
    diff = L.vdlearn_to_diffusers(vae.state_dict(), cfg)
    assert diff["encoder.mid_block.attentions.0.to_out.0.weight"].shape == (16, 16)


@pytest.mark.parametrize("preset", ["tiny", "toy32"])
def test_round_trips_through_both_layouts(preset):
    cfg = VAEConfig.preset(preset)
    vae = AutoencoderKL(cfg)
    state = vae.state_dict()
    for layout in ("ldm", "diffusers"):
        there = L.convert_state_dict(state, cfg, "vdlearn", layout)
        back = L.convert_state_dict(there, cfg, layout, "vdlearn")
        assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
        assert L.layout_of(there) == layout
    # and the diffusers model built from vdlearn weights decodes the same
    exported = L.to_diffusers(vae).eval()
    z = torch.randn(1, 4, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(exported.decode(z).sample, vae.decode(z), atol=1e-5, rtol=1e-5)


def test_missing_and_unexpected_keys_are_listed():
    cfg = VAEConfig.preset("tiny")
    ldm = L.vdlearn_to_ldm(AutoencoderKL(cfg).state_dict(), cfg)
    broken = dict(ldm)
    del broken["decoder.up.0.block.1.conv2.weight"]
    broken["decoder.up.0.block.9.conv2.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError) as err:
        L.load_ldm_vae(broken, preset=cfg)
    message = str(err.value)
    assert "missing keys (1)" in message and "decoder.up.0.block.1.conv2.weight" in message
    assert "unexpected keys (1)" in message and "decoder.up.0.block.9.conv2.weight" in message
    truncated = dict(list(ldm.items())[: len(ldm) // 2])
    with pytest.raises(CheckpointMismatchError, match=rf"missing keys \({len(ldm) - len(ldm) // 2}\)"):
        L.ldm_to_vdlearn(truncated, cfg)
    # the right names with the wrong preset: shapes disagree
    toy = VAEConfig.preset("toy32")
    with pytest.raises(CheckpointMismatchError):
        L.load_ldm_vae(L.vdlearn_to_ldm(AutoencoderKL(toy).state_dict(), toy), preset=cfg)


def test_checkpoint_wrappers_and_files(tmp_path):
    cfg = VAEConfig.preset("tiny")
    vae = AutoencoderKL(cfg)
    ldm = {L.LDM_PREFIX + k: v for k, v in L.vdlearn_to_ldm(vae.state_dict(), cfg).items()}
    deepspeed = {"module": {"_forward_module." + k: v for k, v in ldm.items()}}
    assert L.unwrap_checkpoint(deepspeed).keys() == ldm.keys()
    torch.save({"state_dict": ldm}, tmp_path / "model.ckpt")
    loaded = L.load_ldm_vae(tmp_path / "model.ckpt", preset=cfg)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in vae.state_dict().items())
    # a stand-alone autoencoder checkpoint with its training-loss tensors
    bare = {**L.vdlearn_to_ldm(vae.state_dict(), cfg), "loss.logvar": torch.zeros(())}
    assert L.extract_first_stage(bare).keys() == L.vdlearn_to_ldm(vae.state_dict(), cfg).keys()


def test_diffusers_folder_and_unsupported_configs(tmp_path):
    cfg = VAEConfig.preset("tiny")
    reference = diffusers.AutoencoderKL(**L.diffusers_kwargs(cfg))
    reference.save_pretrained(tmp_path / "vae")
    loaded = L.load_diffusers_vae(str(tmp_path / "vae"))
    assert loaded.config.channel_mult == cfg.channel_mult and loaded.config.norm_groups == cfg.norm_groups
    with pytest.raises(ValueError, match="shift_factor"):
        L.config_from_diffusers({**dict(reference.config), "shift_factor": 0.1})
    with pytest.raises(ValueError, match="per-frame"):
        L.module_table(cfg.replace(temporal_decoder=True))
