"""Audio windowing (V-Express prepare_audio_embeddings), Whisper feature stacking, AudioProjection interop."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

from jaxtalk import interop
from jaxtalk.interop.reading import read_state_dict
from jaxtalk.svp.audio_projection import (
    AudioProjectionConfig,
    interpolate_linear,
    stack_whisper_hidden_states,
    window_audio_features,
)
from tests.parity import assert_close


def _key(seed: int) -> jax.Array:
    """An rbg key: XLA:CPU compiles threefry (partitionable) random bits very slowly, rbg in well under a second."""
    return jax.random.key(seed, impl="rbg")


@pytest.mark.parametrize("t_in,size", [(37, 20), (9, 24), (16, 16)])
def test_interpolate_matches_torch(t_in, size):
    x = np.random.default_rng(t_in).standard_normal((2, t_in, 6)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 2, 1), size=size, mode="linear")
    assert_close(interpolate_linear(x, size), ref.permute(0, 2, 1).numpy(), name=f"interpolate {t_in}->{size}")


def _vexpress_windows(emb: np.ndarray, video_length: int, num_pad: int) -> np.ndarray:
    """The V-Express pipeline's loop, written out with torch ops."""
    e = torch.from_numpy(emb)[None].permute(0, 2, 1)
    e = torch.nn.functional.interpolate(e, size=2 * video_length, mode="linear")[0].permute(1, 0)
    z = torch.zeros_like(e)[: 2 * num_pad]
    e = torch.cat([z, e, z], dim=0)
    frames = [e[2 * f: 2 * (f + 2 * num_pad + 1)] for f in range(video_length)]
    return torch.stack(frames).numpy()


def test_windows_match_vexpress_loop():
    emb = np.random.default_rng(0).standard_normal((49, 8)).astype(np.float32)  # ~1 s of 50 Hz features
    got = np.asarray(window_audio_features(emb, 12, num_pad=2))
    ref = _vexpress_windows(emb, 12, 2)
    assert got.shape == (12, 10, 8)
    assert_close(got, ref, name="audio windows")
    np.testing.assert_array_equal(got[0, :4], 0.0)  # two padding frames before frame 0
    batched = np.asarray(window_audio_features(np.stack([emb, -emb]), 12, num_pad=2))
    np.testing.assert_array_equal(batched[1], -got)


def test_whisper_stacking_order():
    hs = np.random.default_rng(1).standard_normal((5, 2, 7, 384)).astype(np.float32)
    out = np.asarray(stack_whisper_hidden_states(hs))
    assert out.shape == (2, 7, 1920)
    for k in range(5):
        np.testing.assert_array_equal(out[:, :, 384 * k: 384 * (k + 1)], hs[k])
    with pytest.raises(ValueError, match=r"\[L\+1, B, T, D\]"):
        stack_whisper_hidden_states(hs[0])


def test_svp_whisper_path_shapes_and_jit():
    cfg = AudioProjectionConfig.svp_whisper(dim=32, depth=1, dim_head=8, heads=4, num_queries=3, output_dim=24)
    assert cfg.embedding_dim == 1920 and cfg.window == 10
    feats = np.random.default_rng(2).standard_normal((2, 40, 1920)).astype(np.float32)  # 0.8 s at 50 Hz
    windows = cfg.windows(feats, num_frames=20)
    assert windows.shape == (40, 10, 1920)
    module = cfg.module()
    params = jax.jit(module.init)(_key(0), windows)
    tokens = jax.jit(module.apply)(params, windows)
    assert tokens.shape == (40, 3, 24) and np.isfinite(np.asarray(tokens)).all()
    with pytest.raises(ValueError, match="exceeds max_seq_len=10"):
        module.apply(params, np.zeros((1, 11, 1920), np.float32))


def test_round_trip_and_head_inference(fixtures_dir):
    sd = read_state_dict(fixtures_dir / "svp" / "vx_audio_projection.safetensors")
    with pytest.raises(interop.ConversionError, match="not a multiple of dim_head=64"):
        interop.from_torch("vexpress_audio_projection", sd)
    module, params = interop.from_torch("vexpress_audio_projection", sd, config={"heads": 2})
    assert (module.dim, module.depth, module.dim_head, module.heads, module.num_queries) == (32, 2, 16, 2, 3)
    assert (module.embedding_dim, module.output_dim, module.ff_mult, module.max_seq_len) == (48, 32, 4, 10)
    back = interop.to_torch("vexpress_audio_projection", params)
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)
    bad = {**sd, "to_latents_from_mean_pooled_seq.0.weight": np.ones(32, np.float32)}
    with pytest.raises(interop.ConversionError, match="1 unexpected: to_latents_from_mean_pooled_seq"):
        interop.from_torch("vexpress_audio_projection", bad, config={"heads": 2})
