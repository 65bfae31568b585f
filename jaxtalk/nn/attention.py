"""The one attention implementation: `jax.nn.dot_product_attention`, a blocked online-softmax path for long
sequences on CPU, and a memory-bounded query-chunked path.

Layout is (batch, length, heads, head_dim) throughout. Softmax runs in float32 whatever the compute dtype.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.nn import layers

Implementation = Literal["auto", "xla", "cudnn", "blocked", "reference"]

# "blocked": one (batch, head) pair at a time, query blocks of BLOCK_Q under lax.map, key blocks of BLOCK_K under
# lax.scan with a running max and sum (flash attention's online softmax). Chosen by "auto" on CPU once both lengths
# reach BLOCKED_MIN_LENGTH (SD 32x32 latents and up), where XLA's whole-logits softmax is memory-bound:
# (1, 4096, 8, 40) self-attention 764 ms -> 167 ms on 2 idle cores, torch's fused SDPA 109 ms
# (bench/attention_cpu.py).
BLOCK_Q, BLOCK_K, BLOCKED_MIN_LENGTH = 4096, 512, 1024


def reference_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, *, scale: float, mask: jax.Array | None = None,
    bias: jax.Array | None = None,
) -> jax.Array:
    """Plain einsum attention with a float32 softmax; `mask` True = attend; broadcastable to (B, H, Lq, Lk)."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def _pick_implementation(q: jax.Array, k: jax.Array, implementation: Implementation, plain: bool) -> str:
    """`plain`: no mask and no bias (the blocked path takes neither)."""
    if implementation != "auto":
        return implementation
    backend = jax.default_backend()
    half = q.dtype in (jnp.bfloat16, jnp.float16)
    if backend == "gpu" and half and q.shape[-1] % 8 == 0 and q.shape[-1] <= 128:
        return "cudnn"
    if backend == "cpu" and plain and min(q.shape[1], k.shape[1]) >= BLOCKED_MIN_LENGTH:
        return "blocked"
    return "xla"


def blocked_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, scale: float, block_q: int = BLOCK_Q,
                      block_k: int = BLOCK_K) -> jax.Array:
    """softmax(q k^T * scale) v without materialising the (Lq, Lk) logits (flash attention's online softmax).

    One (batch, head) pair at a time under `lax.map`, its query blocks under a nested `lax.map`, key blocks under
    `lax.scan` carrying the running row max, row sum and weighted values (float32); tails padded (padded keys get
    zero weight). Every product is a plain 2-D matmul; with whole 4096-query blocks this is 15-20 % faster on
    CPU than query blocks of 512 with heads as a batch dimension (bench/attention_cpu.py). Each query block is
    checkpointed, so the backward pass also holds one block's logits."""
    b, lq, h, d = q.shape
    lk, dv = k.shape[1], v.shape[-1]
    bq, bk = min(block_q, lq), min(block_k, lk)
    nq, nk = -(-lq // bq), -(-lk // bk)

    def per_head(x, n, size):  # (B, L, H, D) -> (B*H, n, size, D), zero-padded along L
        x = jnp.pad(x, ((0, 0), (0, n * size - x.shape[1]), (0, 0), (0, 0)))
        return x.transpose(0, 2, 1, 3).reshape(b * h, n, size, x.shape[-1])

    qh = per_head(q * jnp.asarray(scale, q.dtype), nq, bq)
    kh = per_head(k, nk, bk).swapaxes(-1, -2)  # (B*H, nk, D, bk): logits are qc @ kc
    vh = per_head(v, nk, bk)
    padded = nk * bk != lk
    key_valid = (jnp.arange(nk * bk) < lk).reshape(nk, bk)

    def one_head(args):
        qs, ks, vs = args

        def one_query_block(qc):
            def step(carry, kv):
                m, s, acc = carry
                kc, vc, valid = kv
                logits = jnp.matmul(qc, kc, preferred_element_type=jnp.float32)
                if padded:  # static: only a padded tail block needs the key mask
                    logits = jnp.where(valid, logits, -jnp.inf)
                m_new = jnp.maximum(m, logits.max(-1))
                p = jnp.exp(logits - m_new[:, None])
                correction = jnp.exp(m - m_new)
                pv = jnp.matmul(p.astype(vc.dtype), vc, preferred_element_type=jnp.float32)
                return (m_new, s * correction + p.sum(-1), acc * correction[:, None] + pv), None

            init = (jnp.full((bq,), -jnp.inf, jnp.float32), jnp.zeros((bq,), jnp.float32),
                    jnp.zeros((bq, dv), jnp.float32))
            (_, s, acc), _ = jax.lax.scan(step, init, (ks, vs, key_valid))
            return (acc / s[:, None]).astype(v.dtype)

        return jax.lax.map(jax.checkpoint(one_query_block), qs)  # (nq, bq, Dv)

    out = jax.lax.map(one_head, (qh, kh, vh))  # (B*H, nq, bq, Dv)
    return out.reshape(b, h, nq * bq, dv)[:, :, :lq].transpose(0, 2, 1, 3)


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    scale: float | None = None,
    mask: jax.Array | None = None,
    bias: jax.Array | None = None,
    implementation: Implementation = "auto",
    query_chunk_size: int | None = None,
) -> jax.Array:
    """softmax(q k^T * scale + bias, masked) v for q (B, Lq, H, D), k/v (B, Lk, H, D(v)).

    `implementation`: "auto" (cuDNN flash on GPU for bf16/fp16; on CPU the blocked online softmax when both lengths
    are >= BLOCKED_MIN_LENGTH and there is no mask or bias; XLA otherwise), "xla", "cudnn", "blocked" or
    "reference".
    `query_chunk_size`: when set and smaller than Lq, queries are processed in chunks under `lax.map`, so the
    logits never exceed (B, H, chunk, Lk), in the backward pass too (each chunk is recomputed there) — the
    memory-bounded path for long sequences (e.g. 64x64 latents) where no flash kernel applies.
    """
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"attention expects (batch, length, heads, head_dim) arrays, got {q.shape}, {k.shape}, {v.shape}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    lq = q.shape[1]
    if query_chunk_size is not None and lq > query_chunk_size:
        return _chunked(q, k, v, scale=scale, mask=mask, bias=bias, implementation=implementation,
                        chunk=query_chunk_size)
    impl = _pick_implementation(q, k, implementation, mask is None and bias is None)
    if impl == "reference":
        return reference_attention(q, k, v, scale=scale, mask=mask, bias=bias)
    if impl == "blocked":
        if mask is not None or bias is not None:
            raise ValueError("blocked attention takes no mask or bias; use implementation='xla'")
        return blocked_attention(q, k, v, scale=scale)
    if mask is not None:
        mask = jnp.broadcast_to(mask, (q.shape[0], q.shape[2], lq, k.shape[1]))
    if bias is not None:
        bias = jnp.broadcast_to(bias, (q.shape[0], q.shape[2], lq, k.shape[1])).astype(q.dtype)
    return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=scale, implementation=impl)


def _chunked(q, k, v, *, scale, mask, bias, implementation, chunk):
    """Split queries into chunks (padding the tail) and map the attention over them."""
    b, lq, h, _ = q.shape
    n = -(-lq // chunk)
    pad = n * chunk - lq

    def split(x, axis):
        widths = [(0, 0)] * x.ndim
        widths[axis] = (0, pad)
        x = jnp.pad(x, widths)
        return jnp.moveaxis(x.reshape(*x.shape[:axis], n, chunk, *x.shape[axis + 1:]), axis, 0)

    def per_query(x):
        """(chunks, None) if x varies along queries (axis -2 of a (B, H, Lq, Lk) array), else (None, x)."""
        if x is None or x.ndim < 2 or x.shape[-2] == 1:
            return None, x
        return split(x, x.ndim - 2), None

    mask_chunks, mask_fixed = per_query(mask)
    bias_chunks, bias_fixed = per_query(bias)

    def one(args):
        qc, mc, bc = args
        return dot_product_attention(
            qc, k, v, scale=scale, implementation=implementation,
            mask=mask_fixed if mc is None else mc, bias=bias_fixed if bc is None else bc,
        )

    # Checkpointed: differentiating the map would otherwise keep every chunk's probabilities for the backward pass
    # (the whole (B, H, Lq, Lk) again); this way the backward recomputes one chunk at a time.
    out = jax.lax.map(jax.checkpoint(one), (split(q, 1), mask_chunks, bias_chunks))  # (n, B, chunk, H, Dv)
    return jnp.moveaxis(out, 0, 1).reshape(b, n * chunk, h, v.shape[-1])[:, :lq]


class Attention(nn.Module):
    """Multi-head attention with diffusers' `Attention` parameter names (to_q, to_k, to_v, to_out.0).

    Self-attention when `context` is None. `heads * dim_head` is the inner width; the output has the query's
    width unless `out_dim` is set. `upcast`: q, k, v enter the attention in float32 whatever the compute dtype
    (diffusers' `upcast_attention`, needed by SD2.x in half precision); the result is cast back to `dtype`.
    """

    heads: int
    dim_head: int
    out_dim: int | None = None
    qkv_bias: bool = False
    out_bias: bool = True
    scale: float | None = None
    implementation: Implementation = "auto"
    query_chunk_size: int | None = None
    upcast: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None, mask: jax.Array | None = None) -> jax.Array:
        inner = self.heads * self.dim_head
        ctx = x if context is None else context
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        q = layers.dense(inner, name="to_q", use_bias=self.qkv_bias, axes=("embed", "heads"), **kw)(x)
        k = layers.dense(inner, name="to_k", use_bias=self.qkv_bias, axes=("embed", "heads"), **kw)(ctx)
        v = layers.dense(inner, name="to_v", use_bias=self.qkv_bias, axes=("embed", "heads"), **kw)(ctx)
        split = lambda t: t.reshape(*t.shape[:-1], self.heads, self.dim_head)
        q = layers.constrain(split(q), ("act_batch", "act_length", "act_heads", None))
        k, v = split(k), split(v)
        if self.upcast:
            q, k, v = (t.astype(jnp.float32) for t in (q, k, v))
        o = dot_product_attention(
            q, k, v, scale=self.scale, mask=mask, implementation=self.implementation,
            query_chunk_size=self.query_chunk_size,
        )
        o = o.astype(self.dtype).reshape(*o.shape[:-2], inner)
        out_dim = self.out_dim or x.shape[-1]
        return layers.dense(out_dim, name="to_out_0", use_bias=self.out_bias, axes=("heads", "embed"), **kw)(o)
