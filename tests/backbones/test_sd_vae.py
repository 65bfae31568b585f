"""SD VAE: parity with diffusers AutoencoderKL (encode mean/logvar, decode), interop layouts, chunked decode."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL as TorchVAE

from jaxtalk import interop
from jaxtalk.backbones.sd_vae import SD_VAE_CONFIG, AutoencoderKL, VAEConfig
from jaxtalk.config import ConfigError
from tests.backbones.sd_reference import nchw, nhwc, rerandomise, state_numpy
from tests.parity import assert_close

# Two levels, mid attention, quant convs; the logvar half of quant_conv's bias is pushed past both clamps.
CONFIG_A = dict(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=8, latent_channels=4)
# Three levels, two resnets per encoder block, 3 latent channels, no quant convs, no mid attention, odd sizes.
CONFIG_B = dict(block_out_channels=(16, 32, 32), down_block_types=("DownEncoderBlock2D",) * 3,
                up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=2, norm_num_groups=8, latent_channels=3,
                use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=False, scaling_factor=0.5)


@functools.cache
def _reference(name: str):
    torch.manual_seed(0)
    model = rerandomise(TorchVAE(**{"a": CONFIG_A, "b": CONFIG_B}[name]), seed=3)
    if name == "a":
        with torch.no_grad():
            model.quant_conv.bias[4] += 60.0   # logvar channel 0 -> clamped at 20
            model.quant_conv.bias[5] -= 60.0   # logvar channel 1 -> clamped at -30
    return model, state_numpy(model)


@pytest.mark.parametrize("name,size", [("a", 16), ("b", 20)])
def test_encode_decode_parity(name, size):
    model, sd = _reference(name)
    module, params = interop.from_torch("sd_vae", sd, config=dict(model.config))
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    with torch.no_grad():
        dist = model.encode(nchw(images)).latent_dist
        ref_mean, ref_logvar = nhwc(dist.mean), nhwc(dist.logvar)
        latents = rng.standard_normal(ref_mean.shape).astype(np.float32)
        ref_images = nhwc(model.decode(nchw(latents)).sample)
    v = {"params": params}
    mean, logvar = jax.jit(functools.partial(module.apply, method="encode"))(v, images)
    assert_close(mean, ref_mean, name=f"sd_vae[{name}].mean")
    assert_close(logvar, ref_logvar, name=f"sd_vae[{name}].logvar")
    if name == "a":
        assert np.all(np.asarray(logvar)[..., 0] == 20.0) and np.all(np.asarray(logvar)[..., 1] == -30.0)
    decoded = jax.jit(functools.partial(module.apply, method="decode"))(v, latents)
    assert_close(decoded, ref_images, name=f"sd_vae[{name}].decode")


def test_decode_frames_is_chunked_decode():
    model, sd = _reference("b")
    module, params = interop.from_torch("sd_vae", sd, config=dict(model.config))
    latents = np.random.default_rng(1).standard_normal((5, 3, 3, 3)).astype(np.float32)
    with torch.no_grad():
        ref = nhwc(model.decode(nchw(latents)).sample)
    out = jax.jit(module.decode_frames, static_argnames="chunk")(params, latents, chunk=2)
    assert out.shape == (5, 12, 12, 3)
    assert_close(out, ref, name="sd_vae.decode_frames")
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        module.decode_frames(params, latents, chunk=0)


def test_roundtrip_and_deprecated_attention_names():
    _, sd = _reference("a")
    module, params = interop.from_torch("sd_vae", sd, config=None)
    assert module.config == VAEConfig.from_diffusers({**CONFIG_A, "norm_num_groups": 32})  # 32 groups assumed
    back = interop.to_torch("sd_vae", params)
    assert set(back) == set(sd) and all(np.array_equal(back[k], v) for k, v in sd.items())
    rename = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    old = {}
    for k, v in sd.items():
        for new_name, old_name in rename.items():
            k = k.replace(f"mid_block.attentions.0.{new_name}.", f"mid_block.attentions.0.{old_name}.")
        old[k] = v
    assert "encoder.mid_block.attentions.0.query.weight" in old
    _, params_old = interop.from_torch("sd_vae", old, config=CONFIG_A)
    back_old = interop.to_torch("sd_vae", params_old, layout="deprecated_attention")
    assert set(back_old) == set(old) and all(np.array_equal(back_old[k], v) for k, v in old.items())


def test_strictness_and_config_errors():
    model, sd = _reference("b")
    config = dict(model.config)
    truncated = {k: v for k, v in sd.items() if k != "decoder.up_blocks.2.resnets.1.norm2.weight"}
    with pytest.raises(interop.ConversionError, match="1 missing: decoder.up_blocks.2.resnets.1.norm2.weight"):
        interop.from_torch("sd_vae", truncated, config=config)
    bad = {**sd, "encoder.conv_out.weight": np.zeros((8, 32, 3, 3), np.float32)}
    with pytest.raises(interop.ConversionError, match=r"1 mis-shaped: encoder.conv_out.weight \(8, 32, 3, 3\)"):
        interop.from_torch("sd_vae", bad, config=config)
    with pytest.raises(ConfigError, match="UpDecoderBlock2D"):
        VAEConfig.from_diffusers({**CONFIG_A, "up_block_types": ("AttnUpDecoderBlock2D",) * 2})
    with pytest.raises(ConfigError, match="act_fn='gelu' is not supported"):
        VAEConfig.from_diffusers({**CONFIG_A, "act_fn": "gelu"})
    with pytest.raises(ValueError, match="NHWC"):
        jax.eval_shape(lambda: AutoencoderKL(VAEConfig.from_diffusers(CONFIG_A)).init(
            jax.random.key(0), np.zeros((1, 3, 16, 16), np.float32)))


@pytest.mark.slow
def test_sd_vae_full_config_against_diffusers():
    torch.manual_seed(0)
    model = TorchVAE(**SD_VAE_CONFIG).eval()
    sd = state_numpy(model)
    assert len(sd) == 248 and sum(v.size for v in sd.values()) == 83_653_863
    module, params = interop.from_torch("sd_vae", sd, config=dict(model.config))
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
    latents = rng.standard_normal((1, 8, 8, 4)).astype(np.float32)
    with torch.no_grad():
        ref_mean = nhwc(model.encode(nchw(images)).latent_dist.mean)
        ref_images = nhwc(model.decode(nchw(latents)).sample)
    v = {"params": params}
    mean, _ = jax.jit(functools.partial(module.apply, method="encode"))(v, images)
    assert_close(mean, ref_mean, name="sd_vae[full].mean")
    assert_close(jax.jit(functools.partial(module.apply, method="decode"))(v, latents), ref_images,
                 name="sd_vae[full].decode")
