"""The embedded demo writes a playable mp4 with sound and a contact sheet."""

import os

import av
import numpy as np
from PIL import Image

from jaxtalk.data import media
from jaxtalk.data.demo import frame_energy, plot_curves, write_demo


def test_write_demo(tmp_path):
    out = write_demo(tmp_path / "demo", seed=1, num_clips=2, resolution=64)
    assert set(out) == {"video", "contact_sheet"}
    assert sorted(os.listdir(tmp_path / "demo")) == ["contact_sheet.png", "demo.mp4"]
    with av.open(str(out["video"])) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
    frames, fps = media.read_video_frames(out["video"])
    assert frames.shape == (100, 64, 128, 3) and fps == 25.0  # 2 clips x 50 frames, face beside its Head-Kps
    assert frames[:, :, 64:].mean() < frames[:, :, :64].mean() / 3  # keypoint half is mostly black
    audio = media.load_audio(out["video"])
    assert abs(len(audio) / 16000 - 4.0) < 0.1
    sheet = np.asarray(Image.open(out["contact_sheet"]))
    assert sheet.ndim == 3 and sheet.shape[1] == 6 * 64 and sheet.shape[0] > 2 * (2 * 64 + 2 * 70)
    again = write_demo(tmp_path / "again", seed=1, num_clips=2, resolution=64)
    assert np.array_equal(np.asarray(Image.open(again["contact_sheet"])), sheet)


def test_frame_energy_and_plot():
    audio = np.concatenate([np.zeros(640), np.full(640, 0.5)]).astype(np.float32)
    np.testing.assert_allclose(frame_energy(audio, 2, 25.0), [0.0, 0.5], atol=1e-6)
    img = plot_curves(np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]), 120, 60, "t")
    assert img.shape == (60, 120, 3) and img.dtype == np.uint8
    assert (np.abs(img.astype(int) - [230, 80, 60]).sum(-1) < 30).any()  # first curve's colour is drawn
