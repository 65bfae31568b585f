"""The SVP stack's autoencoder trainer on the tiny preset (8 simulated devices): reconstruction improves on a fixed
batch, every param trains, resume equals the uninterrupted run, the latent scale is 1 / std of the means; the
stack's run configs chain their init sources and sizes; the log-mel audio front end carries the speech."""

import json

import numpy as np
import pytest

from jaxtalk import config
from jaxtalk.backbones.audio_features import logmel_frames
from jaxtalk.training import data as data_lib
from jaxtalk.training import loop, svp_stack
from jaxtalk.training.vae import VAETask, latent_scale
from tests.training.train_utils import check_mask, check_resume, load_cfg, overfit, run_script

PRESET = "train_vae_tiny"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("vae_train")


@pytest.fixture(scope="module")
def run(root):
    cfg = load_cfg(PRESET, root, "train.steps=3", "train.checkpoint_every=2")
    return cfg, loop.train(VAETask.from_config(cfg), cfg)


def test_reconstruction_improves_and_every_param_trains(run):
    cfg, result = run
    assert [r["step"] for r in result.history] == [1, 2, 3]
    task = VAETask.from_config(cfg)
    _, before, after, losses = overfit(task, cfg, 25)
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.6 * losses[0], losses
    check_mask(task, cfg, before, after, trained=("vae/encoder", "vae/decoder", "vae/quant_conv",
                                                  "vae/post_quant_conv"))


def test_decoder_only_run_keeps_the_encoder(root):
    cfg = load_cfg(PRESET, root, 'trainable=["^vae/decoder/", "^vae/post_quant_conv/"]')
    task = VAETask.from_config(cfg)
    _, before, after, losses = overfit(task, cfg, 3)
    assert np.all(np.isfinite(losses))
    check_mask(task, cfg, before, after, trained=("vae/decoder", "vae/post_quant_conv"),
               frozen=("vae/encoder/", "vae/quant_conv/"))


def test_expression_term_trains_the_decoder_and_fits_the_probe_on_real_frames(root):
    """With `expression_loss` > 0 a probe joins the params; its gradient is the real frames' fit alone (its reading
    of the reconstructions trains the autoencoder only), and a decoder-only run keeps the encoder."""
    import jax
    import jax.numpy as jnp

    from jaxtalk.training.probes import ExpressionProbe

    cfg = load_cfg(PRESET, root, 'trainable=["^vae/decoder/", "^vae/post_quant_conv/", "^expression_probe/"]',
                   "expression_loss=2.0")
    task = VAETask.from_config(cfg)
    assert task.device_fields()[-1] == "expression"
    state, before, after, losses = overfit(task, cfg, 3)
    assert np.all(np.isfinite(losses))
    check_mask(task, cfg, before, after, trained=("vae/decoder", "vae/post_quant_conv", "expression_probe"),
               frozen=("vae/encoder/", "vae/quant_conv/"))
    params = jax.device_get(state.params)
    batch = {k: jnp.asarray(v) for k, v in next(iter(task.dataset())).items() if k in task.device_fields()}
    truth = batch["expression"].reshape(-1, batch["expression"].shape[-1])
    frames = task.images(batch)[: truth.shape[0]]  # the frames; their reference frames follow
    plain = VAETask.from_config(load_cfg(PRESET, root))
    rng = jax.random.key(3)

    def terms(p):
        total = jax.grad(lambda q: task.loss(q, batch, rng)[0])(p)
        fit = jax.grad(lambda q: jnp.mean((ExpressionProbe().apply({"params": q}, frames) - truth) ** 2))(
            p["expression_probe"])
        (loss, metrics), (base, _) = task.loss(p, batch, rng), plain.loss({"vae": p["vae"]}, batch, rng)
        return total, fit, loss, metrics, base

    total, fit, loss, metrics, base = jax.jit(terms)(params)
    for got, want in zip(jax.tree.leaves(total["expression_probe"]), jax.tree.leaves(fit)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    # the loss is the plain reconstruction loss + the probe's fit + lambda x its reading of the reconstructions
    assert metrics["expression_read"] > 0
    np.testing.assert_allclose(loss, base + metrics["probe_fit"] + 2.0 * metrics["expression_read"], rtol=1e-5)
    with pytest.raises(config.ConfigError, match="flip_rate"):
        config.load(PRESET, ["expression_loss=1.0", "data.flip_rate=0.5"])


def test_resume_gives_the_uninterrupted_loss(root, run):
    check_resume(VAETask.from_config(run[0]), run[0], run[1], root, PRESET)


def test_latent_scale_is_inverse_std_of_means(run):
    cfg, result = run
    task = VAETask.from_config(cfg)
    it = data_lib.make_iterator(task.dataset(), 0)
    batches = [{k: v for k, v in next(it).items() if k in task.device_fields()} for _ in range(2)]
    import jax

    params = jax.device_get(result.state.params)
    scale = latent_scale(task, params, batches)
    encode = jax.jit(lambda p, x: task.module().apply({"params": p}, x, method="encode")[0])
    means = np.concatenate([np.asarray(encode(params["vae"], task.images(b))).ravel() for b in batches])
    np.testing.assert_allclose(scale, 1.0 / means.std(), rtol=1e-5)


def test_config_is_checked():
    with pytest.raises(config.ConfigError, match="frames must be 1"):
        config.load(PRESET, ["data.frames=2"])
    with pytest.raises(config.ConfigError, match="divisible"):
        config.load(PRESET, ["data.image_size=17"])


def test_stack_runs_chain_their_own_outputs(tmp_path):
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "latent_scale.json").write_text(json.dumps({"scaling_factor": 2.5}))
    cfgs = {run.name: svp_stack.run_config(run, tmp_path, 0.01)[0] for run in svp_stack.RUNS}
    assert [r.name for r in svp_stack.RUNS][:3] == ["vae", "style_prior", "style_prior_det"]
    for name, cfg in cfgs.items():
        assert cfg.train.workdir == str(tmp_path / name)
        run = next(r for r in svp_stack.RUNS if r.name == name)
        assert cfg.data.record_dir == str(tmp_path / "data" / run.data_dir)
        assert cfg.data.synthetic.seed == svp_stack.TRAIN_SEED != svp_stack.EVAL_SEED
    for name in ("stage1", "stage2", "stage2_mouth", "stage3", "stage3_det"):
        assert cfgs[name].model.vae.scaling_factor == 2.5
        assert cfgs[name].model.vae == cfgs["vae"].vae.__class__(**{**cfgs["vae"].vae.__dict__,
                                                                    "scaling_factor": 2.5})
    assert [s.path for s in cfgs["stage1"].init] == [str(tmp_path / "vae")]
    # the VAE and stages 1-2 share one record set; the style prior and stage 3 pair clips of one identity
    assert {cfgs[n].data.record_dir for n in ("vae", "stage1", "stage2")} == {str(tmp_path / "data" / "train")}
    assert cfgs["style_prior"].data.record_dir != cfgs["stage1"].data.record_dir != cfgs["stage3"].data.record_dir
    assert cfgs["stage3"].data.synthetic.clips_per_identity > 1 < cfgs["style_prior"].data.synthetic.clips_per_identity
    assert cfgs["stage3"].data.record_dir == cfgs["stage3_det"].data.record_dir != cfgs["stage1"].data.record_dir
    # the mouth-weighted continuation of stage 2 trains on the stage-3 records; both stage-3 runs start from it
    assert [s.path for s in cfgs["stage2_mouth"].init] == [str(tmp_path / "stage2")]
    assert cfgs["stage2_mouth"].mouth_loss_weight > 1.0 == cfgs["stage2"].mouth_loss_weight
    assert not cfgs["stage2_mouth"].zero_params and cfgs["stage2"].zero_params
    assert cfgs["stage2_mouth"].data.record_dir == cfgs["stage3"].data.record_dir
    assert cfgs["stage2_mouth"].data.synthetic == cfgs["stage3"].data.synthetic
    assert [s.path for s in cfgs["stage3"].init] == [str(tmp_path / "stage2_mouth"), str(tmp_path / "style_prior")]
    assert [s.path for s in cfgs["stage3_det"].init] == [str(tmp_path / "stage2_mouth"),
                                                         str(tmp_path / "style_prior_det")]
    assert cfgs["style_prior_det"].extractor.deterministic and cfgs["stage3_det"].model.style_extractor.deterministic
    assert not cfgs["stage3_det"].style_sample and cfgs["stage3"].style_sample
    sampling = config.load(svp_stack.SAMPLING_PRESET)
    assert sampling.unet.unet == cfgs["stage3"].model.unet.unet
    assert sampling.vae.block_out_channels == cfgs["vae"].vae.block_out_channels
    assert sampling.style.extractor == cfgs["stage3"].model.style_extractor
    assert sampling.audio.feature_dim == cfgs["stage2"].audio.feature_dim == 160


def test_logmel_features_follow_the_speech():
    sr = 16000
    t = np.arange(sr) / sr
    low = 0.5 * np.sin(2 * np.pi * 300 * t).astype(np.float32)
    high = 0.5 * np.sin(2 * np.pi * 3000 * t).astype(np.float32)
    silence_then_tone = np.concatenate([np.zeros(sr // 2, np.float32), low[: sr // 2]])
    f_low, f_high = logmel_frames(low), logmel_frames(high)
    assert f_low.shape == (50, 160) and f_low.dtype == np.float32
    # the energy sits in lower mel bands for the lower tone (both stacked 10 ms halves)
    band = lambda f: np.argmax(f[:, :80].mean(0))  # noqa: E731
    assert band(f_low) < band(f_high)
    g = logmel_frames(silence_then_tone)
    assert g[30:].max() > g[:20].max() + 1.0  # silence then a tone: the tone's bands rise where the sound starts
    assert np.ptp(g[:20]) == 0.0  # silence is the floor everywhere
    with pytest.raises(ValueError, match="shorter than one 20 ms frame"):
        logmel_frames(np.zeros(100, np.float32))


def test_stack_refuses_unknown_run_names(tmp_path, capsys):
    # An override typed after --only lands in --only; it must stop the command, not be silently dropped.
    with pytest.raises(SystemExit) as exit_info:
        svp_stack.main(["--root", str(tmp_path), "--only", "stage1", "data.synthetic.num_identities=240"])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert "data.synthetic.num_identities=240" in err and "not a run of the stack" in err
    assert not (tmp_path / "stage1").exists()


def test_train_script_runs(root):
    run_script("vae", PRESET, root)
