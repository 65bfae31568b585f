"""`jaxtalk generate` (SVP at the tiny config): writes the mp4 and its config; bad input gives one error line and
leaves nothing behind. `jaxtalk demo` end to end is slow-marked."""

import numpy as np
import pytest
import soundfile
from PIL import Image

from jaxtalk import cli, config
from jaxtalk.data import media, synthetic
from jaxtalk.svp.config import SVPConfig

OVERRIDES = ["sampler.steps=2", "context.overlap=2"]  # as tests/svp/test_pipeline.py (shares its compiled loops)
TINY = ["--config", "svp_tiny"]  # random weights at the tiny preset (the default is the shipped trained model)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_inputs")
    clip = synthetic.generate_clip(synthetic.make_identity(5, 0), "surprised", 2, seed=3, num_frames=12, fps=25.0,
                                   resolution=64)
    Image.fromarray(clip.frames[0]).save(d / "ref.png")
    hop = 16000 // 25
    loudest = max(range(0, 9), key=lambda f: float(np.abs(clip.audio[f * hop:(f + 4) * hop]).max()))
    soundfile.write(d / "speech.wav", clip.audio[loudest * hop:(loudest + 4) * hop], 16000)  # 4 frames at 25 fps
    np.save(d / "kps.npy", clip.head_kps[loudest:loudest + 4])
    np.savez(d / "style.npz", expression=clip.expression, audio=clip.audio, fps=np.float32(25.0))
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 8)
    np.save(d / "bad_kps.npy", np.zeros((4, 5, 2), np.float32))
    (d / "not_a_checkpoint").mkdir()
    return d


def _generate(d, out, *extra):
    return cli.main(["generate", "--image", str(d / "ref.png"), "--audio", str(d / "speech.wav"), "--out", str(out),
                     "--devices", "1", "--quiet", *TINY, *extra, *OVERRIDES])


def test_generate_writes_video_and_config(tmp_path, inputs, capsys):
    out = tmp_path / "talk.mp4"
    rc = _generate(inputs, out, "--kps", str(inputs / "kps.npy"), "--style", str(inputs / "style.npz"),
                   "--style", str(inputs / "style.npz"), "--style-mix", "0.3", "--seed", "3")
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "weights: random init (seed 3)" in printed.out
    info = media.probe_video(out)
    assert info["num_frames"] == 4 and (info["width"], info["height"]) == (32, 32) and info["has_audio"]
    cfg = config.load(tmp_path / "talk.yaml")
    assert isinstance(cfg, SVPConfig) and cfg.sampler.steps == 2 and cfg.seed == 3 and cfg.context.overlap == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.mp4", "talk.yaml"]


@pytest.mark.parametrize("case, replace, extra, message", [
    ("missing image", {"--image": "nowhere.png"}, [], "image file not found"),
    ("corrupt audio", {"--audio": "{d}/corrupt.wav"}, [], "cannot be decoded as audio"),
    ("not an mp4", {"--out": "{t}/x.avi"}, [], "must be an .mp4"),
    ("unknown config key", {}, ["guidance.nonsense=1"], "nonsense: unknown config key"),
    ("bad value", {}, ["sampler.steps=0"], "sampler.steps: 0 is below the minimum 1"),
    ("unknown preset", {}, ["--config", "svp_nonexistent"], "no such config file or preset"),
    ("missing style", {}, ["--style", "{d}/none.npz"], "style file not found"),
    ("bad keypoints", {}, ["--kps", "{d}/bad_kps.npy"], "keypoints must be"),
    ("not a checkpoint", {}, ["--checkpoint", "{d}/not_a_checkpoint"], "not a checkpoint folder"),
])
def test_bad_input_is_one_error_line_and_no_output(tmp_path, inputs, capsys, case, replace, extra, message):
    fill = lambda a: a.format(d=inputs, t=tmp_path)
    flags = {"--image": str(inputs / "ref.png"), "--audio": str(inputs / "speech.wav"),
             "--out": str(tmp_path / "talk.mp4"), **{k: fill(v) for k, v in replace.items()}}
    extra = [fill(a) for a in extra]
    overrides = [a for a in extra if "=" in a and not a.startswith("--")]
    argv = ["generate", *[x for kv in flags.items() for x in kv], "--devices", "1", "--quiet", *TINY,
            *[a for a in extra if a not in overrides], *OVERRIDES, *overrides]
    rc = cli.main(argv)
    printed = capsys.readouterr()
    lines = [line for line in printed.err.splitlines() if line.strip()]
    assert rc == 2, f"{case}: {printed.out}"
    assert len(lines) == 1 and lines[0].startswith("jaxtalk generate: error: "), lines
    assert message in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_demo_writes_data_and_svp_outputs(tmp_path, capsys):
    rc = cli.main(["demo", f"output_dir={tmp_path}", "num_clips=1", "data.resolution=64", "--style2talker-config",
                   "none", "--svp-config", "svp_tiny"])
    printed = capsys.readouterr().out
    assert rc == 0
    for name in ("demo.mp4", "contact_sheet.png", "svp.mp4", "svp.yaml", "svp_style_prior.npz", "svp_reference.png"):
        assert (tmp_path / name).is_file(), name
    assert "weights: random init" in printed and "jaxtalk generate" in printed
    assert media.probe_video(tmp_path / "svp.mp4")["has_audio"]


def test_generate_json_prints_one_object_for_scripts(tmp_path, inputs, capsys):
    import json

    out = tmp_path / "talk.mp4"
    assert _generate(inputs, out, "--json", "--seed", "3") == 0
    printed = capsys.readouterr()
    summary = json.loads(printed.out)
    assert summary["video"] == str(out) and summary["config"] == str(tmp_path / "talk.yaml")
    assert (summary["system"], summary["frames"], summary["width"]) == ("svp", 4, 32) and summary["fps"] > 0
    assert summary["weights"].startswith("random init") and "video:" in printed.err


def test_internal_failure_is_one_line_with_its_own_exit_code(tmp_path, inputs, capsys, monkeypatch):
    from jaxtalk.svp import models

    def broken(*args, **kwargs):
        raise RuntimeError("XLA ran out of something\nsecond line")

    monkeypatch.setattr(models, "build_models", broken)
    monkeypatch.delenv("JAXTALK_TRACEBACK", raising=False)
    assert _generate(inputs, tmp_path / "talk.mp4") == cli.EXIT_INTERNAL != cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["jaxtalk generate: internal error: RuntimeError: XLA ran out of something (a bug, not your "
                   "input; JAXTALK_TRACEBACK=1 shows the traceback)"]


def test_doctor_reports_versions_devices_codecs_faces_and_weights(capsys):
    import json

    assert cli.main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["packages"]["jax"] and report["devices"]["count"] >= 1
    assert isinstance(report["media"]["aac_encoder"], bool) and "present" in report["faces"]
    assert "present" in report["weights"] and set(report["weights"]["products"]) == {"svp", "style2talker"}
    for product in report["weights"]["products"].values():  # this checkout ships both products' weights
        assert product["present"] and product["megabytes"] > 1
    assert cli.main(["doctor"]) == 0
    text = capsys.readouterr().out
    assert "devices:" in text and "media: PyAV" in text and "shipped weights: svp svp_synthetic (" in text
