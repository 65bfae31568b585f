"""Sharded init on 8 simulated CPU devices: specs follow the logical rules and forwards agree."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from jax.sharding import PartitionSpec as P

from jaxtalk import parallel
from jaxtalk.nn import layers
from jaxtalk.nn.attention import Attention


class _Tiny(nn.Module):
    """Conv stem, attention over pixels, GEGLU-free MLP: the kernel kinds every model has."""

    @nn.compact
    def __call__(self, x):
        h = layers.conv(32, (3, 3), padding=1, name="conv_in")(x)
        h = layers.group_norm(8, name="norm")(h)
        b, hh, ww, c = h.shape
        t = h.reshape(b, hh * ww, c)
        t = t + Attention(heads=4, dim_head=8, name="attn")(t)
        t = t + layers.dense(32, name="ff_out", axes=("mlp", "embed"))(
            jax.nn.gelu(layers.dense(64, name="ff_in")(t)))
        t = layers.constrain(t, ("act_batch", "act_length", "act_embed"))
        return layers.conv(4, (1, 1), name="conv_out")(t.reshape(b, hh, ww, c))


def _init(rng):
    return _Tiny().init(rng, jnp.zeros((8, 8, 8, 3)))


def test_device_count():
    assert jax.device_count() == 8, "tests expect JAX_NUM_CPU_DEVICES=8 (set in tests/conftest.py)"


@pytest.mark.parametrize(
    "sizes,expect",
    [
        ((1, 8, 1), {"attn/to_q/kernel": P("fsdp", None), "ff_in/kernel": P("fsdp", None),
                     "ff_out/kernel": P(None, "fsdp"), "conv_in/kernel": P(None, None, None, "fsdp"),
                     "norm/scale": P(None)}),
        ((2, 1, 4), {"attn/to_q/kernel": P(None, "tensor"), "attn/to_out_0/kernel": P("tensor", None),
                     "ff_in/kernel": P(None, "tensor"), "ff_out/kernel": P("tensor", None),
                     "conv_in/kernel": P(None, None, None, "tensor"), "conv_out/kernel": P(None, None, None, "tensor")}),
        ((1, 2, 4), {"ff_in/kernel": P("fsdp", "tensor"), "conv_in/kernel": P(None, None, None, ("fsdp", "tensor"))}),
    ],
)
def test_sharded_init_specs_and_forward(sizes, expect):
    mesh = parallel.make_mesh(*sizes)
    variables, shardings = parallel.init_sharded(_init, jax.random.key(0), mesh)
    flat = traverse_util.flatten_dict(shardings["params"], sep="/")
    for name, spec in expect.items():
        assert flat[name].spec == spec, f"{name}: {flat[name].spec} != {spec}"
        leaf = variables["params"]
        for part in name.split("/"):
            leaf = leaf[part]
        assert leaf.sharding.spec == spec

    x = np.random.default_rng(0).standard_normal((8, 8, 8, 3)).astype(np.float32)
    single = _Tiny().apply(jax.device_get(variables), x)
    with nn.logical_axis_rules(parallel.LOGICAL_RULES), jax.set_mesh(mesh):
        xs = parallel.shard_batch(x, mesh)
        assert xs.sharding.spec == P(("data", "fsdp"), None, None, None)
        fwd = jax.jit(lambda v, x: _Tiny().apply(v, x), in_shardings=(shardings, xs.sharding))
        sharded = fwd(variables, xs)
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(single), rtol=1e-5, atol=1e-5)


def test_uneven_dims_fall_back_to_replication():
    mesh = parallel.make_mesh(1, 8, 1)
    spec = parallel._fit_spec(P("fsdp", None), (12, 5), mesh)
    assert spec == P(None, None)


def test_mesh_errors():
    with pytest.raises(ValueError, match="at most one axis"):
        parallel.make_mesh(-1, -1, 1)
    with pytest.raises(ValueError, match="needs 16 devices"):
        parallel.make_mesh(2, 8, 1)
    assert parallel.make_mesh(2, -1, 2).shape == {"data": 2, "fsdp": 2, "tensor": 2}
