"""The `*_paper` training presets at full size, abstractly (no weights, no data): every stage's loss traces on
its published shapes, and each SVP stage trains the parameter groups the paper names (slow: traces the SD1.5
UNet forward and backward)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jaxtalk import config
from jaxtalk.training import loop
from jaxtalk.training.style_e import StyleETask
from jaxtalk.training.style_prior import StylePriorTask
from jaxtalk.training.svp import SVPTask

pytestmark = pytest.mark.slow


def _sds(shape, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(shape, dtype)


def _trained(task, cfg):
    params = loop.abstract_params(task)
    mask = traverse_util.flatten_dict(loop.optimizer_of(task, cfg.optimizer)[0], sep="/")
    flat = traverse_util.flatten_dict(params, sep="/")
    return params, {k: int(np.prod(flat[k].shape)) for k, m in mask.items() if m}


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_svp_paper_stages_trace(stage):
    cfg = config.load(f"train_svp_stage{stage}_paper", ["init=[]"])
    task = SVPTask.from_config(cfg)
    params, trained = _trained(task, cfg)
    f, s, w = cfg.data.frames, cfg.data.image_size, cfg.data.clip_window
    a = cfg.audio.feature_dim
    batch = {"frames": _sds((1, f, s, s, 3), jnp.uint8), "reference": _sds((1, s, s, 3), jnp.uint8),
             "kps": _sds((1, f, s, s, 3), jnp.uint8), "audio": _sds((1, f, 10, a)),
             "style_exp": _sds((1, w, 64)), "style_audio": _sds((1, w, a))}
    batch = {k: v for k, v in batch.items() if k in task.device_fields()}
    loss, _ = jax.eval_shape(task.loss, params, batch, jax.random.key(0))
    assert loss.shape == ()
    groups = {k.split("/")[0] for k in trained}
    if stage == 1:
        assert groups == {"unet", "reference_net", "kps_guider"}
        assert not any(k.startswith("unet/") and ("attn_style" in k or "/attn2/" in k) for k in trained)
    elif stage == 2:
        assert groups == {"unet", "audio_projection"}
        motion = sum(n for k, n in trained.items() if "motion_modules" in k)
        assert motion > 4e8  # AnimateDiff v2: about 453 M
    else:
        assert all("attn_style" in k or "norm_style" in k for k in trained)


def test_style_prior_and_style_e_paper_trace():
    cfg = config.load("train_style_prior_paper")
    task = StylePriorTask.from_config(cfg)
    params, _ = _trained(task, cfg)
    n, t = 4, cfg.data.window
    batch = {"exp": _sds((n, t, 64)), "audio": _sds((n, t, cfg.audio.feature_dim)),
             "identity": _sds((n,), jnp.int32), "emotion": _sds((n,), jnp.int32), "clip": _sds((n,), jnp.int32)}
    batch.update({"partner_" + k: v for k, v in batch.items()})
    assert jax.eval_shape(task.loss, params, batch, jax.random.key(0))[0].shape == ()
    cfg = config.load("train_style_e_paper")
    task = StyleETask.from_config(cfg)
    params, trained = _trained(task, cfg)
    assert not any("embed_timestep" in k for k in trained)
    w = cfg.model.window
    batch = {"x0": _sds((2, w, 64)), "sparse": _sds((2, w, 64)), "text": _sds((2, cfg.model.text_dim))}
    assert jax.eval_shape(task.loss, params, batch, jax.random.key(0))[0].shape == ()
