"""Golden-fixture runners for SVP's small parts: V-Express kps guider and audio projection, AnimateDiff temporal
module, StyleTalk style encoder (weights through `interop.from_torch`, constructor from the manifest).

`RUNNERS = {fixture module name: fn(fixture)}`, run by tests/svp/test_fixtures.py through `tests.fixture_harness`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from jaxtalk import interop
from tests.fixture_harness import Fixture, to_channels_last
from tests.parity import assert_close


def _kps_guider(fx: Fixture):
    module, params = interop.from_torch("vexpress_kps_guider", fx.weights, config=dict(fx.constructor))
    x = to_channels_last(fx.arrays["kps_images"], fx.layout("kps_images"))
    out = module.apply({"params": params}, x)
    return {"out": (out, to_channels_last(fx.arrays["out"], fx.layout("out")))}


def _audio_projection(fx: Fixture):
    module, params = interop.from_torch("vexpress_audio_projection", fx.weights, config=dict(fx.constructor))
    return {"out": (module.apply({"params": params}, fx.arrays["x"]), fx.arrays["out"])}


def _temporal_module(fx: Fixture):
    cons = dict(fx.constructor)
    in_channels = cons.pop("in_channels")  # the kind reads the width off the weights; the input must agree
    module, params = interop.from_torch("animatediff_temporal_module", fx.weights, config=cons)
    x = to_channels_last(fx.arrays["x"], fx.layout("x"))  # (b, f, h, w, c)
    assert x.shape[-1] == in_channels, f"fixture input has {x.shape[-1]} channels, constructor {in_channels}"
    b, f = x.shape[:2]
    out = module.apply({"params": params}, x.reshape(b * f, *x.shape[2:]), f)
    ref = to_channels_last(fx.arrays["out"], fx.layout("out"))
    return {"out": (np.asarray(out).reshape(ref.shape), ref)}


def _style_encoder(fx: Fixture):
    module, params = interop.from_torch("styletalk_style_encoder", fx.weights, config=dict(fx.constructor))
    return {"out": (module.apply({"params": params}, fx.arrays["x"], fx.arrays["pad_mask"]), fx.arrays["out"])}


def _runner(compare: Callable[[Fixture], dict]) -> Callable[[Fixture], None]:
    def run(fx: Fixture) -> None:
        results = compare(fx)
        assert results, f"{fx.name}: runner compared nothing"
        for output, (out, ref) in results.items():
            assert_close(out, ref, name=f"{fx.name}.{output}")

    return run


RUNNERS = {
    "vx_v_kps_guider": _runner(_kps_guider),
    "vx_audio_projection": _runner(_audio_projection),
    "ad_vanilla_temporal_module": _runner(_temporal_module),
    "st_style_encoder": _runner(_style_encoder),
}
