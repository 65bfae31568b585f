"""DualStyleGAN: the extrinsic path's pieces (T_s, T_c), weight / fuse / use_res semantics, config and layout.

Parity of the full forward with the original is in the golden fixtures (test_fixtures.py::dualstylegan,
::adaresblock).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxtalk import interop
from jaxtalk.nn.equalized import EqualLinear
from jaxtalk.style2talker.dualstylegan import AdaResBlock, DualStyleGAN, _tc_init
from jaxtalk.style2talker.stylegan2 import StyleGAN2Config
from tests.parity import assert_close
from tests.reference.stylegan_ops import equal_linear_ref
from tests.style2talker.test_stylegan2 import random_params

GEN = StyleGAN2Config(size=16, style_dim=8, n_mlp=7, channels=(8, 8, 8))


@pytest.fixture(scope="module")
def model():
    m = DualStyleGAN(GEN, res_index=3)
    p = random_params(m, jnp.zeros((1, 8)), jnp.zeros((1, m.n_latent, 8)), noise="zero", seed=1)
    return m, p


def _t(x):
    return torch.from_numpy(np.asarray(x))


def test_layout(model):
    m, p = model
    assert m.structure_index == 2 and m.n_latent == 6  # res_index rounded down to even, as the original
    assert all(set(p[f"res_{i}"]) == {"conv", "conv2", "norm", "norm2"} for i in range(3))  # ModRes
    assert all(set(p[f"res_{i}"]) == {"kernel", "bias"} for i in range(3, 6))  # T_c
    assert set(p["style"]) == {"1"} and len(p["generator"]["style"]) == 7  # T_s has n_mlp - 6 layers
    sd = interop.to_torch("dualstylegan", p)
    assert sd["res.1.conv.0.weight"].shape == (8, 8, 3, 3) and sd["res.1.norm.style.weight"].shape == (16, 8)
    assert sd["generator.convs.2.conv.weight"].shape == (1, 8, 8, 3, 3) and "generator.noises.noise_4" in sd


def test_resstyles_and_adastyles_match_reference(model):
    m, p = model
    ex = np.random.default_rng(0).standard_normal((2, m.n_latent, 8)).astype(np.float32)
    res = jax.jit(lambda p, e: m.apply({"params": p}, e, method="resstyles"))(p, ex)
    ada = jax.jit(lambda p, e: m.apply({"params": p}, e, method="adastyles"))(p, ex)
    e = _t(ex)
    normed = e * torch.rsqrt((e**2).mean(-1, keepdim=True) + 1e-8)  # PixelNorm, then T_s per row
    ref = equal_linear_ref(normed, _t(p["style"]["1"]["kernel"].T), _t(p["style"]["1"]["bias"]), 0.01, True)
    assert_close(res, ref.numpy(), name="resstyles (T_s)")
    rows = [e[:, i] if i <= 2 else equal_linear_ref(e[:, i], _t(p[f"res_{i}"]["kernel"].T), _t(p[f"res_{i}"]["bias"]))
            for i in range(m.n_latent)]
    assert_close(ada, torch.stack(rows, 1).numpy(), name="adastyles (T_c rows > res_index)")


def test_weights_fuse_index_and_use_res(model):
    m, p = model
    rng = np.random.default_rng(1)
    w = rng.standard_normal((2, m.n_latent, 8)).astype(np.float32)
    ex = rng.standard_normal((2, m.n_latent, 8)).astype(np.float32)
    iw = [0.6, 0.75, 0.5, 0.9, 0.3, 0.8]

    @jax.jit
    def run(p, w, ex, iw_array):
        a = lambda **kw: m.apply({"params": p}, w, ex, input_is_latent=True, noise="zero", **kw)
        plain_gen = GEN.generator()
        return dict(
            listed=a(interp_weights=iw), traced=a(interp_weights=iw_array), zero=a(interp_weights=[0] * 6),
            fuse0=a(fuse_index=0), off=a(use_res=False), ones=a(),
            gen=plain_gen.apply({"params": p["generator"]}, w, input_is_latent=True, noise="zero"),
            ex2d=m.apply({"params": p}, w, ex[:, 0], input_is_latent=True, noise="zero"),
            ex3d=m.apply({"params": p}, w, np.repeat(ex[:, :1], m.n_latent, 1), input_is_latent=True, noise="zero"),
            feat=m.apply({"params": p}, w, ex, input_is_latent=True, noise="zero", return_feat=True))

    v = run(p, w, ex, jnp.asarray(iw))
    np.testing.assert_allclose(v["listed"], v["traced"], rtol=1e-5, atol=1e-5)
    for name in ("zero", "fuse0", "off"):  # weight 0 everywhere, fuse_index 0 and use_res=False: plain StyleGAN2
        np.testing.assert_allclose(v[name], v["gen"], rtol=1e-5, atol=1e-5, err_msg=name)
    assert np.abs(np.asarray(v["listed"]) - np.asarray(v["ones"])).max() > 1e-3
    assert np.abs(np.asarray(v["listed"]) - np.asarray(v["gen"])).max() > 1e-3
    np.testing.assert_allclose(v["ex2d"], v["ex3d"], rtol=1e-5, atol=1e-5)
    feat, skip = v["feat"]
    assert feat.shape == (2, 8, 8, 8) and skip.shape == (2, 8, 8, 3)  # stops after the structure layers
    with pytest.raises(ValueError, match="needs exstyles"):
        jax.eval_shape(lambda p: m.apply({"params": p}, w, None, input_is_latent=True, noise="zero"), p)
    with pytest.raises(ValueError, match="at least n_latent=6"):
        jax.eval_shape(lambda p: m.apply({"params": p}, w, ex, input_is_latent=True, noise="zero",
                                         interp_weights=[1.0] * 3), p)


class _ByIndex(nn.Module):
    """How Style-A (VToonify) drives DualStyleGAN: resstyles / adastyles, res[i] and the generator's layers."""

    dsg: DualStyleGAN

    @nn.compact
    def __call__(self, w, ex):
        m, g = self.dsg, self.dsg.generator
        rs, ada = m.resstyles(ex), m.adastyles(ex)
        lat = jnp.concatenate([w[:, :3], ada[:, 3:]], axis=1)  # interp weights 1: T_c rows replace the latent
        out = m.res[0](g.conv1(g.input(w.shape[0]), lat[:, 0], "zero"), rs[:, 0])
        skip = g.to_rgb1(out, lat[:, 1])
        out = m.res[1](g.convs[0](out, lat[:, 1], "zero"), rs[:, 1])
        out = m.res[2](g.convs[1](out, lat[:, 2], "zero"), rs[:, 2])
        skip = g.to_rgbs[0](out, lat[:, 3], skip)  # the to_rgb after the last ModRes already takes T_c row 3
        out = g.convs[3](g.convs[2](out, lat[:, 3], "zero"), lat[:, 4], "zero")
        return g.to_rgbs[1](out, lat[:, 5], skip)


def test_addressing_pieces_by_index(model):
    m, p = model
    rng = np.random.default_rng(4)
    w = rng.standard_normal((2, m.n_latent, 8)).astype(np.float32)
    ex = rng.standard_normal((2, m.n_latent, 8)).astype(np.float32)
    full = jax.jit(lambda p: m.apply({"params": p}, w, ex, input_is_latent=True, noise="zero"))(p)
    by_index = jax.jit(_ByIndex(DualStyleGAN(GEN, res_index=3, name="dsg")).apply)({"params": {"dsg": p}}, w, ex)
    assert_close(by_index, full, name="DualStyleGAN by index")


def test_adaresblock_weight_zero_and_init():
    x = np.random.default_rng(2).standard_normal((1, 4, 4, 6)).astype(np.float32)
    s = np.ones((1, 5), np.float32)
    blk = AdaResBlock(dilation=2)
    v = jax.jit(blk.init)(jax.random.key(0, impl="rbg"), x, s)  # rbg: faster to compile on CPU
    assert v["params"]["conv"]["0"]["kernel"].value.std() < 0.05  # near-zero residual at init (x0.01)
    np.testing.assert_array_equal(blk.apply(v, x, s, 0), x)
    y = jax.jit(blk.apply)(v, x, s, 1.0)
    assert y.shape == x.shape and 0 < float(jnp.abs(y - x).max()) < 0.5
    lin = EqualLinear(8, kernel_init=_tc_init)
    e = np.random.default_rng(3).standard_normal((2, 8)).astype(np.float32)
    out = lin.apply(jax.jit(lin.init)(jax.random.key(1, impl="rbg"), e), e)
    np.testing.assert_allclose(out, e, atol=0.1)  # T_c starts near the identity


def test_kind_config_and_inference(model):
    m, p = model
    sd = interop.to_torch("dualstylegan", p)
    inferred, _ = interop.from_torch("dualstylegan", sd)
    assert (inferred.res_index, inferred.stylegan2.n_mlp, inferred.size, inferred.channel_list) == (2, 7, 16, (8, 8, 8))
    cfg = dict(size=16, style_dim=8, n_mlp=7, channel_multiplier=2, twoRes=True, res_index=3,
               channels={4: 8, 8: 8, 16: 8})
    given, params = interop.from_torch("dualstylegan", {"g_ema": sd, "d": {"w": np.zeros(1)}}, cfg)
    assert given.structure_index == 2
    back = interop.to_torch("dualstylegan", params)
    assert set(back) == set(sd) and all(np.array_equal(back[k], sd[k]) for k in sd)
    with pytest.raises(ValueError, match="unknown keys"):
        interop.from_torch("dualstylegan", sd, dict(cfg, fuse=1))
    assert "dualstylegan" in interop.KINDS and "stylegan2" in interop.KINDS
