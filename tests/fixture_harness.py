"""The golden-fixture harness of both systems: one manifest entry -> one `Fixture`, run by one runner, which must
take every constructor argument, every literal call argument and every array from the fixture.

A fixture folder (`<fixtures>/svp`, `<fixtures>/style2talker`) holds `manifest.json` and, per module, `<name>.npz`
(inputs and outputs) and usually `<name>.safetensors` (the original's weights). Runners live in
`tests/<system>/fixture_runners*.py`, each defining `RUNNERS = {module name: fn(fixture)}`; a manifest module
without a runner fails, so a new fixture never goes unchecked.

What a runner must consume (`Fixture.unconsumed` lists what it did not, and the test fails on it):
- `fixture.constructor[k]` for every constructor key (passing the whole dict on, e.g. `dict(fixture.constructor)`
  or `**fixture.constructor`, reads every key);
- `fixture.calls[i][k]` for every keyword argument with a literal value in the manifest's call text
  (`truncation=0.7`), so a fixture recorded with other values is run with those values;
- `fixture.arrays[k]` for every array of the `.npz` (inputs fed, outputs compared).
A field that has no counterpart in jaxtalk (a torch-only flag) is named with `fixture.waive(field, why)`.
"""

from __future__ import annotations

import ast
import functools
import importlib
import json
import pathlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from tests.conftest import fixtures_root

TESTS = pathlib.Path(__file__).resolve().parent

# Einops-style layout strings of the SVP manifests -> the permutation to jaxtalk's channels-last layout.
_TO_CHANNELS_LAST = {"b c f h w": (0, 2, 3, 4, 1), "b c h w": (0, 2, 3, 1)}
# `name=value` with a Python literal value (number, bool, None, quoted string) in a manifest's call text.
_LITERAL_KWARG = re.compile(r"\b([A-Za-z_]\w*)\s*=\s*(-?\d+(?:\.\d*)?(?:[eE]-?\d+)?|True|False|None|'[^']*'|\"[^\"]*\")"
                            r"(?=\s*[,)])")


class Tracked(dict):
    """A dict that records which keys were read (`[k]`, `get`, `pop`, `items`, `values`, `dict(...)`, `**`)."""

    def __init__(self, data: dict[str, Any], where: str) -> None:
        super().__init__(data)
        self.where = where
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def pop(self, key: str, *default: Any) -> Any:
        self.read.add(key)
        return super().pop(key, *default)

    def items(self):  # noqa: ANN201 - dict view
        self.read.update(super().keys())
        return super().items()

    def values(self):  # noqa: ANN201 - dict view
        self.read.update(super().keys())
        return super().values()

    def __iter__(self) -> Iterator[str]:  # not dict's own iterator: dict(t) and **t go through __getitem__
        return iter(list(super().keys()))

    def unread(self) -> list[str]:
        return [f"{self.where}.{k}" for k in super().keys() if k not in self.read]


def call_literals(text: str) -> dict[str, Any]:
    """The keyword arguments with literal values in one call's code (its `# comment` left out), e.g.
    {'truncation': 0.7}."""
    code = text.split("#", 1)[0]
    return {m.group(1): ast.literal_eval(m.group(2)) for m in _LITERAL_KWARG.finditer(code)}


class Fixture:
    """One manifest module: weights path, tracked constructor, tracked literal call arguments, tracked arrays."""

    def __init__(self, name: str, folder: pathlib.Path, entry: dict[str, Any]) -> None:
        self.name, self.folder, self.entry = name, pathlib.Path(folder), entry
        self.constructor = Tracked(dict(entry.get("constructor") or {}), "constructor")
        texts = entry.get("calls", entry.get("call", []))
        texts = [texts] if isinstance(texts, str) else list(texts)
        self.calls = [Tracked(call_literals(t), f"calls[{i}]") for i, t in enumerate(texts)]
        self._waived: dict[str, str] = {}

    @property
    def weights(self) -> pathlib.Path:
        return self.folder / f"{self.name}.safetensors"

    @functools.cached_property
    def arrays(self) -> Tracked:
        path = self.folder / f"{self.name}.npz"
        if not path.is_file():
            raise FileNotFoundError(f"fixture {self.name}: {path} is missing")
        with np.load(path) as z:
            return Tracked({k: z[k] for k in z.files}, "arrays")

    def call_arg(self, key: str) -> Any:
        """The literal value of `key` in the one call that states it (an error if calls disagree)."""
        values = {repr(c[key]): c[key] for c in self.calls if key in c}
        if len(values) != 1:
            raise KeyError(f"fixture {self.name}: {key!r} is stated in {len(values)} distinct values across the calls")
        return next(iter(values.values()))

    def layout(self, name: str) -> str:
        for group in ("inputs", "outputs"):
            spec = self.entry.get(group, {}).get(name)
            if spec is not None and "layout" in spec:
                return spec["layout"]
        raise KeyError(f"fixture {self.name}: no layout recorded for {name!r}")

    def waive(self, field: str, why: str) -> None:
        """`field` ('constructor.k', 'calls[i].k', 'arrays.k') has no jaxtalk counterpart, for the reason `why`."""
        self._waived[field] = why

    def unconsumed(self) -> list[str]:
        tracked = [self.constructor, *self.calls]
        if "arrays" in self.__dict__ or (self.folder / f"{self.name}.npz").is_file():
            tracked.append(self.arrays)
        return [f for t in tracked for f in t.unread() if f not in self._waived]


def to_channels_last(x: np.ndarray, layout: str) -> np.ndarray:
    """A manifest-layout array ('b c f h w', 'b c h w', or already channels-last) in jaxtalk's layout."""
    perm = _TO_CHANNELS_LAST.get(layout)
    return x if perm is None else np.transpose(x, perm)


def nhwc(x: np.ndarray) -> np.ndarray:
    """NCHW -> NHWC (contiguous)."""
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


def manifest_entries(system: str, root: pathlib.Path | None = None) -> dict[str, dict[str, Any]]:
    """{module name: manifest record} of one system's fixture folder (SVP: top level; Style2Talker: `modules`)."""
    path = (root or fixtures_root()) / system / "manifest.json"
    manifest = json.loads(path.read_text())
    modules = manifest["modules"] if "modules" in manifest else manifest
    return {k: v for k, v in modules.items() if not k.startswith("_")}


def module_names(system: str) -> list[str]:
    """Parametrize ids at collection time; a placeholder when the folder is missing (the test then skips/fails)."""
    try:
        return sorted(manifest_entries(system))
    except FileNotFoundError:
        return [f"<no {system} manifest>"]


@functools.cache
def runners(system: str) -> tuple[dict[str, Callable[[Fixture], None]], dict[str, str]]:
    """(module name -> runner, runner file -> import error) over tests/<system>/fixture_runners*.py."""
    found, owner, errors = {}, {}, {}
    for file in sorted((TESTS / system).glob("fixture_runners*.py")):
        try:
            mod = importlib.import_module(f"tests.{system}.{file.stem}")
        except Exception as e:  # noqa: BLE001 - reported on the modules that then lack a runner
            errors[file.name] = f"{type(e).__name__}: {e}"
            continue
        for name, fn in getattr(mod, "RUNNERS", {}).items():
            if name in found:
                raise AssertionError(f"fixture runner {name!r} is defined in both {owner[name]} and {file.name}")
            found[name], owner[name] = fn, file.name
    return found, errors


def run(system: str, name: str, fixtures_dir: pathlib.Path,
        runner: Callable[[Fixture], None] | None = None, entry: dict[str, Any] | None = None) -> Fixture:
    """Run the runner of `name` on its fixture and fail on any manifest field or array it left unread."""
    if runner is None:
        found, errors = runners(system)
        if name not in found:
            broken = "; ".join(f"{f} failed to import ({e})" for f, e in errors.items())
            raise AssertionError(f"no runner for fixture module {name}" + (f" ({broken})" if broken else ""))
        runner = found[name]
    fixture = Fixture(name, fixtures_dir / system, entry or manifest_entries(system, fixtures_dir)[name])
    runner(fixture)
    left = fixture.unconsumed()
    if left:
        raise AssertionError(f"fixture {system}/{name}: the runner ignores {', '.join(left)}; take them from the "
                             "fixture (or waive one that has no jaxtalk counterpart, with the reason)")
    return fixture
