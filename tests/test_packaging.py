"""Packaging: the declared runtime dependencies are what `jaxtalk/` imports, presets live inside the package, and
a built wheel installed into a fresh virtualenv (no downloads: `--no-deps`, dependencies borrowed from this
environment) loads every preset and runs `jaxtalk --help` outside the checkout."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import tomllib

import pytest

from jaxtalk import config
from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "jaxtalk"


def _requirement_name(spec: str) -> str:
    name = spec.split(";")[0].strip()
    for sep in "<>=!~[ ":
        name = name.split(sep)[0]
    return name.lower().replace("_", "-")


def _imports() -> tuple[set[str], set[str]]:
    """Top-level modules imported anywhere under jaxtalk/: (required, optional = inside try/except ImportError)."""
    required, optional = set(), set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        guarded = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(
                    isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                    for h in node.handlers):
                guarded.update(id(n) for b in node.body for n in ast.walk(b))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                (optional if id(node) in guarded else required).add(name.split(".")[0])
    third_party = lambda names: {n for n in names if n not in sys.stdlib_module_names and n != "jaxtalk"}
    return third_party(required), third_party(optional)


def _distributions(modules: set[str]) -> dict[str, set[str]]:
    by_module = importlib.metadata.packages_distributions()
    return {m: {d.lower().replace("_", "-") for d in by_module.get(m, [])} for m in modules}


def test_runtime_dependencies_are_what_the_package_imports():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = {_requirement_name(r) for r in project["dependencies"]}
    extras = {_requirement_name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    required, optional = _imports()
    dists = _distributions(required | optional)
    undeclared = sorted(m for m in required if not dists[m] & declared)
    assert not undeclared, (f"jaxtalk/ imports {undeclared} (distributions {[dists[m] for m in undeclared]}) "
                            "without declaring them in [project] dependencies of pyproject.toml")
    not_extra = sorted(m for m in optional - required if not dists[m] & (declared | extras))
    assert not not_extra, f"optional imports {not_extra} belong to an optional-dependencies extra"
    used = set().union(*(dists[m] for m in required)) if required else set()
    unused = sorted(declared - used)
    assert not unused, (f"declared runtime dependencies {unused} are imported nowhere under jaxtalk/; move "
                        "test-only ones to the `test` extra")


def test_presets_live_in_the_package():
    assert (REPO_ROOT / "jaxtalk" / "presets" / "svp_tiny.yaml").is_file()
    stray = sorted(p.name for p in REPO_ROOT.glob("configs/*.yaml"))
    assert not stray, f"presets belong in jaxtalk/presets/ (package data): git mv configs/{{{','.join(stray)}}} jaxtalk/presets/"
    for name in config.presets():
        config.load(name)


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    run = lambda *cmd, **kw: subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, **kw)
    source = tmp_path / "src"  # a copy, so the build leaves nothing (build/, *.egg-info) in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / "jaxtalk", ignore=shutil.ignore_patterns("__pycache__"))
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                str(tmp_path / "dist"), str(source))
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("jaxtalk-*.whl"))
    venv = tmp_path / "venv"
    made = run(sys.executable, "-m", "venv", str(venv))
    assert made.returncode == 0, made.stderr[-2000:]
    python = venv / "bin" / "python"
    purelib = run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    # The dependencies come from this environment (a path line, so its editable jaxtalk finder is not loaded).
    (pathlib.Path(purelib) / "_jaxtalk_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = run(str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel))
    assert installed.returncode == 0, installed.stderr[-2000:]
    check = ("import jaxtalk, pathlib; from jaxtalk import config\n"
             f"assert pathlib.Path(jaxtalk.__file__).is_relative_to({str(venv)!r}), jaxtalk.__file__\n"
             "names = sorted(config.presets()); [config.load(n) for n in names]\n"
             "assert 'svp_tiny' in names and 'style2talker_tiny' in names, names\n"
             "print(len(names))")
    loaded = run(str(python), "-c", check, cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert int(loaded.stdout.strip()) == len(config.presets())
    helped = run(str(venv / "bin" / "jaxtalk"), "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "generate" in helped.stdout and "convert" in helped.stdout, helped.stderr
    # the shipped weights travel in the wheel, and a tiny generation runs from it (random weights at svp_tiny)
    inputs = ("import numpy as np, soundfile; from PIL import Image; from jaxtalk.data import synthetic\n"
              "from jaxtalk.svp.loading import packaged_weights; from jaxtalk.style2talker.shipped import shipped_dir\n"
              "packaged_weights(); shipped_dir()\n"
              "c = synthetic.generate_clip(synthetic.make_identity(0, 0), 'happy', 1, seed=0, num_frames=4, "
              "resolution=64)\n"
              "Image.fromarray(c.frames[0]).save('face.png')\n"
              "soundfile.write('speech.wav', (0.3 * np.sin(np.arange(4000) / 5)).astype(np.float32), 16000)\n")
    made = run(str(python), "-c", inputs, cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-3000:]
    generated = run(str(venv / "bin" / "jaxtalk"), "generate", "--image", "face.png", "--audio", "speech.wav",
                    "--out", "out.mp4", "--config", "svp_tiny", "--face", "off", "--devices", "1", "--quiet",
                    "--json", "sampler.steps=1", "context.overlap=2", cwd=tmp_path)
    assert generated.returncode == 0, generated.stderr[-3000:]
    assert (tmp_path / "out.mp4").is_file() and (tmp_path / "out.yaml").is_file()
