"""bfloat16 sampling keeps float32 where precision matters: norm statistics, softmax, timestep sinusoids, the CFG
combination, the window accumulation and every sampler update. Checked on the traced (not run) denoising loop of
svp_tiny with `dtype=bfloat16`, so the test is fast and looks at what XLA is actually given."""

from __future__ import annotations

import jax
import jax.extend.core as jcore
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk import config
from jaxtalk.svp import models as svp_models
from jaxtalk.svp import pipeline as P

# Primitives whose float inputs must be float32 in a bf16 run: exp / log / reduce_max (softmax, log-sum-exp),
# rsqrt (GroupNorm / LayerNorm), sin / cos (timestep sinusoids).
FP32_ONLY = {"exp", "exp2", "log", "reduce_max", "rsqrt", "sin", "cos"}


def _eqns(jaxpr: jcore.Jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(sub, jcore.ClosedJaxpr):
                    yield from _eqns(sub.jaxpr)
                elif isinstance(sub, jcore.Jaxpr):
                    yield from _eqns(sub)


def _float_dtypes(variables) -> set:
    return {v.aval.dtype for v in variables if hasattr(v, "aval") and hasattr(v.aval, "dtype")
            and jnp.issubdtype(v.aval.dtype, jnp.floating)}


@pytest.fixture(scope="module")
def traced():
    cfg = config.load("svp_tiny", overrides=["dtype=bfloat16", "sampler.kind=dpmsolver++", "sampler.steps=3"])
    modules = svp_models.build_modules(cfg)
    params = svp_models.abstract_params(cfg, modules)
    models = svp_models.SVPModels(cfg, modules, params)
    pipe = P.SVPPipeline(models, progress=False)
    frames = cfg.context.frames
    cond = pipe.condition_shapes(1, frames)
    plan = pipe.window_plan(frames)
    keys = jax.ShapeDtypeStruct((1, 2), jnp.uint32)
    scalars = {k: jax.ShapeDtypeStruct((), jnp.float32) for k in pipe.guidance_scalars()}

    def loop(p, k, c, s):
        return P.denoise_latents(models, p, k, c, s, plan=plan, coeffs=pipe.coeffs, latent_shape=pipe.latent_shape,
                                 do_cfg=True)

    return jax.make_jaxpr(loop)(params, keys, cond, scalars)


def test_bf16_run_really_computes_in_bf16(traced) -> None:
    """Guards the checks below against a vacuous pass: the UNet's convolutions and matmuls do run in bf16."""
    heavy = [e for e in _eqns(traced.jaxpr) if e.primitive.name in ("conv_general_dilated", "dot_general")]
    assert heavy
    bf16 = [e for e in heavy if _float_dtypes(e.invars) == {jnp.dtype(jnp.bfloat16)}]
    assert len(bf16) > 0.8 * len(heavy), f"{len(bf16)} of {len(heavy)} convs / matmuls in bf16"


def test_softmax_norms_and_sinusoids_stay_fp32(traced) -> None:
    found: dict[str, int] = {}
    for eqn in _eqns(traced.jaxpr):
        if eqn.primitive.name in FP32_ONLY:
            dts = _float_dtypes(eqn.invars)
            assert dts <= {jnp.dtype(jnp.float32)}, f"{eqn.primitive.name} on {dts}: {eqn}"
            found[eqn.primitive.name] = found.get(eqn.primitive.name, 0) + 1
    assert {"exp", "reduce_max", "rsqrt", "sin", "cos"} <= set(found), found


def test_sampler_state_and_output_stay_fp32(traced) -> None:
    """The sampler's scan carries (latents, multistep history) and the window accumulator are float32, so the
    scheduler arithmetic and the CFG combination never round to bf16."""
    assert [v.dtype for v in traced.out_avals] == [jnp.dtype(jnp.float32)]
    loops = [e for e in _eqns(traced.jaxpr) if e.primitive.name in ("scan", "while")]
    assert loops
    for eqn in loops:
        assert _float_dtypes(eqn.outvars) <= {jnp.dtype(jnp.float32)}, eqn.primitive.name


def test_guided_window_prediction_is_fp32() -> None:
    cfg = config.load("svp_tiny", overrides=["dtype=bfloat16"])
    modules = svp_models.build_modules(cfg)
    models = svp_models.SVPModels(cfg, modules, svp_models.abstract_params(cfg, modules))
    pipe = P.SVPPipeline(models, progress=False)
    frames = cfg.context.frames
    cond = pipe.condition_shapes(1, frames)
    x = jax.ShapeDtypeStruct((1, frames, *pipe.latent_shape), jnp.bfloat16)
    scalars = {k: np.float32(v) for k, v in pipe.guidance_scalars().items()}
    out = jax.eval_shape(lambda p, x, c: P.window_prediction(
        models, p, x, jnp.float32(10.0), c.audio_tokens, c.kps_images, c.reference_bank, c.style_tokens, scalars,
        True), models.params, x, cond)
    assert out.dtype == jnp.float32 and out.shape == x.shape
