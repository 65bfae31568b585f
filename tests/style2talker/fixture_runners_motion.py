"""Golden-fixture runners for the Style-A motion path: PIRender MappingNet / WarpingNet, flow_util warping and the
StyleHEAT CalibrationNet (style2talker `Refinement`).

`RUNNERS = {fixture module name: fn(fixture)}`, run through `tests.fixture_harness`; each loads the original state
dict through `interop`, runs the Flax module on the fixture inputs (NCHW -> NHWC here) and asserts the parity standard on every output.
"""

from __future__ import annotations

import jax
import numpy as np

from jaxtalk import interop
from jaxtalk.nn import grid_warp
from jaxtalk.style2talker.refinement import calibration_channels
from tests.fixture_harness import Fixture, nhwc
from tests.parity import assert_close


def _converted(fx: Fixture, kind: str):
    """The module built from the manifest's constructor, checked against the one inferred from the shapes."""
    module, params = interop.from_torch(kind, fx.weights, dict(fx.constructor))
    inferred, _ = interop.from_torch(kind, fx.weights)
    assert module == inferred, f"{fx.name}: constructor {dict(fx.constructor)} builds {module}, weights {inferred}"
    return module, params


def run_mappingnet(fx: Fixture) -> None:
    module, params = _converted(fx, "pirender_mapping_net")
    coeffs = np.transpose(fx.arrays["coeff_3dmm"], (0, 2, 1))  # (B, 73, 27) -> (B, 27, 73)
    out = jax.jit(module.apply)({"params": params}, coeffs)
    assert_close(out, fx.arrays["descriptor"][..., 0], name="pirender_mappingnet.descriptor")


def run_warpingnet(fx: Fixture) -> None:
    module, params = _converted(fx, "pirender_warping_net")
    z = fx.arrays
    out = jax.jit(module.apply)({"params": params}, nhwc(z["input_image"]), z["descriptor"][..., 0])
    assert_close(out["flow_field"], nhwc(z["flow_field"]), name="pirender_warpingnet.flow_field")
    assert_close(out["warp_image"], nhwc(z["warp_image"]), name="pirender_warpingnet.warp_image")


def run_flow_warp(fx: Fixture) -> None:
    z = fx.arrays
    deformation = grid_warp.flow_to_deformation(nhwc(z["flow"]))
    assert_close(deformation, z["deformation"], name="flow_warp.deformation")
    warp = jax.jit(grid_warp.warp_image)
    assert_close(warp(nhwc(z["feat_same"]), deformation), nhwc(z["warped_same"]), name="flow_warp.warped_same")
    assert_close(warp(nhwc(z["feat_big"]), deformation), nhwc(z["warped_big"]), name="flow_warp.warped_big")


def run_calibrationnet(fx: Fixture) -> None:
    """The fixture's `linear_3dmm` is width-reduced by a patch the constructor cannot state, so the module comes from
    the weights' shapes and every constructor argument is checked against it."""
    module, params = interop.from_torch("calibration_net", fx.weights)
    c = fx.constructor
    assert (module.out_size, module.input_channel) == (c["out_size"], c["input_channel"])
    assert module.channels == calibration_channels(c["out_size"], c["narrow"], c["channel_multiplier"])
    z = fx.arrays
    assert module.channels[-1] == fx.entry["channels"]
    conds = jax.jit(module.apply)({"params": params}, nhwc(z["x"]), z["z"][..., 0])
    names = sorted((k for k in z.keys() if k.startswith("cond_")), key=lambda k: int(k.split("_")[1]))
    assert len(conds) == len(names), f"{len(conds)} conditions, fixture has {len(names)}"
    for name, cond in zip(names, conds):
        assert_close(cond, nhwc(z[name]), name=f"calibrationnet.{name}")


RUNNERS = {
    "calibrationnet": run_calibrationnet,
    "pirender_mappingnet": run_mappingnet,
    "pirender_warpingnet": run_warpingnet,
    "flow_warp": run_flow_warp,
}
