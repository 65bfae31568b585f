"""StyleGAN2 generator: noise forms, style mixing, truncation, index addressing, interop, bf16 and sharding.

Parity with the original generator is in the golden fixture (test_fixtures.py::stylegan2_generator).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxtalk import interop, parallel
from jaxtalk.nn.upfirdn2d import make_kernel
from jaxtalk.style2talker.stylegan2 import Generator, channel_table, resolve_channels
from tests.parity import assert_close

CFG = dict(size=16, style_dim=8, n_mlp=2, channels=(8, 8, 8))


def _apply(g, p, *args, **kw):
    """Jitted apply (one compile beats op-by-op dispatch); non-array keyword arguments are static."""
    dyn = {k: v for k, v in kw.items() if isinstance(v, (np.ndarray, jax.Array, dict, list))}
    static = {k: v for k, v in kw.items() if k not in dyn}
    return jax.jit(lambda p, d, *a: g.apply({"params": p}, *a, **d, **static))(p, dyn, *args)


def random_params(module: nn.Module, *init_args, seed: int = 0, **init_kw) -> dict:
    """N(0, 1) params of the module's shapes (abstract init only: compiling the RNG init is slow on CPU);
    FIR buffers get the real [1,3,3,1] kernel x4, so every path (noise strengths, biases) is non-zero."""
    shapes = nn.meta.unbox(jax.eval_shape(lambda r: module.init(r, *init_args, **init_kw), jax.random.key(0)))
    rng = np.random.default_rng(seed)

    def leaf(path, s):
        if path[-1].key == "fir_kernel":
            return make_kernel((1, 3, 3, 1), 2)
        return rng.standard_normal(s.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(leaf, shapes["params"])


def _setup(**kw):
    g = Generator(**{**CFG, **kw})
    return g, random_params(g, jnp.zeros((1, g.style_dim)), noise="zero")


@pytest.fixture(scope="module")
def gen():
    return _setup()


def test_channel_table_and_bad_config():
    assert channel_table(2)[1024] == 32 and channel_table(1)[64] == 256
    assert channel_table(2, 0.03125) == {4: 16, 8: 16, 16: 16, 32: 16, 64: 16, 128: 8, 256: 4, 512: 2, 1024: 1}
    assert resolve_channels(32, channels={4: 3, 8: 4, 16: 5, 32: 6}) == (3, 4, 5, 6)
    with pytest.raises(ValueError, match="power of two"):
        resolve_channels(48)
    with pytest.raises(ValueError, match="needs 3 entries"):
        resolve_channels(16, channels=(8, 8))
    g = Generator(1024)
    assert (g.n_latent, g.num_layers, g.channel_list[-1]) == (18, 17, 32)


def test_noise_forms():
    g, p = _setup(size=8, channels=(8, 8))
    w = np.random.default_rng(0).standard_normal((2, g.style_dim)).astype(np.float32)
    sizes = [2 ** ((i + 5) // 2) for i in range(g.num_layers)]
    zeros = [jnp.zeros((2, r, r, 1)) for r in sizes]

    @jax.jit
    def variants(p, w):  # one compile for every form
        run = lambda noise, key=None, **kw: g.apply({"params": p}, w, noise=noise, rngs={"noise": key} if key is not None else None, **kw)
        buffers = [p["noises"][f"noise_{i}"] for i in range(g.num_layers)]
        k1, k2 = jax.random.key(1), jax.random.key(2)
        return dict(zero=run("zero"), zeros=run(zeros), const=run(None, randomize_noise=False), buffers=run(buffers),
                    r1=run("random", k1), r1b=run(None, k1), r2=run("random", k2))

    v = {k: np.asarray(x) for k, x in variants(p, w).items()}
    np.testing.assert_allclose(v["zero"], v["zeros"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v["const"], v["buffers"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(v["r1"], v["r1b"])  # None is the original's random noise
    for a, b in (("const", "zero"), ("r1", "r2"), ("r1", "zero")):
        assert np.abs(v[a] - v[b]).max() > 1e-3, (a, b)
    shape_only = lambda **kw: jax.eval_shape(lambda p: g.apply({"params": p}, w, **kw), p)
    with pytest.raises(ValueError, match="random noise needs rngs"):
        shape_only()
    with pytest.raises(ValueError, match="noise list needs 3 entries"):
        shape_only(noise=zeros[:2])
    with pytest.raises(ValueError, match=r"noise must be \(B, 8, 8, 1\)"):
        shape_only(noise=[zeros[0]] * 3)


def test_style_mixing_and_truncation(gen):
    g, p = gen
    rng = np.random.default_rng(1)
    z1, z2 = (rng.standard_normal((2, g.style_dim)).astype(np.float32) for _ in range(2))

    @jax.jit
    def run(p, z1, z2):
        a = lambda *args, **kw: g.apply({"params": p}, *args, **kw)
        w1, w2 = a(z1, method="mapping"), a(z2, method="mapping")
        mixed = a([z1, z2], inject_index=2, noise="zero", return_latents=True)
        lat_r = a([z1, z2], noise="zero", return_latents=True, rngs={"mixing": jax.random.key(3)})[1]
        mean = a(64, jax.random.key(4), method="mean_latent")
        lat_t = a(z1, truncation=0.5, truncation_latent=mean, noise="zero", return_latents=True)[1]
        return w1, w2, mixed, lat_r, mean, lat_t

    w1, w2, (img, lat), lat_r, mean, lat_t = jax.tree.map(np.asarray, run(p, z1, z2))
    expected = np.concatenate([np.repeat(w1[:, None], 2, 1), np.repeat(w2[:, None], 4, 1)], 1)
    np.testing.assert_allclose(lat, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(img, _apply(g, p, expected, input_is_latent=True, noise="zero"), rtol=1e-5, atol=1e-5)
    first = np.all(np.isclose(lat_r, w1[:, None]), axis=(0, 2))
    k = int(first.sum())
    assert 1 <= k <= g.n_latent - 1 and first[:k].all() and not first[k:].any()
    np.testing.assert_allclose(lat_t, (mean + 0.5 * (w1 - mean))[:, None].repeat(g.n_latent, 1), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="needs truncation_latent"):
        jax.eval_shape(lambda p: g.apply({"params": p}, z1, truncation=0.5, noise="zero"), p)


class _DecoderByIndex(nn.Module):
    """How Style-A drives the generator: its own loop over convs[j] / to_rgbs[k] from a bound parent."""

    gen: Generator

    @nn.compact
    def __call__(self, latent):
        g = self.gen
        out = g.conv1(g.input(latent.shape[0]), latent[:, 0], "zero")
        skip = g.to_rgb1(out, latent[:, 1])
        for k in range(len(g.to_rgbs)):
            out = g.convs[2 * k](out, latent[:, 2 * k + 1], "zero")
            out = g.convs[2 * k + 1](out, latent[:, 2 * k + 2], "zero")
            skip = g.to_rgbs[k](out, latent[:, 2 * k + 3], skip)
        return skip


def test_addressing_convs_and_to_rgbs_by_index(gen):
    g, p = gen
    wplus = np.random.default_rng(2).standard_normal((2, g.n_latent, g.style_dim)).astype(np.float32)
    parent = _DecoderByIndex(Generator(**CFG, name="gen"))
    full = _apply(g, p, wplus, input_is_latent=True, noise="zero")
    assert_close(jax.jit(parent.apply)({"params": {"gen": p}}, wplus), full, name="decoder by index")
    assert full.shape == (2, 16, 16, 3)


def test_interop_selects_g_ema_and_round_trips(tmp_path, gen):
    g, p = gen
    sd = interop.to_torch("stylegan2", p)
    assert sd["convs.0.conv.weight"].shape == (1, 8, 8, 3, 3) and sd["to_rgbs.1.bias"].shape == (1, 3, 1, 1)
    assert sd["convs.0.conv.blur.kernel"].shape == (4, 4) and sd["noises.noise_4"].shape == (1, 1, 16, 16)
    ckpt = {"g_ema": {k: torch.from_numpy(v) for k, v in sd.items()},
            "g": {k: torch.from_numpy(v) + 1 for k, v in sd.items()}, "d": {"x.weight": torch.zeros(2)}}
    torch.save(ckpt, tmp_path / "550000.pt")
    module, params = interop.from_torch("stylegan2", tmp_path / "550000.pt")
    assert module.channel_list == (8, 8, 8) and module.n_mlp == 2 and module.size == 16
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(p)):
        np.testing.assert_array_equal(a, b, err_msg=str(path))
    back = interop.to_torch("stylegan2", params)
    assert set(back) == set(sd) and all(np.array_equal(back[k], sd[k]) for k in sd)

    del sd["noises.noise_0"]
    sd["extra.weight"] = np.zeros(1, np.float32)
    with pytest.raises(interop.ConversionError, match="1 missing: noises.noise_0.*1 unexpected: extra.weight"):
        interop.from_torch("stylegan2", sd, dict(size=16, style_dim=8, n_mlp=2, channels=[8, 8, 8]))
    with pytest.raises(ValueError, match="unknown keys"):
        interop.from_torch("stylegan2", back, dict(size=16, style_dim=8, n_mlp=2, channels=[8, 8, 8], depth=3))


def test_bf16_forward(gen):
    g, p = gen
    g16 = Generator(**CFG, dtype=jnp.bfloat16)
    w = np.random.default_rng(3).standard_normal((1, g.style_dim)).astype(np.float32)
    out = jax.jit(lambda p, w: g16.apply({"params": p}, w, noise="zero"))(p, w)
    ref = _apply(g, p, w, noise="zero")
    assert out.dtype == jnp.bfloat16
    err = float(jnp.max(jnp.abs(out.astype(jnp.float32) - ref)))
    assert err < 0.05 * float(jnp.max(jnp.abs(ref))), err


def test_sharded_init_and_forward():
    cfg = dict(size=8, style_dim=16, n_mlp=2, channels=(16, 16))
    g = Generator(**cfg)
    mesh = parallel.make_mesh(1, 2, 4)
    init = lambda rng: g.init(rng, jnp.zeros((1, g.style_dim)), noise="zero")
    # rbg keys: the same sharded init, several times faster to compile on CPU than threefry
    variables, shardings = parallel.init_sharded(init, jax.random.key(0, impl="rbg"), mesh)
    spec = shardings["params"]["convs_0"]["conv"]["kernel"].spec
    assert spec[-1] == ("fsdp", "tensor"), spec  # conv_out over fsdp x tensor
    w = np.random.default_rng(4).standard_normal((8, g.n_latent, g.style_dim)).astype(np.float32)
    single = _apply(g, jax.device_get(variables)["params"], w, input_is_latent=True, noise="zero")
    with nn.logical_axis_rules(parallel.LOGICAL_RULES), jax.set_mesh(mesh):
        ws = parallel.shard_batch(w, mesh)
        fwd = jax.jit(lambda v, w: g.apply(v, w, input_is_latent=True, noise="zero"),
                      in_shardings=(shardings, ws.sharding))
        sharded = fwd(variables, ws)
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(single), rtol=1e-5, atol=1e-5)
