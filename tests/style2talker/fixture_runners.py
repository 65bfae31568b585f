"""Golden-fixture runners for StyleGAN2 (`stylegan2_generator`), DualStyleGAN (`dualstylegan`) and its ModRes
block (`adaresblock`).

`RUNNERS = {fixture module name: fn(fixture)}`, run through `tests.fixture_harness`. Each converts the original
state dict through `interop` with the manifest's constructor (and checks the exact round trip), runs the Flax
module on the fixture inputs (NCHW -> NHWC here) with the recorded call's own arguments, and asserts the parity
standard on every output.
"""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk import interop
from jaxtalk.interop.kinds.stylegan import STYLEGAN_LEAF_OVERRIDES, stylegan_torch_key
from jaxtalk.interop.reading import read_state_dict
from jaxtalk.interop.registry import Kind, register
from jaxtalk.style2talker.dualstylegan import AdaResBlock
from tests.fixture_harness import Fixture, nhwc
from tests.parity import assert_close


class _SizedAdaResBlock(AdaResBlock):
    """An AdaResBlock that knows its input width and style size (the original's constructor), for init."""

    fin: int = 0
    style_dim: int = 0


ADARES_KIND = "_dualstylegan_adaresblock_for_tests"
register(Kind(
    name=ADARES_KIND,
    summary="test-only: one DualStyleGAN AdaResBlock(fin, style_dim). apply(v, x (B,H,W,fin), s (B,style_dim), w)",
    build=lambda config, state: (_SizedAdaResBlock(**config), None),  # an unknown constructor key: TypeError
    init=lambda m, rng: m.init(rng, jnp.zeros((1, 4, 4, m.fin)), jnp.zeros((1, m.style_dim))),
    key_fn=stylegan_torch_key,
    leaf_overrides=STYLEGAN_LEAF_OVERRIDES,
))


def _assert_round_trip(kind: str, params, weights) -> None:
    source = read_state_dict(weights)
    back = interop.to_torch(kind, params)
    assert set(back) == set(source), f"{kind}: round-trip keys differ: {sorted(set(back) ^ set(source))[:6]}"
    for k, v in source.items():
        np.testing.assert_array_equal(back[k], v, err_msg=f"{kind}: {k} changed in the round trip")


def _noise(fx: Fixture) -> list[np.ndarray]:
    n = len([k for k in fx.arrays.keys() if k.startswith("noise_")])
    return [nhwc(fx.arrays[f"noise_{i}"]) for i in range(n)]


def _scale_from_patch(fx: Fixture) -> float:
    """The channel scale the fixture applied (the manifest's first patch names it)."""
    m = re.search(r"int\(v\*([0-9.]+)\)|scaled by ([0-9.]+)", " ".join(fx.entry["patches"]))
    assert m, "manifest patch does not state the channel scale"
    return float(m.group(1) or m.group(2))


def _converted(fx: Fixture, kind: str) -> tuple[nn.Module, dict]:
    """The module built from the manifest's constructor (+ the patched channel scale), checked against the one
    inferred from the weights' shapes, with the exact round trip."""
    module, params = interop.from_torch(kind, fx.weights, dict(fx.constructor, channel_scale=_scale_from_patch(fx)))
    inferred, _ = interop.from_torch(kind, fx.weights)
    assert module.channel_list == inferred.channel_list and module.n_latent == inferred.n_latent
    _assert_round_trip(kind, params, fx.weights)
    return module, params


def run_stylegan2_generator(fx: Fixture) -> None:
    module, params = _converted(fx, "stylegan2")
    from_wplus, from_z = fx.calls
    noise = _noise(fx)
    z = fx.arrays

    @jax.jit
    def forward(p, wplus, zs, trunc):
        img_w = module.apply({"params": p}, wplus, input_is_latent=from_wplus["input_is_latent"], noise=noise,
                             return_latents=from_wplus["return_latents"])
        img_z = module.apply({"params": p}, zs, truncation=from_z["truncation"], truncation_latent=trunc,
                             noise=noise, return_latents=from_z["return_latents"])
        return img_w, img_z

    (img_w, _), (img_z, lat_z) = forward(params, z["wplus"], z["z"], z["truncation_latent"])
    assert_close(img_w, nhwc(z["img_from_wplus"]), name="stylegan2_generator.img_from_wplus")
    assert_close(img_z, nhwc(z["img_from_z"]), name="stylegan2_generator.img_from_z")
    assert_close(lat_z, z["latent_from_z"], name="stylegan2_generator.latent_from_z")


def run_dualstylegan(fx: Fixture) -> None:
    module, params = _converted(fx, "dualstylegan")
    assert module.res_index == fx.constructor["res_index"]
    fused, plain_call = fx.calls
    noise = _noise(fx)
    z = fx.arrays
    weights_list = [float(v) for v in z["interp_weights"]]
    assert len(set(weights_list[: module.n_latent])) > 1, "fixture interp_weights should be unequal"

    @jax.jit
    def forward(p, wplus, exstyle):
        img = module.apply({"params": p}, wplus, exstyle, input_is_latent=fused["input_is_latent"], noise=noise,
                           use_res=fused["use_res"], interp_weights=weights_list, fuse_index=fused["fuse_index"])
        plain = module.apply({"params": p}, wplus, exstyle, input_is_latent=plain_call["input_is_latent"],
                             noise=noise, use_res=plain_call["use_res"])
        return img, plain

    img, plain = forward(params, z["wplus"], z["exstyle"])
    assert_close(img, nhwc(z["img"]), name="dualstylegan.img")
    assert_close(plain, nhwc(z["img_use_res_false"]), name="dualstylegan.img_use_res_false")


def run_adaresblock(fx: Fixture) -> None:
    module, params = interop.from_torch(ADARES_KIND, fx.weights, dict(fx.constructor))
    _assert_round_trip(ADARES_KIND, params, fx.weights)
    z = fx.arrays
    x = nhwc(z["x"])
    w = float(z["w"])
    assert 0 < w < 1, "fixture w should be fractional"
    y = module.apply({"params": params}, x, z["s"], w)
    y1 = module.apply({"params": params}, x, z["s"], 1.0)
    assert_close(y, nhwc(z["y"]), name=f"adaresblock.y (w={w})")
    assert_close(y1, nhwc(z["y_w1"]), name="adaresblock.y_w1")
    np.testing.assert_array_equal(module.apply({"params": params}, x, z["s"], 0), x)  # w=0 short-circuit


RUNNERS = {
    "stylegan2_generator": run_stylegan2_generator,
    "dualstylegan": run_dualstylegan,
    "adaresblock": run_adaresblock,
}
