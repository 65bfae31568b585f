"""Style-E: official key layout, fixture parity (forward + every sampler step), DDIM, tiling, determinism."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxtalk import interop
from jaxtalk.style2talker import style_e
from tests.parity import assert_close

WINDOW = 32


@pytest.fixture(scope="module")
def s2t_dir(fixtures_dir):
    return fixtures_dir / "style2talker"


@pytest.fixture(scope="module")
def fixture_model(s2t_dir):
    return interop.from_torch("style2talker_style_e", s2t_dir / "style_e_metamodel.safetensors")


def _official_zero_state(s2t_dir) -> dict[str, np.ndarray]:
    state = {}
    for line in (s2t_dir / "style_e_keys.txt").read_text().splitlines():
        key, shape = line.split(" ", 1)
        dims = tuple(int(d) for d in shape.strip("()").replace(" ", "").split(",") if d)
        state[key] = np.zeros(dims, np.float32)
    return state


def test_official_key_layout_imports_strictly(s2t_dir):
    state = _official_zero_state(s2t_dir)
    assert len(state) == 89
    module, params = interop.from_torch("style2talker_style_e", state)
    assert module.config == style_e.StyleEConfig()  # latent 512, 8 blocks, 32 frames, 64/64/512, pe 5000
    n_params = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params)) - 5000 * 512
    assert round(n_params / 1e6, 2) == 5.11  # research §0.1: 5.11 M (L = 8) besides the PE table
    back = interop.to_torch("style2talker_style_e", params)
    assert set(back) == set(state) and all(back[k].shape == state[k].shape for k in state)
    # Wrapped / prefixed checkpoints select the right container.
    wrapped = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": np.zeros(())}
    assert interop.from_torch("style2talker_style_e", wrapped)[0].config == module.config
    # Explicit official config (inference.py / args.json spelling) agrees with the shapes.
    kwargs = {"motion_nfeat": 64, "latent_dim": 512, "layers": 8, "sparse_dim": 64, "style_code_dim": 512,
              "input_motion_length": 32, "arch": "diffusion_DiffMLP", "dropout": 0.1, "lr": 2e-4}
    assert interop.from_torch("style2talker_style_e", state, config=kwargs)[0].config == module.config


def test_strict_errors_on_mismatch(s2t_dir):
    state = _official_zero_state(s2t_dir)
    del state["mlp.motion_mlp.mlps.3.fc1.bias"]
    state["mlp.motion_mlp.mlps.1.conct.weight"] = np.zeros((512, 1536), np.float32)
    with pytest.raises(interop.ConversionError, match=r"1 missing: mlp\.motion_mlp\.mlps\.3\.fc1\.bias.*"
                                                       r"1 unexpected: mlp\.motion_mlp\.mlps\.1\.conct\.weight"):
        interop.from_torch("style2talker_style_e", state)
    with pytest.raises(interop.ConversionError, match="mis-shaped"):
        interop.from_torch("style2talker_style_e", _official_zero_state(s2t_dir), config={"layers": 8,
                                                                                         "latent_dim": 256})


def test_sinusoidal_table_matches_original_buffer(s2t_dir):
    pe = load_file(s2t_dir / "style_e_metamodel.safetensors")["embed_timestep.pe"]
    ours = style_e.sinusoidal_table(*pe.shape[::2])
    np.testing.assert_allclose(ours, pe, rtol=0, atol=1e-6)
    # a freshly initialised table is the same, and a lookup returns its rows
    table = style_e.TimestepTable(64, 32)
    v = nn.meta.unbox(table.init(jax.random.key(0), jnp.zeros((1,), jnp.int32)))
    np.testing.assert_allclose(np.asarray(v["params"]["pe"]), pe[:64, :, :32], rtol=0, atol=1e-6)
    rows = table.apply(v, jnp.array([0, 63, 7]))
    np.testing.assert_array_equal(np.asarray(rows), np.asarray(v["params"]["pe"])[[0, 63, 7]])


def _ddim_reference(model_fn, x_T, respacing_steps=5, T=1000):
    """improved-diffusion ddim_sample_loop (eta = 0) on the respaced cosine schedule, in float64 numpy."""
    f = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = np.array([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)])
    abar = np.cumprod(1.0 - betas)
    stride = T // respacing_steps
    kept = list(range(0, T, stride))
    x = np.asarray(x_T, np.float64)
    for i in reversed(range(len(kept))):
        a, a_prev = abar[kept[i]], (abar[kept[i - 1]] if i > 0 else 1.0)
        x0 = np.asarray(model_fn(x.astype(np.float32), kept[i]), np.float64)
        eps = (x / math.sqrt(a) - x0) / math.sqrt(1 / a - 1)
        x = x0 * math.sqrt(a_prev) + math.sqrt(1 - a_prev) * eps
    return x


def test_true_ddim_option_matches_improved_diffusion(fixture_model, s2t_dir):
    module, params = fixture_model
    z = np.load(s2t_dir / "style_e_metamodel.npz")
    sparse, text = z["sample_sparse"], np.broadcast_to(z["sample_style_code"], (2, WINDOW, 24))
    fn = lambda x, t: module.apply({"params": params}, x, np.full((2,), t), sparse, text)
    ref = _ddim_reference(fn, z["sample_x_T"])
    sampling = style_e.StyleESamplerConfig(method="ddim")
    out = jax.jit(lambda: style_e.sample_windows(module, params, sparse, z["sample_style_code"], sampling=sampling,
                                                 x_T=z["sample_x_T"]))()
    assert_close(out, ref, name="style_e DDIM eta=0 (5 steps)")


def _reference_tiling(sparse: np.ndarray, T: int = WINDOW) -> tuple[list[np.ndarray], int | None]:
    """The released non_overlapping_test's split, re-written for the test (frames-first numpy)."""
    F = sparse.shape[0]
    splits, flag, count = [], None, 0
    if T <= F:
        while count < F:
            if count + T > F:
                k = F - T
                splits.append(sparse[k:k + T])
                flag = count - k
            else:
                splits.append(sparse[count:count + T])
            count += T
    else:
        flag = T - F
        splits = [np.concatenate([np.repeat(sparse[:1], flag, 0), sparse], 0)]
    return splits, flag


def _reference_merge(samples: np.ndarray, flag: int | None) -> np.ndarray:
    if flag is None:
        return samples.reshape(-1, samples.shape[-1])
    return np.concatenate([samples[:-1].reshape(-1, samples.shape[-1]), samples[-1][flag:]], 0)


@pytest.mark.parametrize("frames", [7, 32, 64, 70, 97])
def test_window_plan_follows_non_overlapping_test(frames):
    src = np.arange(frames, dtype=np.float32)[:, None] + 0.5
    splits, flag = _reference_tiling(src)
    plan = style_e.window_plan(frames, WINDOW)
    np.testing.assert_array_equal(src[plan.gather][..., 0], np.stack(splits)[..., 0])
    out = np.stack(splits).reshape(-1, 1)[plan.scatter]
    np.testing.assert_array_equal(out, _reference_merge(np.stack(splits), flag))
    np.testing.assert_array_equal(out[:, 0], src[:, 0])  # every frame comes back from its own window


def test_generate_expression_tiles_samples_and_reassembles(fixture_model):
    module, params = fixture_model
    rng = np.random.default_rng(0)
    frames = 70
    sparse = rng.standard_normal((2, frames, 64)).astype(np.float32)
    sparse[1] = sparse[0, ::-1]
    text = rng.standard_normal((2, 24)).astype(np.float32)
    key = jax.random.key(3)
    style_e._COMPILED.clear()
    out = style_e.generate_expression(module, params, sparse, text, key)
    assert out.shape == (2, frames, 64)
    # reference: the released split per clip, all windows in one batch (clip-major), merged back per clip
    splits = [_reference_tiling(sparse[b]) for b in range(2)]
    n, flag = len(splits[0][0]), splits[0][1]
    texts = np.repeat(text, n, axis=0)
    windows = np.asarray(jax.jit(lambda w, c: style_e.sample_windows(module, params, w, c, key))(
        np.stack(splits[0][0] + splits[1][0]), texts))
    assert_close(out[0], _reference_merge(windows[:n], flag), name="tiled generate_expression clip 0")
    assert_close(out[1], _reference_merge(windows[n:], flag), name="tiled generate_expression clip 1")
    # the same key gives the same clips; another key other ones; compiled once for this shape
    again = style_e.generate_expression(module, params, sparse, text, key)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(again))
    other = style_e.generate_expression(module, params, sparse, text, jax.random.key(4))
    assert float(jnp.max(jnp.abs(other - out))) > 1e-3
    assert len(style_e._COMPILED) == 1  # through compile_cache.compiled, one program for this shape
    # inside a caller's jit the same function traces inline (no nested compile) and gives the same clips
    inline = jax.jit(lambda p, s, t, k: style_e.generate_expression(module, p, s, t, k))(params, sparse, text, key)
    np.testing.assert_allclose(np.asarray(inline), np.asarray(out), rtol=0, atol=1e-5)
    assert len(style_e._COMPILED) == 1


def test_expression_from_audio_chains_audio2exp_and_style_e(fixture_model, s2t_dir):
    from jaxtalk.style2talker import audio2exp as a2e

    module, params = fixture_model
    a2e_module, a2e_vars = interop.from_torch("sadtalker_audio2exp", s2t_dir / "audio2exp_simplewrapperv2.safetensors")
    rng = np.random.default_rng(5)
    wav = (0.1 * rng.standard_normal(16000 * 2 // 5)).astype(np.float32)  # 0.4 s -> 10 video frames
    mels = a2e.audio_to_mel_windows(wav)
    identity = rng.standard_normal(64).astype(np.float32)
    blink = a2e.blink_ratio(mels.shape[0], rng)
    text = rng.standard_normal(24).astype(np.float32)
    key = jax.random.key(9)
    out = style_e.expression_from_audio(module, params, a2e_module, a2e_vars, mels, identity, text, key, blink=blink)
    sparse = a2e.audio2exp(a2e_module, a2e_vars, mels[None], identity[None], blink[None])[0]
    ref = style_e.generate_expression(module, params, sparse, text, key)
    assert out.shape == (10, 64)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=0, atol=1e-5)


def test_sampler_key_semantics(fixture_model):
    """key → (x_T key, step key); the step key is split per step; explicit x_T / noises reproduce it."""
    module, params = fixture_model
    sparse = np.zeros((3, WINDOW, 64), np.float32)
    text = np.zeros((1, 24), np.float32)
    key = jax.random.key(11)
    k_T, k_steps = jax.random.split(key)
    shape = (3, WINDOW, 64)
    x_T = jax.random.normal(k_T, shape)
    noises = jnp.stack([jax.random.normal(k, shape) for k in jax.random.split(k_steps, 5)])

    @jax.jit
    def both(x_T, noises):
        return (style_e.sample_windows(module, params, sparse, text, key),
                style_e.sample_windows(module, params, sparse, text, x_T=x_T, noises=noises))

    out, ref = both(x_T, noises)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=0, atol=1e-6)


def test_bf16_compute_runs_close(fixture_model, s2t_dir):
    module, params = fixture_model
    z = np.load(s2t_dir / "style_e_metamodel.npz")
    half = style_e.StyleE(module.config, dtype=jnp.bfloat16)
    out = jax.jit(half.apply)({"params": params}, z["x_t"], z["timesteps"], z["sparse_emb"], z["style_code"])
    assert out.dtype == jnp.bfloat16
    err = float(np.max(np.abs(np.asarray(out, np.float32) - z["output"])))
    assert err < 0.05 * float(np.max(np.abs(z["output"])))


def test_sharded_sampling_matches_single_device(fixture_model):
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxtalk import parallel

    module, params = fixture_model
    mesh = parallel.make_mesh(data=-1, fsdp=1, tensor=1)
    sparse = np.random.default_rng(2).standard_normal((8, WINDOW, 64)).astype(np.float32)
    text = np.ones((8, 24), np.float32)
    x_T = np.random.default_rng(3).standard_normal((8, WINDOW, 64)).astype(np.float32)
    sampling = style_e.StyleESamplerConfig(method="ddim")
    fn = lambda s, c, x: style_e.sample_windows(module, params, s, c, sampling=sampling, x_T=x)
    ref = jax.jit(fn)(sparse, text, x_T)
    shard = NamedSharding(mesh, P("data"))
    out = jax.jit(fn, in_shardings=(shard, shard, shard), out_shardings=shard)(sparse, text, x_T)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=0, atol=1e-5)


def test_bad_inputs_raise_clear_errors(fixture_model):
    module, params = fixture_model
    with pytest.raises(ValueError, match=r"sparse must be \(num_windows, 32, 64\)"):
        style_e.sample_windows(module, params, np.zeros((2, 16, 64)), np.zeros(24), jax.random.key(0))
    with pytest.raises(ValueError, match="text condition must be"):
        style_e.sample_windows(module, params, np.zeros((2, 32, 64)), np.zeros(25), jax.random.key(0))
    with pytest.raises(ValueError, match="give `key`"):
        style_e.sample_windows(module, params, np.zeros((2, 32, 64)), np.zeros(24))
    with pytest.raises(ValueError, match=r"generate_expression: sparse must be"):
        style_e.generate_expression(module, params, np.zeros((40, 63)), np.zeros(24), jax.random.key(0))
    with pytest.raises(ValueError, match="method"):
        style_e.StyleESamplerConfig(method="dpm")
    with pytest.raises(ValueError, match="num_layers must be a positive int"):
        style_e.StyleEConfig(num_layers=0)


@pytest.mark.slow
def test_official_size_sampling_runs():
    module = style_e.StyleE(style_e.StyleEConfig())
    c = module.config
    params = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 32, 64)), jnp.zeros((1,), jnp.int32),
                                  jnp.zeros((1, 32, 64)), jnp.zeros((1, 512)))["params"]
    params = nn.meta.unbox(params)
    sparse = np.random.default_rng(0).standard_normal((100, c.sparse_dim)).astype(np.float32)
    text = np.random.default_rng(1).standard_normal(c.text_dim).astype(np.float32)
    out = style_e.generate_expression(module, params, sparse, text, jax.random.key(0))
    again = style_e.generate_expression(module, params, sparse, text, jax.random.key(0))
    assert out.shape == (100, 64) and bool(jnp.all(jnp.isfinite(out)))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(again))
