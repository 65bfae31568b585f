"""Train state and optimiser: AdamW with global-norm clipping, a trainable-parameter mask, sharded creation."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW as V-Express trains (lr 1e-6 there; betas, decay and clipping below are its values)."""

    learning_rate: float = 1e-5
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 1e-2
    grad_clip_norm: float = 1.0
    warmup_steps: int = 0


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; a pytree, so it shards and checkpoints as one."""

    step: jax.Array
    params: Any
    opt_state: Any
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    def apply_gradients(self, grads: Any) -> TrainState:
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                            opt_state=opt_state)


def trainable_mask(params: Any, patterns: Sequence[str] | None) -> Any:
    """True for params whose '/'-joined path matches one of the regexes (all params when `patterns` is None).

    Training stages freeze parts of the model this way (e.g. SVP stage 3 trains only the style attention).
    """
    flat = traverse_util.flatten_dict(params, sep="/")
    if patterns is None:
        mask = {k: True for k in flat}
    else:
        compiled = [re.compile(p) for p in patterns]
        mask = {k: any(c.search(k) for c in compiled) for k in flat}
        if not any(mask.values()):
            raise ValueError(f"trainable patterns {list(patterns)} match no parameter")
    return traverse_util.unflatten_dict(mask, sep="/")


def make_optimizer(cfg: OptimizerConfig, mask: Any = None) -> optax.GradientTransformation:
    """Clipped AdamW; frozen params (mask False) get zero updates and no optimiser moments."""
    lr: Any = cfg.learning_rate
    if cfg.warmup_steps:
        lr = optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps)
    tx = optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip_norm),
        optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay),
    )
    if mask is None:
        return tx
    return optax.multi_transform({True: tx, False: optax.set_to_zero()}, mask)


def create_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), tx=tx)


def _dict_keys(path: tuple) -> tuple[str, ...]:
    return tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))


def create_sharded_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
    """Create the state on device from already-sharded params.

    Optimiser moments are laid out like the params they belong to (matched by param path); counters and other
    scalars are replicated.
    """
    by_path = {_dict_keys(path): x for path, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    mesh = next(iter(by_path.values())).sharding.mesh
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    abstract = jax.eval_shape(lambda p: create_state(p, tx), params)

    def pick(path, leaf):
        keys = _dict_keys(path)
        for n in range(len(keys)):  # the param whose path ends this leaf's path
            param = by_path.get(keys[n:])
            if param is not None and param.shape == leaf.shape:
                return param.sharding
        return replicated

    shardings = jax.tree_util.tree_map_with_path(pick, abstract)
    return jax.jit(lambda p: create_state(p, tx), out_shardings=shardings)(params)


def shardings_of(tree: Any) -> Any:
    """The shardings of a tree of device arrays (for `jax.jit(in_shardings=..., out_shardings=...)`)."""
    return jax.tree.map(lambda x: x.sharding, tree)


def make_train_step(
    loss_fn: Callable[[Any, Any, jax.Array], tuple[jax.Array, dict]],
) -> Callable[[TrainState, Any, jax.Array], tuple[TrainState, dict]]:
    """A pure train step: grads of `loss_fn(params, batch, rng) -> (loss, metrics)`, then the optimiser update."""

    def step(state: TrainState, batch: Any, rng: jax.Array) -> tuple[TrainState, dict]:
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, rng)
        metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads)}
        return state.apply_gradients(grads), metrics

    return step
