"""Device mesh, the one table of logical-axis rules, directly-sharded init, and batch sharding.

Mesh axes: `data` (pure data parallel), `fsdp` (data parallel with params sharded), `tensor` (model parallel
over heads / mlp / channels). Params are created sharded: abstract init -> logical specs -> mesh shardings ->
`jax.jit(init, out_shardings=...)`, so no host ever holds a full replica of a large model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# Logical name -> mesh axis (or axes). Params and activations use separate names (MaxText style).
LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    # params
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
    ("conv_out", ("fsdp", "tensor")),
    ("conv_in", None),
    ("conv_kh", None),
    ("conv_kw", None),
    ("norm", None),
    # activations
    ("act_batch", ("data", "fsdp")),
    ("act_length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_frames", None),
    ("act_height", None),
    ("act_width", None),
    ("act_channels", None),
)

BATCH_AXES = ("data", "fsdp")


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh with Auto axis types; one size may be -1 to take the remaining devices."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh sizes {dict(zip(MESH_AXES, sizes))}: at most one axis may be -1")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh sizes {dict(zip(MESH_AXES, sizes))}: sizes must be positive or -1")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices cannot be split with fixed mesh sizes multiplying to {known}")
        sizes[sizes.index(-1)] = len(devices) // known
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(
            f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, {len(devices)} available; "
            "set one axis to -1 to take the rest"
        )
    return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def _fit_spec(spec: P, shape: Sequence[int], mesh: Mesh) -> P:
    """Drop mesh axes of size 1 and those that do not divide their dim (small configs, odd channel counts)."""
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        if axes is None:
            fitted.append(None)
            continue
        axes_t = (axes,) if isinstance(axes, str) else tuple(axes)
        kept, prod = [], 1
        for a in axes_t:
            if mesh.shape[a] > 1 and dim % (prod * mesh.shape[a]) == 0:
                kept.append(a)
                prod *= mesh.shape[a]
        fitted.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return P(*fitted)


def logical_to_shardings(abstract_boxed: Any, mesh: Mesh, rules=LOGICAL_RULES) -> Any:
    """NamedShardings for a tree of (possibly LogicallyPartitioned-boxed) abstract arrays."""
    specs = nn.get_partition_spec(abstract_boxed)
    mesh_specs = nn.logical_to_mesh(specs, rules)
    shapes = nn.meta.unbox(abstract_boxed)
    return jax.tree.map(
        lambda spec, x: NamedSharding(mesh, _fit_spec(spec, x.shape, mesh)),
        mesh_specs, shapes, is_leaf=lambda s: isinstance(s, P),
    )


def init_sharded(
    init_fn: Callable[[jax.Array], Any], rng: jax.Array, mesh: Mesh, rules=LOGICAL_RULES,
) -> tuple[Any, Any]:
    """Run `init_fn(rng)` (returning boxed flax variables) directly into its sharded layout.

    Returns `(variables, shardings)`, both unboxed; every param is created on its own shards.
    """
    with nn.logical_axis_rules(rules):
        abstract = jax.eval_shape(init_fn, rng)
        shardings = logical_to_shardings(abstract, mesh, rules)
        unboxed = lambda r: nn.meta.unbox(init_fn(r))
        with jax.set_mesh(mesh):
            variables = jax.jit(unboxed, out_shardings=shardings)(rng)
    return variables, shardings


def shard_params(params: Any, shardings: Any) -> Any:
    """Place host params (e.g. just converted from torch) onto their shardings."""
    return jax.tree.map(jax.device_put, params, shardings)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Batch dimension split over (data, fsdp); everything else replicated."""
    return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def put(x: Any, mesh: Mesh, sharding: NamedSharding | None = None,
        global_shape: tuple[int, ...] | None = None) -> jax.Array:
    """Place one input on the mesh (the one batch-placement rule of training and both pipelines): a scalar
    replicated, a device array moved to `sharding`, a host array assembled from this process's rows (of a global
    array of `global_shape`, default: the rows of every process stacked)."""
    if np.ndim(x) == 0 or sharding is None:
        return jax.device_put(x, NamedSharding(mesh, P()))
    if isinstance(x, jax.Array):
        return jax.device_put(x, sharding)
    return jax.make_array_from_process_local_data(sharding, np.asarray(x), global_shape)


def batch_shards(mesh: Mesh) -> int:
    """How many ways the batch dimension is split (data x fsdp)."""
    return int(mesh.shape["data"] * mesh.shape["fsdp"])


def process_batch_rows(mesh: Mesh, global_batch: int) -> np.ndarray:
    """The rows of a global batch that this process's devices hold under `batch_sharding` (sorted): what its
    data pipeline must read. Processes whose devices are replicas along the batch axes read the same rows."""
    shards = batch_shards(mesh)
    if global_batch % shards:
        raise ValueError(f"global batch {global_batch} is not divisible by the {shards} data x fsdp devices of the "
                         f"mesh {dict(mesh.shape)}; change the batch size or the mesh")
    index_map = batch_sharding(mesh, 1).addressable_devices_indices_map((global_batch,))
    rows = sorted({r for idx in index_map.values() for r in range(*idx[0].indices(global_batch))})
    return np.asarray(rows, np.int64)


def shard_batch(batch: Mapping[str, Any] | Any, mesh: Mesh) -> Any:
    """Assemble global arrays from this process's rows of a batch (`process_batch_rows`), split over the mesh's
    batch axes; scalars are replicated. With one process the rows are the whole batch."""
    index_map = batch_sharding(mesh, 1).addressable_devices_indices_map((batch_shards(mesh),))
    local_shards = len({idx[0].indices(batch_shards(mesh)) for idx in index_map.values()})

    def put_rows(x):
        x = np.asarray(x)
        if x.ndim == 0:
            return put(x, mesh)
        if x.shape[0] % local_shards:
            raise ValueError(
                f"this process's {x.shape[0]} batch rows do not split over its {local_shards} batch shards "
                f"(mesh {dict(mesh.shape)}); the global batch must be divisible by data x fsdp = "
                f"{batch_shards(mesh)}")
        global_shape = (x.shape[0] // local_shards * batch_shards(mesh), *x.shape[1:])
        return put(x, mesh, batch_sharding(mesh, x.ndim), global_shape)

    return jax.tree.map(put_rows, batch)


def one_or_many(inputs: Any, kind: type, owner: str, noun: str) -> tuple[list, bool]:
    """A pipeline call's inputs as a list, and whether one bare input was given (both products' `Pipeline` take one
    input or a sequence; a single input gives a single result). Empty or wrongly typed inputs: one clear error."""
    single = isinstance(inputs, kind)
    items = [inputs] if single else list(inputs)
    if not items:
        raise ValueError(f"{owner}: no {noun} given")
    if not all(isinstance(x, kind) for x in items):
        raise TypeError(f"{owner}: pass one {kind.__name__} or a sequence of them")
    return items, single
