"""Attention: every path equals torch's scaled_dot_product_attention."""

import numpy as np
import pytest
import torch

from jaxtalk.nn import attention
from jaxtalk.nn.attention import blocked_attention, dot_product_attention
from tests.parity import assert_close


def _inputs(seed=0, b=2, lq=37, lk=23, h=3, d=8):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((b, n, h, d)).astype(np.float32) for n in (lq, lk, lk))
    return q, k, v


def _torch_ref(q, k, v, mask=None):
    t = lambda x: torch.from_numpy(x).permute(0, 2, 1, 3)
    m = None if mask is None else torch.from_numpy(mask)
    out = torch.nn.functional.scaled_dot_product_attention(t(q), t(k), t(v), attn_mask=m)
    return out.permute(0, 2, 1, 3).numpy()


@pytest.mark.parametrize("impl", ["xla", "reference", "blocked"])
@pytest.mark.parametrize("chunk", [None, 8, 64])
def test_attention_matches_torch(impl, chunk):
    q, k, v = _inputs()
    out = dot_product_attention(q, k, v, implementation=impl, query_chunk_size=chunk)
    assert_close(out, _torch_ref(q, k, v), name=f"attention[{impl},{chunk}]")


@pytest.mark.parametrize("chunk", [None, 10])
def test_attention_key_padding_mask(chunk):
    q, k, v = _inputs(seed=1)
    keep = np.ones((2, 1, 1, 23), bool)
    keep[0, ..., 15:] = False
    out = dot_product_attention(q, k, v, mask=keep, query_chunk_size=chunk)
    assert_close(out, _torch_ref(q, k, v, mask=keep), name="attention[mask]")


def test_chunked_attention_gradients_equal_the_whole():
    """The checkpointed chunks (recomputed one at a time in the backward pass) give the unchunked gradients."""
    import jax
    import jax.numpy as jnp

    q, k, v = _inputs(seed=2)
    w = np.random.default_rng(3).standard_normal(q.shape).astype(np.float32)

    def grads(chunk):
        loss = lambda q, k, v: jnp.sum(dot_product_attention(q, k, v, implementation="xla",
                                                             query_chunk_size=chunk) * w)
        return jax.grad(loss, argnums=(0, 1, 2))(q, k, v)

    for whole, chunked in zip(grads(None), grads(8)):
        np.testing.assert_allclose(np.asarray(chunked), np.asarray(whole), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("block_q, block_k", [(8, 4), (16, 5), (64, 64)])
def test_blocked_attention_tails_and_block_sizes(block_q, block_k):
    """Lengths that are not multiples of the blocks (37 queries, 23 keys): padded keys get no weight."""
    q, k, v = _inputs(seed=4)
    out = blocked_attention(q, k, v, scale=8 ** -0.5, block_q=block_q, block_k=block_k)
    assert_close(out, _torch_ref(q, k, v), name=f"blocked[{block_q},{block_k}]")


def test_blocked_attention_gradients_equal_the_whole():
    import jax
    import jax.numpy as jnp

    q, k, v = _inputs(seed=5)
    w = np.random.default_rng(6).standard_normal(q.shape).astype(np.float32)

    def grads(fn):
        return jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v) * w), argnums=(0, 1, 2))(q, k, v)

    whole = grads(lambda q, k, v: dot_product_attention(q, k, v, implementation="xla"))
    blocked = grads(lambda q, k, v: blocked_attention(q, k, v, scale=8 ** -0.5, block_q=8, block_k=5))
    for a, b in zip(whole, blocked):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)


def test_auto_picks_blocked_on_cpu_only_for_long_unmasked_attention(monkeypatch):
    import jax

    monkeypatch.setattr(attention, "BLOCKED_MIN_LENGTH", 16)
    picked = []
    real = attention.blocked_attention
    monkeypatch.setattr(attention, "blocked_attention", lambda *a, **kw: picked.append(1) or real(*a, **kw))
    q, k, v = _inputs(seed=7, lq=20, lk=18)
    out = dot_product_attention(q, k, v)
    assert picked == ([1] if jax.default_backend() == "cpu" else [])
    assert_close(out, _torch_ref(q, k, v), name="attention[auto long]")
    keep = np.ones((2, 1, 1, 18), bool)
    keep[1, ..., 9:] = False
    dot_product_attention(q, k, v, mask=keep)  # a mask: the XLA path
    dot_product_attention(q[:, :12], k, v)  # shorter than the threshold: the XLA path
    assert len(picked) == (1 if jax.default_backend() == "cpu" else 0)
    with pytest.raises(ValueError, match="no mask or bias"):
        dot_product_attention(q, k, v, mask=keep, implementation="blocked")


def test_attention_rejects_wrong_rank():
    q, k, v = _inputs()
    with pytest.raises(ValueError, match="batch, length, heads, head_dim"):
        dot_product_attention(q[0], k, v)
