"""Sharded training on 8 simulated devices: steps equal the single-device ones; checkpoints restore sharded."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxtalk import config, parallel
from jaxtalk.nn import layers
from jaxtalk.training import checkpoint, state


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = jax.nn.silu(layers.dense(64, name="up")(x))
        return layers.dense(16, name="down", axes=("mlp", "embed"))(h)


def _loss(params, batch, rng):
    pred = _Net().apply({"params": params}, batch["x"])
    loss = jnp.mean((pred - batch["y"]) ** 2)
    return loss, {"mse": loss}


def _batch():
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((8, 16)).astype(np.float32), "y": rng.standard_normal((8, 16)).astype(np.float32)}


def _init(rng):
    return _Net().init(rng, jnp.zeros((1, 16)))


def test_sharded_steps_match_single_device(tmp_path):
    tx = state.make_optimizer(state.OptimizerConfig(learning_rate=1e-2))
    step_fn = state.make_train_step(_loss)
    batch = _batch()

    params = nn.meta.unbox(_init(jax.random.key(0)))["params"]
    single = state.create_state(params, tx)
    for i in range(3):
        single, m_single = jax.jit(step_fn)(single, batch, jax.random.key(i))

    mesh = parallel.make_mesh(1, 4, 2)
    variables, shardings = parallel.init_sharded(_init, jax.random.key(0), mesh)
    sharded = state.create_sharded_state(variables["params"], tx)
    assert sharded.opt_state[1][0].mu["up"]["kernel"].sharding.spec == P("fsdp", "tensor")
    st_shard = state.shardings_of(sharded)
    with jax.set_mesh(mesh):
        b = parallel.shard_batch(batch, mesh)
        jstep = jax.jit(step_fn, in_shardings=(st_shard, parallel.batch_sharding(mesh, 2), None),
                        out_shardings=(st_shard, None), donate_argnums=0)
        for i in range(3):
            sharded, m_sharded = jstep(sharded, b, jax.random.key(i))
    np.testing.assert_allclose(float(m_sharded["loss"]), float(m_single["loss"]), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(sharded.params["up"]["kernel"]), np.asarray(single.params["up"]["kernel"]),
                               rtol=1e-5, atol=1e-6)

    ckpt = checkpoint.Checkpointer(tmp_path / "ckpt")
    cfg = config.DemoConfig()
    assert ckpt.save(3, sharded, cfg=cfg, extra={"data_iterator": {"pos": 7}})
    restored, extra = ckpt.restore(sharded)
    assert extra == {"data_iterator": {"pos": 7}}
    assert int(restored.step) == 3
    assert restored.params["up"]["kernel"].sharding.spec == P("fsdp", "tensor")
    np.testing.assert_array_equal(np.asarray(restored.params["down"]["kernel"]),
                                  np.asarray(sharded.params["down"]["kernel"]))
    assert config.load(tmp_path / "ckpt" / "config.yaml") == cfg
    ckpt.close()


def test_trainable_mask_freezes_params():
    params = nn.meta.unbox(_init(jax.random.key(0)))["params"]
    mask = state.trainable_mask(params, [r"^down/"])
    tx = state.make_optimizer(state.OptimizerConfig(learning_rate=1e-1), mask)
    st = state.create_state(params, tx)
    st, _ = jax.jit(state.make_train_step(_loss))(st, _batch(), jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(st.params["up"]["kernel"]), np.asarray(params["up"]["kernel"]))
    assert not np.allclose(np.asarray(st.params["down"]["kernel"]), np.asarray(params["down"]["kernel"]))
    with pytest.raises(ValueError, match="match no parameter"):
        state.trainable_mask(params, ["nothing_here"])
