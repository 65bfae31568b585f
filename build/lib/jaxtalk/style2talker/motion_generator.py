"""PIRender motion generator as used by StyleHEAT and Style2Talker: MappingNet + WarpingNet.

`MappingNet` turns a 27-frame window of 73-d coefficients (exp 64, angles 3, trans 3, crop 3) into a descriptor;
`WarpingNet` (an ADAIN hourglass conditioned on it) predicts a flow in pixel units of its output grid (1/4 of the
input image) and warps the image with it. Channels-last: coefficients (B, T, 73), images (B, H, W, 3), flows
(B, h, w, 2) with [..., 0] = x. Submodule names follow the PyTorch attributes so state-dict keys map directly.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.nn import grid_warp, layers

Dtype = Any


def instance_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
    """`nn.InstanceNorm2d(affine=False)` on (B, H, W, C): per-sample, per-channel, biased variance, float32."""
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=(1, 2), keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=(1, 2), keepdims=True)
    return ((xf - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


class ConvTranspose2d(nn.Module):
    """`nn.ConvTranspose2d` (torch semantics incl. `output_padding`); kernel stored (kh, kw, out, in), which the
    generic interop rule maps to torch's (in, out, kh, kw)."""

    features: int
    kernel_size: int = 3
    stride: int = 2
    padding: int = 1
    output_padding: int = 1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", layers.partitioned(layers.torch_default_init, ("conv_kh", "conv_kw", "conv_out", "conv_in")),
                            (k, k, self.features, x.shape[-1]), self.param_dtype)
        bias = self.param("bias", layers.partitioned(layers.zeros_init, ("conv_out",)), (self.features,), self.param_dtype)
        # gradient-of-conv form: dilate the input, pad (k-1-p, k-1-p+output_padding), correlate with the flipped kernel
        hwio = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2).astype(self.dtype)
        lo, hi = k - 1 - self.padding, k - 1 - self.padding + self.output_padding
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype), hwio, window_strides=(1, 1), padding=[(lo, hi), (lo, hi)],
            lhs_dilation=(self.stride, self.stride), dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + bias.astype(self.dtype)


class MappingNet(nn.Module):
    """Coefficient window (B, T, coeff_nc) -> descriptor (B, descriptor_nc): a Conv1d(k=7) then `layer` dilated
    Conv1d(k=3, dilation 3) residual steps (each trims 3 frames per side), averaged over time."""

    coeff_nc: int = 73
    descriptor_nc: int = 256
    layer: int = 3
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, coeffs: jax.Array) -> jax.Array:
        if coeffs.ndim != 3 or coeffs.shape[-1] != self.coeff_nc:
            raise ValueError(f"MappingNet: expected coefficients (batch, frames, {self.coeff_nc}), got {coeffs.shape}")
        min_frames = 7 + 6 * self.layer
        if coeffs.shape[1] < min_frames:
            raise ValueError(f"MappingNet: needs at least {min_frames} frames per window (27 in Style2Talker), "
                             f"got {coeffs.shape[1]}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        out = layers.conv(self.descriptor_nc, (7,), name="first_0", **kw)(coeffs.astype(self.dtype))
        for i in range(self.layer):
            h = layers.conv(self.descriptor_nc, (3,), dilation=3, name=f"encoder{i}_1", **kw)(
                nn.leaky_relu(out, 0.1))
            out = h + out[:, 3:-3]
        return jnp.mean(out.astype(jnp.float32), axis=1).astype(self.dtype)


class ADAIN(nn.Module):
    """Instance norm modulated by a descriptor: IN(x) * (1 + gamma(z)) + beta(z), hidden width 128."""

    norm_nc: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, z: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        actv = nn.relu(layers.dense(128, name="mlp_shared_0", **kw)(z))
        gamma = layers.dense(self.norm_nc, name="mlp_gamma", **kw)(actv)
        beta = layers.dense(self.norm_nc, name="mlp_beta", **kw)(actv)
        return instance_norm(x) * (1 + gamma[:, None, None, :]) + beta[:, None, None, :]


class ADAINEncoderBlock(nn.Module):
    in_nc: int
    out_nc: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, z: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = nn.leaky_relu(ADAIN(self.in_nc, name="norm_0", **kw)(x, z), 0.1)
        x = layers.conv(self.out_nc, (4, 4), strides=2, padding=1, name="conv_0", **kw)(x)
        x = nn.leaky_relu(ADAIN(self.out_nc, name="norm_1", **kw)(x, z), 0.1)
        return layers.conv(self.out_nc, (3, 3), padding=1, name="conv_1", **kw)(x)


class ADAINDecoderBlock(nn.Module):
    """Up x2 with a transposed-conv shortcut: out = convT_s(a(x)) + convT_1(a(conv_0(a(x)))), a = LReLU(ADAIN)."""

    in_nc: int
    out_nc: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, z: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x_s = ConvTranspose2d(self.out_nc, name="conv_s", **kw)(nn.leaky_relu(ADAIN(self.in_nc, name="norm_s", **kw)(x, z), 0.1))
        dx = layers.conv(self.out_nc, (3, 3), padding=1, name="conv_0", **kw)(
            nn.leaky_relu(ADAIN(self.in_nc, name="norm_0", **kw)(x, z), 0.1))
        dx = ConvTranspose2d(self.out_nc, name="conv_1", **kw)(nn.leaky_relu(ADAIN(self.out_nc, name="norm_1", **kw)(dx, z), 0.1))
        return x_s + dx


class ADAINEncoder(nn.Module):
    ngf: int
    img_f: int
    layers: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, z: jax.Array) -> list[jax.Array]:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        out = layers.conv(self.ngf, (7, 7), padding=3, name="input_layer", **kw)(x)
        outs = [out]
        for i in range(self.layers):
            cin, cout = min(self.ngf * 2**i, self.img_f), min(self.ngf * 2 ** (i + 1), self.img_f)
            out = ADAINEncoderBlock(cin, cout, name=f"encoder{i}", **kw)(out, z)
            outs.append(out)
        return outs


class ADAINDecoder(nn.Module):
    ngf: int
    img_f: int
    encoder_layers: int
    decoder_layers: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, feats: list[jax.Array], z: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        feats = list(feats)
        out = feats.pop()
        for i in reversed(range(self.encoder_layers - self.decoder_layers, self.encoder_layers)):
            cin = min(self.ngf * 2 ** (i + 1), self.img_f) * (1 if i == self.encoder_layers - 1 else 2)
            cout = min(self.ngf * 2**i, self.img_f)
            out = ADAINDecoderBlock(cin, cout, name=f"decoder{i}", **kw)(out, z)
            out = jnp.concatenate([out, feats.pop()], axis=-1)
        return out


class ADAINHourglass(nn.Module):
    ngf: int
    img_f: int
    encoder_layers: int
    decoder_layers: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, z: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        feats = ADAINEncoder(self.ngf, self.img_f, self.encoder_layers, name="encoder", **kw)(x, z)
        return ADAINDecoder(self.ngf, self.img_f, self.encoder_layers, self.decoder_layers, name="decoder", **kw)(feats, z)


class LayerNorm2d(nn.Module):
    """PIRender `LayerNorm2d`: layer norm over (H, W, C) per sample, affine weight/bias stored as torch's (C, 1, 1)."""

    num_features: int
    eps: float = 1e-5
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.num_features
        weight = self.param("weight", layers.partitioned(nn.initializers.ones_init(), ("norm", None, None)), (c, 1, 1), self.param_dtype)
        bias = self.param("bias", layers.partitioned(layers.zeros_init, ("norm", None, None)), (c, 1, 1), self.param_dtype)
        xf = x.astype(jnp.float32)
        mean = jnp.mean(xf, axis=(1, 2, 3), keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), axis=(1, 2, 3), keepdims=True)
        y = (xf - mean) * jax.lax.rsqrt(var + self.eps) * weight.reshape(c) + bias.reshape(c)
        return y.astype(x.dtype)


class WarpingNet(nn.Module):
    """Image (B, H, W, image_nc) + descriptor (B, D) -> {'flow_field' (B, H/2^(e-d), ..., 2), 'warp_image'}."""

    image_nc: int = 3
    descriptor_nc: int = 256
    base_nc: int = 32
    max_nc: int = 256
    encoder_layer: int = 5
    decoder_layer: int = 3
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def output_nc(self) -> int:
        return 2 * min(self.base_nc * 2 ** (self.encoder_layer - self.decoder_layer), self.max_nc)

    @nn.compact
    def __call__(self, image: jax.Array, descriptor: jax.Array) -> dict[str, jax.Array]:
        if image.ndim != 4 or image.shape[-1] != self.image_nc:
            raise ValueError(f"WarpingNet: expected an image (batch, height, width, {self.image_nc}), got {image.shape}")
        if descriptor.ndim != 2 or descriptor.shape[-1] != self.descriptor_nc:
            raise ValueError(f"WarpingNet: expected a descriptor (batch, {self.descriptor_nc}), got {descriptor.shape}")
        step = 2**self.encoder_layer
        if image.shape[1] % step or image.shape[2] % step:
            raise ValueError(f"WarpingNet: image height/width must be multiples of {step}, got {image.shape[1:3]}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = image.astype(self.dtype)
        z = descriptor.astype(self.dtype)
        feat = ADAINHourglass(self.base_nc, self.max_nc, self.encoder_layer, self.decoder_layer, name="hourglass", **kw)(x, z)
        feat = nn.leaky_relu(LayerNorm2d(self.output_nc, name="flow_out_0", param_dtype=self.param_dtype)(feat), 0.1)
        flow = layers.conv(2, (7, 7), padding=3, name="flow_out_2", **kw)(feat).astype(jnp.float32)
        warped = grid_warp.warp_image(image, grid_warp.flow_to_deformation(flow))
        return {"flow_field": flow, "warp_image": warped}


class MotionGenerator(nn.Module):
    """Style2Talker `Motion_Generator`: {'flow_field', 'warp_image', 'descriptor'} from an image and a coefficient
    window. Defaults are the published sizes (73 x 27 window, 256-d descriptor, 64x64 flow for a 256 image)."""

    coeff_nc: int = 73
    descriptor_nc: int = 256
    mapping_layers: int = 3
    image_nc: int = 3
    base_nc: int = 32
    max_nc: int = 256
    encoder_layer: int = 5
    decoder_layer: int = 3
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, image: jax.Array, coeffs: jax.Array) -> dict[str, jax.Array]:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        descriptor = MappingNet(self.coeff_nc, self.descriptor_nc, self.mapping_layers, name="mapping_net", **kw)(coeffs)
        out = WarpingNet(self.image_nc, self.descriptor_nc, self.base_nc, self.max_nc, self.encoder_layer,
                         self.decoder_layer, name="warping_net", **kw)(image, descriptor)
        return {**out, "descriptor": descriptor}


def coefficient_windows(coeffs: jax.Array, radius: int = 13) -> jax.Array:
    """Per-frame windows of (2*radius+1) frames with indices clamped at the ends, as Style2Talker's
    `transform_semantic`: (F, D) -> (F, 2*radius+1, D)."""
    if coeffs.ndim != 2:
        raise ValueError(f"coefficient_windows: expected (frames, dims), got {coeffs.shape}")
    n = coeffs.shape[0]
    idx = jnp.clip(jnp.arange(n)[:, None] + jnp.arange(-radius, radius + 1)[None, :], 0, n - 1)
    return coeffs[idx]
