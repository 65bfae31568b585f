"""ReferenceNet: the 2D SD UNet run once on the reference latent, returning the reference-attention bank.

    net = ReferenceNet(UNetConfig.from_diffusers(SD15_UNET_CONFIG))
    out, bank = net.apply({'params': p}, ref_latent[B,h,w,4], 0, jnp.zeros((B, 1, 768)))

As V-Express's write-mode `ReferenceAttentionControl`: every transformer block records `norm2(x)` right after the
attn1 residual, i.e. the normalised hidden state entering the cross-attention, shaped (B, HW, C). `bank` holds
one entry per block in block `index` order (down blocks, mid block, up blocks; `transformer_block_names` gives the
torch module name of each), which is the order `SVPUNet` reads. `conv_norm_out` is never built (V-Express's class
drops it), so `out = conv_out(last up block)`; V-Express does not use `out`.

The entries travel out through a per-call collector passed in `block_kwargs` (a plain Python object that lives
only while this `__call__` traces), so `apply` returns them without a mutable collection and the whole call jits.
With `remat` (see `jaxtalk.backbones.sd_unet`) every checkpointed block writes into a local collector whose
entries leave the checkpoint as outputs, so no tracer escapes; `nn.scan` over the writer blocks is not supported.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.backbones.sd_unet import (
    BlockOutputs,
    RematPolicy,
    UNet2DConditionModel,
    UNetConfig,
    num_transformer_blocks,
)
from jaxtalk.backbones.unet_blocks import TOKEN_AXES, BasicTransformerBlock, FeedForward
from jaxtalk.nn import layers
from jaxtalk.nn.attention import Implementation

Dtype = Any


class BankCollector(BlockOutputs):
    """Receives one bank entry per transformer block during a single ReferenceNet call."""

    def __init__(self, num_blocks: int) -> None:
        super().__init__()
        self.num_blocks = num_blocks

    def put(self, index: int, value: jax.Array) -> None:
        if index in self.entries:
            raise ValueError(f"reference bank entry {index} written twice")
        self.entries[index] = value

    def bank(self) -> tuple[jax.Array, ...]:
        missing = sorted(set(range(self.num_blocks)) - set(self.entries))
        if missing:
            raise ValueError(f"reference bank entries {missing} were never written")
        return tuple(self.entries[i] for i in range(self.num_blocks))


class ReferenceWriterBlock(BasicTransformerBlock):
    """The SD transformer block in write mode: hands `norm2(x)` (after the attn1 residual) to `bank_collector`."""

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array, *, num_frames: int = 1,
                 bank_collector: BankCollector | None = None) -> jax.Array:
        x = x + self.attention("attn1")(self.norm("norm1")(x))
        h = self.norm("norm2")(x)
        if bank_collector is not None:
            bank_collector.put(self.index, h)
        x = x + self.attention("attn2")(h, context)
        x = x + FeedForward(name="ff", dtype=self.dtype, param_dtype=self.param_dtype)(self.norm("norm3")(x))
        return layers.constrain(x, TOKEN_AXES)


def transformer_block_names(config: UNetConfig) -> tuple[str, ...]:
    """The torch module name of each transformer block, in block `index` order (the bank's order).

    E.g. 'down_blocks.0.attentions.0.transformer_blocks.0', ..., 'mid_block.attentions.0.transformer_blocks.0', ...
    """
    n = len(config.block_out_channels)
    depth, layers_per_block = config.transformer_layers_per_block, config.layers_per_block
    names: list[str] = []

    def add(prefix: str, attentions: int, depth: int) -> None:
        names.extend(f"{prefix}.attentions.{a}.transformer_blocks.{k}" for a in range(attentions) for k in range(depth))

    for i in range(n):
        if config.down_block_types[i] == "CrossAttnDownBlock2D":
            add(f"down_blocks.{i}", layers_per_block[i], depth[i])
    add("mid_block", 1, depth[-1])
    for i in range(n):
        if config.up_block_types[i] == "CrossAttnUpBlock2D":
            add(f"up_blocks.{i}", layers_per_block[n - 1 - i] + 1, depth[n - 1 - i])
    if len(names) != num_transformer_blocks(config):
        raise AssertionError("transformer_block_names disagrees with num_transformer_blocks")
    return tuple(names)


class ReferenceNet(nn.Module):
    """`apply(v, latent[B,h,w,C], timesteps, context[B,L,D]) -> (out[B,h,w,C_out], bank)`.

    `bank`: tuple of (B, HW_i, C_i), one per transformer block in block index order. `timesteps`: scalar or [B]
    (V-Express uses 0); `context`: V-Express passes zeros (B, 1, 768). Params carry the V-Express
    `reference_net` state-dict names (the SD UNet's, without conv_norm_out).
    """

    config: UNetConfig
    attention_implementation: Implementation = "auto"
    query_chunk_size: int | None = None
    remat: RematPolicy = "none"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        self.unet = UNet2DConditionModel(
            dataclasses.replace(self.config, use_conv_norm_out=False), transformer_block=ReferenceWriterBlock,
            temporal_module=None, attention_implementation=self.attention_implementation,
            query_chunk_size=self.query_chunk_size, remat=self.remat, dtype=self.dtype, param_dtype=self.param_dtype,
        )
        nn.share_scope(self, self.unet)

    def __call__(self, latent: jax.Array, timesteps: jax.Array | float | int,
                 context: jax.Array) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        collector = BankCollector(num_transformer_blocks(self.config))
        out = self.unet(latent, timesteps, context, block_kwargs={"bank_collector": collector})
        return out, collector.bank()
