"""`jaxtalk serve`: a web page (gradio) over the library `generate()` of SVP and Style2Talker.

The page calls the same `jaxtalk.svp.pipeline.generate` / `jaxtalk.style2talker.pipeline.generate` as the CLI;
the only thing it adds is the web side:

* weights: "default weights" is whatever `generate()` uses without a checkpoint (its `resolve_models(None)`);
  the folders given with `--checkpoint` / `--style2talker-checkpoint` can be chosen instead. Each is loaded once
  and kept.
* one generation at a time per device (a lock), at most `queue_size` requests waiting; past that a request is
  answered at once with a "busy" message.
* uploads are size-limited (gradio refuses bigger files; the handlers check again) and live only in a private
  temporary folder (uploads, results and gradio's cache), removed when the server stops.
* faces: the page passes the uploaded photo (and driving video, retarget strategy) to `generate(face="on")`,
  which crops / keypoints / aligns it like `jaxtalk generate` and refuses a photo without a face (one line in the
  page); its `on_note` lines (which face, which keypoint strategy) are shown under the video. The "Detected face"
  picture is a preview only (`face_preview`: `jaxtalk.faces.analyze` + `overlay`).
* bad input (silent or corrupt audio, too long, a photo without a face in the preview, ...) shows the library's
  one-line error in the page; an internal failure shows one line too and the traceback goes to the server log
  only.
* progress: `generate(on_progress=...)` reports every context window of every sampler step (SVP) or every frame
  batch (Style2Talker); the page's progress bar follows it.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import dataclasses
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxtalk.faces.retargeting import STRATEGIES as RETARGET_STRATEGIES

log = logging.getLogger("jaxtalk.serve")

DEFAULT_WEIGHTS = "default weights"
EMOTION_EXAMPLES = (
    "She is happy, pulling up the lip corners and raising the cheeks.",
    "He is angry, lowering the brows and pressing the lips together.",
    "She is sad, with the inner brows raised and the lip corners pulled down.",
    "He is surprised, raising the brows and opening the mouth wide.",
    "She talks calmly with a neutral face.",
)
STAGE_NAMES = {"prepare": "preparing (reference, audio, style)", "denoise": "denoising",
               "decode": "decoding frames", "render": "rendering frames"}


class BusyError(RuntimeError):
    """The bounded queue is full."""


class InputError(ValueError):
    """An upload the page refuses before calling the library (too big, too long, missing)."""


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """What `jaxtalk serve` is started with (see `add_arguments`)."""

    svp_checkpoints: tuple[str, ...] = ()
    style2talker_checkpoints: tuple[str, ...] = ()
    svp_config: str | None = None
    style2talker_config: str | None = None
    svp_overrides: tuple[str, ...] = ()
    style2talker_overrides: tuple[str, ...] = ()
    devices: int | None = None
    max_upload_mb: float = 20.0
    max_audio_seconds: float = 30.0
    queue_size: int = 4
    workdir: str | None = None


# ------------------------------------------------------------------------------------------------ the engine


def _bad_input_types() -> tuple[type[BaseException], ...]:
    """Errors that mean "this input cannot be used": shown as they are (they are one line by contract)."""
    from jaxtalk.config import ConfigError
    from jaxtalk.data.media import MediaError
    from jaxtalk.interop import CheckpointError

    return (InputError, MediaError, ConfigError, CheckpointError, ValueError, FileNotFoundError)


class Engine:
    """Everything the page does, without gradio: model cache, admission (one generation at a time, a bounded
    wait), upload checks, the calls to `generate()`, the private temporary folder. Tests drive it directly too."""

    def __init__(self, options: ServeOptions = ServeOptions()):
        self.options = options
        root = Path(options.workdir) if options.workdir else None
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix="jaxtalk-serve-", dir=root))
        self.uploads = self.workdir / "uploads"
        self.results = self.workdir / "results"
        self.uploads.mkdir()
        self.results.mkdir()
        self._device = threading.Lock()  # one generation at a time on this process's devices
        self._count = threading.Lock()
        self._admitted = 0  # running + waiting
        self._models: dict[tuple[str, str], Any] = {}
        self._models_lock = threading.Lock()

    # -- lifetime
    def close(self) -> None:
        """Remove the temporary folder (uploads, results, gradio's cache)."""
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- admission
    @contextlib.contextmanager
    def admit(self, on_wait: Callable[[int], None] | None = None) -> Iterator[None]:
        """Run the body alone on the device. At most 1 + `queue_size` requests are admitted (one running, the
        rest waiting); one more raises BusyError at once."""
        with self._count:
            ahead = self._admitted
            if ahead > self.options.queue_size:
                raise BusyError(f"busy: {ahead} generations are running or waiting (the queue holds "
                                f"{self.options.queue_size}); try again in a minute")
            self._admitted += 1
        try:
            if ahead and on_wait is not None:
                on_wait(ahead)
            with self._device:
                yield
        finally:
            with self._count:
                self._admitted -= 1

    @property
    def admitted(self) -> int:
        return self._admitted

    # -- weights
    def checkpoint_choices(self, system: str) -> list[str]:
        extra = self.options.svp_checkpoints if system == "svp" else self.options.style2talker_checkpoints
        return [DEFAULT_WEIGHTS, *extra]

    def _checkpoint(self, system: str, choice: str | None) -> str | None:
        choice = choice or DEFAULT_WEIGHTS
        if choice == DEFAULT_WEIGHTS:
            return None
        if choice not in self.checkpoint_choices(system):
            raise InputError(f"weights {choice!r} are not offered by this server; choose one of "
                             f"{self.checkpoint_choices(system)}")
        return choice

    def models(self, system: str, choice: str | None = None) -> Any:
        """The bundle for `system` and a weights choice, loaded once through the library's `resolve_models`."""
        ckpt = self._checkpoint(system, choice)
        key = (system, ckpt or "")
        with self._models_lock:
            if key not in self._models:
                o = self.options
                if system == "svp":
                    from jaxtalk.svp.pipeline import resolve_models

                    self._models[key] = resolve_models(ckpt, config=o.svp_config, overrides=o.svp_overrides,
                                                       devices=o.devices)
                else:
                    from jaxtalk.style2talker.pipeline import resolve_models

                    self._models[key] = resolve_models(ckpt, config=o.style2talker_config,
                                                       overrides=o.style2talker_overrides)
            return self._models[key]

    # -- uploads
    def check_upload(self, path: str | os.PathLike | None, what: str, required: bool = True) -> Path | None:
        """An uploaded file's path, after the size limit; None for an optional missing upload."""
        if path is None or str(path) == "":
            if required:
                raise InputError(f"no {what} given; upload one")
            return None
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{what}: the upload did not arrive; upload it again")
        size = p.stat().st_size / 2**20
        if size > self.options.max_upload_mb:
            raise InputError(f"{what} is {size:.1f} MB; this server takes files up to "
                             f"{self.options.max_upload_mb:g} MB")
        return p

    def load_audio(self, path: Path) -> np.ndarray:
        """16 kHz mono through the library (silent / corrupt audio raise its MediaError), length-limited."""
        from jaxtalk.data import media

        audio = media.load_audio(path)
        seconds = audio.shape[0] / media.SAMPLE_RATE
        if seconds > self.options.max_audio_seconds:
            raise InputError(f"{path.name}: audio is {seconds:.1f} s long; this server generates up to "
                             f"{self.options.max_audio_seconds:g} s, cut it shorter")
        return audio

    def new_result_path(self) -> Path:
        d = self.results / uuid.uuid4().hex
        d.mkdir()
        return d / "jaxtalk.mp4"

    # -- generation
    def generate_svp(self, image: Any, audio: Any = None, *, driving: Any = None, styles: Sequence[Any] = (),
                     style_mix: float = 0.5, steps: int | None = None, guidance: float | None = None,
                     seed: int | None = None, resolution: int | None = None, retarget: str = "fix_face",
                     weights: str | None = None, on_progress: Callable[[str, int, int], None] | None = None,
                     on_wait: Callable[[int], None] | None = None) -> dict[str, Any]:
        """SVP through `jaxtalk.svp.pipeline.generate`; returns its outputs plus 'notes' and 'seconds'."""
        from jaxtalk.svp import pipeline

        image_path = self.check_upload(image, "photo")
        audio_path = self.check_upload(audio, "audio", required=False)
        driving_path = self.check_upload(driving, "driving video", required=False)
        if audio_path is None and driving_path is None:
            raise InputError("no audio given; upload or record speech, or give a driving video with sound")
        self.load_audio(audio_path if audio_path is not None else driving_path)  # the length limit
        style_paths = [self.check_upload(s, "style clip") for s in styles if s]
        if len(style_paths) > 2:
            raise InputError("give one style clip, or two to mix with the slider")
        if retarget not in RETARGET_STRATEGIES:
            raise InputError(f"retarget strategy {retarget!r}: choose one of {', '.join(RETARGET_STRATEGIES)}")
        notes: list[str] = []
        if driving_path is None and retarget != "fix_face":  # the dropdown's choice only applies to a driving video
            notes.append(f"Retarget strategy {retarget} needs a driving video; the photo's keypoints are held still.")
            retarget = "fix_face"
        overrides = []
        if guidance is not None:
            overrides.append(f"guidance.scale={float(guidance)}")
        if resolution:
            overrides += [f"video.height={int(resolution)}", f"video.width={int(resolution)}"]
        with self.admit(on_wait):  # face analysis (inside generate) runs on the device too
            models = self.models("svp", weights)
            t0 = time.perf_counter()
            out = pipeline.generate(image_path, audio_path, self.new_result_path(), style=style_paths or None,
                                    style_mix=style_mix, driving=driving_path, face="on", retarget=retarget,
                                    overrides=overrides, seed=seed, steps=steps, models=models, progress=False,
                                    on_progress=on_progress, on_note=notes.append)
        return {**out, "notes": [page_note(n) for n in notes], "seconds": time.perf_counter() - t0}

    def generate_style2talker(self, image: Any, audio: Any, emotion: str, *, style: Any = None,
                              style_index: int | None = None, intensity: float | None = None,
                              seed: int | None = None, weights: str | None = None,
                              on_progress: Callable[[str, int, int], None] | None = None,
                              on_wait: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Style2Talker through `jaxtalk.style2talker.pipeline.generate` (art style: an uploaded .npy W+ code, or
        an index into the weights' style bank); `intensity` is VToonify's style degree d_s in [0, 1]."""
        from jaxtalk.style2talker import pipeline

        image_path = self.check_upload(image, "photo")
        audio_path = self.check_upload(audio, "audio")
        style_path = self.check_upload(style, "art style code", required=False)
        self.load_audio(audio_path)  # the length limit
        notes: list[str] = []
        overrides = [] if intensity is None else [f"inference.style_degree={float(intensity)}"]
        art = style_path if style_path is not None else (None if style_index is None else int(style_index))
        with self.admit(on_wait):
            models = self.models("style2talker", weights)
            t0 = time.perf_counter()
            out = pipeline.generate(image_path, audio_path, emotion, self.new_result_path(), style=art, face="on",
                                    overrides=overrides, seed=seed, models=models, progress=False,
                                    on_progress=on_progress, on_note=notes.append)
        return {**out, "notes": [page_note(n) for n in notes], "seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------------------ faces


def face_preview(image_path: str | os.PathLike | None) -> tuple[np.ndarray | None, str]:
    """The picture shown before generating: the detected face box, landmarks and keypoints drawn on the photo
    (`jaxtalk.faces.analyze` + `overlay`). Analysis only: the generation prepares the face itself, inside
    `generate()`. A photo the library refuses (no face, several faces, unreadable) gives its one-line error under
    the picture."""
    from jaxtalk.data import media

    if not image_path:
        return None, ""
    try:
        image = media.load_image(image_path)
    except media.MediaError as e:
        return None, f"**Error:** {one_line(e, Path(image_path).parent.parent)}"
    from jaxtalk import faces

    try:
        analysis = faces.analyze(image)
    except _bad_input_types() as e:
        return image, f"**Error:** {one_line(e, Path(image_path).parent.parent)}"
    return np.asarray(faces.overlay(image, analysis)), (
        f"Detected face (score {float(analysis.score):.2f}): box in green, landmarks in white, the 8 head "
        "keypoints in their condition colours.")


def page_note(line: str) -> str:
    """One of `generate()`'s `on_note` lines as the page shows it: without the CLI's "note: " prefix and its
    advice in terms of command-line flags, capitalised."""
    line = re.sub(r"\s*\(--[^)]*\)", "", line.strip())
    line = line[len("note: "):] if line.startswith("note: ") else line
    return line[:1].upper() + line[1:]


# ------------------------------------------------------------------------------------------------ the page


def _progress_listener(progress: Any) -> Callable[[str, int, int], None]:
    """`on_progress` for `generate()` that moves gradio's bar. The compiled sampler reports from XLA's callback
    thread, where gradio's per-request context is not set, so the request's context is carried over."""
    ctx = contextvars.copy_context()
    lock = threading.Lock()

    def on_progress(stage: str, done: int, total: int) -> None:
        desc = STAGE_NAMES.get(stage, stage)
        with lock:
            ctx.run(progress, (int(done), int(total)), desc=f"{desc} {done}/{total}")

    return on_progress


def _status(out: dict[str, Any], system: str) -> str:
    result, models = out["result"], out["models"]
    frames = result.frames
    lines = [f"**Done** in {out['seconds']:.1f} s: {frames.shape[0]} frames of {frames.shape[2]}x{frames.shape[1]} "
             f"at {result.fps:g} fps.", f"Weights: {models.source}."]
    if str(models.source).startswith("random"):
        lines.append("These weights are untrained: the video shows what random weights make, not a face.")
    lines += out["notes"]
    return "\n\n".join(lines)


def one_line(error: BaseException, workdir: Path) -> str:
    """The error's message as the page shows it: its first line, with the server's temporary folders cut from
    file paths (the user sees the name of the file they uploaded)."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return re.sub(re.escape(str(workdir)) + r"/[^\s:]*/", "", text)


def _run(handler: Callable[[], dict[str, Any]], system: str, workdir: Path) -> tuple[str, list[str], str]:
    """Call a generation, turning every failure into one line on the page."""
    import gradio as gr

    try:
        out = handler()
    except BusyError as e:
        raise gr.Error(one_line(e, workdir), title="Busy", print_exception=False) from None
    except _bad_input_types() as e:
        raise gr.Error(one_line(e, workdir), title="Cannot use this input", print_exception=False) from None
    except Exception as e:  # noqa: BLE001 - shown as one line, logged in full
        log.error("generation failed:\n%s", traceback.format_exc())
        raise gr.Error(f"internal error ({type(e).__name__}: {one_line(e, workdir)}); "
                       "the server log has the details", title="Internal error", print_exception=False) from None
    return str(out["video"]), [str(out["video"]), str(out["config"])], _status(out, system)


def _resolution_choices(engine: Engine) -> tuple[list[int], int, Any]:
    """Square sizes the preselected SVP config can run (multiples of its latent stride), its own size, and the
    config (for the settings' initial values)."""
    from jaxtalk.svp.pipeline import resolve_config

    o = engine.options
    cfg = resolve_config(o.svp_checkpoints[0] if o.svp_config is None and o.svp_checkpoints else None,
                         o.svp_config, o.svp_overrides)
    own = int(cfg.video.height)
    stride = cfg.vae_scale_factor * 2 ** (len(cfg.unet.unet.block_out_channels) - 1)
    sizes = sorted({own, *[s for s in (64, 128, 256, 384, 512) if s % stride == 0]})
    return sizes, own, cfg


def build_app(engine: Engine) -> Any:
    """The gradio Blocks: an SVP tab and a Style2Talker tab, both over the library `generate()`."""
    import gradio as gr

    o = engine.options
    sizes, own_size, svp_cfg = _resolution_choices(engine)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web fonts: works offline
    with gr.Blocks(title="jaxtalk", delete_cache=(600, 3600)) as app:
        gr.Markdown("# jaxtalk\nA talking-head video from a photo and speech. **SVP**: a photo animated by the "
                    "audio, with an optional speaking style. **Style2Talker**: an emotion described in words "
                    f"and an art style. Files up to {o.max_upload_mb:g} MB, speech up to "
                    f"{o.max_audio_seconds:g} s; one video is made at a time.")
        with gr.Tab("SVP", id="svp"):
            with gr.Row():
                with gr.Column():
                    svp_image = gr.Image(type="filepath", sources=["upload", "webcam", "clipboard"],
                                         label="Photo", elem_id="svp-image", height=260)
                    svp_audio = gr.Audio(type="filepath", sources=["upload", "microphone"], label="Speech",
                                         elem_id="svp-audio")
                    with gr.Accordion("Driving video and style", open=False):
                        svp_driving = gr.Video(sources=["upload"], label="Driving video (head motion, and speech "
                                               "when no audio is given)", elem_id="svp-driving")
                        svp_retarget = gr.Dropdown(list(RETARGET_STRATEGIES), value="fix_face",
                                                   label="Retarget strategy (driving video keypoints)")
                        svp_styles = gr.File(file_count="multiple", file_types=[".npz"],
                                             label="Style clip(s) (.npz: expression + audio, or a stored prior)")
                        svp_mix = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Mix (weight of the second "
                                            "style)")
                    with gr.Accordion("Settings", open=False):
                        svp_steps = gr.Slider(1, 50, value=svp_cfg.sampler.steps, step=1, label="Sampler steps")
                        svp_guidance = gr.Slider(1.0, 10.0, value=svp_cfg.guidance.scale, step=0.5,
                                                 label="Guidance scale")
                        svp_seed = gr.Number(value=0, precision=0, label="Seed")
                        svp_resolution = gr.Dropdown(sizes, value=own_size, label="Resolution (pixels)")
                        svp_weights = gr.Dropdown(engine.checkpoint_choices("svp"),
                                                  value=engine.checkpoint_choices("svp")[min(1, len(
                                                      o.svp_checkpoints))], label="Weights")
                    svp_button = gr.Button("Generate", variant="primary", elem_id="svp-generate")
                with gr.Column():
                    svp_face = gr.Image(label="Detected face", interactive=False, elem_id="svp-face", height=260)
                    svp_face_note = gr.Markdown(elem_id="svp-face-note")
                    svp_video = gr.Video(label="Result", interactive=False, elem_id="svp-video",
                                         include_audio=True, height=320)
                    svp_files = gr.File(label="Download (mp4 + resolved config)", elem_id="svp-files")
                    svp_status = gr.Markdown(elem_id="svp-status")
        with gr.Tab("Style2Talker", id="style2talker"):
            with gr.Row():
                with gr.Column():
                    s2t_image = gr.Image(type="filepath", sources=["upload", "webcam", "clipboard"],
                                         label="Photo", elem_id="s2t-image", height=260)
                    s2t_audio = gr.Audio(type="filepath", sources=["upload", "microphone"], label="Speech",
                                         elem_id="s2t-audio")
                    s2t_emotion = gr.Textbox(value=EMOTION_EXAMPLES[0], lines=2, label="Emotion (in words)",
                                             elem_id="s2t-emotion")
                    gr.Examples([[e] for e in EMOTION_EXAMPLES], inputs=[s2t_emotion], label="Examples")
                    with gr.Accordion("Art style and settings", open=False):
                        s2t_style_index = gr.Number(value=0, precision=0, minimum=0,
                                                    label="Art style (index in the weights' style bank)")
                        s2t_style = gr.File(file_types=[".npy"], label="or an art style code (.npy W+)")
                        s2t_intensity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Style intensity "
                                                  "(VToonify style degree)")
                        s2t_seed = gr.Number(value=0, precision=0, label="Seed")
                        s2t_weights = gr.Dropdown(engine.checkpoint_choices("style2talker"),
                                                  value=engine.checkpoint_choices("style2talker")[min(1, len(
                                                      o.style2talker_checkpoints))], label="Weights")
                    s2t_button = gr.Button("Generate", variant="primary", elem_id="s2t-generate")
                with gr.Column():
                    s2t_face = gr.Image(label="Detected face", interactive=False, elem_id="s2t-face", height=260)
                    s2t_face_note = gr.Markdown(elem_id="s2t-face-note")
                    s2t_video = gr.Video(label="Result", interactive=False, elem_id="s2t-video",
                                         include_audio=True, height=320)
                    s2t_files = gr.File(label="Download (mp4 + resolved config)", elem_id="s2t-files")
                    s2t_status = gr.Markdown(elem_id="s2t-status")

        def svp(image, audio, driving, styles, mix, steps, guidance, seed, resolution, retarget, weights,
                progress=gr.Progress()):  # noqa: B008 - gradio injects the tracker
            on_progress = _progress_listener(progress)
            paths = [getattr(s, "name", s) for s in (styles or [])]
            return _run(lambda: engine.generate_svp(
                image, audio, driving=driving, styles=paths, style_mix=float(mix), steps=_int(steps),
                guidance=None if guidance is None else float(guidance), seed=_int(seed),
                resolution=_int(resolution), retarget=retarget, weights=weights, on_progress=on_progress,
                on_wait=lambda n: on_progress("waiting for the device", 0, n)), "svp", engine.workdir)

        def style2talker(image, audio, emotion, style_index, style, intensity, seed, weights,
                         progress=gr.Progress()):  # noqa: B008 - gradio injects the tracker
            on_progress = _progress_listener(progress)
            return _run(lambda: engine.generate_style2talker(
                image, audio, emotion, style=getattr(style, "name", style), style_index=_int(style_index),
                intensity=float(intensity), seed=_int(seed), weights=weights, on_progress=on_progress,
                on_wait=lambda n: on_progress("waiting for the device", 0, n)), "style2talker",
                        engine.workdir)

        limit = o.queue_size + 1  # the engine admits and answers "busy"; gradio's own queue is only a backstop
        svp_button.click(svp, [svp_image, svp_audio, svp_driving, svp_styles, svp_mix, svp_steps, svp_guidance,
                               svp_seed, svp_resolution, svp_retarget, svp_weights],
                         [svp_video, svp_files, svp_status], api_name="svp", concurrency_limit=limit,
                         concurrency_id="generate")
        s2t_button.click(style2talker, [s2t_image, s2t_audio, s2t_emotion, s2t_style_index, s2t_style,
                                        s2t_intensity, s2t_seed, s2t_weights],
                         [s2t_video, s2t_files, s2t_status], api_name="style2talker", concurrency_limit=limit,
                         concurrency_id="generate")
        svp_image.change(face_preview, [svp_image], [svp_face, svp_face_note], api_name="svp_face")
        s2t_image.change(face_preview, [s2t_image], [s2t_face, s2t_face_note], api_name="style2talker_face")
    app.queue(max_size=4 * limit)
    app.jaxtalk_theme = theme
    return app


def _int(value: Any) -> int | None:
    return None if value is None or value == "" else int(value)


# ------------------------------------------------------------------------------------------------ launching


@contextlib.contextmanager
def running(options: ServeOptions, host: str = "127.0.0.1", port: int = 7860) -> Iterator[tuple[Any, str]]:
    """Start the page in this process (in the background), yield (app, url), stop it and remove its temporary
    folder. Uploads and gradio's cache go to that folder (GRADIO_TEMP_DIR, restored afterwards)."""
    engine = Engine(options)
    saved = {k: os.environ.get(k) for k in ("GRADIO_TEMP_DIR", "GRADIO_ANALYTICS_ENABLED")}
    os.environ["GRADIO_TEMP_DIR"] = str(engine.uploads)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    app = None
    try:
        app = build_app(engine)
        app.engine = engine
        _, url, _ = app.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
                               max_file_size=f"{options.max_upload_mb:g}mb", footer_links=["api"],
                               theme=app.jaxtalk_theme, show_error=False)
        yield app, url
    finally:
        if app is not None:
            app.close()
        engine.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--checkpoint", action="append", default=[], help="SVP checkpoint folder the page offers "
                   "besides the default weights (repeatable; the first is preselected)")
    p.add_argument("--style2talker-checkpoint", action="append", default=[],
                   help="Style2Talker checkpoint folder offered besides the default weights (repeatable)")
    p.add_argument("--config", help="SVP preset or YAML (default: what generate uses)")
    p.add_argument("--style2talker-config", help="Style2Talker preset or YAML (default: what generate uses)")
    p.add_argument("--devices", type=int, help="SVP: use the first N devices (default all)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload accepted (MB)")
    p.add_argument("--max-audio-seconds", type=float, default=30.0, help="longest speech accepted (s)")
    p.add_argument("--queue-size", type=int, default=4, help="requests that may wait while one generates; "
                   "more are told the server is busy")


def options_from(args: argparse.Namespace) -> ServeOptions:
    if args.queue_size < 0 or args.max_upload_mb <= 0 or args.max_audio_seconds <= 0:
        raise ValueError("--queue-size must be >= 0 and --max-upload-mb / --max-audio-seconds positive")
    for c in [*args.checkpoint, *args.style2talker_checkpoint]:
        if not Path(c).is_dir():
            raise FileNotFoundError(f"--checkpoint {c}: folder not found")
    return ServeOptions(svp_checkpoints=tuple(args.checkpoint),
                        style2talker_checkpoints=tuple(args.style2talker_checkpoint), svp_config=args.config,
                        style2talker_config=args.style2talker_config, devices=args.devices,
                        max_upload_mb=args.max_upload_mb, max_audio_seconds=args.max_audio_seconds,
                        queue_size=args.queue_size)


def serve(args: argparse.Namespace) -> int:
    """`jaxtalk serve`: run until interrupted."""
    import signal

    options = options_from(args)

    def stop(signum: int, frame: Any) -> None:  # SIGTERM (a service manager, `kill`) stops like Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with running(options, args.host, args.port) as (app, url):
            print(f"jaxtalk serve: {url} (Ctrl-C stops; uploads and results live in {app.engine.workdir}, removed "
                  "on exit)", flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
