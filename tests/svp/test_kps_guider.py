"""V-Kps / Head-Kps guider: inferred config, exact round trip, Head-Kps images through the guider."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxtalk import interop
from jaxtalk.interop.reading import read_state_dict
from jaxtalk.svp.kps_guider import KpsGuiderConfig, VKpsGuider, head_kps_images
from tests.fixture_harness import Fixture, manifest_entries


def _key(seed: int) -> jax.Array:
    """An rbg key: XLA:CPU compiles threefry (partitionable) random bits very slowly, rbg in well under a second."""
    return jax.random.key(seed, impl="rbg")


def test_round_trip_with_inferred_config(fixtures_dir):
    mod = Fixture("vx_v_kps_guider", fixtures_dir / "svp", manifest_entries("svp", fixtures_dir)["vx_v_kps_guider"])
    sd = read_state_dict(mod.weights)
    module, params = interop.from_torch("vexpress_kps_guider", sd)  # everything is visible in the shapes
    cons = mod.constructor
    assert module.conditioning_embedding_channels == cons["conditioning_embedding_channels"]
    assert module.conditioning_channels == cons["conditioning_channels"]
    assert module.block_out_channels == tuple(cons["block_out_channels"])
    back = interop.to_torch("vexpress_kps_guider", params)
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)
    del sd["blocks.3.bias"]
    with pytest.raises(interop.ConversionError, match="1 missing: blocks.3.bias"):
        interop.from_torch("vexpress_kps_guider", sd)


def test_head_kps_guider_on_drawn_keypoints():
    rng = np.random.default_rng(0)
    b, f, size = 2, 3, 64
    base = np.array([[8, 30], [56, 30], [22, 26], [42, 26], [32, 24], [32, 30], [32, 36], [32, 42]], np.float64)
    kps = base + rng.uniform(-3, 3, (b, f, 8, 2))
    images = head_kps_images(kps, size)
    assert images.shape == (b, f, size, size, 3) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() == 1.0
    guider = KpsGuiderConfig(embedding_channels=32, block_out_channels=(8, 16, 16, 32)).module()
    params = jax.jit(guider.init)(_key(0), images)
    out = jax.jit(guider.apply)(params, images)
    assert out.shape == (b, f, size // 8, size // 8, 32)
    np.testing.assert_array_equal(np.asarray(out), 0.0)  # conv_out starts at zero, as in V-Express
    with pytest.raises(ValueError, match=r"\(B, F, H, W, 3\)"):
        VKpsGuider(32, 3, (8, 16)).init(_key(0), images[0])
    with pytest.raises(ValueError, match=r"\(\.\.\., 8, 2\)"):
        head_kps_images(kps[..., :3, :], size)
