"""The speed paths give the same numbers as the plain ones: Style-E with its per-clip work folded out of the step
(`fold_for_sampling`), the frame-axis fc0 against torch's Conv1d, and audio2exp in chunks against one batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch

from jaxtalk.style2talker import audio2exp as a2e
from jaxtalk.style2talker.style_e import FrameMix, StyleE, StyleEConfig, fold_for_sampling, folded_denoise
from tests.parity import assert_close


def test_folded_denoiser_equals_the_full_network():
    c = StyleEConfig(latent_dim=32, num_layers=2, text_dim=16, max_timesteps=1000)
    module = StyleE(c)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((3, c.window, c.nfeats)), jnp.float32)
    sparse = jnp.asarray(rng.standard_normal((3, c.window, c.sparse_dim)), jnp.float32)
    text = jnp.asarray(rng.standard_normal((3, c.text_dim)), jnp.float32)
    steps = jnp.asarray([999, 400, 5])
    params = module.init(jax.random.key(0), x, steps, sparse, text)["params"]
    params = jax.tree.map(lambda a: a + 0.05 * jnp.asarray(rng.standard_normal(a.shape), a.dtype), params)
    folded = fold_for_sampling(module, params, sparse, text, steps)
    assert folded.step_bias.shape == (3, c.num_layers, c.latent_dim)
    for k, t in enumerate(np.asarray(steps)):
        full = module.apply({"params": params}, x, jnp.full((3,), t), sparse, text)
        assert_close(folded_denoise(module, params, folded, x, k), full, name=f"style-e folded step t={t}")


def test_frame_mix_is_torch_conv1d_over_frames():
    t, d = 8, 12
    conv = torch.nn.Conv1d(t, t, 1)
    h = np.random.default_rng(1).standard_normal((2, t, d)).astype(np.float32)
    with torch.no_grad():
        ref = conv(torch.from_numpy(h)).numpy()  # (B, T, D): frames are the channels
    params = {"kernel": jnp.asarray(conv.weight.detach().numpy().transpose(2, 1, 0)),
              "bias": jnp.asarray(conv.bias.detach().numpy())}
    out = FrameMix(t).apply({"params": params}, jnp.asarray(h))
    assert_close(out, ref, name="fc0 frame contraction")


def test_audio2exp_chunks_equal_one_batch():
    module = a2e.SimpleWrapperV2(width_scale=0.125)
    rng = np.random.default_rng(2)
    mels = jnp.asarray(rng.uniform(-4, 4, (2, 37, 80, 16)), jnp.float32)  # 74 frames: 3 chunks of 32, padded
    ref = jnp.asarray(rng.standard_normal((2, 64)), jnp.float32)
    ratio = jnp.asarray(rng.uniform(0, 1, (2, 37)), jnp.float32)
    variables = module.init(jax.random.key(0), mels[0], ref[:1].repeat(37, 0), ratio[0])
    chunked = a2e.audio2exp(module, variables, mels, ref, ratio, chunk=32)
    whole = a2e.audio2exp(module, variables, mels, ref, ratio, chunk=None)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(whole), rtol=1e-5, atol=1e-6)
