"""SVP three-stage training on the tiny presets over synthetic records, on a (2, 2, 2) mesh of 8 CPU devices.

Per stage: the stage's parameter mask (frozen params bit-identical after several steps, trained ones moved), a fixed
batch overfits, runs chain (stage 1 -> 2 -> 3 plus the style prior run) through `init` sources; for stage 1 a
checkpoint + resume gives the same next-step loss as an uninterrupted run, and `train/svp.py` runs end to end.
Steps compile once per stage (the loop's compiled-step cache).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import save_file

from jaxtalk import config, interop, parallel
from jaxtalk.svp.audio_projection import AudioProjectionConfig, interpolate_linear
from jaxtalk.svp.style_extractor import ProbabilisticStyleExtractor
from jaxtalk.training import checkpoint, loop, sources
from jaxtalk.training import data as data_lib
from jaxtalk.training import state as state_lib
from jaxtalk.training.svp import SVPTask
from tests.training.train_utils import check_mask, check_resume, load_cfg, overfit, run_script

OVERFIT_STEPS = 12
pytestmark = pytest.mark.xdist_group("svp_training")  # one worker trains the stage fixtures once


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("svp_train")


def _overfit(cfg):
    task = SVPTask.from_config(cfg)
    return (task, *overfit(task, cfg, OVERFIT_STEPS))


@pytest.fixture(scope="module")
def stage1(root):
    cfg = load_cfg("train_svp_stage1_tiny", root, "train.steps=3", "train.checkpoint_every=2")
    result = loop.train(SVPTask.from_config(cfg), cfg)
    return cfg, result


def test_audio_windows_match_the_projection_windowing():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((47, 6)).astype(np.float32)
    ap = AudioProjectionConfig(embedding_dim=6)
    full = np.asarray(ap.windows(jnp.asarray(feats)[None], 25))
    part = data_lib.audio_windows(feats, 25, 7, 4, ap.num_pad_audio_frames, ap.vectors_per_frame)
    np.testing.assert_allclose(part, full[7:11], rtol=1e-6, atol=1e-6)
    per_frame = data_lib.per_frame_features(feats, 20, 25.0)
    np.testing.assert_allclose(per_frame, np.asarray(interpolate_linear(jnp.asarray(feats[:40]), 20)),
                               rtol=1e-6, atol=1e-6)


def test_stage1_trains_unet_reference_net_and_guider(root, stage1):
    cfg, result = stage1
    assert [r["step"] for r in result.history] == [1, 2, 3]
    assert sorted(p.name for p in (root / "train_svp_stage1_tiny" / "checkpoints").iterdir()
                  if p.name.isdigit()) == ["2", "3"]
    assert all(np.isfinite(r["loss"]) for r in result.history)
    task, _, before, after, losses = _overfit(cfg)
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0], losses
    check_mask(task, cfg, before, after,
                trained=("unet/conv_in", "unet/down_blocks_0/attentions_0/transformer_blocks_0/attn1_5",
                                  "reference_net/down_blocks_0", "kps_guider/"),
                frozen=("vae/", "audio_projection/", "style_extractor/", "/attn_style/", "unet/mid_block/"
                                 "attentions_0/transformer_blocks_0/attn2/", "reference_net/up_blocks_",
                                 "reference_net/conv_out"))
    assert not any("motion_modules" in k for k in after)


def test_stage1_resume_gives_the_uninterrupted_loss(root, stage1):
    check_resume(SVPTask.from_config(stage1[0]), stage1[0], stage1[1], root, "train_svp_stage1_tiny")


def _motion_checkpoint(cfg, path):
    """An AnimateDiff-layout motion-module file for the tiny UNet (another random init), written with interop."""
    mesh = parallel.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
    params = loop.init_params(SVPTask.from_config(cfg), mesh, 5, loop.FAST_COMPILE)
    motion = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(
        jax.device_get(params["unet"]), sep="/").items() if "motion_modules_" in k}
    state = interop.to_torch("animatediff_motion_module", traverse_util.unflatten_dict(motion, sep="/"))
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path))
    path.with_suffix(".json").write_text('{"num_attention_heads": 2, "norm_num_groups": 8}')
    return motion


@pytest.fixture(scope="module")
def stage2(root, stage1):
    base = load_cfg("train_svp_stage2_tiny", root, "init=[]")
    motion = _motion_checkpoint(base, root / "motion.safetensors")
    cfg = load_cfg("train_svp_stage2_tiny", root, f"init=[{{kind: run, path: {root / 'train_svp_stage1_tiny'}}}, "
                                                 "{kind: animatediff_motion_module, component: unet, "
                                                 f"path: {root / 'motion.safetensors'}, "
                                                 f"config: {root / 'motion.json'}}}]")
    task, state, before, after, losses = _overfit(cfg)
    ckpt = checkpoint.Checkpointer(root / "stage2_run" / "checkpoints")
    ckpt.save(OVERFIT_STEPS, state)
    ckpt.close()
    return cfg, task, before, after, losses, motion


def test_stage2_starts_from_stage1_and_trains_motion_and_audio(root, stage2):
    cfg, task, before, after, losses, motion = stage2
    for k, v in motion.items():  # the motion-module file, with the temporal proj_out zeroed after loading
        np.testing.assert_array_equal(before[f"unet/{k}"], 0 * v if "temporal_transformer/proj_out" in k else v)
    s1 = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(
        sources.run_params(root / "train_svp_stage1_tiny"), sep="/").items()}
    for k in ("unet/conv_in/kernel", "reference_net/down_blocks_0/attentions_0/proj_in/kernel",
              "kps_guider/conv_out/kernel"):
        np.testing.assert_array_equal(before[k], s1[k])
    zeroed = [k for k in before if "attn2/to_out_0" in k and k.startswith("unet/")]
    zeroed += [k for k in before if "temporal_transformer/proj_out" in k]
    assert zeroed and all(not before[k].any() for k in zeroed)
    assert any("motion_modules" in k for k in before)
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.95 * losses[0], losses
    check_mask(task, cfg, before, after,
                trained=("unet/down_blocks_0/motion_modules_0", "audio_projection/",
                                  "unet/down_blocks_0/attentions_0/transformer_blocks_0/attn2"),
                frozen=("reference_net/", "kps_guider/", "vae/", "unet/conv_in", "/attn1/", "/attn1_5/",
                                 "/attn_style/", "resnets_0"))


def test_stage3_batches(root, stage2):
    cfg = load_cfg("train_svp_stage3_tiny", root, "init=[]")
    task = SVPTask.from_config(cfg)
    batch = next(iter(task.dataset()))
    b, f, s, w = cfg.data.batch_size, cfg.data.frames, cfg.data.image_size, cfg.data.clip_window
    ap = cfg.model.audio_projection
    assert batch["frames"].shape == (b, f, s, s, 3) and batch["frames"].dtype == np.uint8
    assert batch["reference"].shape == (b, s, s, 3) and batch["kps"].shape == (b, f, s, s, 3)
    assert batch["audio"].shape == (b, f, ap.window, cfg.audio.feature_dim)
    assert batch["style_exp"].shape == (b, w, 64) and batch["style_audio"].shape == (b, w, cfg.audio.feature_dim)
    assert batch["kps"].max() > 0
    assert set(task.device_fields()) <= set(batch)
    for i in range(b):  # the frames' own coefficients: f consecutive rows of the window's
        starts = [o for o in range(w - f + 1) if np.array_equal(batch["style_exp"][i, o:o + f], batch["expression"][i])]
        assert batch["expression"][i].shape == (f, 64) and starts


def test_stage3_trains_only_the_style_attention(root, stage2):
    ex = stage2[0].model.style_extractor  # a stand-in style-prior run: extractor params under a TrainState
    module = ProbabilisticStyleExtractor(ex)
    params = jax.jit(lambda k: nn.meta.unbox(module.init(k, jnp.zeros((1, 2, ex.exp_dim)),
                                                         jnp.zeros((1, 2, ex.audio_dim)))))(jax.random.key(3))
    params = jax.tree.map(lambda x: x + 1.0, params["params"])
    prior_state = state_lib.create_state({"style_extractor": params},
                                         state_lib.make_optimizer(state_lib.OptimizerConfig()))
    ckpt = checkpoint.Checkpointer(root / "prior_run" / "checkpoints")
    ckpt.save(1, prior_state)
    ckpt.close()
    cfg = load_cfg("train_svp_stage3_tiny", root, f"init=[{{kind: run, path: {root / 'stage2_run'}}}, "
                                             f"{{kind: run, path: {root / 'prior_run'}, component: style_extractor}}]")
    task, _, before, after, losses = _overfit(cfg)
    for k, v in traverse_util.flatten_dict(jax.device_get(params), sep="/").items():
        np.testing.assert_array_equal(before[f"style_extractor/{k}"], np.asarray(v))
    s2 = stage2[3]
    for k in ("unet/down_blocks_0/motion_modules_0/temporal_transformer/proj_out/kernel",
              "audio_projection/proj_in/kernel"):
        np.testing.assert_array_equal(before[k], s2[k])
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    check_mask(task, cfg, before, after, trained=(
        "unet/down_blocks_0/attentions_0/transformer_blocks_0/attn_style",),
                frozen=("unet/conv_in", "motion_modules", "audio_projection/", "style_extractor/",
                                 "reference_net/", "/attn2/"))


def test_stage3_expression_term_needs_the_decoder_and_trains_the_probe_on_real_frames(root, stage2):
    """With `expression_loss` > 0 the VAE decoder must come from an init source; a probe joins the params, its
    gradient is the real frames' fit alone, and its reading of the decoded x0 prediction pulls on the style
    attention only among the UNet's trained params."""
    from jaxtalk.training.probes import ExpressionProbe

    base = load_cfg("train_svp_stage3_tiny", root, "expression_loss=1.0", "init=[]")
    task = SVPTask.from_config(base)
    assert "expression_probe" in task.modules() and task.device_fields()[-1] == "expression"
    mesh = parallel.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    fresh = loop.init_params(task, mesh, 0)
    assert any(k.startswith("decoder/") for k in traverse_util.flatten_dict(fresh["vae"], sep="/"))
    vae_state = state_lib.create_state({"vae": jax.tree.map(lambda x: x + 0.5, jax.device_get(fresh["vae"]))},
                                       state_lib.make_optimizer(state_lib.OptimizerConfig()))
    ckpt = checkpoint.Checkpointer(root / "vae_run" / "checkpoints")
    ckpt.save(1, vae_state)
    ckpt.close()
    stage2_run = f"{{kind: run, path: {root / 'stage2_run'}}}"
    no_decoder = SVPTask.from_config(load_cfg("train_svp_stage3_tiny", root, "expression_loss=1.0",
                                              f"init=[{stage2_run}]"))
    with pytest.raises(ValueError, match="VAE decoder"):
        no_decoder.prepare_params(loop.init_params(no_decoder, mesh, 0))
    cfg = load_cfg("train_svp_stage3_tiny", root, "expression_loss=1.0",
                   f"init=[{stage2_run}, {{kind: run, path: {root / 'vae_run'}, component: vae}}]")
    task = SVPTask.from_config(cfg)
    params = jax.device_get(task.prepare_params(loop.init_params(task, mesh, 0)))
    flat = traverse_util.flatten_dict(params, sep="/")
    np.testing.assert_array_equal(flat["vae/decoder/conv_out/kernel"],
                                  np.asarray(vae_state.params["vae"]["decoder"]["conv_out"]["kernel"]))
    batch = {k: jnp.asarray(v) for k, v in next(iter(task.dataset())).items() if k in task.device_fields()}
    probe = ExpressionProbe()

    def grads(p):
        total, metrics = jax.grad(lambda q: task.loss(q, batch, jax.random.key(1)), has_aux=True)(p)
        expr = jax.grad(lambda q: task.loss(q, batch, jax.random.key(1))[1]["expr"])(p)["unet"]
        frames = batch["frames"].reshape(-1, *batch["frames"].shape[2:]).astype(jnp.float32) / 127.5 - 1.0
        fit = jax.grad(lambda q: jnp.mean((probe.apply({"params": q}, frames)
                                           - batch["expression"].reshape(frames.shape[0], -1)) ** 2))(
            p["expression_probe"])
        return total, metrics, expr, fit

    total, metrics, expr, fit = jax.jit(grads, compiler_options=dict(loop.FAST_COMPILE))(params)
    for got, want in zip(jax.tree.leaves(total["expression_probe"]), jax.tree.leaves(fit)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    pulled = {k for k, g in traverse_util.flatten_dict(expr, sep="/").items() if np.abs(g).max() > 0}
    assert any("/attn_style/" in k for k in pulled)
    assert np.isfinite(metrics["expr"]) and metrics["expr"] > 0 and np.isfinite(metrics["probe_fit"])
    trainable = state_lib.trainable_mask(params, task.trainable_patterns())
    mask = traverse_util.flatten_dict(trainable, sep="/")
    assert any(mask[k] for k in mask if k.startswith("expression_probe/"))
    assert not any(mask[k] for k in mask if k.startswith("vae/") or "/attn2/" in k)


def test_mouth_loss_weight_weighs_the_loss_inside_the_kps_mouth_box(root, stage2):
    """V-Express's mouth loss weight: batches carry each frame's mouth-box cover from its Head-Kps, and the loss
    is the plain loss where the box is empty and larger where it covers the frame."""
    cfg2, _, _, after, _, _ = stage2
    params = traverse_util.unflatten_dict(after, sep="/")
    plain = SVPTask.from_config(cfg2)
    cfg = load_cfg("train_svp_stage2_tiny", root, "init=[]", "mouth_loss_weight=4")
    task = SVPTask.from_config(cfg)
    assert "mouth_mask" in task.device_fields() and "mouth_mask" not in plain.device_fields()
    batch = next(iter(task.dataset()))
    b, f, s = cfg.data.batch_size, cfg.data.frames, cfg.data.image_size
    mask = batch["mouth_mask"]
    assert mask.shape == (b, f, s, s) and mask.dtype == np.float32 and 0 < mask.mean() < 0.2
    assert mask.min() >= 0 and mask.max() == 1
    rows = np.flatnonzero(mask[0, 0].max(axis=1))  # the box lies in the lower half of the face, below the eyes
    assert rows.mean() > s / 2
    rng = jax.random.key(3)
    loss = jax.jit(lambda p, bt, k, t=task: t.loss(p, bt, k)[0])
    loss_plain = jax.jit(lambda p, bt, k: plain.loss(p, bt, k)[0])
    fields = {k: batch[k] for k in task.device_fields()}
    base = float(loss_plain(params, {k: v for k, v in fields.items() if k != "mouth_mask"}, rng))
    np.testing.assert_allclose(float(loss(params, fields | {"mouth_mask": 0 * mask}, rng)), base, rtol=1e-5)
    np.testing.assert_allclose(float(loss(params, fields | {"mouth_mask": np.ones_like(mask)}, rng)), 4 * base,
                               rtol=1e-4)
    assert float(loss(params, fields, rng)) > base


def test_stage_configs_are_checked():
    with pytest.raises(config.ConfigError, match="single frames"):
        config.load("train_svp_stage1_tiny", ["data.frames=4"])
    with pytest.raises(config.ConfigError, match="motion"):
        config.load("train_svp_stage2_tiny", ["model.unet.motion.enabled=false"])
    with pytest.raises(config.ConfigError, match="divisible"):
        config.load("train_svp_stage1_tiny", ["data.batch_size=3"])
    with pytest.raises(config.ConfigError, match="mouth_loss_weight"):
        config.load("train_svp_stage2_tiny", ["mouth_loss_weight=0.5"])
    with pytest.raises(config.ConfigError, match="stage-3 term"):
        config.load("train_svp_stage2_tiny", ["expression_loss=1.0"])
    with pytest.raises(config.ConfigError, match="flip_rate"):
        config.load("train_svp_stage3_tiny", ["expression_loss=1.0", "data.flip_rate=0.5"])


def test_train_script_runs(root, stage1):
    run_script("svp", "train_svp_stage1_tiny", root)
