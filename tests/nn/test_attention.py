"""Attention: every path equals torch's scaled_dot_product_attention."""

import numpy as np
import pytest
import torch

from jaxtalk.nn.attention import dot_product_attention
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


@pytest.mark.parametrize("impl", ["xla", "reference"])
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


def test_attention_rejects_wrong_rank():
    q, k, v = _inputs()
    with pytest.raises(ValueError, match="batch, length, heads, head_dim"):
        dot_product_attention(q[0], k, v)
