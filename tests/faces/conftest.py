"""Real test material from registry packages: scikit-image's astronaut photo (one face), its coffee photo (no
face), speech synthesised by espeak-ng (Debian package; `.ci/run` installs it), and a short driving video made
by turning and shifting the astronaut photo."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

SENTENCE = "Hello there. I am talking to you from the space station, and the view is wonderful."


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


@pytest.fixture(scope="session")
def no_face() -> np.ndarray:
    import skimage.data

    return skimage.data.coffee()


@pytest.fixture(scope="session")
def astronaut_analysis(astronaut):
    from jaxtalk import faces

    return faces.analyze(astronaut)


@pytest.fixture(scope="session")
def material(tmp_path_factory, astronaut):
    """Files: astronaut.png, speech.wav (espeak-ng, 22.05 kHz), drive.mp4 (10 frames at 25 fps with sound),
    drive_silent.mp4 (no audio stream), coffee.png."""
    import skimage.data

    from jaxtalk.data import media

    d = tmp_path_factory.mktemp("faces")
    Image.fromarray(astronaut).save(d / "astronaut.png")
    Image.fromarray(skimage.data.coffee()).save(d / "coffee.png")
    espeak = shutil.which("espeak-ng")
    assert espeak, "espeak-ng is missing: apt-get install espeak-ng (.ci/run does this)"
    subprocess.run([espeak, "-w", str(d / "speech.wav"), SENTENCE], check=True, capture_output=True)
    frames = driving_frames(astronaut)
    speech = media.load_audio(d / "speech.wav")
    media.write_video(d / "drive.mp4", frames, 25.0, speech[: len(frames) * 640])
    media.write_video(d / "drive_silent.mp4", frames, 25.0)
    return d


def driving_frames(image: np.ndarray, n: int = 10, size: int = 256) -> np.ndarray:
    """The photo downscaled, turned (in-plane, +-8 degrees) and shifted (+-6 px) about the face over n frames."""
    small = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
    out = []
    for i in range(n):
        angle, dx = 8 * np.sin(i / 3), 6 * np.sin(i / 4)
        out.append(np.asarray(small.rotate(angle, center=(112, 64), translate=(dx, 0),
                                           resample=Image.Resampling.BILINEAR)))
    return np.stack(out)
