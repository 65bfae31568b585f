"""VToonify-D (Yang et al. 2022): a DualStyleGAN decoder driven from 32x32 by a content encoder, with fusion skips.

The content encoder E (plain convs + LeakyReLU 0.2) maps the input (image in [-1, 1] + 19 face-parsing channels
/ 16, at `in_size`) to multi-scale features and, after 6 residual blocks each followed by a frozen dilated ModRes
block (the DualStyleGAN structure path), a 32x32 feature and RGB skip. The StyleGAN decoder then runs from its
32-px layer (`convs[6:]`, `to_rgbs[3:]`) with the extrinsic colour codes and zero noise; before each of the
32..in_size blocks a `Fusion` module blends E's feature in through a style-degree-conditioned mask.

Channels-last. Names mirror the PyTorch module (`encoder.0.0`, `encoder.4.k.conv`, `fusion_out.j.norm.style`,
`fusion_skip.j`, `res.i`, `generator.*`) so checkpoints convert with the generic rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.nn import layers
from jaxtalk.style2talker.dualstylegan import AdaptiveInstanceNorm, AdaResBlock, DualStyleGAN
from jaxtalk.style2talker.stylegan2 import StyleGAN2Config, log2_size, resolve_channels

Dtype = Any
PARSING_CHANNELS = 19
FIRST_DECODER_RES = 32


def lrelu(x: jax.Array) -> jax.Array:
    return nn.leaky_relu(x, 0.2)


class ConvPair(nn.Module):
    """`nn.Sequential(Conv3x3(stride), LReLU, Conv3x3, LReLU)` with children "0" and "2" (torch indices)."""

    hidden: int
    features: int
    stride: int = 1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = lrelu(layers.conv(self.hidden, (3, 3), strides=self.stride, padding=1, name="0", **kw)(x))
        return lrelu(layers.conv(self.features, (3, 3), padding=1, name="2", **kw)(x))


class VToonifyResBlock(nn.Module):
    """(lrelu(conv2(lrelu(conv(x)))) + x) / sqrt(2)."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        c = x.shape[-1]
        out = lrelu(layers.conv(c, (3, 3), padding=1, name="conv", **kw)(x))
        out = lrelu(layers.conv(c, (3, 3), padding=1, name="conv2", **kw)(out))
        return (out + x) / math.sqrt(2.0)


class ResBlockStack(nn.Module):
    """`encoder[-2]`: the residual blocks, children "0".."n-1"; called one block at a time so the ModRes
    blocks can act between them."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, index: int) -> jax.Array:
        return VToonifyResBlock(self.dtype, self.param_dtype, name=str(index))(x)


class Fusion(nn.Module):
    """Blend the encoder feature f_E into the generator feature f_G:
    label = MLP(d_s); m_E = tanh(relu(conv2(AdaIN([f_G, |f_G - f_E|], label)))); f = conv([f_G, f_E * m_E]).
    Returns (f, m_E)."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, f_g: jax.Array, f_e: jax.Array, d_s: jax.Array) -> tuple[jax.Array, jax.Array]:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        c = f_g.shape[-1]
        label = jnp.broadcast_to(jnp.asarray(d_s, jnp.float32).reshape(-1, 1), (f_g.shape[0], 1))
        label = lrelu(layers.dense(64, name="linear_0", **kw)(label))
        label = lrelu(layers.dense(128, name="linear_2", **kw)(label))
        h = AdaptiveInstanceNorm(self.dtype, self.param_dtype, name="norm")(
            jnp.concatenate([f_g, jnp.abs(f_g - f_e)], axis=-1), label)
        m_e = jnp.tanh(nn.relu(layers.conv(1, (3, 3), padding=1, name="conv2", **kw)(h)))
        f_out = layers.conv(c, (3, 3), padding=1, name="conv", **kw)(jnp.concatenate([f_g, f_e * m_e], axis=-1))
        return f_out, m_e


Hook = Callable[[jax.Array], jax.Array]


def style_degree(d_s: Any, batch: int) -> Any:
    """d_s as the ModRes blocks and fusion labels take it: a Python float stays one (so 0 short-circuits like the
    original), an array becomes a scalar or (B, 1, 1, 1)."""
    if isinstance(d_s, (int, float)):
        return float(d_s)
    arr = jnp.asarray(d_s, jnp.float32)
    if arr.ndim == 0:
        return arr
    if arr.shape != (batch,):
        raise ValueError(f"VToonify: d_s must be a float, a scalar or one value per sample ({batch},), got {arr.shape}")
    return arr.reshape(batch, 1, 1, 1)


class VToonify(nn.Module):
    """williamyang1991 `VToonify(in_size, out_size, backbone='dualstylegan')`, NHWC.

    Call: `apply(v, x, style, d_s=0.5, *, parsing=None, return_mask=False, return_feat=False)`.
      x: (B, in_size, in_size, 3) image in [-1, 1] — then `parsing` (B, in_size, in_size, 19) BiSeNet logits are
         divided by 16 and appended, or zeros when None — or the original's 22-channel input (image ++ parsing/16).
      style: the W+ code (B, n_latent, D) (rows :7 structure from the extrinsic style, 7: colour) or W (B, D).
      d_s: style degree, a float or (B,).
    Returns the image (B, out_size, out_size, 3); with return_mask also the fusion masks; with return_feat the
    encoder's 32x32 feature and RGB skip. The channel table is the generator's (`channels` / `channel_scale`).
    """

    in_size: int = 256
    out_size: int = 1024
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    channels: Sequence[int] | None = None
    channel_scale: float = 1.0
    num_res_layers: int = 6
    img_channels: int = 3
    stem_channels: int = 32
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def channel_list(self) -> tuple[int, ...]:
        return resolve_channels(self.out_size, self.channel_multiplier, self.channel_scale, self.channels)

    def _ch(self, res: int) -> int:
        return self.channel_list[int(math.log2(res)) - 2]

    @property
    def encoder_res(self) -> list[int]:
        """Resolutions of the fused encoder features, fine to coarse (256, 128, 64, 32 published)."""
        return [2**i for i in range(int(math.log2(self.in_size)), 4, -1)]

    def _validate(self) -> None:
        log2_size(self.out_size)
        if self.in_size < FIRST_DECODER_RES or 2 ** int(math.log2(self.in_size)) != self.in_size:
            raise ValueError(f"VToonify: in_size must be a power of two >= 32, got {self.in_size}")
        if self.out_size < 2 * FIRST_DECODER_RES or self.in_size > self.out_size:
            raise ValueError(f"VToonify: need 64 <= out_size and in_size <= out_size, got in {self.in_size}, "
                             f"out {self.out_size}")

    def setup(self) -> None:
        self._validate()
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.generator = DualStyleGAN(StyleGAN2Config(self.out_size, self.style_dim, self.n_mlp,
                                                      self.channel_multiplier, channels=self.channels,
                                                      channel_scale=self.channel_scale), **kw)
        # encoder[0]: stem; [1..]: stride-2 pairs down to 32 px; [-2]: residual blocks; [-1]: 1x1 to RGB
        encoder: list[nn.Module] = [ConvPair(self.stem_channels, self._ch(self.in_size), **kw)]
        for res in self.encoder_res[:-1]:
            encoder.append(ConvPair(self._ch(res // 2), self._ch(res // 2), stride=2, **kw))
        encoder.append(ResBlockStack(**kw))
        encoder.append(layers.conv(self.img_channels, (1, 1), **kw))
        self.encoder = encoder
        self.fusion_out = [Fusion(**kw) for _ in self.encoder_res]
        self.fusion_skip = [layers.conv(3, (3, 3), padding=1, **kw) for _ in self.encoder_res]
        self.res = [AdaResBlock(**kw)] + [AdaResBlock(dilation=2 ** (5 - i), **kw) for i in (3, 3, 4, 4, 5, 5)]

    # -- pieces ------------------------------------------------------------------------------------------

    def zplus2wplus(self, zplus: jax.Array) -> jax.Array:
        """Z+ codes (pSp encoder output) -> W+ through the StyleGAN mapping network, row by row."""
        if zplus.ndim != 3:
            raise ValueError(f"zplus2wplus: expected (batch, n_latent, dim), got {zplus.shape}")
        return self.generator.generator.mapping(zplus)

    def style_codes(self, style: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(resstyles, adastyles): T_s of every row (for the ModRes blocks), T_c of rows >= 7 (decoder latents)."""
        g = self.generator
        if style.ndim not in (2, 3) or style.shape[-1] != self.style_dim:
            raise ValueError(f"VToonify: style must be W (batch, {self.style_dim}) or W+ (batch, {g.n_latent}, "
                             f"{self.style_dim}), got {style.shape}")
        return g.resstyles(style), g.adastyles(style, start=7)

    def content_input(self, x: jax.Array, parsing: jax.Array | None) -> jax.Array:
        full = self.img_channels + PARSING_CHANNELS
        if x.ndim != 4 or x.shape[1:3] != (self.in_size, self.in_size) or x.shape[-1] not in (self.img_channels, full):
            raise ValueError(f"VToonify: x must be (batch, {self.in_size}, {self.in_size}, {self.img_channels}) "
                             f"(plus optional parsing) or the {full}-channel image ++ parsing/16 input, got {x.shape}")
        if x.shape[-1] == full:
            if parsing is not None:
                raise ValueError("VToonify: x already holds the 19 parsing channels; do not pass `parsing` too")
            return x.astype(self.dtype)
        if parsing is None:
            parsing = jnp.zeros((*x.shape[:3], PARSING_CHANNELS), x.dtype)
        elif parsing.shape != (*x.shape[:3], PARSING_CHANNELS):
            raise ValueError(f"VToonify: parsing must be BiSeNet logits {(*x.shape[:3], PARSING_CHANNELS)}, "
                             f"got {parsing.shape}")
        return jnp.concatenate([x, parsing / 16.0], axis=-1).astype(self.dtype)

    def encode(self, x: jax.Array, resstyles: jax.Array, d_s: Any) -> tuple[jax.Array, jax.Array, list[jax.Array]]:
        """Content encoder: (32x32 feature, RGB skip, encoder features coarse to fine)."""
        feats = []
        feat = x
        for block in self.encoder[:-2]:
            feat = block(feat)
            feats.append(feat)
        for ii in range(self.num_res_layers):
            feat = self.res[ii + 1](self.encoder[-2](feat, ii), resstyles[:, ii + 1], d_s)
        return feat, self.encoder[-1](feat), feats[::-1]

    def decode(self, out: jax.Array, skip: jax.Array, feats: Sequence[jax.Array], adastyles: jax.Array, d_s: Any,
               first_hook: Hook | None = None, skip_hook: Hook | None = None) -> tuple[jax.Array, list[jax.Array]]:
        """StyleGAN layers from 32 px up with fusion; `first_hook` acts on the 64x64 feature right after
        `convs[6]` (where Style-A warps and refines), `skip_hook` on the 32-px RGB skip before it is upsampled
        into the 64-px image. Noise is zero, as in VToonify."""
        g = self.generator.generator
        masks = []
        for k in range(len(g.to_rgbs) - 3):
            if FIRST_DECODER_RES * 2**k <= self.in_size:
                f_e = feats[k]
                out, m_e = self.fusion_out[k](out, f_e, d_s)
                skip = self.fusion_skip[k](jnp.concatenate([skip, f_e * m_e], axis=-1))
                masks.append(m_e)
            out = g.convs[6 + 2 * k](out, adastyles[:, 7 + 2 * k], "zero")
            if k == 0 and first_hook is not None:
                out = first_hook(out)
            out = g.convs[7 + 2 * k](out, adastyles[:, 8 + 2 * k], "zero")
            if k == 0 and skip_hook is not None:
                skip = skip_hook(skip)
            skip = g.to_rgbs[3 + k](out, adastyles[:, 9 + 2 * k], skip)
        return skip, masks

    def _init_unused(self, style: jax.Array) -> None:
        """Create the params the forward never touches but checkpoints carry (the generator's low layers,
        DualStyleGAN's own ModRes blocks, `res[0]`), so init and conversion see the full state."""
        if self.is_initializing():
            wplus = jnp.zeros((1, self.generator.n_latent, self.style_dim), jnp.float32)
            self.generator(wplus, wplus, input_is_latent=True, noise="zero")
            self.res[0](jnp.zeros((1, 4, 4, self._ch(4)), self.dtype), wplus[:, 0])

    def __call__(self, x: jax.Array, style: jax.Array, d_s: Any = 0.5, *, parsing: jax.Array | None = None,
                 return_mask: bool = False, return_feat: bool = False) -> Any:
        self._init_unused(style)
        d_s = style_degree(d_s, x.shape[0])
        resstyles, adastyles = self.style_codes(style)
        out, skip, feats = self.encode(self.content_input(x, parsing), resstyles, d_s)
        if return_feat:
            return out, skip
        image, masks = self.decode(out, skip, feats, adastyles, d_s)
        return (image, masks) if return_mask else image
