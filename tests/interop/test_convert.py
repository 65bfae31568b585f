"""`jaxtalk convert` / `jaxtalk inspect`: strict import of real fixture checkpoints into directories that load
back exactly, and what inspect says about them."""

import json
import subprocess
import sys

import numpy as np
import pytest
from flax import traverse_util

import jaxtalk.loading
from jaxtalk import cli, interop
from jaxtalk.interop.checkpoint import load_converted, read_meta
from jaxtalk.interop.convert import merged_state
from jaxtalk.interop.reading import CheckpointError
from tests.conftest import REPO_ROOT

CASES = [  # (kind, fixture file, manifest entry holding the constructor kwargs or None)
    ("vexpress_kps_guider", "svp/vx_v_kps_guider", "vx_v_kps_guider"),
    ("styletalk_style_encoder", "svp/st_style_encoder", "st_style_encoder"),
    ("stylegan2", "style2talker/stylegan2_generator", None),
    ("sadtalker_audio2exp", "style2talker/audio2exp_simplewrapperv2", None),
]


def _constructor(fixtures_dir, entry):
    if entry is None:
        return None
    return json.loads((fixtures_dir / "svp" / "manifest.json").read_text())[entry]["constructor"]


@pytest.mark.parametrize("kind,fixture,entry", CASES, ids=[c[0] for c in CASES])
def test_convert_command_roundtrip(tmp_path, fixtures_dir, kind, fixture, entry):
    weights = fixtures_dir / f"{fixture}.safetensors"
    out = tmp_path / "ckpt"
    argv = ["convert", "--kind", kind, "--weights", str(weights), "--out", str(out)]
    constructor = _constructor(fixtures_dir, entry)
    if constructor is not None:
        (tmp_path / "cfg.json").write_text(json.dumps(constructor))
        argv += ["--config", str(tmp_path / "cfg.json")]
    assert cli.main(argv) == 0
    assert read_meta(out)["kind"] == kind
    manifest = json.loads((out / "manifest.json").read_text())  # the bundle format of product weights too
    assert (manifest["format"], manifest["component"], manifest["layout"]) == ("jaxtalk-bundle/1", kind, "orbax")
    assert (out / "config.yaml").is_file() and not (out / "jaxtalk_kind.json").exists()
    module, params = load_converted(out)
    assert jaxtalk.loading.load_models(out)[0] == module
    expected_module, expected = interop.from_torch(kind, weights, constructor)
    assert module == expected_module
    flat, flat_expected = traverse_util.flatten_dict(dict(params)), traverse_util.flatten_dict(dict(expected))
    assert set(flat) == set(flat_expected)
    for k, v in flat_expected.items():
        np.testing.assert_array_equal(np.asarray(flat[k]), v)
    back = interop.to_torch(kind, params)
    original = interop.read_state_dict(weights)
    for k, v in back.items():
        np.testing.assert_array_equal(v, original[k])


def test_folders_written_before_the_bundle_format_still_load(tmp_path, fixtures_dir, capsys):
    """An older converted folder (bare orbax params + jaxtalk_kind.json) loads as before, also as a part of an
    SVP checkpoint folder; a component bundle is refused, with the way to load it, where a product is expected."""
    import orbax.checkpoint as ocp

    from jaxtalk.interop.checkpoint import is_converted
    from jaxtalk.svp.loading import is_converted_parts, load_models

    kind, weights = "vexpress_kps_guider", fixtures_dir / "svp" / "vx_v_kps_guider.safetensors"
    module, params = interop.from_torch(kind, weights)
    old = tmp_path / "parts" / "old"
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(old.resolve() / "params", params)
    (old / "jaxtalk_kind.json").write_text(json.dumps({"format": 1, "kind": kind, "config": None}))
    assert is_converted(old) and is_converted_parts(old.parent)
    loaded_module, loaded = load_converted(old)
    assert loaded_module == module
    for k, v in traverse_util.flatten_dict(dict(params)).items():
        np.testing.assert_array_equal(np.asarray(traverse_util.flatten_dict(dict(loaded))[k]), v)
    assert cli.main(["inspect", str(old)]) == 0
    assert capsys.readouterr().out.startswith(f"kind {kind} (format 1)")
    new = tmp_path / "new"
    assert cli.main(["convert", "--kind", kind, "--weights", str(weights), "--out", str(new)]) == 0
    with pytest.raises(ValueError, match=r"holds one converted component \(vexpress_kps_guider"):
        load_models(new)


def test_convert_merges_weights_and_rejects_clashes(tmp_path, fixtures_dir, capsys):
    weights = str(fixtures_dir / "svp" / "vx_v_kps_guider.safetensors")
    with pytest.raises(CheckpointError, match="also present in an earlier --weights file"):
        merged_state([weights, weights])
    argv = ["convert", "--kind", "vexpress_kps_guider", "--weights", weights, "--weights", weights,
            "--out", str(tmp_path / "x")]
    assert cli.main(argv) == 2
    assert "also present in an earlier --weights file" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_convert_and_inspect_errors_and_listing(tmp_path, fixtures_dir, capsys):
    weights = str(fixtures_dir / "svp" / "vx_v_kps_guider.safetensors")
    assert cli.main(["convert", "--kind", "no_such_kind", "--weights", weights, "--out", str(tmp_path / "x")]) == 2
    assert "no_such_kind" in capsys.readouterr().err and not (tmp_path / "x").exists()
    out = tmp_path / "ckpt"
    assert cli.main(["convert", "--kind", "stylegan2", "--weights",
                     str(fixtures_dir / "style2talker" / "stylegan2_generator.safetensors"), "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["inspect", str(out)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].startswith("kind stylegan2") and listing[1].startswith("config {")
    assert any(line.startswith("params/conv1/") or line.startswith("conv1/") for line in listing)
    assert cli.main(["inspect", "--kinds"]) == 0
    assert set(interop.KINDS) <= {line.split(":")[0] for line in capsys.readouterr().out.splitlines()}
    assert cli.main(["inspect"]) == 2


def test_convert_alias_script_help():
    done = subprocess.run([sys.executable, str(REPO_ROOT / "convert" / "convert.py"), "--help"],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert done.returncode == 0 and "--kind" in done.stdout
