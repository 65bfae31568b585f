"""StyleHEAT CalibrationNet = Style2Talker's refinement network (`model/motion_driven/refinement.py: Refinement`).

A small U-Net over the 64x64 StyleGAN feature: StyleGAN2 down ResBlocks to 4x4, then up ResBlocks whose output
is modulated by the motion descriptor (ADAIN residual blocks) and turned into one SFT (scale, shift) pair per
resolution 8, 16, 32, 64. Style-A applies only the last pair: `f * (1 + scale_64) + shift_64`.

Channels-last; names follow the PyTorch attributes (`conv_body_down.0.conv2.1.weight`, `inject_3dmm.2.norm1...`).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.nn import layers
from jaxtalk.nn.equalized import ConvLayer, EqualConv2d, FusedLeakyReLU, fused_leaky_relu
from jaxtalk.nn.grid_warp import resize_bilinear
from jaxtalk.style2talker.motion_generator import ADAIN

Dtype = Any
SQRT2 = math.sqrt(2.0)


def calibration_channels(out_size: int = 64, narrow: float = 1.0, channel_multiplier: int = 2) -> tuple[int, ...]:
    """The original channel table at resolutions 4, 8, ..., out_size (`unet_narrow = narrow / 2`)."""
    u = narrow * 0.5
    table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
             256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
    return tuple(int(table[2**i] * u) for i in range(2, int(math.log2(out_size)) + 1))


class DownResBlock(nn.Module):
    """StyleGAN2 discriminator `ResBlock`: (conv3 -> blur+conv3 stride 2) + (blur+conv1 stride 2), / sqrt 2."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        out = ConvLayer(x.shape[-1], 3, name="conv1", **kw)(x)
        out = ConvLayer(self.features, 3, downsample=True, name="conv2", **kw)(out)
        skip = ConvLayer(self.features, 1, downsample=True, activate=False, use_bias=False, name="skip", **kw)(x)
        return (out + skip) / SQRT2


class ConvUpLayer(nn.Module):
    """Bilinear x2 (align_corners=False) then an equalized conv; with `activate`, the bias lives in a
    `FusedLeakyReLU` named `activation`, otherwise the conv has no bias (as the ResUpBlock skip uses it)."""

    features: int
    kernel_size: int
    padding: int = 0
    activate: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, fan_in = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", layers.partitioned(nn.initializers.normal(1.0), ("conv_kh", "conv_kw", "conv_in", "conv_out")),
                            (k, k, fan_in, self.features), self.param_dtype)
        up = resize_bilinear(x, (2 * x.shape[1], 2 * x.shape[2]), align_corners=False).astype(self.dtype)
        y = jax.lax.conv_general_dilated(up, (kernel / math.sqrt(fan_in * k * k)).astype(self.dtype), (1, 1),
                                         [(self.padding, self.padding)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if self.activate:
            y = FusedLeakyReLU(dtype=self.dtype, param_dtype=self.param_dtype, name="activation")(y)
        return y


class ResUpBlock(nn.Module):
    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        out = ConvLayer(x.shape[-1], 3, name="conv1", **kw)(x)
        out = ConvUpLayer(self.features, 3, padding=1, name="conv2", **kw)(out)
        skip = ConvUpLayer(self.features, 1, activate=False, name="skip", **kw)(x)
        return (out + skip) / SQRT2


class FineADAINResBlock2d(nn.Module):
    """StyleHEAT's form: x = LReLU_0.01(ADAIN1(conv1(x), z)); out = x + ADAIN2(conv2(x), z)."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, z: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        c = x.shape[-1]
        x = nn.leaky_relu(ADAIN(c, name="norm1", **kw)(layers.conv(c, (3, 3), padding=1, name="conv1", **kw)(x), z), 0.01)
        return x + ADAIN(c, name="norm2", **kw)(layers.conv(c, (3, 3), padding=1, name="conv2", **kw)(x), z)


class CalibrationNet(nn.Module):
    """feature (B, out_size, out_size, input_channel), descriptor (B, descriptor_nc) -> list of 2*(log2(out)-2)
    conditions (B, r, r, 2*C_r): [scale_8, shift_8, scale_16, shift_16, ...].

    `channels`: U-Net widths at resolutions 4, 8, ..., out_size (`calibration_channels` gives the original's);
    the up-path widths must all equal the descriptor MLP output, which modulates every level.
    """

    out_size: int = 64
    input_channel: int = 512
    channels: tuple[int, ...] = calibration_channels(64, 1.0, 2)
    descriptor_nc: int = 256
    hidden_nc: int = 256
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _levels(self) -> int:
        log_size = int(math.log2(self.out_size))
        if 2**log_size != self.out_size or log_size < 3:
            raise ValueError(f"CalibrationNet: out_size must be a power of two >= 8, got {self.out_size}")
        if len(self.channels) != log_size - 1:
            raise ValueError(f"CalibrationNet: channels needs one width per resolution 4..{self.out_size} "
                             f"({log_size - 1}), got {len(self.channels)}")
        if len(set(self.channels[1:])) != 1:
            raise ValueError(f"CalibrationNet: the up-path widths {self.channels[1:]} must be equal (one descriptor "
                             "modulates every level)")
        return log_size - 2

    @nn.compact
    def __call__(self, x: jax.Array, descriptor: jax.Array) -> list[jax.Array]:
        levels = self._levels()
        if x.ndim != 4 or x.shape[1:] != (self.out_size, self.out_size, self.input_channel):
            raise ValueError(f"CalibrationNet: expected a feature (batch, {self.out_size}, {self.out_size}, "
                             f"{self.input_channel}), got {x.shape}")
        if descriptor.ndim != 2 or descriptor.shape[-1] != self.descriptor_nc:
            raise ValueError(f"CalibrationNet: expected a descriptor (batch, {self.descriptor_nc}), got {descriptor.shape}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        ch = self.channels  # ch[i] is the width at resolution 2**(i + 2)
        feat = ConvLayer(ch[-1], 1, name="conv_body_first", **kw)(x.astype(self.dtype))
        skips = []
        for i in range(levels):
            feat = DownResBlock(ch[levels - 1 - i], name=f"conv_body_down_{i}", **kw)(feat)
            skips.insert(0, feat)
        feat = ConvLayer(ch[0], 3, name="final_conv", **kw)(feat)

        z = layers.dense(self.hidden_nc, name="linear_3dmm_0", **kw)(descriptor.astype(self.dtype))
        z = layers.dense(ch[1], name="linear_3dmm_2", **kw)(nn.leaky_relu(z, 0.1))
        conditions = []
        for i in range(levels):
            c = ch[i + 1]
            feat = ResUpBlock(c, name=f"conv_body_up_{i}", **kw)(feat + skips[i])
            feat = FineADAINResBlock2d(name=f"inject_3dmm_{i}", **kw)(feat, z)
            for branch in ("condition_scale", "condition_shift"):
                h = EqualConv2d(c, 3, padding=1, name=f"{branch}_{i}_0", **kw)(feat)
                h = fused_leaky_relu(h, None)  # ScaledLeakyReLU(0.2)
                conditions.append(EqualConv2d(2 * c, 3, padding=1, name=f"{branch}_{i}_2", **kw)(h))
        return conditions
