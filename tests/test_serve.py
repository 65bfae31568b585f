"""`jaxtalk serve`: the gradio page over the library `generate()`, checked the way a person and a program use it.

* a real headless Chromium (Debian's package, driven by Playwright) uploads a photo and a wav, presses Generate,
  sees the progress bar count the sampler's windows, waits for the video, plays it, downloads the mp4 and finds
  its audio stream, then uploads a photo without a face and sees the error text; a screenshot of the finished
  page is saved as a test artifact (outputs/test_artifacts/, or $JAXTALK_TEST_ARTIFACTS);
* `gradio_client` (the API a program uses) gets the video, the resolved config and the one-line errors;
* the engine without a browser: the bounded queue answers "busy", uploads are size- and length-limited, only
  offered checkpoints can be chosen, the temporary folder is removed, progress follows every window of every
  sampler step.
SVP runs at the tiny preset without motion modules and style, 2 sampler steps, one device (random weights);
every generation has the same shapes, so the page costs one compile (most of these tests' time). One browser
test, one generating `gradio_client` test and the progress test run by default; the silent-audio page and the
Style2Talker tab (a second model family) are slow-marked.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import anyio
import numpy as np
import pytest
import soundfile
from PIL import Image

from jaxtalk import cli, serve
from jaxtalk.data import media, synthetic

# Resolve anyio's lazily imported names here, in the main thread. Under pytest those imports go through assertion
# rewriting (ast.parse), and CPython 3.11 raises SystemError when two threads parse at once: the web server's file
# responses (anyio.open_file) hit it in CI.
for _name in dir(anyio):
    getattr(anyio, _name, None)

# one xdist worker runs this module (`make test` uses --dist loadgroup): the page and its compile are built once
pytestmark = pytest.mark.xdist_group("serve")

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("JAXTALK_TEST_ARTIFACTS", REPO_ROOT / "outputs" / "test_artifacts"))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# the page's test needs a model, not a good one: svp_tiny without motion modules and style, 2 steps, one device
OPTIONS = dict(svp_config="svp_tiny", svp_overrides=("sampler.steps=2", "unet.motion.enabled=false", "style.enabled=false",
                              "unet.use_style=false"), devices=1, queue_size=1, max_upload_mb=1.0,
               max_audio_seconds=5.0)
FRAMES = 7  # 0.32 s of speech, 4-frame windows overlapping by 1: V-Express's cut rule keeps 7 frames
SVP_DEFAULTS = dict(driving=None, styles=[], style_mix=0.5, steps=2, guidance=2.0, seed=3, resolution=32,
                    retarget="fix_face", weights=serve.DEFAULT_WEIGHTS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("serve_inputs")
    clip = synthetic.generate_clip(synthetic.make_identity(5, 0), "happy", 2, seed=3, num_frames=12, fps=25.0,
                                   resolution=64)
    try:  # a real face photo (scikit-image ships it), so jaxtalk.faces finds a face where it is installed
        from skimage import data as skdata

        Image.fromarray(skdata.astronaut()).resize((256, 256), Image.Resampling.BICUBIC).save(d / "photo.png")
    except ImportError:
        Image.fromarray(clip.frames[0]).save(d / "photo.png")
    soundfile.write(d / "speech.wav", clip.audio[: 8 * 640], 16000)  # 8 frames at 25 fps
    soundfile.write(d / "silent.wav", np.zeros(8000, np.float32), 16000)
    soundfile.write(d / "long.wav", np.tile(clip.audio, 12), 16000)  # 5.8 s, over the 5 s limit
    (d / "big.wav").write_bytes(b"\0" * (2 << 20))  # 2 MB, over the 1 MB limit
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(d / "noise.png")  # no face
    return {p.stem: p for p in d.iterdir()}


@pytest.fixture(scope="module")
def server():
    """The page in this process on a free loopback port; yields (app, url)."""
    pytest.importorskip("gradio")
    with serve.running(serve.ServeOptions(**OPTIONS), "127.0.0.1", _free_port()) as (app, url):
        yield app, url


# ------------------------------------------------------------------------------------------------ engine


def test_queue_is_bounded_and_says_busy(tmp_path):
    engine = serve.Engine(serve.ServeOptions(queue_size=1, workdir=str(tmp_path)))
    running, waiting, release = threading.Event(), threading.Event(), threading.Event()
    waited = []

    def first():
        with engine.admit():
            running.set()
            release.wait(10)

    def second():
        waiting.set()
        with engine.admit(on_wait=waited.append):
            pass

    threads = [threading.Thread(target=first)]
    threads[0].start()
    assert running.wait(10)
    threads.append(threading.Thread(target=second))
    threads[1].start()
    assert waiting.wait(10)
    for _ in range(200):  # until the second request is admitted and waits for the device
        if engine.admitted == 2:
            break
        threading.Event().wait(0.01)
    assert engine.admitted == 2
    with pytest.raises(serve.BusyError, match="busy: 2 generations are running or waiting"):
        with engine.admit():
            pass
    release.set()
    for t in threads:
        t.join(10)
    assert waited == [1] and engine.admitted == 0
    with engine.admit():  # free again
        pass
    engine.close()


def test_uploads_are_limited_and_the_temporary_folder_is_removed(tmp_path, files):
    engine = serve.Engine(serve.ServeOptions(workdir=str(tmp_path), max_upload_mb=1.0, max_audio_seconds=5.0))
    assert engine.workdir.parent == tmp_path and engine.uploads.is_dir()
    with pytest.raises(serve.InputError, match=r"big.wav is 2.0 MB; this server takes files up to 1 MB"):
        engine.check_upload(files["big"], "big.wav")
    with pytest.raises(serve.InputError, match="no photo given"):
        engine.check_upload(None, "photo")
    assert engine.check_upload(None, "style", required=False) is None
    with pytest.raises(serve.InputError, match=r"audio is 5.8 s long; this server generates up to 5 s"):
        engine.load_audio(files["long"])
    with pytest.raises(media.MediaError, match="audio is silent"):
        engine.load_audio(files["silent"])
    with pytest.raises(serve.InputError, match="not offered by this server"):
        engine.models("svp", "/etc")
    with pytest.raises(serve.InputError, match="no audio given"):
        engine.generate_svp(files["photo"], None)
    if importlib.util.find_spec("jaxtalk.faces") is not None:  # a photo without a face is refused (the page shows this one line), not animated
        with pytest.raises(ValueError, match="no face found"):
            engine.generate_svp(files["noise"], files["speech"], steps=1)
    assert engine.checkpoint_choices("svp") == [serve.DEFAULT_WEIGHTS]
    engine.close()
    assert not engine.workdir.exists()


def test_face_preview_without_a_photo_or_with_a_broken_one(tmp_path):
    assert serve.face_preview(None) == (None, "")
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    image, note = serve.face_preview(broken)
    assert image is None and note.startswith("**Error:**") and "cannot be read as an image" in note


def test_serve_bad_arguments_are_one_error_line(capsys):
    assert cli.main(["serve", "--checkpoint", "/nowhere/ckpt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["jaxtalk serve: error: --checkpoint /nowhere/ckpt: folder not found"]


@pytest.mark.slow  # a second process importing gradio and jax: run by `make test-all`
def test_serve_command_stops_on_sigterm_and_removes_its_temporary_folder(tmp_path):
    """`jaxtalk serve` as a service runs it: started, asked for its page, stopped with SIGTERM; it exits 0 and
    leaves nothing in the temporary directory."""
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    port = _free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path), "JAX_PLATFORMS": "cpu", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "jaxtalk.cli", "serve", "--port", str(port), "--config",
                             "svp_tiny"], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        line = ""
        deadline = time.monotonic() + 300
        while "jaxtalk serve: http" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        assert "jaxtalk serve: http" in line, line
        workdir = Path(re.search(r"live in (\S+), removed", line).group(1))
        assert workdir.parent == tmp_path and (workdir / "uploads").is_dir()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=60) as page:
            assert page.status == 200 and b"jaxtalk" in page.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not workdir.exists() and sorted(p.name for p in tmp_path.iterdir()) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------------------------ through the API


@pytest.mark.slow
def test_gradio_client_generates_video_and_config(server, files, tmp_path):
    from gradio_client import Client, handle_file

    app, url = server
    client = Client(url, verbose=False, download_files=str(tmp_path))
    video, downloads, status = client.predict(
        handle_file(str(files["photo"])), handle_file(str(files["speech"])), None, [], 0.5, 2, 2.0, 3, 32,
        "fix_face", serve.DEFAULT_WEIGHTS, api_name="/svp")
    video = video["video"] if isinstance(video, dict) else video
    info = media.probe_video(video)
    assert info["num_frames"] == FRAMES and (info["width"], info["height"]) == (32, 32) and info["has_audio"]
    assert sorted(Path(p).suffix for p in downloads) == [".mp4", ".yaml"]
    assert f"{FRAMES} frames of 32x32" in status and "random init" in status
    assert Path(next(p for p in downloads if p.endswith(".yaml"))).read_text().count("steps: 2") == 1


def test_gradio_client_gets_the_one_line_errors(server, files):
    from gradio_client import Client, handle_file

    app, url = server
    client = Client(url, verbose=False)
    args = dict(zip(("image", "audio"), (handle_file(str(files["photo"])), handle_file(str(files["silent"])))))
    with pytest.raises(Exception, match=r"silent.wav: audio is silent") as e:
        client.predict(args["image"], args["audio"], None, [], 0.5, 2, 2.0, 3, 32, "fix_face",
                       serve.DEFAULT_WEIGHTS, api_name="/svp")
    assert "Traceback" not in str(e.value) and str(app.engine.workdir) not in str(e.value)
    # a full queue: one generation running and one waiting (held here), the next request is told "busy"
    hold, held = threading.Event(), []

    def occupy():
        with app.engine.admit():
            held.append(1)
            hold.wait(30)

    threads = [threading.Thread(target=occupy) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(500):
        if app.engine.admitted == 2:
            break
        threading.Event().wait(0.01)
    try:
        with pytest.raises(Exception, match=r"busy: 2 generations are running or waiting"):
            client.predict(handle_file(str(files["photo"])), handle_file(str(files["speech"])), None, [], 0.5,
                           2, 2.0, 3, 32, "fix_face", serve.DEFAULT_WEIGHTS, api_name="/svp")
    finally:
        hold.set()
        for t in threads:
            t.join(30)


def test_progress_follows_every_window_of_every_step(server, files):
    app, _ = server
    events = []
    out = app.engine.generate_svp(files["photo"], files["speech"], **SVP_DEFAULTS,
                                  on_progress=lambda *e: events.append(e))
    windows = _num_windows(out)
    denoise = [(d, t) for s, d, t in events if s == "denoise"]
    assert denoise == [(k, 2 * windows) for k in range(1, 2 * windows + 1)]
    assert [e for e in events if e[0] == "prepare"] == [("prepare", k, 3) for k in range(4)]
    assert events[-1] == ("decode", 1, 1)
    # the face was prepared by generate() itself (face="auto" on the uploaded photo), its notes shown on the page
    assert any(n.startswith("Face: box") and "keypoints fix_face" in n for n in out["notes"]), out["notes"]


def test_generate_notes_read_as_page_text():
    assert serve.page_note("note: no face found in photo.png; using the image as given, without keypoints (--face "
                           "on makes this an error)") == ("No face found in photo.png; using the image as given, "
                                                          "without keypoints")
    assert serve.page_note("face: box [1, 2, 3, 4] score 0.90") == "Face: box [1, 2, 3, 4] score 0.90"


def _num_windows(out) -> int:
    from jaxtalk.svp.pipeline import SVPPipeline

    return SVPPipeline(out["models"], progress=False).window_plan(out["result"].frames.shape[0]).num_windows


# ------------------------------------------------------------------------------------------------ in a browser


@pytest.fixture(scope="module")
def browser():
    from tests.conftest import in_ci

    missing = None
    try:
        import playwright.sync_api as playwright
    except ImportError:
        missing = "playwright is not installed (the test extra has it)"
    if missing is None and not Path(CHROMIUM).is_file():
        missing = f"{CHROMIUM} not installed (.ci/run installs Debian's chromium)"
    if missing and in_ci():  # under CI=true the browser test may not be skipped
        pytest.fail(missing, pytrace=False)
    if missing:
        pytest.skip(missing)
    user_data = tempfile.mkdtemp(prefix="jaxtalk-chromium-")
    with playwright.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(user_data, executable_path=CHROMIUM, headless=True,
                                                        args=CHROMIUM_ARGS, viewport={"width": 1280,
                                                                                      "height": 900})
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(user_data, ignore_errors=True)


def _open(browser, url):
    page = browser.new_page()
    page.goto(url)
    page.wait_for_selector("#svp-generate", timeout=60_000)
    return page


def _upload(page, files, photo, audio):
    page.locator("#svp-image input[type=file]").set_input_files(str(photo))
    page.locator("#svp-audio input[type=file]").set_input_files(str(audio))
    page.wait_for_selector("#svp-face img", timeout=60_000)


PROGRESS_WATCH = """() => {
    window.jaxtalkProgress = [];
    new MutationObserver(() => {
        for (const el of document.querySelectorAll('.progress-text, .meta-text, .progress-level-inner')) {
            const t = el.textContent.trim();
            if (t && window.jaxtalkProgress[window.jaxtalkProgress.length - 1] !== t) window.jaxtalkProgress.push(t);
        }
    }).observe(document.body, {childList: true, subtree: true, characterData: true});
}"""


def test_browser_generates_a_video_that_plays_with_sound(server, browser, files, tmp_path):
    """Photo + wav -> Generate -> the video plays, the download has sound; then a photo without a face shows the
    error under the preview. The finished page's screenshot is kept."""
    app, url = server
    page = _open(browser, url)
    _upload(page, files, files["photo"], files["speech"])
    page.evaluate(PROGRESS_WATCH)
    page.click("#svp-generate")
    page.wait_for_selector("#svp-video video[src]", timeout=600_000)
    played = page.evaluate("""async () => {
        const v = document.querySelector('#svp-video video');
        if (v.readyState < 1) await new Promise(r => v.addEventListener('loadedmetadata', r, {once: true}));
        v.muted = true;
        await v.play();
        await new Promise(r => setTimeout(r, 200));
        return {duration: v.duration, time: v.currentTime, error: v.error && v.error.code};
    }""")
    assert played["error"] is None and played["duration"] > 0 and played["time"] > 0, played
    link = page.locator("#svp-files a[download='jaxtalk.mp4']")
    response = page.request.get(link.get_attribute("href"))
    assert response.ok
    download = tmp_path / "download.mp4"
    download.write_bytes(response.body())
    info = media.probe_video(download)
    assert info["has_audio"] and info["num_frames"] == FRAMES
    assert f"{FRAMES} frames of 32x32" in page.locator("#svp-status").inner_text()
    # the bar showed the sampler's progress: "denoising k/N" with N = steps x context windows
    seen = page.evaluate("window.jaxtalkProgress")
    counts = {tuple(map(int, m)) for t in seen for m in re.findall(r"denoising (\d+)/(\d+)", t)}
    assert counts and {n for _, n in counts} == {2 * _windows_of(app)}, seen
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "serve_svp.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nscreenshot of the finished page: {shot}")
    _no_face_error(page, files)
    page.close()


def _windows_of(app) -> int:
    from jaxtalk.svp.pipeline import SVPPipeline

    return SVPPipeline(app.engine.models("svp"), progress=False).window_plan(FRAMES).num_windows


def _no_face_error(page, files) -> None:
    faces = pytest.importorskip("jaxtalk.faces", reason="jaxtalk.faces (face detection) is not in this build")
    assert hasattr(faces, "overlay")
    page.locator("#svp-image input[type=file]").set_input_files(str(files["noise"]))
    note = page.locator("#svp-face-note")
    note.get_by_text("Error").wait_for(timeout=120_000)
    assert "no face" in note.inner_text().lower() and "Traceback" not in page.content()


@pytest.mark.slow  # a second browser page: run by `make test-all`
def test_browser_shows_the_one_line_error_for_silent_audio(server, browser, files):
    app, url = server
    page = _open(browser, url)
    _upload(page, files, files["photo"], files["silent"])
    page.click("#svp-generate")
    toast = page.get_by_text("audio is silent")
    toast.first.wait_for(timeout=120_000)
    text = toast.first.inner_text()
    assert "silent.wav: audio is silent" in text and "Traceback" not in page.content()
    page.close()


@pytest.mark.slow
def test_gradio_client_style2talker_tab(server, files, tmp_path):
    """The Style2Talker tab through the API (a second model family: slow-marked)."""
    from gradio_client import Client, handle_file

    app, url = server
    client = Client(url, verbose=False, download_files=str(tmp_path))
    video, downloads, status = client.predict(
        handle_file(str(files["photo"])), handle_file(str(files["speech"])), serve.EMOTION_EXAMPLES[0], 0, None,
        0.7, 1, serve.DEFAULT_WEIGHTS, api_name="/style2talker")
    video = video["video"] if isinstance(video, dict) else video
    info = media.probe_video(video)
    assert info["has_audio"] and info["num_frames"] > 0
    assert "style_degree: 0.7" in Path(next(p for p in downloads if p.endswith(".yaml"))).read_text()
    assert "Weights:" in status
