"""Golden-fixture runners for SVP's small parts: V-Express kps guider and audio projection, AnimateDiff temporal
module, StyleTalk style encoder (weights through `interop.from_torch`).

`RUNNERS = {fixture module name: fn(fixture_dir, entry)}`, collected by tests/svp/test_fixtures.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from jaxtalk import interop
from tests.parity import assert_close
from tests.svp.fixture_util import FixtureModule, to_channels_last


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


def _runner(name: str, compare: Callable[[FixtureModule], dict]) -> Callable[[Path, dict], None]:
    def run(fixture_dir: Path, entry: dict) -> None:
        results = compare(FixtureModule(name, Path(fixture_dir), entry))
        assert results, f"{name}: runner compared nothing"
        for output, (out, ref) in results.items():
            assert_close(out, ref, name=f"{name}.{output}")

    return run


RUNNERS = {
    "vx_v_kps_guider": _runner("vx_v_kps_guider", _kps_guider),
    "vx_audio_projection": _runner("vx_audio_projection", _audio_projection),
    "ad_vanilla_temporal_module": _runner("ad_vanilla_temporal_module", _temporal_module),
    "st_style_encoder": _runner("st_style_encoder", _style_encoder),
}
