"""`jaxtalk plot`: each picture is written as a PNG from made-up inputs; bad inputs are one error line."""

import json

import numpy as np
import pytest
from PIL import Image

from jaxtalk import cli, plot
from jaxtalk.data import media, synthetic


@pytest.fixture(scope="module")
def clip():
    return synthetic.generate_clip(synthetic.make_identity(2, 0), "happy", 3, seed=1, num_frames=10, fps=25.0,
                                   resolution=64)


def test_losses_from_training_runs(tmp_path, capsys):
    for name, scale in (("run_a", 1.0), ("run_b", 0.5)):
        (tmp_path / name).mkdir()
        rows = [{"step": s, "loss": scale / s, "grad_norm": 1.0} for s in range(1, 30)]
        (tmp_path / name / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "losses.png"
    assert cli.main(["plot", "losses", str(tmp_path / "run_a"), str(tmp_path / "run_b"), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"losses: {out}"
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 200
    assert cli.main(["plot", "losses", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_strip_and_keypoint_overlay(tmp_path, clip):
    ref = tmp_path / "ref.png"
    Image.fromarray(clip.frames[0]).save(ref)
    video = media.write_video(tmp_path / "clip.mp4", clip.frames, clip.fps)
    strip = plot.plot_strip([ref, video, video], tmp_path / "strip.png", labels=["reference", "generated",
                                                                                 "ground truth"], frames=3)
    with Image.open(strip) as im:
        assert im.height > im.width  # 3 columns x 3 rows of square tiles plus titles
    np.save(tmp_path / "kps.npy", clip.head_kps[0])
    out = tmp_path / "kps.png"
    assert cli.main(["plot", "kps", str(ref), str(tmp_path / "kps.npy"), "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG"
    with pytest.raises(ValueError, match="written as .png"):
        plot.plot_strip([ref], tmp_path / "strip.jpg")


def test_style_tsne_colours_emotions(tmp_path):
    rng = np.random.default_rng(0)
    emotions = ["happy"] * 12 + ["sad"] * 12
    levels = [1, 2, 3] * 8
    points = np.concatenate([rng.normal(0, 1, (12, 8)), rng.normal(8, 1, (12, 8))])
    out = plot.plot_style_tsne(points, emotions, levels, tmp_path / "tsne.png")
    pixels = np.asarray(Image.open(out).convert("RGB")).reshape(-1, 3).astype(int)
    for colour in (plot.EMOTION_COLOURS["happy"], plot.EMOTION_COLOURS["sad"]):
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(pixels - rgb).sum(axis=1) < 12).sum() > 20, colour  # the full-intensity markers
    with pytest.raises(ValueError, match="at least 4 style vectors"):
        plot.plot_style_tsne(points[:3], emotions[:3], levels[:3], tmp_path / "x.png")
