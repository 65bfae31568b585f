"""Registry of checkpoint kinds and the strict, generic PyTorch <-> Flax conversion.

A family registers a `Kind` (in `jaxtalk/interop/kinds/<family>.py`, discovered automatically):

    register(Kind(
        name="sd_vae",
        summary="AutoencoderKL. apply(v, x[B,H,W,3], method='encode') -> (mean, logvar) NHWC; method='decode'.",
        build=lambda config, state: (SDVAE(...), resolved_config),      # config in the source's own format or None
        init=lambda module, rng: module.init(rng, jnp.zeros(...)),      # abstract-evaluated only: any input works
    ))

Conversion walks the Flax variables the module declares; each leaf's torch key comes from
`jaxtalk.interop.keys.default_torch_key` (or `Kind.key_fn`), kernels are transposed by rank, and every source
tensor must be consumed and every param filled — otherwise one `ConversionError` lists missing, unexpected and
mis-shaped keys. `Kind.to_canonical` / `from_canonical` translate other published layouts (fused qkv, renamed
blocks) into the canonical torch names, so `to_torch(kind, from_torch(kind, x)[1], layout=...) == x` exactly.

Params a source family does not have (e.g. SVP's style attention in a V-Express checkpoint) are listed as
`Kind.init_if_missing` (regexes of torch keys): when a checkpoint has none of them, they take the module's own
initial values (`Kind.init` with `jax.random.key(0)`); when it has some, all are required as usual.
`Kind.default_layout` is the layout `to_torch` writes when none is given (e.g. one without those params).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from jaxtalk.interop import keys as keymap
from jaxtalk.interop.reading import CheckpointError, StateDict, read_state_dict, select_subtree

# Non-param collections: flax leaf name -> torch buffer name.
_COLLECTION_LEAVES = {"batch_stats": {"mean": "running_mean", "var": "running_var"}}


class ConversionError(CheckpointError):
    """The checkpoint does not match the module: lists missing, unexpected and mis-shaped keys together."""


@dataclasses.dataclass(frozen=True)
class Kind:
    """One source checkpoint family. See the module docstring for the contract."""

    name: str
    summary: str
    build: Callable[[Any, StateDict], tuple[nn.Module, Any]]
    init: Callable[[nn.Module, jax.Array], Mapping[str, Any]]
    keep: frozenset[str] = frozenset()
    containers: tuple[str, ...] = ("state_dict",)
    strip_prefixes: tuple[str, ...] = ("module.",)
    ignore: tuple[str, ...] = ()  # regexes of source keys that carry nothing (e.g. num_batches_tracked)
    to_canonical: Callable[[StateDict], tuple[StateDict, str]] | None = None
    from_canonical: Callable[[StateDict, str], StateDict] | None = None
    key_fn: Callable[[tuple[str, ...], str], str] | None = None  # (path, collection) -> torch key
    # (torch-key regex, torch->flax, flax->torch) for leaves whose layout differs from the generic rule.
    leaf_overrides: tuple[tuple[str, Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]], ...] = ()
    init_if_missing: tuple[str, ...] = ()  # torch-key regexes of params filled from init when the source has none
    default_layout: str | None = None  # layout `to_torch` passes to `from_canonical` when the caller gives none

    def torch_key(self, path: tuple[str, ...], collection: str = "params") -> str:
        if self.key_fn is not None:
            return self.key_fn(path, collection)
        leaf_names = _COLLECTION_LEAVES.get(collection, {})
        if path[-1] in leaf_names:
            path = (*path[:-1], leaf_names[path[-1]])
        return keymap.default_torch_key(path, self.keep)

    def _override(self, key: str):
        for pattern, to_flax, to_torch in self.leaf_overrides:
            if re.fullmatch(pattern, key):
                return to_flax, to_torch
        return None


_REGISTRY: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    if kind.name in _REGISTRY and _REGISTRY[kind.name] is not kind:
        raise ValueError(f"interop kind {kind.name!r} registered twice")
    _REGISTRY[kind.name] = kind
    return kind


def get_kind(name: str) -> Kind:
    from jaxtalk.interop import kinds  # noqa: F401  (registers every family on first use)

    if name not in _REGISTRY:
        raise KeyError(f"unknown interop kind {name!r}; supported: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def all_kinds() -> dict[str, str]:
    """{kind name: summary with its call convention}."""
    from jaxtalk.interop import kinds  # noqa: F401

    return {k: v.summary for k, v in sorted(_REGISTRY.items())}


def abstract_variables(kind: Kind, module: nn.Module) -> dict[str, Any]:
    """Shapes/dtypes of every variable the module declares (boxes removed), without allocating."""
    variables = jax.eval_shape(lambda: kind.init(module, jax.random.key(0)))
    return nn.meta.unbox(dict(variables))


def _flat_leaves(variables: Mapping[str, Any]) -> dict[tuple[str, tuple[str, ...]], Any]:
    out = {}
    for collection, tree in variables.items():
        for path, leaf in traverse_util.flatten_dict(dict(tree)).items():
            out[(collection, path)] = leaf
    return out


def _initial_values(kind: Kind, module: nn.Module, wanted: list[tuple[str, tuple[str, ...]]]) -> dict:
    """The initial values of the `wanted` leaves only (jitted, so XLA drops the rest of the init)."""

    def pick(rng):
        flat = _flat_leaves(nn.meta.unbox(dict(kind.init(module, rng))))
        return [flat[leaf] for leaf in wanted]

    return dict(zip(wanted, jax.device_get(jax.jit(pick)(jax.random.key(0)))))


def _summarise(label: str, names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
    return f"{len(names)} {label}: {shown}"


def from_torch(kind: str, source: Any, config: Any = None, *, return_config: bool = False) -> tuple:
    """Import a PyTorch checkpoint (path or mapping) as `(module, params)`, strictly.

    Returns the 'params' collection (float32 numpy arrays); a module with other collections (e.g. batch
    statistics) gets the whole variables dict `{'params': ..., 'batch_stats': ...}` instead. With
    `return_config=True` the kind's resolved config comes third: `(module, params, resolved_config)`.
    """
    k = get_kind(kind)
    state = select_subtree(read_state_dict(source), k.containers, k.strip_prefixes)
    if k.to_canonical is not None:
        state, _ = k.to_canonical(state)
    ignored = [key for key in state if any(re.fullmatch(p, key) for p in k.ignore)]
    state = {key: v for key, v in state.items() if key not in ignored}
    module, resolved = k.build(config, state)
    leaves = _flat_leaves(abstract_variables(k, module))
    optional = [leaf for leaf in leaves
                if any(re.fullmatch(p, k.torch_key(leaf[1], leaf[0])) for p in k.init_if_missing)]
    if any(k.torch_key(path, c) in state for c, path in optional):
        optional = []  # the source has these params: all of them are required
    initial = _initial_values(k, module, optional) if optional else {}

    converted: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}
    missing, misshaped, used = [], [], set()
    for (collection, path), spec in leaves.items():
        key = k.torch_key(path, collection)
        if (collection, path) in initial:
            converted[(collection, path)] = np.asarray(initial[(collection, path)], dtype=spec.dtype)
            continue
        if key not in state:
            missing.append(key)
            continue
        used.add(key)
        override = k._override(key)
        value = override[0](state[key]) if override else keymap.kernel_from_torch(path[-1], state[key])
        if tuple(value.shape) != tuple(spec.shape):
            misshaped.append(f"{key} {tuple(state[key].shape)} (expected torch shape for flax {tuple(spec.shape)})")
            continue
        converted[(collection, path)] = np.asarray(value, dtype=spec.dtype)
    unexpected = sorted(set(state) - used)
    if missing or unexpected or misshaped:
        parts = [_summarise(lbl, names) for lbl, names in
                 (("missing", sorted(missing)), ("unexpected", unexpected), ("mis-shaped", misshaped)) if names]
        raise ConversionError(f"checkpoint does not match kind {kind!r}: " + "; ".join(parts))

    by_collection: dict[str, dict] = {}
    for (collection, path), value in converted.items():
        by_collection.setdefault(collection, {})[path] = value
    variables = {c: traverse_util.unflatten_dict(flat) for c, flat in by_collection.items()}
    if set(variables) == {"params"}:
        variables = variables["params"]
    return (module, variables, resolved) if return_config else (module, variables)


def to_torch(kind: str, params: Any, config: Any = None, *, layout: str | None = None) -> StateDict:
    """The exact inverse of `from_torch`: `{torch key: np.ndarray}` in the canonical (or the given) layout."""
    k = get_kind(kind)
    params = nn.meta.unbox(params)
    variables = params if isinstance(params, Mapping) and "params" in params else {"params": params}
    state: StateDict = {}
    for (collection, path), value in _flat_leaves(variables).items():
        key = k.torch_key(path, collection)
        value = np.asarray(jax.device_get(value))
        override = k._override(key)
        state[key] = override[1](value) if override else keymap.kernel_to_torch(path[-1], value)
    layout = k.default_layout if layout is None else layout
    if k.from_canonical is not None and layout is not None:
        state = k.from_canonical(state, layout)
    return state
