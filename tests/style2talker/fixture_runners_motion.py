"""Golden-fixture runners for the Style-A motion path: PIRender MappingNet / WarpingNet, flow_util warping and the
StyleHEAT CalibrationNet (style2talker `Refinement`).

`def run_calibrationnet(fixture_dir: Path, entry: dict) -> None:
    data = _load(fixture_dir, "calibrationnet")
    module, params = interop.from_torch("calibration_net", fixture_dir / "calibrationnet.safetensors")
    ctor = entry["constructor"]
    assert (module.out_size, module.input_channel, module.channels[-1]) == (
        ctor["out_size"], ctor["input_channel"], entry["channels"])
    conds = jax.jit(module.apply)({"params": params}, _nhwc(data["x"]), data["z"][..., 0])
    names = sorted((k for k in data if k.startswith("cond_")), key=lambda k: int(k.split("_")[1]))
    assert len(conds) == len(names), f"{len(conds)} conditions, fixture has {len(names)}"
    for name, cond in zip(names, conds):
        assert_close(cond, _nhwc(data[name]), name=f"calibrationnet.{name}")


RUNNERS = {
    "calibrationnet": run_calibrationnet,fixture module name: fn(fixture_dir, entry)}`; each loads the original state dict through `interop`,
runs the Flax module on the fixture inputs (NCHW -> NHWC here) and asserts the parity standard on every output.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from jaxtalk import interop
from jaxtalk.nn import grid_warp
from tests.parity import assert_close


def _nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


def _load(fixture_dir: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(fixture_dir / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


def run_mappingnet(fixture_dir: Path, entry: dict) -> None:
    data = _load(fixture_dir, "pirender_mappingnet")
    module, params = interop.from_torch("pirender_mapping_net", fixture_dir / "pirender_mappingnet.safetensors")
    assert module.coeff_nc == entry["constructor"]["coeff_nc"]
    assert module.descriptor_nc == entry["constructor"]["descriptor_nc"]
    coeffs = np.transpose(data["coeff_3dmm"], (0, 2, 1))  # (B, 73, 27) -> (B, 27, 73)
    out = jax.jit(module.apply)({"params": params}, coeffs)
    assert_close(out, data["descriptor"][..., 0], name="pirender_mappingnet.descriptor")


def run_warpingnet(fixture_dir: Path, entry: dict) -> None:
    data = _load(fixture_dir, "pirender_warpingnet")
    module, params = interop.from_torch("pirender_warping_net", fixture_dir / "pirender_warpingnet.safetensors")
    ctor = entry["constructor"]
    assert (module.base_nc, module.max_nc, module.encoder_layer, module.decoder_layer) == (
        ctor["base_nc"], ctor["max_nc"], ctor["encoder_layer"], ctor["decoder_layer"])
    out = jax.jit(module.apply)({"params": params}, _nhwc(data["input_image"]), data["descriptor"][..., 0])
    assert_close(out["flow_field"], _nhwc(data["flow_field"]), name="pirender_warpingnet.flow_field")
    assert_close(out["warp_image"], _nhwc(data["warp_image"]), name="pirender_warpingnet.warp_image")


def run_flow_warp(fixture_dir: Path, entry: dict) -> None:
    data = _load(fixture_dir, "flow_warp")
    deformation = grid_warp.flow_to_deformation(_nhwc(data["flow"]))
    assert_close(deformation, data["deformation"], name="flow_warp.deformation")
    warp = jax.jit(grid_warp.warp_image)
    assert_close(warp(_nhwc(data["feat_same"]), deformation), _nhwc(data["warped_same"]), name="flow_warp.warped_same")
    assert_close(warp(_nhwc(data["feat_big"]), deformation), _nhwc(data["warped_big"]), name="flow_warp.warped_big")


def run_calibrationnet(fixture_dir: Path, entry: dict) -> None:
    data = _load(fixture_dir, "calibrationnet")
    module, params = interop.from_torch("calibration_net", fixture_dir / "calibrationnet.safetensors")
    ctor = entry["constructor"]
    assert (module.out_size, module.input_channel, module.channels[-1]) == (
        ctor["out_size"], ctor["input_channel"], entry["channels"])
    conds = jax.jit(module.apply)({"params": params}, _nhwc(data["x"]), data["z"][..., 0])
    names = sorted((k for k in data if k.startswith("cond_")), key=lambda k: int(k.split("_")[1]))
    assert len(conds) == len(names), f"{len(conds)} conditions, fixture has {len(names)}"
    for name, cond in zip(names, conds):
        assert_close(cond, _nhwc(data[name]), name=f"calibrationnet.{name}")


RUNNERS = {
    "calibrationnet": run_calibrationnet,
    "pirender_mappingnet": run_mappingnet,
    "pirender_warpingnet": run_warpingnet,
    "flow_warp": run_flow_warp,
}
