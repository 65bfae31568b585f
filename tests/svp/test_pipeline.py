"""SVP sampling at the tiny config: end to end under jit, seeds, CFG, long clips in bounded memory, data-parallel
sampling on a mesh, style / keypoint inputs, atomic outputs.

The random-init UNet zero-initialises the kps guider's conv_out, the style attention's to_out and the motion
modules' proj_out (as the originals do); the fixture re-randomises every all-zero param so those paths change the
output and the checks below see them.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk import config, parallel
from jaxtalk.data import media, synthetic
from jaxtalk.svp import context
from jaxtalk.svp import models as svp_models
from jaxtalk.svp import pipeline as P

OVERRIDES = ["sampler.steps=2", "context.overlap=2"]  # 12 frames = 5 windows of 4, no cut
FPS = 25.0


def _rerandomise_zeros(params, seed):
    rng = np.random.default_rng(seed)
    host = jax.device_get(params)
    return jax.tree.map(lambda x: jnp.asarray(x if np.any(x) else (0.05 * rng.standard_normal(x.shape)).astype(x.dtype)),
                        host)


@pytest.fixture(scope="module")
def models():
    cfg = config.load("svp_tiny", overrides=OVERRIDES)
    m = svp_models.build_models(cfg, seed=0)
    return dataclasses.replace(m, params=_rerandomise_zeros(m.params, 1))


@pytest.fixture(scope="module")
def clips():
    ident = synthetic.make_identity(3, 0)
    out = []
    for k, emotion in enumerate(["happy", "angry"]):
        c = synthetic.generate_clip(ident, emotion, 2, seed=10 + k, num_frames=12, fps=FPS, resolution=64)
        out.append(c)
    return out


def _inputs(clip, frames=4, style=True):
    samples = int(frames / FPS * media.SAMPLE_RATE)
    style_src = P.StyleClip(clip.expression, clip.audio, FPS) if style else None
    return P.ClipInputs(reference=clip.frames[0], audio=clip.audio[:samples], kps=clip.head_kps[:frames],
                        style=style_src)


def test_end_to_end_and_seed_determinism(models, clips):
    """One input -> one result; a sequence -> a list with one result per input (the first sampled as alone)."""
    pipe = P.SVPPipeline(models, progress=False)
    a = pipe(_inputs(clips[0]), seed=0)
    [b] = pipe([_inputs(clips[0])], seed=0)
    c = pipe(_inputs(clips[0]), seed=1)
    assert isinstance(a, P.Result) and a.frames.shape == (4, 32, 32, 3) and a.frames.dtype == np.uint8
    assert a.latents.shape == (4, 4, 4, 4) and np.all(np.isfinite(a.latents))
    assert a.fps == FPS and a.audio.shape[0] == 4 * media.SAMPLE_RATE // 25
    np.testing.assert_array_equal(a.latents, b.latents)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert np.abs(a.latents - c.latents).max() > 1e-3


def _variant(models, **guidance):
    cfg = models.config
    cfg = dataclasses.replace(cfg, guidance=dataclasses.replace(cfg.guidance, **guidance))
    return P.SVPPipeline(dataclasses.replace(models, config=cfg), progress=False)


def test_cfg_scale_one_equals_conditional_branch(models, clips):
    keys = P.clip_keys(0, 1)
    pipe = P.SVPPipeline(models, progress=False)
    cond = pipe.prepare([_inputs(clips[0])], keys, 4)
    guided_one = _variant(models, scale=1.0, force_cfg=True).sample_latents(cond, keys, 4)  # [uncond, cond] batch
    conditional = _variant(models, scale=1.0).sample_latents(cond, keys, 4)  # cond branch only
    guided_two = _variant(models, scale=2.0).sample_latents(cond, keys, 4)
    np.testing.assert_allclose(np.asarray(guided_one), np.asarray(conditional), rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(guided_two) - np.asarray(conditional)).max() > 1e-3


class _RecordingUNet:
    """Stands in for SVPUNet: out = x + per-row means of every condition, so each one shows in the output."""

    def apply(self, variables, x, t, audio, *, reference_bank, kps_features, style_tokens, reference_weight,
              audio_weight, style_weight):
        rows = lambda a: jnp.mean(a.reshape(a.shape[0], -1), axis=1)
        total = (audio_weight * rows(audio) + reference_weight * sum(rows(b) for b in reference_bank)
                 + rows(kps_features) + style_weight * rows(style_tokens) + 0 * t)
        return x + total[:, None, None, None, None]


class _Guider:
    def apply(self, variables, imgs):
        return imgs * 10.0


def test_unconditional_branch_zeroes_every_condition(models):
    """Batch [uncond, cond]: the uncond half sees zero audio tokens, bank, kps features and style tokens."""
    import types

    fake = types.SimpleNamespace(config=models.config, unet=_RecordingUNet(), kps_guider=_Guider())
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 4, 2, 2, 4)), jnp.float32)
    audio = jnp.asarray(rng.uniform(1, 2, (2, 4, 3, 8)), jnp.float32)
    bank = (jnp.asarray(rng.uniform(1, 2, (2, 5, 8)), jnp.float32), jnp.asarray(rng.uniform(1, 2, (2, 3, 16))))
    kps = jnp.asarray(rng.integers(0, 255, (2, 4, 8, 8, 3)), jnp.uint8)
    style = jnp.asarray(rng.uniform(1, 2, (2, 1, 16)), jnp.float32)
    scalars = {"guidance_scale": jnp.float32(3.0), "reference_weight": jnp.float32(0.5),
               "audio_weight": jnp.float32(2.0), "style_weight": jnp.float32(1.5)}
    rows = lambda a: np.asarray(a, np.float64).reshape(2, -1).mean(axis=1)
    c = (2.0 * rows(audio) + 0.5 * (rows(bank[0]) + rows(bank[1])) + rows(np.asarray(kps) / 255.0 * 10.0)
         + 1.5 * rows(style))
    u = np.zeros(2)
    guided = P.window_prediction(fake, {"unet": None, "kps_guider": None}, x, jnp.float32(10.0), audio, kps, bank,
                                 style, scalars, do_cfg=True)
    expected = np.asarray(x) + (u + 3.0 * (c - u))[:, None, None, None, None]
    np.testing.assert_allclose(np.asarray(guided), expected, rtol=1e-5)
    plain = P.window_prediction(fake, {"unet": None, "kps_guider": None}, x, jnp.float32(10.0), audio, kps, bank,
                                style, scalars, do_cfg=False)
    np.testing.assert_allclose(np.asarray(plain), np.asarray(x) + c[:, None, None, None, None], rtol=1e-5)
    keep = dataclasses.replace(models.config, guidance=dataclasses.replace(models.config.guidance,
                                                                           uncond_style="keep"))
    kept = P.window_prediction(types.SimpleNamespace(config=keep, unet=fake.unet, kps_guider=fake.kps_guider),
                               {"unet": None, "kps_guider": None}, x, jnp.float32(10.0), audio, kps, bank, style,
                               scalars, do_cfg=True)
    u_keep = 1.5 * rows(style)
    np.testing.assert_allclose(np.asarray(kept), np.asarray(x) + (u_keep + 3.0 * (c - u_keep))[:, None, None, None, None],
                               rtol=1e-5)


def test_long_clip_samples_in_the_memory_of_one_window(models, clips):
    pipe = P.SVPPipeline(models, progress=False)
    window = models.config.context.frames
    keys = P.clip_keys(0, 1)
    sizes = {}
    for frames in (window, 3 * window):
        compiled = pipe.compile_denoise(keys, pipe.condition_shapes(1, frames), frames)
        ma = compiled.memory_analysis()
        sizes[frames] = (ma.temp_size_in_bytes, ma.argument_size_in_bytes, ma.output_size_in_bytes)
        print(f"frames={frames:3d} windows={pipe.window_plan(frames).num_windows}: temp {ma.temp_size_in_bytes:,} B, "
              f"arguments {ma.argument_size_in_bytes:,} B, output {ma.output_size_in_bytes:,} B")
    one, three = sizes[window], sizes[3 * window]
    # The per-frame state (latents, accumulator, audio tokens, kps images) grows with F; subtract that growth.
    latent_bytes = 4 * int(np.prod(pipe.latent_shape))
    growth = (3 * window - window) * latent_bytes * 4  # x, accumulator, euler input, prediction
    assert three[0] <= 1.15 * one[0] + growth, f"temp memory grows with the clip: {one[0]:,} -> {three[0]:,} B"

    frames = 3 * window
    assert pipe.num_frames(_inputs(clips[0], frames=frames).audio)[0] == frames
    cond = pipe.prepare([_inputs(clips[0], frames=frames)], keys, frames)
    long = np.asarray(pipe.sample_latents(cond, keys, frames))
    assert long.shape == (1, frames, *pipe.latent_shape) and np.all(np.isfinite(long))
    # every window denoised its own frames: the clip is not one window repeated
    assert np.abs(long[0, :window] - long[0, -window:]).max() > 1e-3


def test_long_clip_window_plan_is_the_vexpress_rule(models):
    pipe = P.SVPPipeline(models, progress=False)
    c = models.config.context
    frames, fps = pipe.num_frames(np.ones(int(0.52 * media.SAMPLE_RATE), np.float32))  # 13 frames at 25 fps
    assert frames == context.cut_length(13, c.frames, c.overlap) == 12 and fps == pytest.approx(12 / 0.52)


def test_data_parallel_on_mesh_matches_one_by_one(models, clips):
    mesh = parallel.make_mesh(2, 2, 2)
    sharded = models.on_mesh(mesh)
    flat = jax.tree.leaves(sharded.params["unet"])
    assert any(not x.sharding.is_fully_replicated for x in flat), "no unet param is sharded on the mesh"
    keys = P.clip_keys(7, 2)
    single = P.SVPPipeline(models, progress=False)
    conds = [single.prepare([_inputs(clips[i])], keys[i:i + 1], 4) for i in range(2)]
    alone = [np.asarray(single.sample_latents(conds[i], keys[i:i + 1], 4))[0] for i in range(2)]
    both = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), conds[0], conds[1])
    batch = P.SVPPipeline(sharded, progress=False).sample_latents(both, keys, 4)
    assert batch.sharding.spec[0] is not None, f"the clip axis is not split: {batch.sharding}"
    for i in range(2):
        np.testing.assert_allclose(np.asarray(batch)[i], alone[i], rtol=1e-4, atol=1e-4)
    assert np.abs(alone[0] - alone[1]).max() > 1e-3


def test_style_sources(tmp_path, models, clips):
    a = svp_models.StyleGaussian(np.full((1, 16), 1.0, np.float32), np.full((1, 16), 4.0, np.float32))
    b = svp_models.StyleGaussian(np.full((1, 16), -1.0, np.float32), np.full((1, 16), 1.0, np.float32))
    mixed = P.resolve_style(models, P.StyleMix(a, b, 0.25))
    np.testing.assert_allclose(mixed.mu, 0.5)  # 0.75 * 1 + 0.25 * -1
    np.testing.assert_allclose(mixed.var, 1.75 ** 2)  # sigma 0.75 * 2 + 0.25 * 1
    path = P.save_style_prior(tmp_path / "prior.npz", a)
    loaded = P.load_style(path)
    np.testing.assert_array_equal(loaded.mu, a.mu)
    np.testing.assert_array_equal(loaded.var, a.var)
    clip = clips[0]
    np.savez(tmp_path / "clip.npz", expression=clip.expression, audio=clip.audio, fps=np.float32(FPS))
    style_clip = P.load_style(tmp_path / "clip.npz")
    prior = P.resolve_style(models, style_clip)
    assert prior.mu.shape == (1, 16) and np.all(prior.var >= 0)
    with pytest.raises(media.MediaError, match="style file"):
        P.load_style(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", something=np.zeros(3))
    with pytest.raises(media.MediaError, match="mu \\+ var"):
        P.load_style(tmp_path / "bad.npz")


def test_keypoint_track_resamples_like_torch_linear():
    rng = np.random.default_rng(0)
    kps = rng.uniform(0, 64, (7, 8, 2)).astype(np.float32)
    out = P.keypoint_track(kps, 10)
    # F.interpolate(linear, align_corners=False): source position (i + 0.5) * 7/10 - 0.5, clamped at 0
    src = np.maximum((np.arange(10) + 0.5) * 7 / 10 - 0.5, 0)
    expected = np.stack([[np.interp(src, np.arange(7), kps[:, k, d]) for d in range(2)] for k in range(8)])
    np.testing.assert_allclose(out, np.moveaxis(expected, -1, 0), rtol=1e-5, atol=1e-4)
    still = P.keypoint_track(kps[0], 5)
    assert still.shape == (5, 8, 2) and np.all(still == kps[0])
    cut = P.keypoint_track(kps, 3)  # longer tracks are cut, not squeezed
    np.testing.assert_allclose(cut, kps[:3], atol=1e-5)


def test_write_outputs_is_atomic(tmp_path, models):
    frames = np.zeros((3, 32, 32, 3), np.uint8)
    audio = np.sin(np.linspace(0, 100, 1920)).astype(np.float32)
    paths = P.write_outputs(tmp_path / "a.mp4", frames, audio, 25.0, models.config)
    assert paths["video"].is_file() and paths["config"].is_file()
    assert config.load(paths["config"]) == models.config
    (tmp_path / "b.yaml").mkdir()  # the config cannot be written there
    with pytest.raises(OSError):
        P.write_outputs(tmp_path / "b.mp4", frames, audio, 25.0, models.config)
    assert not (tmp_path / "b.mp4").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "a.yaml", "b.yaml"]


def _leaves(tree):
    from flax import traverse_util

    return {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(jax.device_get(tree)).items()}


def test_vexpress_files_and_saved_bundles_load_exactly(tmp_path, models):
    import json
    import re

    import torch

    import jaxtalk.loading
    from jaxtalk import interop
    from jaxtalk.interop.checkpoint import save_converted

    p = models.params
    save = lambda state, name: torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()},
                                          tmp_path / "vx" / f"{name}.pth")
    (tmp_path / "vx").mkdir()
    unet_sd = interop.to_torch("vexpress_denoising_unet", p["unet"], models.config.unet)  # V-Express keys only
    motion = {k: v for k, v in unet_sd.items() if ".motion_modules." in k}
    save({k: v for k, v in unet_sd.items() if k not in motion}, "denoising_unet")
    save(motion, "motion_module")
    save(interop.to_torch("vexpress_reference_net", p["reference_net"]), "reference_net")
    save(interop.to_torch("vexpress_kps_guider", p["kps_guider"]), "v_kps_guider")
    save(interop.to_torch("vexpress_audio_projection", p["audio_projection"]), "audio_projection")

    loaded = svp_models.from_vexpress(tmp_path / "vx", cfg=models.config)
    assert loaded.config == models.config
    assert "random init" in loaded.source and "vae" in loaded.source and "audio_encoder" in loaded.source
    for name in ("reference_net", "kps_guider", "audio_projection"):
        a, b = _leaves(loaded.params[name]), _leaves(p[name])
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), name
    a, b = _leaves(loaded.params["unet"]), _leaves(p["unet"])
    style = [k for k in b if re.search(r"(attn_style|norm_style)", k)]
    assert style and a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in b if k not in style)
    assert all(not np.any(a[k]) for k in style if "to_out_0" in k)  # V-Express has no style layers: zero output

    # the importer writes the same bundle format: `jaxtalk convert --kind vexpress` on the V-Express folder
    from jaxtalk import cli, config

    config.save(models.config, tmp_path / "svp.yaml")
    assert cli.main(["convert", "--kind", "vexpress", "--weights", str(tmp_path / "vx"), "--config",
                     str(tmp_path / "svp.yaml"), "--out", str(tmp_path / "imported")]) == 0
    imported = jaxtalk.loading.load_models(tmp_path / "imported")
    assert imported.config == models.config
    assert json.loads((tmp_path / "imported" / "manifest.json").read_text())["importer"] == "vexpress"
    for name in ("unet", "reference_net", "kps_guider", "audio_projection"):
        a, b = _leaves(imported.params[name]), _leaves(loaded.params[name])
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), name

    bundle = svp_models.save_models(models, tmp_path / "bundle")
    again = jaxtalk.loading.load_models(bundle)  # one loader for both products' bundles
    assert again.config == models.config and again.source.startswith("converted checkpoint")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert (manifest["format"], manifest["system"], manifest["layout"]) == ("jaxtalk-bundle/1", "svp", "orbax")
    assert manifest["num_params"] == models.num_params
    for name in models.params:
        a, b = _leaves(again.params[name]), _leaves(p[name])
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), name

    parts = tmp_path / "parts"
    save_converted(parts / "guider", "vexpress_kps_guider", p["kps_guider"], None)
    save_converted(parts / "projection", "vexpress_audio_projection", p["audio_projection"],
                   {"heads": models.config.audio_projection.heads, "dim_head": models.config.audio_projection.dim_head})
    mixed = svp_models.load_converted_parts(parts, cfg=models.config)
    assert mixed.config == models.config
    assert "kps_guider" in mixed.source and "random init" in mixed.source and "unet" in mixed.source
    a, b = _leaves(mixed.params["kps_guider"]), _leaves(p["kps_guider"])
    assert all(np.array_equal(a[k], b[k]) for k in b)
    with pytest.raises(svp_models.ModelLoadError, match="denoising_unet"):
        svp_models.from_vexpress(parts, cfg=models.config)


def test_sampler_sections_select_the_papers_schedules():
    vx = P.sampler_coefficients(config.load("svp_vexpress").sampler)  # DDIM, v-prediction, zero SNR, trailing
    assert vx.prediction_type == "v_prediction"
    np.testing.assert_array_equal(np.asarray(vx.timesteps), np.arange(999, 0, -40))  # 999, 959, ..., 39
    assert float(vx.alphas_cumprod[0]) == 0.0 and float(vx.alphas_cumprod_prev[-1]) == 1.0
    svp = P.sampler_coefficients(config.load("svp_paper").sampler)  # Euler, epsilon, SD1.5 schedule
    assert svp.prediction_type == "epsilon" and svp.num_steps == 25
    np.testing.assert_allclose(np.asarray(svp.sigmas[:3]), [14.61465, 11.43594, 9.07681], rtol=1e-4)
    assert float(svp.sigmas[-1]) == 0.0 and float(svp.init_noise_sigma) == pytest.approx(14.6146, rel=1e-4)


class _WindowUNet:
    """A stand-in UNet whose output depends on the whole window (so overlapping windows disagree)."""

    dtype = jnp.float32

    def apply(self, variables, x, t, audio, *, reference_bank, kps_features, style_tokens, **weights):
        per_frame = jnp.mean(audio, axis=(2, 3))[:, :, None, None, None]
        return 0.3 * x + 0.1 * jnp.mean(x, axis=1, keepdims=True) + 1e-4 * t[:, None, None, None, None] + per_frame


@pytest.mark.parametrize("preset", ["svp_paper", "svp_vexpress"])
def test_windowed_loop_matches_a_direct_computation(preset):
    """denoise_latents (scan over steps, fori_loop over windows, mean overlap, one step) against numpy."""
    import types

    cfg = config.load(preset, overrides=["sampler.steps=3", "guidance.scale=1.0"])
    fake = types.SimpleNamespace(config=cfg, unet=_WindowUNet(), kps_guider=None)
    plan = context.window_plan(11, 4, 1)  # windows 0-3, 3-6, 6-9 and a reflected 9,10,9,8
    coeffs = P.sampler_coefficients(cfg.sampler)
    keys = P.clip_keys(0, 2)
    audio = jnp.asarray(np.random.default_rng(0).standard_normal((2, 11, 2, 3)), jnp.float32)
    cond = P.Conditions(audio_tokens=audio, reference_bank=())
    scalars = {k: jnp.float32(1.0) for k in ("guidance_scale", "reference_weight", "audio_weight", "style_weight")}
    got = jax.jit(lambda k, c: P.denoise_latents(fake, {"unet": None}, k, c, scalars, plan=plan, coeffs=coeffs,
                                                 latent_shape=(2, 2, 4), do_cfg=False))(keys, cond)

    z = np.stack([np.asarray(jax.random.normal(jax.random.fold_in(k, 0), (11, 2, 2, 4))) for k in keys], 0)
    a = np.asarray(audio, np.float64).mean(axis=(2, 3))
    euler = cfg.sampler.kind == "euler"
    x = z * float(coeffs.init_noise_sigma) if euler else z.astype(np.float64)
    for n in range(coeffs.num_steps):
        t = float(coeffs.timesteps[n])
        inp = x / np.sqrt(float(coeffs.sigmas[n]) ** 2 + 1) if euler else x
        acc, count = np.zeros_like(x), np.zeros(11)
        for idx in plan.indices:
            w = inp[:, idx]
            pred = 0.3 * w + 0.1 * w.mean(axis=1, keepdims=True) + 1e-4 * t + a[:, idx][:, :, None, None, None]
            for p, f in enumerate(idx):
                acc[:, f] += pred[:, p]
                count[f] += 1
        eps = acc / count[None, :, None, None, None]
        if euler:  # epsilon prediction
            s, s_next = float(coeffs.sigmas[n]), float(coeffs.sigmas[n + 1])
            x = x + (x - (x - s * eps)) / s * (s_next - s)
        else:  # DDIM eta 0, v prediction
            ab, ab_prev = float(coeffs.alphas_cumprod[n]), float(coeffs.alphas_cumprod_prev[n])
            x0 = np.sqrt(ab) * x - np.sqrt(1 - ab) * eps
            e = np.sqrt(ab) * eps + np.sqrt(1 - ab) * x
            x = np.sqrt(ab_prev) * x0 + np.sqrt(1 - ab_prev) * e
    np.testing.assert_allclose(np.asarray(got), x, rtol=1e-4, atol=1e-4 * np.abs(x).max())


def test_median_filter_is_vexpress_3d_median():
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (1, 5, 6, 7, 3), dtype=np.uint8)
    got = P.median_filter_video(video)
    padded = np.pad(video[0], ((1, 1), (1, 1), (1, 1), (0, 0)), mode="reflect")  # torch 'reflect'
    expected = np.zeros_like(video[0])
    for f in range(5):
        for y in range(6):
            for x in range(7):
                expected[f, y, x] = np.median(padded[f:f + 3, y:y + 3, x:x + 3].reshape(27, 3), axis=0)
    np.testing.assert_array_equal(got[0], expected)
