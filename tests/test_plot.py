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


def test_losses_from_tensorboard_event_files(tmp_path, capsys):
    """A run folder with only event files (no metrics.jsonl) plots the same curves."""
    from jaxtalk.training.tensorboard import ScalarWriter

    with ScalarWriter(tmp_path / "run_tb") as w:
        for s in range(1, 20):
            w.add_scalars(s, {"loss": 1.0 / s, "recon_loss": 2.0 / s, "grad_norm": 1.0})
    rows = plot.read_metrics(tmp_path / "run_tb")
    assert [r["step"] for r in rows] == list(range(1, 20))
    assert rows[3]["loss"] == pytest.approx(0.25) and rows[3]["recon_loss"] == pytest.approx(0.5)
    out = tmp_path / "losses.png"
    assert cli.main(["plot", "losses", str(tmp_path / "run_tb"), "--smooth", "3", "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 2 * im.height  # two panels: loss, recon_loss


def test_landmark_overlay_draws_every_point(tmp_path):
    image = np.full((100, 120, 3), 40, np.uint8)
    Image.fromarray(image).save(tmp_path / "face.png")
    points = np.stack(np.meshgrid(np.linspace(20, 100, 10), np.linspace(20, 80, 7)), -1).reshape(-1, 2)
    np.savez(tmp_path / "landmarks.npz", landmarks=points)
    out = plot.plot_kps(tmp_path / "face.png", tmp_path / "landmarks.npz", tmp_path / "lm.png")
    with Image.open(out) as im:
        assert im.format == "PNG"
    with pytest.raises(ValueError, match=r"expected \(N, 2\)"):
        plot.plot_kps(tmp_path / "face.png", np.zeros(5), tmp_path / "x.png")
    assert cli.main(["plot", "kps", str(tmp_path / "face.png"), str(tmp_path / "no.npy")]) == 2


def test_charts_names_forward_to_plot(tmp_path):
    from jaxtalk import charts

    assert charts.image_strip is plot.image_strip and charts.Canvas is plot.Canvas
    out = charts.loss_curves({"a": ([1, 2, 3], [3.0, 2.0, 1.0])}, tmp_path / "c.png", title="t")
    with Image.open(out) as im:
        assert im.format == "PNG"
    with pytest.raises(ValueError, match="no finite values"):
        plot.loss_curves({"a": ([1], [float("nan")])}, tmp_path / "d.png")


def test_style_points_cover_every_mead_condition():
    """One point per clip of each of MEAD's 22 (emotion, intensity) conditions (neutral has level 1 only); the
    model is a stand-in that returns the clip's mean expression as its prior."""
    from types import SimpleNamespace

    from jaxtalk.data import facs

    class _Models:
        def style_prior(self, expression, audio, fps):
            return SimpleNamespace(mu=np.asarray(expression).mean(0))

    points, emotions, levels = plot.style_points(_Models(), clips_per_cell=1, num_frames=8)
    assert list(zip(emotions, levels)) == facs.emotion_conditions() and points.shape == (22, 64)
