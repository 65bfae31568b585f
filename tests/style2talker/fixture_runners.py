"""Golden-fixture runners for StyleGAN2 (`stylegan2_generator`), DualStyleGAN (`dualstylegan`) and its ModRes
block (`adaresblock`).

`RUNNERS = {fixture module name: fn(fixture_dir, entry)}`; `fixture_dir` is the folder holding the module's
files, `entry` its manifest record. Each converts the original state dict through `interop` (and checks the
exact round trip), runs the Flax module on the fixture inputs (NCHW -> NHWC here) and asserts the parity
standard on every output.
"""

from __future__ import annotations

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk import interop
from jaxtalk.interop.kinds.stylegan import STYLEGAN_LEAF_OVERRIDES, stylegan_torch_key
from jaxtalk.interop.reading import read_state_dict
from jaxtalk.interop.registry import Kind, register
from jaxtalk.style2talker.dualstylegan import AdaResBlock
from tests.parity import assert_close

ADARES_KIND = "_dualstylegan_adaresblock_for_tests"
register(Kind(
    name=ADARES_KIND,
    summary="test-only: one DualStyleGAN AdaResBlock. apply(v, x (B,H,W,C), s (B,D), w) -> (B,H,W,C)",
    build=lambda config, state: (AdaResBlock(), None),
    init=lambda m, rng: m.init(rng, jnp.zeros((1, 4, 4, 16)), jnp.zeros((1, 32))),
    key_fn=stylegan_torch_key,
    leaf_overrides=STYLEGAN_LEAF_OVERRIDES,
))


def _nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


def _load(fixture_dir: Path, name: str) -> tuple[dict[str, np.ndarray], Path]:
    with np.load(fixture_dir / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}, fixture_dir / f"{name}.safetensors"


def _assert_round_trip(kind: str, params, weights: Path) -> None:
    source = read_state_dict(weights)
    back = interop.to_torch(kind, params)
    assert set(back) == set(source), f"{kind}: round-trip keys differ: {sorted(set(back) ^ set(source))[:6]}"
    for k, v in source.items():
        np.testing.assert_array_equal(back[k], v, err_msg=f"{kind}: {k} changed in the round trip")


def _noise(data: dict[str, np.ndarray]) -> list[np.ndarray]:
    n = len([k for k in data if k.startswith("noise_")])
    return [_nhwc(data[f"noise_{i}"]) for i in range(n)]


def _scale_from_patch(entry: dict) -> float:
    """The channel scale the fixture applied (the manifest's first patch names it)."""
    m = re.search(r"int\(v\*([0-9.]+)\)|scaled by ([0-9.]+)", " ".join(entry["patches"]))
    assert m, "manifest patch does not state the channel scale"
    return float(m.group(1) or m.group(2))


def run_stylegan2_generator(fixture_dir: Path, entry: dict) -> None:
    data, weights = _load(fixture_dir, "stylegan2_generator")
    module, params = interop.from_torch("stylegan2", weights)
    cfg = dict(entry["constructor"], channel_scale=_scale_from_patch(entry))
    module_cfg, params_cfg = interop.from_torch("stylegan2", weights, cfg)
    assert module_cfg.channel_list == module.channel_list and module.n_latent == data["wplus"].shape[1]
    _assert_round_trip("stylegan2", params, weights)
    noise = _noise(data)

    @jax.jit
    def forward(p, wplus, z, trunc):
        img_w = module.apply({"params": p}, wplus, input_is_latent=True, noise=noise)
        img_z, lat_z = module.apply({"params": p}, z, truncation=0.7, truncation_latent=trunc, noise=noise,
                                    return_latents=True)
        return img_w, img_z, lat_z

    img_w, img_z, lat_z = forward(params, data["wplus"], data["z"], data["truncation_latent"])
    assert_close(img_w, _nhwc(data["img_from_wplus"]), name="stylegan2_generator.img_from_wplus")
    assert_close(img_z, _nhwc(data["img_from_z"]), name="stylegan2_generator.img_from_z")
    assert_close(lat_z, data["latent_from_z"], name="stylegan2_generator.latent_from_z")


def run_dualstylegan(fixture_dir: Path, entry: dict) -> None:
    data, weights = _load(fixture_dir, "dualstylegan")
    module, params = interop.from_torch("dualstylegan", weights)
    assert module.res_index == entry["constructor"]["res_index"]
    cfg = dict(entry["constructor"], channel_scale=_scale_from_patch(entry))
    module_cfg, _ = interop.from_torch("dualstylegan", weights, cfg)
    assert module_cfg.channel_list == module.channel_list
    _assert_round_trip("dualstylegan", params, weights)
    noise = _noise(data)
    weights_list = [float(v) for v in data["interp_weights"]]
    assert len(set(weights_list[: module.n_latent])) > 1, "fixture interp_weights should be unequal"

    @jax.jit
    def forward(p, wplus, exstyle):
        img = module.apply({"params": p}, wplus, exstyle, input_is_latent=True, noise=noise,
                           use_res=True, interp_weights=weights_list, fuse_index=18)
        plain = module.apply({"params": p}, wplus, exstyle, input_is_latent=True, noise=noise, use_res=False)
        return img, plain

    img, plain = forward(params, data["wplus"], data["exstyle"])
    assert_close(img, _nhwc(data["img"]), name="dualstylegan.img")
    assert_close(plain, _nhwc(data["img_use_res_false"]), name="dualstylegan.img_use_res_false")


def run_adaresblock(fixture_dir: Path, entry: dict) -> None:
    data, weights = _load(fixture_dir, "adaresblock")
    module, params = interop.from_torch(ADARES_KIND, weights)
    _assert_round_trip(ADARES_KIND, params, weights)
    x = _nhwc(data["x"])
    w = float(data["w"])
    assert 0 < w < 1, "fixture w should be fractional"
    y = module.apply({"params": params}, x, data["s"], w)
    y1 = module.apply({"params": params}, x, data["s"], 1.0)
    assert_close(y, _nhwc(data["y"]), name=f"adaresblock.y (w={w})")
    assert_close(y1, _nhwc(data["y_w1"]), name="adaresblock.y_w1")
    np.testing.assert_array_equal(module.apply({"params": params}, x, data["s"], 0), x)  # w=0 short-circuit


RUNNERS = {
    "stylegan2_generator": run_stylegan2_generator,
    "dualstylegan": run_dualstylegan,
    "adaresblock": run_adaresblock,
}
