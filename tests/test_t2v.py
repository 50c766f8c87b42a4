"""Text-to-video: the pipeline, its training task, exact resume, checkpoints, and the shipped model."""

import math

import pytest
import torch

from vdlearn.data.captions import UnknownWordError
from vdlearn.io import CheckpointMismatchError, InputError, save_checkpoint
from vdlearn.pipelines.t2v import BASE_MODEL, T2VConfig, TextToVideo, shipped_t2v_path
from vdlearn.training.t2v import T2VTask, T2VTrainConfig, latent_cache, train


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = TextToVideo.from_preset("tiny").eval()
    with torch.no_grad():  # zero-initialised layers (conv_out, attention outputs) would hide the prompt
        for p in model.parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(0, 0.05)
    return model


def test_forward_shapes_and_width_check(tiny):
    x = torch.randn(2, 4, 8, 8, 8)
    tokens = tiny.tokenize(["a red 3 moving left quickly", ""])
    out = tiny(x, torch.tensor([10, 900]), tokens, torch.tensor([8, 8]))
    assert out.shape == x.shape
    with pytest.raises(ValueError, match="context_dim"):
        TextToVideo(T2VConfig.preset("tiny", text_overrides={"width": 48}))


def test_the_videocrafter1_preset_has_relative_positions_and_no_temporal_convs():
    from vdlearn.models.unet.resblock import TemporalConvBlock

    model = TextToVideo.from_preset("toy_vc1")
    cfg = model.unet.config
    assert cfg.temporal_position == "relative" and not cfg.temporal_conv
    names = [n for n, _ in model.unet.named_parameters()]
    assert any("rel_pos_k" in n for n in names)
    assert not any(isinstance(m, TemporalConvBlock) for m in model.unet.modules())
    x = torch.randn(1, 4, 8, 8, 8)
    assert model(x, torch.tensor([500]), model.tokenize(["a red 3 moving left quickly"]), torch.tensor([8])).shape == x.shape


def test_generation_is_reproducible_and_independent_of_the_batch(tiny):
    prompts = ["a red 3 moving left quickly", "a blue circle moving up slowly", "a green 7 moving right quickly"]
    both = tiny.generate(prompts, seed=5, num_steps=3, progress=False)  # (3, 3, 8, 32, 32)
    assert both.shape == (3, 3, 8, 32, 32) and both.min() >= -1 and both.max() <= 1
    again = tiny.generate(prompts, seed=5, num_steps=3, progress=False)
    assert torch.equal(both, again)
    alone = tiny.generate(prompts[1:2], seed=6, num_steps=3, progress=False)  # clip i uses seed + i
    assert torch.allclose(alone[0], both[1], atol=1e-4)
    other_seed = tiny.generate(prompts[:1], seed=6, num_steps=3, progress=False)
    assert not torch.allclose(other_seed[0], both[0], atol=1e-3)


def test_guidance_scale_changes_the_result_and_one_means_plain_conditional(tiny):
    p = ["a red 3 moving left quickly"]
    w1 = tiny.generate(p, guidance_scale=1.0, num_steps=3, return_latents=True, progress=False)
    w6 = tiny.generate(p, guidance_scale=6.0, num_steps=3, return_latents=True, progress=False)
    assert w1.shape == (1, 4, 8, 8, 8)
    assert (w1 - w6).abs().max() > 1e-3


def test_sdedit_from_a_low_step_keeps_the_given_clip_and_from_the_top_does_not(tiny):
    """``generate(init_latents=, t_start=)``: the lower the start, the more of the given clip survives."""
    p = ["a red 3 moving left quickly", "a blue 4 moving up slowly"]
    z = torch.randn(2, *tiny.config.latent_shape, generator=torch.Generator().manual_seed(1))
    gap = {t: (tiny.generate(p, num_steps=10, init_latents=z, t_start=t, return_latents=True,
                             progress=False) - z).norm() / z.norm() for t in (100, 500, 999)}
    assert gap[100] < 0.25 * gap[999] and gap[100] < gap[500] < gap[999], gap
    with pytest.raises(InputError, match="go together"):
        tiny.generate(p, num_steps=2, init_latents=z, progress=False)
    with pytest.raises(InputError, match="must have shape"):
        tiny.generate(p, num_steps=2, init_latents=z[:1], t_start=500, progress=False)


def test_the_ladder_probe_keeps_real_motion_from_low_noise_and_not_from_the_top(tiny):
    """An untrained model keeps a real clip finished from t=100 and makes noise of it from t=999."""
    from vdlearn.eval.generation import format_ladder, ladder_probe

    rows = ladder_probe(tiny, t_starts=(100, 999), n=16, num_steps=10)
    assert [r["clips"] for r in rows] == ["real", "vae", 99, 999]  # the 10-step ladder: 999, 899, ..., 99
    real, vae, low, top = (r["adherence"]["joint"] for r in rows)
    assert real >= 0.9 and vae >= 0.9 and low >= 0.8 and top < 0.3, format_ladder(rows)
    assert rows[2]["jerk"] < 2 * rows[0]["jerk"] < rows[3]["jerk"], format_ladder(rows)


def test_bad_prompts_are_explained(tiny):
    with pytest.raises(UnknownWordError, match="vocabulary is: objects"):
        tiny.generate(["a red 3 moving sideways"], num_steps=1, progress=False)
    with pytest.raises(ValueError, match="no direction"):
        tiny.generate(["a red 3 quickly"], num_steps=1, progress=False)
    with pytest.raises(ValueError, match="one fps"):
        tiny.generate(["a red 3", "a blue 4"], fps=[8, 8, 8], num_steps=1, progress=False)


def test_save_load_round_trip_and_wrong_checkpoints(tiny, tmp_path):
    path = tiny.save(tmp_path / "m.safetensors", {"note": "test"})
    loaded = TextToVideo.load(path)
    assert loaded.config == tiny.config and loaded.meta["note"] == "test"
    a = tiny.generate(["a white 0 moving down slowly"], num_steps=2, return_latents=True, progress=False)
    b = loaded.generate(["a white 0 moving down slowly"], num_steps=2, return_latents=True, progress=False)
    assert torch.equal(a, b)
    state = tiny.state_dict()
    broken = {k: v for k, v in state.items() if not k.startswith("text_encoder.final_norm")}
    broken["unet.extra.weight"] = torch.zeros(1)
    save_checkpoint(tmp_path / "broken.safetensors", broken, {"kind": "vdlearn.t2v", "t2v_config": tiny.config.to_dict()})
    with pytest.raises(CheckpointMismatchError) as err:
        TextToVideo.load(tmp_path / "broken.safetensors")
    assert "text_encoder.final_norm.weight" in str(err.value) and "unet.extra.weight" in str(err.value)
    save_checkpoint(tmp_path / "vae.safetensors", {"w": torch.zeros(1)}, {"kind": "vdlearn.vae"})
    with pytest.raises(CheckpointMismatchError, match="not a vdlearn text-to-video checkpoint"):
        TextToVideo.load(tmp_path / "vae.safetensors")


def test_task_draws_everything_from_the_generator_and_drops_captions(tiny):
    cache = latent_cache(tiny, T2VTrainConfig(preset="tiny", cache_clips=8), None, progress=False)
    assert cache["latents"].shape == (8, 4, 8, 8, 8) and cache["tokens"].shape[0] == 8
    assert 0.5 < cache["latents"].std() < 2.0  # the VAE's scale factor makes latents roughly unit-variance
    task = T2VTask(tiny, cache, batch_size=256, cond_drop=0.25)
    b1 = task.batch(3, torch.Generator().manual_seed(1))
    b2 = task.batch(3, torch.Generator().manual_seed(1))
    for k in b1:
        assert torch.equal(b1[k], b2[k]), k
    dropped = (b1["tokens"] == task.empty).all(1).float().mean().item()
    assert 0.15 < dropped < 0.35
    loss = task.loss(tiny, {k: v[:4] for k, v in b1.items()})
    assert loss.ndim == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("loss_norm_bins", [0, 10])
def test_interrupted_training_resumes_exactly(tmp_path, loss_norm_bins):
    """With --loss-norm-bins the running means travel in the checkpoint too, so the resumed run is still exact."""
    cfg = T2VTrainConfig(preset="tiny", steps=4, batch_size=2, cache_clips=8, eval_n=0, ckpt_every=2,
                         device="cpu", mixed_precision="no", loss_norm_bins=loss_norm_bins)
    full = train(cfg, tmp_path / "full", progress=False)
    assert train(cfg, tmp_path / "cut", stop_at=2, progress=False) == {"stopped_at": 2}
    resumed = train(cfg, tmp_path / "cut", resume=True, progress=False)
    from vdlearn.io import load_checkpoint

    h_full = load_checkpoint(tmp_path / "full" / "checkpoint.safetensors")[1]["history"]
    h_cut = load_checkpoint(tmp_path / "cut" / "checkpoint.safetensors")[1]["history"]
    assert len(h_full) == 4 and h_full == h_cut
    assert resumed["metrics"]["steps_done"] == full["metrics"]["steps_done"] == 4
    a, b = TextToVideo.load(tmp_path / "full" / "t2v.safetensors"), TextToVideo.load(tmp_path / "cut" / "t2v.safetensors")
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k
    assert "vdlearn train t2v --preset tiny --steps 4" in full["command"]
    state = load_checkpoint(tmp_path / "cut" / "checkpoint.safetensors")[0]
    assert ("task.mean" in state) == bool(loss_norm_bins)


def test_training_state_is_not_mistaken_for_a_model(tmp_path):
    cfg = T2VTrainConfig(preset="tiny", steps=1, batch_size=2, cache_clips=4, eval_n=0, device="cpu")
    train(cfg, tmp_path, progress=False)
    with pytest.raises(ValueError, match="training state"):
        TextToVideo.load(tmp_path / "checkpoint.safetensors")


# ------------------------------------------------------------------ the shipped model
def test_the_shipped_models_are_there():
    """A missing shipped model fails here (the tests below would fail on loading it, too)."""
    for name in ("toy", BASE_MODEL):
        assert shipped_t2v_path(name).exists(), f"{shipped_t2v_path(name)} is missing: see data/t2v/README.md"


def noise_floor(p: float, n: int = 32) -> float:
    """The recorded 256-prompt adherence ``p`` less three standard errors of an ``n``-prompt estimate.

    The standard error is taken at ``p`` no higher than 0.97, so that a figure of 1.00 still allows
    one miss in 32 prompts.
    """
    q = min(p, 0.97)
    return p - 3 * math.sqrt(q * (1 - q) / n)


def check_against_record(name: str, attributes: tuple[str, ...]) -> None:
    """32 prompts per set, 25 DDIM steps: each attribute at least its recorded figure less the noise margin."""
    from vdlearn.eval.generation import evaluate_t2v

    model = TextToVideo.load_shipped(name)
    recorded = model.meta["metrics"]["eval"]
    report = evaluate_t2v(model, n=32, num_steps=25, references=False, progress=False)
    for split in ("train_combinations", "heldout_combinations"):
        adh, rec = report[split]["adherence"], recorded[split]["adherence"]
        for attr in attributes:
            assert adh[attr] >= noise_floor(rec[attr]), (name, split, attr, adh[attr], rec[attr])
    # generated clips are much closer to clean clips than to the low-quality regime
    tr = report["train_combinations"]
    assert tr["frechet_to_clean"] < tr["frechet_to_lowq"]


def test_shipped_model_follows_prompts():
    """``toy``: object, colour and speed; its direction is near chance (0.30 / 0.27 recorded), the
    failure notebook 05 is about, so it is not held to a figure (data/t2v/README.md)."""
    check_against_record("toy", ("object", "colour", "speed"))


def test_shipped_model_json_records_its_provenance():
    import json

    meta = json.loads(shipped_t2v_path("toy").with_suffix(".json").read_text())
    for key in ("config", "metrics", "commit", "command", "hardware", "training"):
        assert key in meta, key
    assert meta["command"].startswith("vdlearn train t2v")
    ev = meta["metrics"]["eval"]
    assert ev["settings"]["n"] == 256
    assert ev["train_combinations"]["adherence"]["n"] == ev["heldout_combinations"]["adherence"]["n"] == 256
    # measured again through the fixed tracker (data/t2v/README.md): the command, and the figures it replaced
    again = meta["metrics"]["remeasured"]
    assert again["command"].startswith("vdlearn eval --checkpoint data/t2v/toy.safetensors")
    assert again["before"]["train_combinations"]["adherence"]["n"] == 256


def test_the_base_model_follows_every_word():
    """The course's base model (``BASE_MODEL``): every attribute and the joint adherence, against its json."""
    check_against_record(BASE_MODEL, ("object", "colour", "direction", "speed", "joint"))


def test_the_base_model_was_trained_from_scratch_and_measured_as_shipped():
    import json

    meta = json.loads(shipped_t2v_path(BASE_MODEL).with_suffix(".json").read_text())
    assert meta["command"].startswith(f"vdlearn train t2v --preset {BASE_MODEL}") and "--init" not in meta["command"]
    assert meta["training"]["init"] is None and meta["training"]["fresh_parameters"] == 0
    assert meta["config"]["t2v"]["world"] == "toy32_8f_fps"  # trained at 4, 8 and 16 fps
    ev = meta["metrics"]["eval"]
    assert ev["settings"]["n"] == 256
    assert ev["train_combinations"]["adherence"]["n"] == ev["heldout_combinations"]["adherence"]["n"] == 256
    # stored in float16 by `vdlearn ship`, and the figures above measured on the weights as stored
    assert meta["stored_dtype"] == "float16" and meta["ship"]["command"].startswith("vdlearn ship ")


def test_the_base_model_meets_the_adherence_bar_as_measured_on_256_prompts():
    """Issue 11's bar, on the figures `vdlearn ship` measured (256 prompts per set): joint adherence at
    least 0.90 on training combinations with every attribute at 0.90, and 0.80 held out; float16 as
    shipped measures as the float32 weights did; the fps input moves the motion the world's way."""
    import json

    meta = json.loads(shipped_t2v_path(BASE_MODEL).with_suffix(".json").read_text())
    ev, fp32 = meta["metrics"]["eval"], meta["ship"]["metrics_float32"]["eval"]
    train, held = ev["train_combinations"]["adherence"], ev["heldout_combinations"]["adherence"]
    assert train["joint"] >= 0.90 and min(train[k] for k in ("object", "colour", "direction", "speed")) >= 0.90, train
    assert held["joint"] >= 0.80, held
    for split in ("train_combinations", "heldout_combinations"):
        assert fp32[split]["adherence"]["n"] == 256
        for k in ("object", "colour", "direction", "speed", "joint"):
            assert abs(fp32[split]["adherence"][k] - ev[split]["adherence"][k]) <= 2 / 256, (split, k)
    fps = meta["metrics"]["fps_response"]
    assert fps["fps"] == [4, 8, 16] and fps["data_slope"] < fps["model_slope"] < 0.5 * fps["data_slope"], fps


def test_sample_and_eval_default_to_the_base_model_and_say_so(monkeypatch, capsys):
    from vdlearn import cli

    loaded = []
    monkeypatch.setattr(TextToVideo, "load_shipped", classmethod(
        lambda cls, name=BASE_MODEL, device="cpu": loaded.append(name) or TextToVideo.from_preset("tiny")))
    cli._load_t2v(None)
    assert loaded == [BASE_MODEL]
    for command in ("sample", "eval"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        said = " ".join(capsys.readouterr().out.split())
        assert f"data/t2v/{BASE_MODEL}.safetensors" in said, said


def test_run_stops_once_the_target_adherence_is_reached(tmp_path, monkeypatch):
    """The time-to-quality loop: measure every K steps, stop at the target (the judges are stubbed
    here so that the check reaches the target at the second measurement)."""
    from vdlearn.training import t2v

    calls = []

    def fake_adherence(model, n, num_steps, **kw):
        calls.append(n)
        joint = 0.5 if len(calls) == 1 else 0.95
        return {"joint": joint, "object": joint, "colour": 1.0, "direction": joint, "speed": joint}

    monkeypatch.setattr(t2v, "quick_adherence", fake_adherence)
    cfg = T2VTrainConfig(preset="tiny", steps=10, batch_size=2, cache_clips=4, eval_n=0, eval_every=2,
                         eval_every_n=3, target=0.9, device="cpu")
    meta = train(cfg, tmp_path, progress=False)
    assert calls == [3, 3]
    assert meta["metrics"]["steps_done"] == 4 and meta["metrics"]["target_reached"]["step"] == 4
    assert [r["step"] for r in meta["metrics"]["adherence_curve"]] == [2.0, 4.0]


def test_the_frame_position_presets_train_at_three_frame_rates():
    from vdlearn.data import WorldConfig

    expected = {"toy_abspos": "absolute", "toy_vc2_fps": "none", "toy_rope": "rope_bias"}
    for name, position in expected.items():
        model = TextToVideo.from_preset(name)
        assert model.unet.config.temporal_position == position, name
        assert model.unet.config.temporal_conv_dropout == 0.0
        assert WorldConfig.preset(model.config.world).fps_choices == (4, 8, 16)
    x = torch.randn(1, 4, 8, 8, 8)
    out = model(x, torch.tensor([500]), model.tokenize(["a red 3 moving left quickly"]), torch.tensor([16]))
    assert out.shape == x.shape


def test_fps_response_measures_the_worlds_slope():
    """A stand-in model that returns the world's own clips must show the world's slope. Displacement per
    frame falls as 1/fps in the world (a slope of -1); through the tracker it measures -0.96 on these 24
    prompts (px per frame 2.00, 1.00, 0.53: half-pixel steps read a little long)."""
    from vdlearn.data import ToyWorld, WorldConfig
    from vdlearn.eval.generation import fps_response

    class WorldAsModel:
        config = T2VConfig.preset("toy_abspos")
        world = ToyWorld(WorldConfig.preset("toy32_8f_fps"), seed=0)

        def generate(self, prompts, fps, **kw):
            return torch.cat([self.world.from_caption(c, indices=(i,), fps=fps)["video"] for i, c in enumerate(prompts)])

    r = fps_response(WorldAsModel(), n=24)
    assert r["fps"] == [4, 8, 16]
    assert r["model_px_per_frame"] == r["data_px_per_frame"]
    assert -1.05 < r["data_slope"] < -0.85, r
    assert r["data_px_per_frame"][0] > r["data_px_per_frame"][1] > r["data_px_per_frame"][2]
