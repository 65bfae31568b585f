"""Golden-fixture parity for SVP's small parts: one test per manifest module, weights through `interop.from_torch`."""

from __future__ import annotations

import numpy as np
import pytest

from jaxtalk import interop
from tests.parity import assert_close
from tests.svp.fixture_util import FixtureModule, get_module, to_channels_last


def _kps_guider(mod: FixtureModule):
    module, params = interop.from_torch("vexpress_kps_guider", mod.weights, config=mod.constructor)
    arr = mod.arrays()
    x = to_channels_last(arr["kps_images"], mod.layout("kps_images"))
    out = module.apply({"params": params}, x)
    return {"out": (out, to_channels_last(arr["out"], mod.layout("out")))}


def _audio_projection(mod: FixtureModule):
    module, params = interop.from_torch("vexpress_audio_projection", mod.weights, config=mod.constructor)
    arr = mod.arrays()
    return {"out": (module.apply({"params": params}, arr["x"]), arr["out"])}


def _temporal_module(mod: FixtureModule):
    cons = mod.constructor
    cons.pop("in_channels")
    module, params = interop.from_torch("animatediff_temporal_module", mod.weights, config=cons)
    arr = mod.arrays()
    x = to_channels_last(arr["x"], mod.layout("x"))  # (b, f, h, w, c)
    b, f = x.shape[:2]
    out = module.apply({"params": params}, x.reshape(b * f, *x.shape[2:]), f)
    ref = to_channels_last(arr["out"], mod.layout("out"))
    return {"out": (np.asarray(out).reshape(ref.shape), ref)}


def _style_encoder(mod: FixtureModule):
    module, params = interop.from_torch("styletalk_style_encoder", mod.weights, config=mod.constructor)
    arr = mod.arrays()
    return {"out": (module.apply({"params": params}, arr["x"], arr["pad_mask"]), arr["out"])}


# Manifest module name -> runner. Modules other helpers implement (vx_reference_net, vx_denoising_unet,
# vx_ddim_scheduler) are wired by their owners in their own tests.
RUNNERS = {
    "vx_v_kps_guider": _kps_guider,
    "vx_audio_projection": _audio_projection,
    "ad_vanilla_temporal_module": _temporal_module,
    "st_style_encoder": _style_encoder,
}


@pytest.mark.parametrize("name", sorted(RUNNERS))
def test_fixture_parity(fixtures_dir, name):
    mod = get_module(fixtures_dir / "svp", name)
    results = RUNNERS[name](mod)
    assert results, f"{name}: runner compared nothing"
    for output, (out, ref) in results.items():
        assert_close(out, ref, name=f"{name}.{output}")

