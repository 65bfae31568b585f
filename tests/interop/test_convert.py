"""The convert/ scripts: strict import of real fixture checkpoints into directories that load back exactly."""

import importlib.util
import json

import numpy as np
import pytest
from flax import traverse_util

from jaxtalk import interop
from jaxtalk.interop.checkpoint import load_converted, read_meta
from jaxtalk.interop.reading import CheckpointError
from tests.conftest import REPO_ROOT

CASES = [  # (script, kind, fixture file, manifest entry holding the constructor kwargs or None)
    ("vexpress", "vexpress_kps_guider", "svp/vx_v_kps_guider", "vx_v_kps_guider"),
    ("styletalk", "styletalk_style_encoder", "svp/st_style_encoder", "st_style_encoder"),
    ("stylegan", "stylegan2", "style2talker/stylegan2_generator", None),
    ("style2talker", "sadtalker_audio2exp", "style2talker/audio2exp_simplewrapperv2", None),
]


def _script(name):
    spec = importlib.util.spec_from_file_location(f"convert_{name}", REPO_ROOT / "convert" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _constructor(fixtures_dir, entry):
    if entry is None:
        return None
    return json.loads((fixtures_dir / "svp" / "manifest.json").read_text())[entry]["constructor"]


@pytest.mark.parametrize("script,kind,fixture,entry", CASES, ids=[c[1] for c in CASES])
def test_convert_script_roundtrip(tmp_path, fixtures_dir, script, kind, fixture, entry):
    weights = fixtures_dir / f"{fixture}.safetensors"
    argv = ["--kind", kind, "--weights", str(weights), "--out", str(tmp_path / "ckpt")]
    constructor = _constructor(fixtures_dir, entry)
    if constructor is not None:
        (tmp_path / "cfg.json").write_text(json.dumps(constructor))
        argv += ["--config", str(tmp_path / "cfg.json")]
    out = _script(script).main(argv)
    assert read_meta(out)["kind"] == kind
    module, params = load_converted(out)
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


def test_convert_merges_weights_and_rejects_clashes(tmp_path, fixtures_dir):
    weights = str(fixtures_dir / "svp" / "vx_v_kps_guider.safetensors")
    with pytest.raises(CheckpointError, match="also present in an earlier --weights file"):
        _script("vexpress").main(["--kind", "vexpress_kps_guider", "--weights", weights, "--weights", weights,
                                  "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
