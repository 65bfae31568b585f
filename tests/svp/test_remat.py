"""Rematerialisation and mixed precision of the SVP UNets: `remat` policies on the down / mid / up blocks of the
video UNet (with motion modules) and the ReferenceNet (whose bank leaves the checkpoints as outputs) give the same
float32 loss and gradients as no remat, and bfloat16 compute over float32 params gives a finite loss close to the
float32 one with finite float32 gradients. The whole-UNet checks compile several gradients (minutes of CPU) and
are `slow`; the checkpoint wrapper itself is checked on a small block in the default suite."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk import config
from jaxtalk.backbones.sd_unet import REMAT_POLICIES, BlockOutputs, checkpoint_policy, checkpointed
from jaxtalk.svp.reference_net import ReferenceNet
from jaxtalk.svp.video_unet import SVPUNet
from jaxtalk.training import loop
from jaxtalk.training.svp import SVPTask

# The toy stage-2 UNet (one cross-attention down / up block, the mid block, motion modules): every kind of block
# `remat` wraps (resnets, transformers with the reference bank, temporal modules).
UNET = ["model.unet.motion.mid_block=true"]
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


def _params(m, jit=True):
    unet, ref = _modules(m)
    x = _inputs(m)
    u = m.unet.unet

    def init(r1, r2):
        p_unet = unet.init(r1, x["x"], x["t"], x["audio"], style_tokens=x["style"])["params"]
        p_ref = ref.init(r2, x["ref"], 0, jnp.zeros((B, 1, u.cross_attention_dim)))["params"]
        return {"unet": p_unet, "reference_net": p_ref}

    if not jit:
        return init(jax.random.key(1), jax.random.key(2))
    return jax.jit(init, compiler_options=dict(loop.FAST_COMPILE))(jax.random.key(1), jax.random.key(2))


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


def test_remat_keeps_the_param_tree():
    """Checkpointed blocks create the same params under the same names (converted weights load unchanged)."""
    shapes = lambda m: jax.tree.map(lambda x: (x.shape, x.dtype), jax.eval_shape(lambda: _params(m, jit=False)))
    none, full = shapes(_cfg()), shapes(_cfg("full"))
    assert full == none
    assert any("motion_modules" in jax.tree_util.keystr(p) for p, _ in jax.tree.leaves_with_path(none["unet"]))


class _Writer(nn.Module):
    """A block that reshapes by a static int, scales by a Python float and hands a value out by side effect."""

    @nn.compact
    def __call__(self, x, *, rows, scale, out):
        h = nn.Dense(6)(x) * scale
        out.put(0, h)
        return jnp.tanh(nn.Dense(6)(jnp.sin(h))).reshape(rows, -1)


class _Outer(nn.Module):
    remat: str = "none"

    @nn.compact
    def __call__(self, x):
        out = BlockOutputs()
        y = checkpointed(_Writer(name="block"), self.remat, x, rows=2, scale=0.5, out=out)
        return y, out.entries[0]


@pytest.mark.parametrize("policy", ["full", "dots", "dots_no_batch"])
def test_checkpointed_block_equals_the_plain_block(policy):
    """The wrapper keeps param names, static arguments and side outputs, and the float32 values and gradients."""
    x = jax.random.normal(jax.random.key(0), (4, 3))
    variables = _Outer().init(jax.random.key(1), x)
    assert jax.tree.structure(_Outer(policy).init(jax.random.key(1), x)) == jax.tree.structure(variables)

    def loss(v, remat):
        y, side = _Outer(remat).apply(v, x)
        return jnp.sum(y ** 2) + jnp.sum(side)

    want, got = (jax.jit(jax.value_and_grad(loss), static_argnums=1)(variables, r) for r in ("none", policy))
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    for g, w in zip(jax.tree.leaves(got[1]), jax.tree.leaves(want[1])):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_full_remat_gives_the_float32_loss_and_gradients(params, reference):
    _compare(_loss_and_grads(_cfg("full"), params), reference)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["dots", "dots_no_batch"])
def test_other_policies_give_the_float32_loss_and_gradients(params, reference, policy):
    _compare(_loss_and_grads(_cfg(policy), params), reference)


@pytest.mark.slow
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
