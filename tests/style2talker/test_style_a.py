"""VToonify-D and the Style-A assembly (Audio_Driven_VToonify) at a tiny width.

* VToonify: parity with the independent functional PyTorch reference in tests/reference/psp_vtoonify.py.
* Style-A: parity with the same reference whose 64-px hook applies the fixture-verified refinement net (JAX,
  `calibration_net` kind) to the UNWARPED feature, warps it with torch's grid_sample and applies cond[6]/cond[7];
  with the refinement's 64-px pair zeroed and the flow that cancels the half-pixel grid convention, Style-A
  reduces exactly to the VToonify decode.
* Strict import of the full official layout (style_a_keys.txt, 210.5 M numbers) for both kinds.
* Sharded init and forward on a (1, 2, 4) mesh of simulated devices.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxtalk import interop, parallel
from jaxtalk.interop.registry import abstract_variables, get_kind
from jaxtalk.nn.grid_warp import identity_flow
from jaxtalk.nn.upfirdn2d import make_kernel
from jaxtalk.style2talker.style_a import AudioDrivenVToonify, style_code
from tests.parity import assert_close
from tests.reference.psp_vtoonify import _mapping, vtoonify_ref, warp_ref
from tests.style2talker.test_psp import read_key_list, zero_state

TINY = dict(in_size=64, out_size=128, style_dim=32, channel_scale=1 / 32, stem_channels=8, descriptor_nc=16,
            motion_base_nc=4, motion_max_nc=16)
B, N_LATENT = 2, 12
MOTION = ("motion_generator.", "refinement.")


def _equalized(key: str) -> bool:
    """Weights scaled at run time (stored N(0, 1)) in the original layers."""
    if key.startswith("generator."):
        return True
    if key.startswith("res.") and ".norm" not in key:
        return True
    return key.startswith("refinement.") and "inject_3dmm" not in key and "linear_3dmm" not in key


def random_state(shapes: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """A random torch-layout state for the given key shapes: equalized weights N(0, 1), plain ones
    N(0, 1/fan_in), AdaIN / modulation biases around their inits, FIR buffers exact, every bias non-zero."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in sorted(shapes.items()):
        n = rng.standard_normal(shape).astype(np.float32)
        if key.endswith((".blur.kernel", ".upsample.kernel")):
            v = make_kernel((1, 3, 3, 1), 2)
        elif key.endswith(".kernel"):
            v = make_kernel((1, 3, 3, 1))
        elif key.endswith("modulation.bias"):
            v = 1 + 0.1 * n
        elif key.endswith("style.bias") and (".norm" in key):
            half = shape[0] // 2
            v = np.concatenate([np.ones(half, np.float32), np.zeros(half, np.float32)]) + 0.1 * n
        elif key.startswith("motion_generator.warping_net.flow_out.0."):
            v = (1.0 if key.endswith("weight") else 0.0) + 0.1 * n
        elif len(shape) <= 1 or key.endswith(("noise.weight", "to_rgb1.bias")) or ".to_rgbs." in key and key.endswith("bias"):
            v = 0.1 * n
        elif _equalized(key) or "noises.noise_" in key or key.endswith("input.input"):
            v = n
        else:
            v = n / np.sqrt(np.prod(shape[1:]))
        out[key] = np.asarray(v, np.float32)
    return out


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(x), (0, 3, 1, 2))))


def _nhwc(t):
    return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


@pytest.fixture(scope="module")
def tiny():
    kind = get_kind("style2talker_style_a")
    abstract = abstract_variables(kind, AudioDrivenVToonify(**TINY))
    shapes = {k: v.shape for k, v in interop.to_torch(
        "style2talker_style_a", jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract)).items()}
    state = random_state(shapes)
    rng = np.random.default_rng(1)
    inputs = dict(
        x=rng.uniform(-1, 1, (B, 64, 64, 3)).astype(np.float32),
        parsing=(4 * rng.standard_normal((B, 64, 64, 19))).astype(np.float32),
        style=rng.standard_normal((B, N_LATENT, 32)).astype(np.float32),
        input_image=rng.uniform(-1, 1, (B, 64, 64, 3)).astype(np.float32),
        driven=(0.5 * rng.standard_normal((B, 27, 73))).astype(np.float32),
    )
    return state, inputs


@pytest.fixture(scope="module")
def vtoonify_out(tiny):
    state, inp = tiny
    sub = {k: v for k, v in state.items() if not k.startswith(MOTION)}
    module, params = interop.from_torch("vtoonify", sub)
    assert (module.in_size, module.out_size, module.stem_channels) == (64, 128, 8)
    out = jax.jit(lambda p, x, s, par: module.apply({"params": p}, x, s, 0.5, parsing=par))(
        params, inp["x"], inp["style"], inp["parsing"])
    back = interop.to_torch("vtoonify", params)
    assert set(back) == set(sub) and all(np.array_equal(back[k], sub[k]) for k in sub)
    return np.asarray(out)


def test_vtoonify_matches_reference(tiny, vtoonify_out):
    state, inp = tiny
    sd = {k: torch.from_numpy(v) for k, v in state.items()}
    x = torch.cat([_nchw(inp["x"]), _nchw(inp["parsing"]) / 16], dim=1)
    with torch.no_grad():
        ref = vtoonify_ref(sd, x, torch.from_numpy(inp["style"]), 0.5, in_size=64)
    assert vtoonify_out.shape == (B, 128, 128, 3)
    assert_close(vtoonify_out, _nhwc(ref), name="vtoonify.image")


@pytest.fixture(scope="module")
def style_a(tiny):
    state, _ = tiny
    module, params = interop.from_torch("style2talker_style_a", state)
    assert module.refine_width == 8 and module.descriptor_nc == 16

    @jax.jit
    def forward(p, x, style, image, driven, parsing, flow):
        return module.apply({"params": p}, x, style, image, driven, 0.5, parsing=parsing, flow=flow, return_aux=True)

    return module, params, forward


def test_style_a_matches_reference_with_fixture_verified_motion_parts(tiny, style_a):
    state, inp = tiny
    module, params, _ = style_a
    out, aux = jax.jit(lambda p: module.apply({"params": p}, inp["x"], inp["style"], inp["input_image"],
                                              inp["driven"], 0.5, parsing=inp["parsing"], return_aux=True))(params)
    assert out.shape == (B, 128, 128, 3) and aux["flow"].shape == (B, 16, 16, 2)
    assert aux["descriptor"].shape == (B, 16) and len(aux["masks"]) == 2
    ref_module, ref_params = interop.from_torch(
        "calibration_net", {k[len("refinement."):]: v for k, v in state.items() if k.startswith("refinement.")})
    flow = _nchw(aux["flow"])

    def hook(feat):  # refinement on the unwarped feature, then warp, then SFT with the 64-px pair
        cond = ref_module.apply({"params": ref_params}, _nhwc(feat), aux["descriptor"])
        assert len(cond) == 8
        return warp_ref(feat, flow) * (1 + _nchw(cond[6])) + _nchw(cond[7])

    sd = {k: torch.from_numpy(v) for k, v in state.items()}
    x = torch.cat([_nchw(inp["x"]), _nchw(inp["parsing"]) / 16], dim=1)
    with torch.no_grad():
        ref = vtoonify_ref(sd, x, torch.from_numpy(inp["style"]), 0.5, in_size=64, first_hook=hook)
    assert_close(out, _nhwc(ref), name="style_a.image")


def test_zero_refinement_and_identity_flow_reduce_to_vtoonify(tiny, style_a, vtoonify_out):
    _, inp = tiny
    _, params, forward = style_a
    zeroed = jax.tree_util.tree_map_with_path(
        lambda path, v: jnp.zeros_like(v) if any(getattr(k, "key", "") in ("condition_scale_3_2", "condition_shift_3_2")
                                                  for k in path) else v, params)
    ident = jnp.broadcast_to(identity_flow(64, 64), (B, 64, 64, 2))
    args = (inp["x"], inp["style"], inp["input_image"], inp["driven"], inp["parsing"])
    out, _ = forward(zeroed, *args, ident)
    assert_close(out, vtoonify_out, name="style_a(zero refinement, identity flow) vs vtoonify")
    # a zero flow is not the identity under the original's conventions: the image must change
    shifted, _ = forward(zeroed, *args, jnp.zeros_like(ident))
    assert np.max(np.abs(np.asarray(shifted) - vtoonify_out)) > 1e-3
    with pytest.raises(ValueError, match="flow must be"):
        forward(zeroed, *args, jnp.zeros((B, 64, 64, 3)))


def test_zplus2wplus_and_style_code(tiny, style_a):
    state, inp = tiny
    module, params, _ = style_a
    zplus = inp["style"]
    w = jax.jit(lambda p, z: module.apply({"params": p}, z, method="zplus2wplus"))(params, zplus)
    sd = {k: torch.from_numpy(v) for k, v in state.items()}
    ref = _mapping(sd, "generator.generator.style", torch.from_numpy(zplus.reshape(-1, 32)), 8).reshape(B, N_LATENT, 32)
    assert_close(w, ref.numpy(), name="zplus2wplus")
    s = np.asarray(style_code(zplus[:1], np.asarray(w)))
    np.testing.assert_array_equal(s[:, :7], np.broadcast_to(zplus[:1, :7], (B, 7, 32)))
    np.testing.assert_array_equal(s[:, 7:], np.asarray(w)[:, 7:])


def test_bfloat16_compute_traces(tiny, style_a):
    _, inp = tiny
    _, params, _ = style_a
    module = AudioDrivenVToonify(**TINY, dtype=jnp.bfloat16)
    out = jax.eval_shape(lambda p: module.apply({"params": p}, inp["x"], inp["style"], inp["input_image"],
                                                inp["driven"], jnp.full((B,), 0.5)), params)
    assert out.shape == (B, 128, 128, 3) and out.dtype == jnp.bfloat16


def test_official_layout_imports_strictly(fixtures_dir):
    shapes = read_key_list(fixtures_dir / "style2talker" / "style_a_keys.txt")
    assert len(shapes) == 717
    state = zero_state(shapes)
    for k in state:
        if k.endswith((".blur.kernel", ".upsample.kernel")):
            state[k] = make_kernel((1, 3, 3, 1), 2)
        elif k.endswith(".kernel"):
            state[k] = make_kernel((1, 3, 3, 1))
    module, params = interop.from_torch("style2talker_style_a", state)
    assert (module.in_size, module.out_size, module.style_dim, module.refine_width) == (256, 1024, 512, 256)
    assert (module.descriptor_nc, module.motion_base_nc, module.motion_max_nc) == (256, 32, 256)
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    assert n == sum(int(np.prod(s)) for s in shapes.values()) and abs(n / 1e6 - 210.5) < 0.05
    del params
    # the VToonify-D part alone, built from the original constructor defaults
    sub = {k: v for k, v in state.items() if not k.startswith(MOTION)}
    module, _ = interop.from_torch("vtoonify", {"g_ema": sub}, config={})
    assert module.channel_list == (512, 512, 512, 512, 512, 256, 128, 64, 32)


def _shardings(module, args, mesh):
    with nn.logical_axis_rules(parallel.LOGICAL_RULES):
        abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), *args))
        return parallel.logical_to_shardings(abstract, mesh)


def _split_params(shardings) -> bool:
    return any(any(a is not None for a in s.spec) for s in jax.tree.leaves(shardings))


def test_sharded_forward_matches_unsharded(tiny, style_a):
    """Converted params placed on their logical shardings over a (data 1, fsdp 2, tensor 4) mesh."""
    _, inp = tiny
    module, params, forward = style_a
    mesh = parallel.make_mesh(1, 2, 4)
    shardings = _shardings(module, (inp["x"], inp["style"], inp["input_image"], inp["driven"]), mesh)["params"]
    assert _split_params(shardings)
    flow = np.asarray(0.3 * np.random.default_rng(5).standard_normal((B, 16, 16, 2)), np.float32)
    args = (inp["x"], inp["style"], inp["input_image"], inp["driven"], inp["parsing"], flow)
    with jax.set_mesh(mesh), nn.logical_axis_rules(parallel.LOGICAL_RULES):
        sharded, _ = jax.jit(forward.__wrapped__)(parallel.shard_params(params, shardings),
                                                  *parallel.shard_batch(args, mesh))
    plain, _ = forward(params, *args)
    assert_close(np.asarray(sharded), np.asarray(plain), name="style_a sharded vs unsharded")


@pytest.mark.slow
def test_sharded_init_and_forward_match_unsharded(tiny):
    """parallel.init_sharded creates every param on its shards (the init compile alone takes minutes on CPU)."""
    _, inp = tiny
    module = AudioDrivenVToonify(**TINY)
    args = (inp["x"], inp["style"], inp["input_image"], inp["driven"])
    mesh = parallel.make_mesh(1, 2, 4)
    variables, shardings = parallel.init_sharded(lambda r: module.init(r, *args), jax.random.key(3), mesh)
    assert _split_params(shardings)
    host = jax.tree.map(np.asarray, variables)

    def fwd(v, x, s, img, drv):
        return module.apply(v, x, s, img, drv, 0.5)

    with jax.set_mesh(mesh), nn.logical_axis_rules(parallel.LOGICAL_RULES):
        sharded = jax.jit(fwd)(variables, *parallel.shard_batch(args, mesh))
    plain = jax.jit(fwd)(host, *args)
    assert_close(np.asarray(sharded), np.asarray(plain), name="style_a init_sharded forward vs unsharded")


def test_driving_standardisation_is_the_raw_model_on_standardised_coefficients(tiny, style_a):
    _, inp = tiny
    module, params, _ = style_a
    rng = np.random.default_rng(3)
    nc = module.coeff_nc
    mean = tuple(float(v) for v in rng.normal(size=nc))
    std = tuple(float(v) for v in rng.uniform(0.5, 2.0, size=nc))
    standardised = module.clone(driving_mean=mean, driving_std=std)
    run = lambda m, driven: m.apply({"params": params}, inp["x"], inp["style"], inp["input_image"], driven, 0.5,
                                    parsing=inp["parsing"])
    got = run(standardised, inp["driven"])
    want = run(module, (inp["driven"] - np.asarray(mean, np.float32)) / np.asarray(std, np.float32))
    assert_close(got, want, name="style_a.standardised")
    assert float(jnp.max(jnp.abs(got - run(module, inp["driven"])))) > 1e-3  # the statistics do reach the model


def test_warp_skip_moves_the_rgb_skip_with_the_flow_and_is_exact_at_the_identity_flow(tiny, style_a):
    _, inp = tiny
    module, params, _ = style_a
    warped = module.clone(warp_skip=True)
    run = lambda m, flow: m.apply({"params": params}, inp["x"], inp["style"], inp["input_image"], inp["driven"],
                                  0.5, parsing=inp["parsing"], flow=flow)
    ident = jnp.broadcast_to(identity_flow(64, 64), (B, 64, 64, 2))
    assert_close(run(warped, ident), run(module, ident), name="style_a(warp_skip, identity flow) vs original")
    shift = ident + jnp.array([3.0, -2.0])  # a 3 px / 2 px shift of the 64-px grid
    got, plain = np.asarray(run(warped, shift)), np.asarray(run(module, shift))
    assert np.max(np.abs(got - plain)) > 1e-2  # the skip now moves with the flow


def test_motion_size_sets_the_motion_generators_image_and_flow_grid(tiny, style_a):
    _, inp = tiny
    module, params, _ = style_a
    run = lambda m, image: m.apply({"params": params}, inp["x"], inp["style"], image, inp["driven"], 0.5,
                                   parsing=inp["parsing"], return_aux=True)
    base, base_aux = run(module, inp["input_image"])
    same, same_aux = run(module.clone(motion_size=64), inp["input_image"])  # already that size: untouched
    np.testing.assert_array_equal(np.asarray(same), np.asarray(base))
    big = jnp.repeat(jnp.repeat(jnp.asarray(inp["input_image"]), 2, axis=1), 2, axis=2)  # 128 px
    _, big_aux = run(module, big)  # the original reads whatever size it is given: a 32x32 flow
    _, sized_aux = run(module.clone(motion_size=64), big)  # resized to 64 first: the 16x16 flow again
    assert big_aux["flow"].shape == (B, 32, 32, 2) and big_aux["warp_image"].shape == (B, 128, 128, 3)
    assert sized_aux["flow"].shape == (B, 16, 16, 2) and sized_aux["warp_image"].shape == (B, 64, 64, 3)
