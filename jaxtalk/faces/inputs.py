"""What both products' `generate()` do with what a user hands them, before any model is built: a raw photo (found,
cropped and keypointed / aligned by `jaxtalk.faces`), a folder written by `jaxtalk prepare`, or an array; speech
from a file, an array or a driving video's sound; and after sampling, the generated face pasted back into the
original photo. The CLI, the web page and library callers all reach these through `generate()`.

`face`: "auto" (crop and keypoints when a face is found, else the photo as given, with a note), "on" (no face is
an error), "off" (the photo as given). `on_note(line)` receives the human-readable lines (which face, which
keypoint strategy, a fallback); `paste` is `(original photo, crop matrix, crop size)` or None.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from jaxtalk.data import media

Paste = tuple[np.ndarray, np.ndarray, int]
Note = Callable[[str], None]
FACE_MODES = ("auto", "on", "off")


def _note(on_note: Note | None, line: str) -> None:
    if on_note is not None:
        on_note(line)


def _check_face_mode(face: str) -> None:
    if face not in FACE_MODES:
        raise ValueError(f"face={face!r}: choose one of {', '.join(FACE_MODES)}")


def write_debug(debug_dir: str | os.PathLike | None, prep: Any) -> None:
    """overlay.png (detections on the photo) and crop_overlay.png (keypoints on the crop) in `debug_dir`. In a
    multi-process run (`jaxtalk.distributed`) process 0 alone writes them: every process prepares the same face
    from the same inputs, so the others have nothing different to show."""
    from jaxtalk import distributed

    if debug_dir and distributed.is_main():
        from PIL import Image

        Path(debug_dir).mkdir(parents=True, exist_ok=True)
        Image.fromarray(prep.overlay()).save(Path(debug_dir) / "overlay.png")
        Image.fromarray(prep.crop_overlay()).save(Path(debug_dir) / "crop_overlay.png")


def _bundle(image: Any, system: str) -> dict[str, Any] | None:
    """A `jaxtalk prepare` folder's contents when `image` names one (prepared for `system`), else None."""
    from jaxtalk.faces import prepare

    if isinstance(image, np.ndarray) or not prepare.is_bundle(image):
        return None
    bundle = prepare.read_bundle(image)
    made_for = bundle["meta"].get("system")
    if made_for != system:
        raise ValueError(f"--image {image}: prepared for {made_for}; use --system {made_for} or run jaxtalk "
                         f"prepare --system {system}")
    return bundle


def _bundle_paste(bundle: dict[str, Any]) -> Paste | None:
    if bundle["original"] is None:
        return None
    return bundle["original"], np.asarray(bundle["meta"]["matrix"]), int(bundle["meta"]["crop_size"])


def svp_inputs(image: Any, audio: Any = None, *, kps: Any = None, driving: Any = None, face: str = "auto",
               retarget: str | None = None, face_index: int | None = None, min_face_score: float = 0.5,
               debug_dir: str | os.PathLike | None = None, on_note: Note | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, Paste | None]:
    """(reference image, 16 kHz speech, keypoints or None, paste-back info or None) for SVP.

    `image`: a photo path, a prepared folder or a uint8 array; `audio`: a path, an array, or None for the driving
    video's / prepared folder's sound; `kps`: given keypoints (then no face analysis runs)."""
    from jaxtalk.faces import prepare

    _check_face_mode(face)
    bundle = _bundle(image, "svp")
    if bundle is not None:
        img, paste = bundle["reference"], _bundle_paste(bundle)
        kps = kps if kps is not None else bundle["kps"]
    else:
        img = media.to_rgb_uint8(image) if isinstance(image, np.ndarray) else media.load_image(image)
        paste = None
    if audio is not None:
        wav = prepare.load_speech(audio)
    elif bundle is not None and bundle["audio"] is not None:
        wav = bundle["audio"]
    elif driving is not None:
        wav = prepare.speech_for(None, driving)
    else:
        raise ValueError("--audio is required (speech file), unless --driving gives a video with sound or --image "
                         "is a prepared folder with audio.wav")
    if bundle is not None or kps is not None:
        return img, wav, kps, paste
    if face == "off":
        if driving is not None:
            raise ValueError("--driving: needs face analysis; drop --face off")
        return img, wav, None, None
    from jaxtalk.faces import FaceError

    try:
        prep = prepare.prepare_svp(img, audio=wav, driving_video=driving, retarget_strategy=retarget,
                                   face_index=face_index, min_score=min_face_score)
    except FaceError as e:
        if face == "on" or driving is not None:
            raise
        _note(on_note, f"note: {e}; using the image as given, without keypoints (--face on makes this an error)")
        return img, wav, None, None
    box = ", ".join(f"{v:.0f}" for v in prep.analysis.box)
    _note(on_note, f"face: box [{box}] score {prep.analysis.score:.2f}, crop {prep.reference.shape[0]} px, "
                   f"keypoints {prep.meta['retarget']}")
    write_debug(debug_dir, prep)
    return prep.reference, wav, prep.kps, (prep.image, prep.matrix, prep.reference.shape[0])


def style2talker_inputs(image: Any, audio: Any = None, *, pose: Any = None, identity_expression: Any = None,
                        driving: Any = None, face: str = "auto", face_index: int | None = None,
                        min_face_score: float = 0.5, debug_dir: str | os.PathLike | None = None,
                        on_note: Note | None = None) -> tuple[Any, Any, Any, Any, Paste | None, Any]:
    """(identity image, speech, pose, identity expression, paste-back info, parsing map or None) for
    Style2Talker: a prepared folder, or a photo aligned the FFHQ way for pSp (with its landmark-region parsing
    map). Paths pass through unread where `generate()` reads them itself."""
    from jaxtalk.faces import prepare

    _check_face_mode(face)
    bundle = _bundle(image, "style2talker")
    if bundle is not None:
        audio = audio if audio is not None else bundle["audio"]
        if audio is None:
            raise ValueError("--audio is required: the prepared folder has no audio.wav")
        return (bundle["reference"], audio, pose if pose is not None else bundle["pose"],
                identity_expression if identity_expression is not None else bundle.get("identity_exp"),
                _bundle_paste(bundle), bundle.get("parsing"))
    if audio is None and driving is None:
        raise ValueError("--audio is required (speech file), unless --driving gives a video with sound")
    if face == "off":
        return (image, audio if audio is not None else prepare.speech_for(None, driving), pose, identity_expression,
                None, None)
    from jaxtalk.faces import FaceError

    try:
        prep = prepare.prepare_style2talker(image, audio=audio, driving_video=driving, face_index=face_index,
                                            min_score=min_face_score)
    except FaceError as e:
        if face == "on" or driving is not None:
            raise
        _note(on_note, f"note: {e}; using the image as given, not aligned (--face on makes this an error)")
        return image, audio, pose, identity_expression, None, None
    _note(on_note, f"face: box [{', '.join(f'{v:.0f}' for v in prep.analysis.box)}] score "
                   f"{prep.analysis.score:.2f}, aligned for pSp; head pose from the "
                   f"{'driving video' if driving is not None else 'photo'}")
    write_debug(debug_dir, prep)
    for line in prep.meta.get("notes", []):
        _note(on_note, f"note: {line}")
    return (prep.reference, prep.audio, pose if pose is not None else prep.pose,
            identity_expression if identity_expression is not None else prep.extras.get("identity_exp"),
            (prep.image, prep.matrix, prep.reference.shape[0]), prep.extras.get("parsing"))


def paste_frames(frames: np.ndarray, paste: Paste) -> np.ndarray:
    """Generated face frames (F, h, w, 3) written back into the original photo (feathered), (F, H, W, 3)."""
    from jaxtalk.faces.geometry import crop_size_matrix, paste_back

    original, matrix, crop_size = paste
    M = crop_size_matrix(matrix, crop_size, frames.shape[1:3])
    return np.stack([paste_back(original, f, M) for f in frames])


def check_paste_back(paste_back: bool, paste: Paste | None) -> None:
    if paste_back and paste is None:
        raise ValueError("--paste-back: needs a raw photo with a detected face (or a prepared folder whose original "
                         "photo still exists); it cannot be used with --kps or --face off")
