"""Reading golden fixture folders (`<name>.safetensors` + `<name>.npz` + `manifest.json`) and layout helpers.

Fixture tests are driven by an explicit mapping `{manifest module name: runner}`; each runner gets a
`FixtureModule` and returns `(jax_output, reference)` pairs to compare. Parametrize over the mapping's keys (ids
are the module names) so a module appears as a test only when someone has written its runner, and check with
`unmapped_modules` which manifest modules have none yet.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

# Einops-style layout strings used by the manifests -> the permutation to jaxtalk's channels-last layout.
_TO_CHANNELS_LAST = {
    "b c f h w": (0, 2, 3, 4, 1),
    "b c h w": (0, 2, 3, 1),
}


@dataclasses.dataclass(frozen=True)
class FixtureModule:
    """One manifest entry of a fixture folder."""

    name: str
    folder: pathlib.Path
    entry: Mapping[str, Any]

    @property
    def weights(self) -> pathlib.Path:
        return self.folder / f"{self.name}.safetensors"

    @property
    def constructor(self) -> dict[str, Any]:
        return dict(self.entry.get("constructor", {}))

    def arrays(self) -> dict[str, np.ndarray]:
        path = self.folder / f"{self.name}.npz"
        if not path.is_file():
            raise FileNotFoundError(f"fixture {self.name}: {path} is missing")
        with np.load(path) as z:
            return {k: z[k] for k in z.files}

    def layout(self, name: str) -> str:
        for group in ("inputs", "outputs"):
            spec = self.entry.get(group, {}).get(name)
            if spec is not None and "layout" in spec:
                return spec["layout"]
        raise KeyError(f"fixture {self.name}: no layout recorded for {name!r}")


def load_manifest(folder: pathlib.Path) -> dict[str, Any]:
    path = pathlib.Path(folder) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; is {folder} a fixture folder?")
    return json.loads(path.read_text())


def iter_modules(folder: pathlib.Path) -> Iterator[FixtureModule]:
    """Every module entry of a fixture folder's manifest (the `_meta` entry is skipped)."""
    folder = pathlib.Path(folder)
    for name, entry in load_manifest(folder).items():
        if not name.startswith("_"):
            yield FixtureModule(name, folder, entry)


def get_module(folder: pathlib.Path, name: str) -> FixtureModule:
    for mod in iter_modules(folder):
        if mod.name == name:
            return mod
    raise KeyError(f"module {name!r} is not in {pathlib.Path(folder) / 'manifest.json'}")


def unmapped_modules(folder: pathlib.Path, runners: Mapping[str, Callable]) -> list[str]:
    """Manifest modules that no runner covers yet."""
    return sorted(m.name for m in iter_modules(folder) if m.name not in runners)


def to_channels_last(x: np.ndarray, layout: str) -> np.ndarray:
    """A manifest-layout array ('b c f h w', 'b c h w', or already channels-last) in jaxtalk's layout."""
    perm = _TO_CHANNELS_LAST.get(layout)
    return x if perm is None else np.transpose(x, perm)


def from_channels_last(x: np.ndarray, layout: str) -> np.ndarray:
    """Inverse of `to_channels_last`."""
    perm = _TO_CHANNELS_LAST.get(layout)
    return x if perm is None else np.transpose(x, np.argsort(perm))
