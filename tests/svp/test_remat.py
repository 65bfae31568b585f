"""Rematerialisation and mixed precision of the SVP UNets: `remat` policies on the down / mid / up blocks of the
video UNet (with motion modules) and the ReferenceNet (whose bank leaves the checkpoints as outputs) give the same
float32 loss and gradients as no remat, and bfloat16 compute over float32 params gives a finite loss close to the
float32 one with finite float32 gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk import config
from jaxtalk.backbones.sd_unet import REMAT_POLICIES, checkpoint_policy
from jaxtalk.svp.reference_net import ReferenceNet
from jaxtalk.svp.video_unet import SVPUNet
from jaxtalk.training import loop
from jaxtalk.training.svp import SVPTask

# Two resolutions, a cross-attention and a plain block, the mid block, and motion modules at both resolutions and
# in the mid block: every place `remat` wraps.
UNET = ["model.unet.unet.block_out_channels=[8,16]", "model.unet.unet.down_block_types=[CrossAttnDownBlock2D,"
        "DownBlock2D]", "model.unet.unet.up_block_types=[UpBlock2D,CrossAttnUpBlock2D]",
        "model.unet.motion.enabled=true", "model.unet.motion.resolutions=[1,2]", "model.unet.motion.mid_block=true",
        "model.kps_guider.embedding_channels=8"]
B, F, S = 1, 2, 4


def _cfg(remat="none", dtype="float32"):
    return config.load("train_svp_stage2_tiny", [*UNET, f"model.remat={remat}", f"model.dtype={dtype}"]).model


def _modules(m):
    kw = dict(dtype=jnp.bfloat16 if m.dtype == "bfloat16" else jnp.float32, param_dtype=jnp.float32)
    return (SVPUNet(m.unet, attention_implementation="xla", remat=m.remat, **kw),
            ReferenceNet(m.unet.unet, attention_implementation="xla", remat=m.remat, **kw))


def _inputs(m):
    k = jax.random.split(jax.random.key(0), 5)
    u = m.unet.unet
    return {"x": jax.random.normal(k[0], (B, F, S, S, u.in_channels)),
            "ref": jax.random.normal(k[1], (B, S, S, u.in_channels)),
            "audio": jax.random.normal(k[2], (B, F, 3, u.cross_attention_dim)),
            "style": jax.random.normal(k[3], (B, 2, m.unet.style_dim)),
            "target": jax.random.normal(k[4], (B, F, S, S, u.out_channels)), "t": jnp.array([500.0])}


def _params(m):
    unet, ref = _modules(m)
    x = _inputs(m)
    u = m.unet.unet
    p_unet = unet.init(jax.random.key(1), x["x"], x["t"], x["audio"], style_tokens=x["style"])["params"]
    p_ref = ref.init(jax.random.key(2), x["ref"], 0, jnp.zeros((B, 1, u.cross_attention_dim)))["params"]
    return {"unet": p_unet, "reference_net": p_ref}


def _loss_and_grads(m, params):
    unet, ref = _modules(m)
    x = _inputs(m)
    u = m.unet.unet

    def loss(p):
        _, bank = ref.apply({"params": p["reference_net"]}, x["ref"], 0, jnp.zeros((B, 1, u.cross_attention_dim)))
        pred = unet.apply({"params": p["unet"]}, x["x"], x["t"], x["audio"], reference_bank=bank,
                          style_tokens=x["style"])
        return jnp.mean(jnp.square(pred.astype(jnp.float32) - x["target"]))

    fast = dict(loop.FAST_COMPILE)  # a quicker CPU compile: the same program, less optimised machine code
    return jax.jit(jax.value_and_grad(loss), compiler_options=fast)(params)


@pytest.fixture(scope="module")
def params():
    return _params(_cfg())


@pytest.fixture(scope="module")
def reference(params):
    return _loss_and_grads(_cfg(), params)


def _compare(got, want):
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    flat_got, flat_want = jax.tree.leaves_with_path(got[1]), jax.tree.leaves(want[1])
    for (path, g), w in zip(flat_got, flat_want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7, err_msg=jax.tree_util.keystr(path))


def test_remat_keeps_the_param_tree(params):
    """Checkpointed blocks create the same params under the same names (converted weights load unchanged)."""
    full = _params(_cfg("full"))
    assert jax.tree.structure(full) == jax.tree.structure(params)
    assert any("motion_modules" in jax.tree_util.keystr(p) for p, _ in jax.tree.leaves_with_path(params["unet"]))
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)


def test_full_remat_gives_the_float32_loss_and_gradients(params, reference):
    _compare(_loss_and_grads(_cfg("full"), params), reference)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["dots", "dots_no_batch"])
def test_other_policies_give_the_float32_loss_and_gradients(params, reference, policy):
    _compare(_loss_and_grads(_cfg(policy), params), reference)


def test_bfloat16_compute_over_float32_params(params, reference):
    loss, grads = _loss_and_grads(_cfg("full", "bfloat16"), params)
    assert np.isfinite(loss) and abs(float(loss) - float(reference[0])) < 0.05 * abs(float(reference[0]))
    assert all(g.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    # bf16 gradients point the same way as the float32 ones
    g16 = jnp.concatenate([g.ravel() for g in jax.tree.leaves(grads)])
    g32 = jnp.concatenate([g.ravel() for g in jax.tree.leaves(reference[1])])
    assert float(jnp.dot(g16, g32) / (jnp.linalg.norm(g16) * jnp.linalg.norm(g32))) > 0.95


def test_the_training_config_selects_the_policy():
    cfg = config.load("train_svp_stage2_tiny", ["model.remat=dots", "model.dtype=bfloat16"])
    unet = SVPTask.from_config(cfg).modules()["unet"]
    assert unet.remat == "dots" and unet.dtype == jnp.bfloat16 and unet.param_dtype == jnp.float32
    assert [checkpoint_policy(p) is None for p in REMAT_POLICIES] == [True, False, False, False]
    with pytest.raises(config.ConfigError, match="model.remat"):
        config.load("train_svp_stage2_tiny", ["model.remat=everything"])
