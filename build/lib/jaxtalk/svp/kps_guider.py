"""Keypoint guiders: V-Express `VKpsGuider` and SVP's Head-Kps guider (the same light conv stack).

conv_in (3x3) + SiLU, then for each consecutive pair in `block_out_channels` a stride-1 conv (c_i -> c_i) and a
stride-2 conv (c_i -> c_{i+1}), each followed by SiLU, then conv_out (3x3, zero-initialised). All convs are 3x3
with padding 1 and run per frame (V-Express `InflatedConv3d`). The output matches the latent grid (1/8 of the
image for 4 channel entries) and is added to `conv_in(latents)` of the denoising UNet.

SVP's Head-Kps guider (paper §3.2) is this module fed with the 8-point Head-Kps image drawn by
`jaxtalk.data.kps.draw_head_kps`; its channel sizes are not published, so they are a `KpsGuiderConfig`.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk import config as cfg
from jaxtalk.nn import layers

Dtype = jnp.dtype


class VKpsGuider(nn.Module):
    """`apply(v, kps_images[B, F, H, W, C]) -> [B, F, H/2^(n-1), W/2^(n-1), E]` (n = len(block_out_channels))."""

    conditioning_embedding_channels: int = 320
    conditioning_channels: int = 3
    block_out_channels: tuple[int, ...] = (16, 32, 96, 256)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, kps_images: jax.Array) -> jax.Array:
        if kps_images.ndim != 5 or kps_images.shape[-1] != self.conditioning_channels:
            raise ValueError(
                f"kps guider expects video (B, F, H, W, {self.conditioning_channels}), got {kps_images.shape}; "
                "add a frame axis for single images (x[:, None])"
            )
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        chans = self.block_out_channels

        def run(x):
            h = nn.silu(layers.conv(chans[0], (3, 3), padding=1, name="conv_in", **kw)(x))
            for i in range(len(chans) - 1):
                h = nn.silu(layers.conv(chans[i], (3, 3), padding=1, name=f"blocks_{2 * i}", **kw)(h))
                h = nn.silu(layers.conv(chans[i + 1], (3, 3), strides=2, padding=1, name=f"blocks_{2 * i + 1}",
                                        **kw)(h))
            h = layers.constrain(h, ("act_batch", "act_height", "act_width", "act_channels"))
            return layers.conv(self.conditioning_embedding_channels, (3, 3), padding=1, name="conv_out",
                               kernel_init=layers.zeros_init, **kw)(h)

        return layers.per_frame(run, kps_images.astype(self.dtype))


@dataclasses.dataclass(frozen=True)
class KpsGuiderConfig:
    """Guider sizes. Defaults: V-Express (`VKpsGuider(320, block_out_channels=(16, 32, 96, 256))`)."""

    embedding_channels: int = cfg.field(320, min=1, doc="the UNet's block_out_channels[0]")
    conditioning_channels: int = cfg.field(3, min=1)
    block_out_channels: tuple[int, ...] = (16, 32, 96, 256)

    def validate(self) -> None:
        if not self.block_out_channels or min(self.block_out_channels) < 1:
            raise cfg.ConfigError(f"block_out_channels: need positive channel counts, got {self.block_out_channels}")

    def module(self, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32) -> VKpsGuider:
        return VKpsGuider(self.embedding_channels, self.conditioning_channels, tuple(self.block_out_channels),
                          dtype, param_dtype)


def head_kps_images(kps: np.ndarray, size: int | tuple[int, int], **draw_kwargs) -> np.ndarray:
    """Head keypoints (..., 8, 2) in pixels -> float32 Head-Kps images (..., H, W, 3) in [0, 1] for the guider."""
    from jaxtalk.data.kps import draw_head_kps

    kps = np.asarray(kps)
    if kps.shape[-2:] != (8, 2):
        raise ValueError(f"head_kps_images: expected (..., 8, 2) keypoints, got {kps.shape}")
    flat = kps.reshape(-1, 8, 2)
    imgs = np.stack([draw_head_kps(p, size, **draw_kwargs) for p in flat])
    return (imgs.astype(np.float32) / 255.0).reshape(*kps.shape[:-2], *imgs.shape[1:])
