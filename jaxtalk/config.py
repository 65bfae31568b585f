"""Typed configuration: dataclasses, YAML presets inside the package (`jaxtalk/presets/*.yaml`, read as package
resources so an installed wheel has them), dotted overrides, strict validation.

    cfg = config.load("svp_tiny", overrides=["unet.block_out_channels=[32,64]"])   # a preset, or a YAML path

A YAML file names its root with `system: <name>` (see `register_root`) and may inherit from another with
`base: other.yaml` (deep-merged). An unknown key, a wrong type or an out-of-range value raises one
`ConfigError` naming the dotted key. `save` writes the resolved config (beside checkpoints and videos).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import pathlib
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeVar, Union

import yaml

T = TypeVar("T")
PRESET_FOLDER = "presets"  # every preset is `jaxtalk/presets/<name>.yaml`, shipped as package data
_ROOTS: dict[str, type] = {}


class ConfigError(ValueError):
    """A config value is unknown, of the wrong type, or out of range; the message names the dotted key."""


def field(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
          min: float | None = None, max: float | None = None, choices: Iterable[Any] | None = None,
          doc: str = "") -> Any:
    """A dataclass field with validation metadata (inclusive numeric bounds, allowed values, a doc line)."""
    meta = {"min": min, "max": max, "choices": tuple(choices) if choices is not None else None, "doc": doc}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def register_root(name: str) -> Callable[[type[T]], type[T]]:
    """Register a dataclass as the root for YAML files that say `system: <name>`."""

    def deco(cls: type[T]) -> type[T]:
        _ROOTS[name] = cls
        return cls

    return deco


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_YAML11_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, converting lists to tuples where the type says so."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, key)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} is not a valid {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            items = [_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_t = args[0] if args else Any
            items = [_coerce(v, item_t, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        vt = args[1] if args else Any
        return {k: _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _YAML11_EXPONENT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads an exponent without a dot (1e-4) as a string
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return value


def _check_range(value: Any, meta: Mapping[str, Any], key: str) -> None:
    lo, hi, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    values = value if isinstance(value, tuple | list) else (value,)
    for v in values:
        if isinstance(v, int | float) and not isinstance(v, bool):
            if lo is not None and v < lo:
                raise ConfigError(f"{key}: {v!r} is below the minimum {lo}")
            if hi is not None and v > hi:
                raise ConfigError(f"{key}: {v!r} is above the maximum {hi}")
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}")


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build dataclass `cls` from a mapping, strictly (unknown keys, wrong types and bad ranges are errors)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    prefix = f"{where}." if where else ""
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown config key for {cls.__name__}; valid keys: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        key = prefix + name
        value = _coerce(value, hints[name], key)
        _check_range(value, fields[name].metadata, key)
        kwargs[name] = value
    try:
        cfg = cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
    return cfg


def to_dict(cfg: Any) -> Any:
    """A plain YAML-able structure (tuples become lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, tuple | list):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, Mapping):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def _deep_merge(base: dict, top: Mapping) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _read_yaml(path: pathlib.Path, seen: tuple[pathlib.Path, ...] = ()) -> dict:
    if path in seen:
        raise ConfigError(f"{path}: circular `base:` chain")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping")
    base = data.pop("base", None)
    if base is not None:
        data = _deep_merge(_read_yaml((path.parent / base).resolve(), (*seen, path)), data)
    return data


def apply_override(data: dict, override: str) -> dict:
    """Apply one `dotted.key=value` (value parsed as YAML) to a nested dict, creating sections as needed."""
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected dotted.key=value")
    key, raw = override.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"override {override!r}: the value is not valid YAML") from None
    node = data
    parts = key.strip().split(".")
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{key}: {p} is a value, not a section")
        node = nxt
    node[parts[-1]] = value
    return data


def presets() -> dict[str, Any]:
    """{preset name: its resource (a `Traversable` with `read_text`)} from `jaxtalk/presets/`."""
    folder = importlib.resources.files("jaxtalk") / PRESET_FOLDER
    return {p.name[: -len(".yaml")]: p for p in folder.iterdir() if p.name.endswith(".yaml")}


def resolve_path(name: str | os.PathLike) -> Any:
    """A config file as given, or a preset by name (with or without `.yaml`): something with `read_text()`."""
    path = pathlib.Path(name)
    if path.is_file():
        return path.resolve()
    known = presets()
    stem = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
    if str(path.parent) == "." and stem in known:
        return known[stem]
    raise ConfigError(f"{name}: no such config file or preset (presets: {', '.join(sorted(known))})")


def load(path: str | os.PathLike, overrides: Iterable[str] = (), cls: type[T] | None = None) -> T:
    """Load a YAML preset or file into its typed root config, with dotted overrides applied first."""
    _import_roots()
    data = _read_yaml(resolve_path(path))
    for o in overrides:
        data = apply_override(data, o)
    system = data.pop("system", None)
    if cls is None:
        if system not in _ROOTS:
            raise ConfigError(f"system: {system!r} is not a known config root; known: {', '.join(sorted(_ROOTS))}")
        cls = _ROOTS[system]
    return from_dict(cls, data)


def root_name(cfg: Any) -> str | None:
    return next((n for n, c in _ROOTS.items() if isinstance(cfg, c)), None)


def save(cfg: Any, path: str | os.PathLike) -> pathlib.Path:
    """Write the resolved config as YAML (atomically), with its `system:` name when it is a registered root."""
    path = pathlib.Path(path)
    data = to_dict(cfg)
    name = root_name(cfg)
    if name is not None:
        data = {"system": name, **data}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, path)
    return path


def _import_roots() -> None:
    """Import the modules that register config roots (kept lazy so `jaxtalk.config` stays light)."""
    import importlib

    for mod in ROOT_MODULES:
        importlib.import_module(mod)


# Modules that define further `@register_root` dataclasses (model systems add themselves here).
ROOT_MODULES: list[str] = ["jaxtalk.svp.config", "jaxtalk.style2talker.config", "jaxtalk.training.config",
                            "jaxtalk.training.style2talker_config"]


# ---------------------------------------------------------------------------------------------------------------
# Sections shared by every system.


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh sizes; one may be -1 to take the remaining devices (see `jaxtalk.parallel.make_mesh`)."""

    data: int = field(1, min=-1)
    fsdp: int = field(-1, min=-1)
    tensor: int = field(1, min=-1)

    def validate(self) -> None:
        sizes = (self.data, self.fsdp, self.tensor)
        if 0 in sizes:
            raise ConfigError("mesh: axis sizes must be positive or -1")
        if sizes.count(-1) > 1:
            raise ConfigError("mesh: at most one of data / fsdp / tensor may be -1")


@dataclasses.dataclass(frozen=True)
class SyntheticDataConfig:
    """The synthetic talking-face generator (the default data for demo, tests and benchmarks)."""

    num_identities: int = field(4, min=1)
    clips_per_identity: int = field(2, min=1)
    seconds: float = field(2.0, min=0.2, max=600.0)
    fps: float = field(25.0, min=1.0, max=120.0)
    resolution: int = field(128, min=64, max=512)
    seed: int = field(0, min=0)


@register_root("demo")
@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """What `make demo` / `jaxtalk demo` produces."""

    output_dir: str = "outputs/demo"
    num_clips: int = field(3, min=1, max=64)
    seed: int = field(0, min=0)
    data: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
