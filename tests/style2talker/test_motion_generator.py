"""PIRender motion generator and StyleHEAT calibration net beyond the golden fixtures (which
`test_fixtures.py` runs through `fixture_runners_motion.py`): the composed Motion_Generator, interop round trips
and layouts, the transposed conv, coefficient windows and input validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxtalk import interop
from jaxtalk.style2talker.motion_generator import ConvTranspose2d, MappingNet, coefficient_windows
from tests.parity import assert_close


@pytest.fixture(scope="module")
def s2t_dir(fixtures_dir):
    d = fixtures_dir / "style2talker"
    if not d.is_dir():
        pytest.skip(f"{d} not found")
    return d


def _motion_state(s2t_dir):
    from safetensors.numpy import load_file

    state = {f"mapping_net.{k}": v for k, v in load_file(s2t_dir / "pirender_mappingnet.safetensors").items()}
    state.update({f"warping_net.{k}": v for k, v in load_file(s2t_dir / "pirender_warpingnet.safetensors").items()})
    return state


def test_motion_generator_composed_matches_fixture_parts(s2t_dir):
    """The two fixtures share the descriptor, so Motion_Generator (coeffs -> descriptor -> flow) is checked end to end."""
    state = _motion_state(s2t_dir)
    module, params = interop.from_torch("pirender", state)
    m = np.load(s2t_dir / "pirender_mappingnet.npz")
    w = np.load(s2t_dir / "pirender_warpingnet.npz")
    image = np.transpose(w["input_image"], (0, 2, 3, 1))
    out = jax.jit(module.apply)({"params": params}, image, np.transpose(m["coeff_3dmm"], (0, 2, 1)))
    assert_close(out["descriptor"], m["descriptor"][..., 0], name="motion_generator.descriptor")
    assert_close(out["flow_field"], np.transpose(w["flow_field"], (0, 2, 3, 1)), name="motion_generator.flow_field")
    assert_close(out["warp_image"], np.transpose(w["warp_image"], (0, 2, 3, 1)), name="motion_generator.warp_image")
    # exact round trips, in both published spellings
    back = interop.to_torch("pirender", params)
    assert set(back) == set(state) and all(np.array_equal(back[k], state[k]) for k in state)
    pirender_state = {k.replace("warping_net.", "warpping_net.", 1): v for k, v in state.items()}
    _, params2 = interop.from_torch("pirender", {"net_G_ema": pirender_state})
    back2 = interop.to_torch("pirender", params2, layout="pirender")
    assert set(back2) == set(pirender_state) and all(np.array_equal(back2[k], pirender_state[k]) for k in back2)


def test_conv_transpose_matches_torch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 6, 4)).astype(np.float32)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)  # torch (in, out, kh, kw)
    bias = rng.standard_normal(3).astype(np.float32)
    ref = torch.nn.functional.conv_transpose2d(torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(weight),
                                               torch.from_numpy(bias), stride=2, padding=1, output_padding=1)
    kernel = np.transpose(weight, (2, 3, 1, 0))  # the generic interop layout (kh, kw, out, in)
    out = ConvTranspose2d(3).apply({"params": {"kernel": kernel, "bias": bias}}, x)
    assert_close(out, ref.permute(0, 2, 3, 1).numpy(), name="conv_transpose2d")


def test_coefficient_windows_clamp_like_the_original():
    coeffs = jnp.arange(5 * 2, dtype=jnp.float32).reshape(5, 2)
    win = np.asarray(coefficient_windows(coeffs, radius=3))
    for f in range(5):
        idx = [min(max(i, 0), 4) for i in range(f - 3, f + 4)]
        np.testing.assert_array_equal(win[f], np.asarray(coeffs)[idx])


def test_bad_inputs_are_explained():
    m = MappingNet(coeff_nc=73, descriptor_nc=8)
    with pytest.raises(ValueError, match="at least 25 frames"):
        m.init(jax.random.key(0), jnp.zeros((1, 20, 73)))
    with pytest.raises(ValueError, match=r"\(batch, frames, 73\)"):
        m.init(jax.random.key(0), jnp.zeros((1, 73, 27)))
    with pytest.raises(interop.ConversionError, match="missing"):
        interop.from_torch("pirender_mapping_net", {"first.0.weight": np.zeros((8, 73, 7), np.float32)})


def test_calibration_net_round_trip_and_config(s2t_dir):
    from safetensors.numpy import load_file

    state = load_file(s2t_dir / "calibrationnet.safetensors")
    _, params = interop.from_torch("calibration_net", state)
    back = interop.to_torch("calibration_net", params)
    assert set(back) == set(state) and all(np.array_equal(back[k], state[k]) for k in state)
    # the original constructor kwargs give the published widths (all 256, SFT outputs 512)
    from jaxtalk.style2talker.refinement import calibration_channels

    assert calibration_channels(64, 1, 2) == (256,) * 5
    assert calibration_channels(16, 0.0625, 2) == (16,) * 3
