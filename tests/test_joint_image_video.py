"""Joint image-video training (LaVie sec. 3.4): single frames of other clips ride along with every clip.

The U-Net's temporal layers skip the trailing ``num_images`` frames, and each image brings its
own caption (a context per frame), so appending images must leave the video frames' prediction
exactly as it was, and the task must build such batches from the latent cache.
"""

import pytest
import torch

from vdlearn.pipelines.t2v import TextToVideo
from vdlearn.training.t2v import T2VTask, T2VTrainConfig, latent_cache


def _cache(model, n=6):
    return latent_cache(model, T2VTrainConfig(preset=model.config.name, cache_clips=n), None, progress=False)


@pytest.mark.parametrize("preset", ["tiny", "tiny_layout"])
def test_appended_images_leave_the_video_frames_unchanged(preset):
    torch.manual_seed(0)
    model = TextToVideo.from_preset(preset).eval()
    with torch.no_grad():  # wake the zero-initialised layers, so that every path changes the output
        for name, p in model.unet.named_parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(0, 0.05)
        if preset == "tiny_layout":
            model.unet.caption_layout.proj.weight.normal_()  # a layout that is not silent
    g = torch.Generator().manual_seed(1)
    video = torch.randn(2, 4, 8, 8, 8, generator=g)  # (b, 4, t, h, w)
    images = torch.randn(2, 4, 3, 8, 8, generator=g)  # three images per video
    tokens = model.tokenize(["a red 3 moving left quickly", "a blue circle moving up slowly"])  # (b, L)
    image_tokens = model.tokenize(["a green 7 moving right quickly"] * 6).reshape(2, 3, -1)  # (b, 3, L)
    t, fps = torch.tensor([100, 900]), torch.tensor([4, 16])
    with torch.no_grad():
        alone = model(video, t, tokens, fps)  # (b, 4, 8, h, w)
        joint = model(torch.cat([video, images], dim=2), t,
                      torch.cat([tokens[:, None].expand(-1, 8, -1), image_tokens], dim=1), fps, num_images=3)
        image_alone = model(images[:, :, :1], t, image_tokens[:, 0], fps, num_images=1) if preset == "tiny" else None
    assert joint.shape == (2, 4, 11, 8, 8)
    assert torch.allclose(joint[:, :, :8], alone, atol=1e-5, rtol=0)
    if image_alone is not None:  # an image is denoised as an image, whatever video it rides with
        assert torch.allclose(joint[:, :, 8:9], image_alone, atol=1e-5, rtol=0)
    assert (joint[:, :, 8:] - joint[:, :, 7:8]).abs().max() > 1e-3


def test_the_task_appends_frames_of_other_clips_with_their_captions():
    model = TextToVideo.from_preset("tiny")
    cache = _cache(model)
    plain = T2VTask(model, cache, batch_size=4)
    joint = T2VTask(model, cache, batch_size=4, images_per_clip=2)
    b = joint.batch(0, torch.Generator().manual_seed(3))
    ref = plain.batch(0, torch.Generator().manual_seed(3))
    assert b["x0"].shape == (4, 4, 10, 8, 8) and b["tokens"].shape == (4, 10, ref["tokens"].shape[1])
    assert torch.equal(b["x0"][:, :, :8], ref["x0"]) and torch.equal(b["t"], ref["t"])  # same clips and timesteps
    assert torch.equal(b["tokens"][:, :8], ref["tokens"][:, None].expand(-1, 8, -1))  # the clip's caption per frame
    latents, tokens = cache["latents"], cache["tokens"]
    for i in range(4):
        for j in range(2):
            image = b["x0"][i, :, 8 + j]  # (4, h, w)
            hits = [(c, f) for c in range(len(latents)) for f in range(latents.shape[2])
                    if torch.equal(latents[c, :, f], image)]
            assert hits, "every image is a frame of a cached clip"
            dropped = torch.equal(b["tokens"][i, 0], joint.empty)
            assert dropped or any(torch.equal(b["tokens"][i, 8 + j], tokens[c]) for c, _ in hits)
    loss = joint.loss(model, b)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="images_per_clip"):
        T2VTask(model, cache, batch_size=4, images_per_clip=-1)


def test_the_layout_refuses_image_mode_but_takes_images_in_a_video_batch():
    model = TextToVideo.from_preset("tiny_layout").eval()
    tokens = model.tokenize(["a red 3 moving left quickly"])
    with torch.no_grad():
        out = model(torch.randn(1, 4, 10, 8, 8), torch.tensor([500]), tokens, torch.tensor([8]), num_images=2)
    assert out.shape == (1, 4, 10, 8, 8)
    with pytest.raises(ValueError, match="image mode"):
        model.unet(torch.randn(1, 4, 8, 8, 8), torch.tensor([500]), model.text_encoder(tokens), torch.tensor([8]),
                   temporal=False)


def test_images_with_their_own_timesteps_are_denoised_as_samples_of_their_own():
    """``image_timesteps="own"``: one timestep per frame; an image at step s is predicted, noised and
    weighed exactly as the same image alone at step s, and the videos keep their batch."""
    torch.manual_seed(0)
    model = TextToVideo.from_preset("tiny").eval()
    with torch.no_grad():
        for p in model.unet.parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(0, 0.05)
    g = torch.Generator().manual_seed(2)
    video, images = torch.randn(2, 4, 8, 8, 8, generator=g), torch.randn(2, 4, 2, 8, 8, generator=g)
    tokens = model.tokenize(["a red 3 moving left quickly", "a blue circle moving up slowly"])
    image_tokens = model.tokenize(["a green 7 moving right quickly", "a red 1 moving down slowly"] * 2).reshape(2, 2, -1)
    t_video, t_images, fps = torch.tensor([100, 900]), torch.tensor([[950, 20], [400, 600]]), torch.tensor([4, 16])
    per_frame = torch.cat([t_video[:, None].expand(-1, 8), t_images], dim=1)  # (b, 10)
    with torch.no_grad():
        joint = model(torch.cat([video, images], dim=2), per_frame,
                      torch.cat([tokens[:, None].expand(-1, 8, -1), image_tokens], dim=1), fps, num_images=2)
        alone = model(video, t_video, tokens, fps)
        for j in range(2):  # image j of each clip, alone, at its own step
            image = model(images[:, :, j:j + 1], t_images[:, j], image_tokens[:, j], fps, num_images=1)
            assert torch.allclose(joint[:, :, 8 + j:9 + j], image, atol=1e-5, rtol=0)
    assert torch.allclose(joint[:, :, :8], alone, atol=1e-5, rtol=0)

    # the loss noises each frame at its own step: frame 8 of clip 0 at t = 950, not at the clip's 100
    from vdlearn.diffusion import q_sample
    noise = torch.randn(2, 4, 10, 8, 8, generator=g)
    x0 = torch.cat([video, images], dim=2)
    x_t = q_sample(model.schedule, x0, per_frame, noise)
    assert torch.allclose(x_t[:1, :, 8:9], q_sample(model.schedule, images[:1, :, :1], 950, noise[:1, :, 8:9]))
    assert torch.allclose(x_t[:1, :, :8], q_sample(model.schedule, video[:1], 100, noise[:1, :, :8]))

    cache = _cache(model)
    shared = T2VTask(model, cache, batch_size=4, images_per_clip=2, high_noise_share=0.5)
    own = T2VTask(model, cache, batch_size=4, images_per_clip=2, high_noise_share=0.5, image_timesteps="own")
    b, ref = own.batch(0, torch.Generator().manual_seed(3)), shared.batch(0, torch.Generator().manual_seed(3))
    assert b["t"].shape == (4, 10) and torch.equal(b["t"][:, :8], ref["t"][:, None].expand(-1, 8))
    assert torch.equal(b["x0"], ref["x0"]) and torch.equal(b["tokens"], ref["tokens"])
    assert (ref["t"][:2] >= 850).all() and not torch.equal(b["t"][:, 8:], ref["t"][:, None].expand(-1, 2))
    assert torch.isfinite(own.loss(model, b))
    with pytest.raises(ValueError, match="image-timesteps"):
        T2VTask(model, cache, batch_size=4, images_per_clip=2, image_timesteps="each")


def test_images_own_timesteps_can_be_drawn_from_a_range_of_the_ladder():
    """``image_t_from`` / ``image_t_to``: the images' own steps lie in the range, the videos' are unchanged."""
    torch.manual_seed(0)
    model = TextToVideo.from_preset("tiny").eval()
    cache = _cache(model)
    whole = T2VTask(model, cache, batch_size=8, images_per_clip=4, high_noise_share=0.5, image_timesteps="own")
    ranged = T2VTask(model, cache, batch_size=8, images_per_clip=4, high_noise_share=0.5, image_timesteps="own",
                     image_t_from=200, image_t_to=900)
    b, ref = ranged.batch(0, torch.Generator().manual_seed(3)), whole.batch(0, torch.Generator().manual_seed(3))
    frames = cache["latents"].shape[2]
    assert torch.equal(b["t"][:, :frames], ref["t"][:, :frames]) and torch.equal(b["x0"], ref["x0"])
    images = b["t"][:, frames:]  # (8, 4)
    assert images.min() >= 200 and images.max() < 900 and not torch.equal(images, ref["t"][:, frames:])
    with pytest.raises(ValueError, match="image-t-from"):
        T2VTask(model, cache, batch_size=4, images_per_clip=2, image_timesteps="own", image_t_from=900, image_t_to=200)
    with pytest.raises(ValueError, match="image-timesteps own"):
        T2VTask(model, cache, batch_size=4, images_per_clip=2, image_t_from=200)
