"""Per-system input preparation from a raw photo (+ speech or a driving video), shared by `jaxtalk prepare`,
`jaxtalk generate`, the Python API and the web demo.

- `prepare_svp`: the V-Express-style square face crop (face box x2, centred, padded by edge replication at the
  borders, resized to `size`), the reference's 8 Head-Kps in crop pixels, and a keypoint track: the reference
  held still (`fix_face`), or a driving video's per-frame track (landmarks per frame, gaps interpolated,
  smoothed, mapped through one fixed crop of the driving video) under a V-Express retarget strategy
  (`jaxtalk.faces.retargeting`).
- `prepare_style2talker`: the FFHQ alignment pSp was trained with (oriented square from the eye centres and mouth
  corners, reflect-padded), head pose (held from the photo, or per frame from a driving video) converted to the
  Deep3DFaceRecon angle convention Style2Talker reads, a face-parsing map from landmark regions (passed to
  Style2Talker as stand-in BiSeNet logits when its weights use one), and the identity's expression: what the
  landmarks can measure (mouth opening and width, smile, eye opening, brow height against MediaPipe's neutral
  canonical face; `meta.json` `expression_measures`, with a note when the mouth is open), while the 64
  Deep3DFaceRecon coefficients stay zeros (the neutral mean face), because they are weights of the BFM
  expression basis and need that basis and a fitting network, which no registry package ships; pass
  `--identity-exp` to `generate` when you have them.
- `write_bundle` / `read_bundle`: the prepared folder (crop PNG, kps.npy, pose.npy, audio.wav, meta.json with
  the original-to-crop matrix and `face_box: [x0, y0, x1, y1]` in original pixels) that `generate` accepts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from jaxtalk.data import media
from jaxtalk.data.kps import draw_head_kps
from jaxtalk.faces import analysis as fa
from jaxtalk.faces import geometry as geo
from jaxtalk.faces.retargeting import STRATEGIES, retarget

BUNDLE_FORMAT = "jaxtalk-prepared"
MIN_SPEECH_SECONDS = 0.12  # 3 frames at 25 fps
MAX_CLIPPED_FRACTION = 0.01
MAX_DRIVING_FRAMES = 3000


def check_speech(audio: np.ndarray, what: str, sample_rate: int = media.SAMPLE_RATE) -> np.ndarray:
    """Refuse speech too short or clipped to use (silence is refused by `media.load_audio`)."""
    seconds = len(audio) / sample_rate
    if seconds < MIN_SPEECH_SECONDS:
        raise media.MediaError(f"{what}: audio is {seconds:.2f} s long; pass at least {MIN_SPEECH_SECONDS} s of "
                               "speech")
    clipped = float(np.mean(np.abs(audio) >= 0.99))
    if clipped > MAX_CLIPPED_FRACTION:
        raise media.MediaError(f"{what}: audio is clipped ({clipped:.1%} of samples at full scale); record again "
                               "at a lower input gain or normalise it below 0 dBFS before clipping")
    return audio


def load_speech(source: Any, what: str = "audio") -> np.ndarray:
    """16 kHz mono float32 speech from a path (any container PyAV reads, or a video's audio track) or an array
    already at 16 kHz; checked for silence, length and clipping."""
    if isinstance(source, np.ndarray):
        audio = np.asarray(source, np.float32).reshape(-1)
        if audio.size == 0 or float(np.abs(audio).max()) < media.SILENCE_PEAK:
            raise media.MediaError(f"{what}: audio is empty or silent; pass a recording with speech")
    else:
        what = str(source)
        audio = media.load_audio(source)
    return check_speech(audio, what)


def load_driving(source: Any, fps: float | None = None) -> tuple[np.ndarray, float, str]:
    """(frames uint8 (F, H, W, 3), fps, name) of a driving video given as a path or an (F, H, W, 3) array."""
    if isinstance(source, np.ndarray):
        if source.ndim != 4 or source.shape[-1] != 3 or len(source) == 0:
            raise ValueError(f"driving video: expected uint8 frames (F, H, W, 3), got shape {source.shape}")
        return source.astype(np.uint8), float(fps or 25.0), "driving video"
    path = Path(source)
    if not path.is_file():
        raise media.MediaError(f"{path}: driving video not found; check the path")
    frames, rate = media.read_video_frames(path)
    if len(frames) > MAX_DRIVING_FRAMES:
        raise media.MediaError(f"{path}: {len(frames)} frames is longer than {MAX_DRIVING_FRAMES}; cut the driving "
                               "video (e.g. ffmpeg -t 60)")
    return frames, rate, str(path)


def has_audio_stream(path: str | os.PathLike) -> bool:
    """Whether a media file has an audio stream (MediaError when it cannot be opened as media at all)."""
    import av

    try:
        with av.open(str(path)) as c:
            return bool(c.streams.audio)
    except (av.FFmpegError, OSError, ValueError) as e:
        raise media.MediaError(f"{path}: cannot be opened as a video ({type(e).__name__}: {e}); re-export it as "
                               "mp4") from None


def speech_for(audio: Any, driving_video: Any) -> np.ndarray | None:
    """Speech from `audio`, else the driving video's sound (a driving video without sound is an error)."""
    if driving_video is not None and not isinstance(driving_video, np.ndarray) and not Path(driving_video).is_file():
        raise media.MediaError(f"{driving_video}: driving video not found; check the path")
    if audio is not None:
        return load_speech(audio)
    if driving_video is None or isinstance(driving_video, np.ndarray):
        return None
    if not has_audio_stream(driving_video):
        raise media.MediaError(f"{driving_video}: the driving video has no audio stream; pass --audio")
    return load_speech(driving_video)


@dataclasses.dataclass
class Prepared:
    """A prepared input. `reference`: uint8 crop (S, S, 3); `kps`: (F, 8, 2) or (8, 2) Head-Kps in crop pixels;
    `pose`: (F, 6) or (6,); `audio`: 16 kHz float32 or None; `matrix`: 2x3 original -> crop; `analysis`: the
    reference photo's FaceAnalysis; `image`: the original photo; `extras`: system-specific arrays (parsing map,
    identity expression); `meta`: what meta.json records."""

    system: str
    reference: np.ndarray
    kps: np.ndarray
    pose: np.ndarray
    audio: np.ndarray | None
    matrix: np.ndarray
    analysis: fa.FaceAnalysis
    image: np.ndarray
    extras: dict[str, np.ndarray]
    meta: dict[str, Any]

    def overlay(self) -> np.ndarray:
        """The original photo with the face box, crop region, landmarks and Head-Kps drawn."""
        return overlay(self.image, self.analysis, self.matrix, self.reference.shape[0])

    def crop_overlay(self) -> np.ndarray:
        """The crop with its first keypoint frame drawn as the Head-Kps condition image over it."""
        kps = self.kps if self.kps.ndim == 2 else self.kps[0]
        cond = draw_head_kps(kps, self.reference.shape[:2])
        return np.where(cond.any(-1, keepdims=True), cond, self.reference)


def overlay(image: np.ndarray, analysis: fa.FaceAnalysis, matrix: np.ndarray | None = None,
            crop_size: int | None = None) -> np.ndarray:
    """`image` with the detected box (green), landmarks (white), Head-Kps (condition colours) and, given the crop
    matrix and size, the crop's outline (yellow)."""
    square = None
    if matrix is not None and crop_size is not None:
        inv = geo.invert_affine(np.asarray(matrix, np.float64))
        corners = geo.apply_affine(inv, np.array([[0, 0], [crop_size, crop_size]], np.float64))
        square = corners.reshape(-1)
    return geo.overlay(image, analysis.box, analysis.landmarks, analysis.head_kps, square)


def _reference(image: Any, face_index: int | None, min_score: float) -> tuple[np.ndarray, fa.FaceAnalysis, str]:
    """(RGB photo, its analysis, source: the photo's absolute path, or 'image' for an array)."""
    what, source = "image", "image"
    if isinstance(image, (str, os.PathLike)):
        what, source = str(image), str(Path(image).resolve())
        image = media.load_image(image)
    image = fa.check_image(image, what)
    return image, fa.analyze(image, face_index=face_index, min_score=min_score, what=what), source


def _driving_track(driving: Any, fps: float | None, size: int, min_score: float, smooth: int, face_index: int | None
                   ) -> tuple[np.ndarray, np.ndarray, float, str, fa.FaceTrack]:
    frames, rate, name = load_driving(driving, fps)
    track = fa.track_faces(frames, min_score=min_score, face_index=face_index, smooth=smooth, what=name)
    # one fixed crop for the whole video (median face box), so head motion inside it is kept
    M, _ = geo.face_crop_matrix(np.median(track.boxes, axis=0), size)
    return geo.apply_affine(M, track.head_kps), track.pose, rate, name, track


def prepare_svp(image: Any, audio: Any = None, driving_video: Any = None, retarget_strategy: str | None = None,
                size: int = 512, face_index: int | None = None, min_score: float = 0.5, smooth: int = 5,
                driving_fps: float | None = None) -> Prepared:
    """SVP / V-Express inputs from a raw photo (path / array), speech (path / 16 kHz array, or the driving
    video's sound when `audio` is None) and an optional driving video (path / frames). `retarget_strategy`:
    one of fix_face, no_retarget, offset_retarget, naive_retarget (default: fix_face without a driving video,
    offset_retarget with one)."""
    strategy = retarget_strategy or ("offset_retarget" if driving_video is not None else "fix_face")
    if strategy not in STRATEGIES:
        raise ValueError(f"--retarget {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if strategy != "fix_face" and driving_video is None:
        raise ValueError(f"--retarget {strategy}: needs a driving video (--driving); without one use fix_face")
    speech = speech_for(audio, driving_video)  # the cheap checks first: bad audio fails before any face work
    image, analysis, what = _reference(image, face_index, min_score)
    M, square = geo.face_crop_matrix(analysis.box, size)
    crop = geo.warp_affine(image, M, (size, size), border="edge")
    ref_kps = geo.apply_affine(M, analysis.head_kps)
    meta: dict[str, Any] = {"retarget": strategy, "fps": None, "driving": None}
    pose: np.ndarray = analysis.pose
    if driving_video is not None:
        track_kps, pose, rate, name, track = _driving_track(driving_video, driving_fps, size, min_score, smooth,
                                                             face_index)
        kps = retarget(ref_kps, track_kps, strategy)
        meta.update(fps=rate, driving=name, driving_frames=int(len(track_kps)),
                    driving_frames_without_face=int((~track.found).sum()))
    else:
        kps = ref_kps
    meta.update(system="svp", crop_size=size, crop_square=[round(float(v), 2) for v in square],
                face_box=[round(float(v), 2) for v in analysis.box], matrix=np.round(M, 6).tolist(),
                image=what, image_size=list(image.shape[:2]), analysis=analysis.to_json())
    return Prepared("svp", crop, kps.astype(np.float32), np.asarray(pose, np.float32), speech, M, analysis, image,
                    {}, meta)


def deep3d_pose(pose: np.ndarray, reference_centre: np.ndarray | None = None) -> np.ndarray:
    """(..., 6) pose in the renderer's convention -> Deep3DFaceRecon's (angles about x, y, z with y up and z
    towards the camera: (-pitch, yaw, -roll)); translation: the face centre's shift from `reference_centre`
    (default none) in Deep3DFaceRecon units for a 224-pixel aligned crop (10 / 1015 per pixel), y up, z 0."""
    pose = np.asarray(pose, np.float32)
    out = np.zeros_like(pose)
    out[..., 0], out[..., 1], out[..., 2] = -pose[..., 0], pose[..., 1], -pose[..., 2]
    if reference_centre is not None:
        shift = pose[..., 3:5] - reference_centre
        out[..., 3] = shift[..., 0] * 224 * 10 / 1015
        out[..., 4] = -shift[..., 1] * 224 * 10 / 1015
    return out


def prepare_style2talker(image: Any, audio: Any = None, driving_video: Any = None, size: int = 256,
                         face_index: int | None = None, min_score: float = 0.5, smooth: int = 5,
                         driving_fps: float | None = None) -> Prepared:
    """Style2Talker inputs: FFHQ-aligned crop (`size`, pSp's 256 by default), head pose (held from the photo, or
    per frame from `driving_video`), a landmark-region parsing map, Head-Kps in the aligned crop, speech, and a
    zero identity expression (see module docstring)."""
    speech = speech_for(audio, driving_video)
    image, analysis, what = _reference(image, face_index, min_score)
    lms = analysis.landmarks
    quad = geo.ffhq_quad(analysis.head_kps[2], analysis.head_kps[3], lms[fa.MOUTH_CORNERS[0], :2],
                         lms[fa.MOUTH_CORNERS[1], :2])
    M = geo.quad_matrix(quad, size)
    aligned = geo.warp_affine(image, M, (size, size), border="reflect")
    crop_lms = geo.apply_affine(M, lms[:, :2])
    meta: dict[str, Any] = {"fps": None, "driving": None}
    if driving_video is not None:
        _, track_pose, rate, name, track = _driving_track(driving_video, driving_fps, size, min_score, smooth,
                                                          face_index)
        pose = deep3d_pose(track_pose, track_pose[0, 3:5])
        meta.update(fps=rate, driving=name, driving_frames=int(len(track_pose)))
    else:
        pose = deep3d_pose(analysis.pose, analysis.pose[3:5])
    extras = {"parsing": geo.parsing_map(crop_lms, (size, size)),
              "identity_exp": np.zeros(64, np.float32)}
    measures = fa.expression_measures(lms, analysis.head_rotation)
    notes = []
    if measures["mouth_open"] > fa.OPEN_MOUTH:
        notes.append(f"the mouth is open in the photo (mouth_open {measures['mouth_open']:.2f}); Style2Talker takes "
                     "the identity's expression as neutral (zeros) unless --identity-exp gives its coefficients, so "
                     "a closed-mouth photo animates more faithfully")
    meta.update(system="style2talker", crop_size=size, quad=np.round(quad, 3).tolist(),
                face_box=[round(float(v), 2) for v in analysis.box], matrix=np.round(M, 6).tolist(),
                image=what, image_size=list(image.shape[:2]), analysis=analysis.to_json(),
                identity_exp="zeros (neutral): 3DMM expression coefficients need the BFM expression basis and a "
                             "fitting network (Deep3DFaceRecon), not shipped",
                expression_measures=measures, notes=notes,
                pose_convention="Deep3DFaceRecon angles (x, y, z), translation approximate (shift only)")
    return Prepared("style2talker", aligned, geo.apply_affine(M, analysis.head_kps), pose, speech, M, analysis,
                    image, extras, meta)


def _save_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(arr)).save(path, format="PNG")


def write_bundle(prepared: Prepared, out_dir: str | os.PathLike, debug_dir: str | os.PathLike | None = None
                 ) -> dict[str, Path]:
    """Write the prepared folder atomically (built in a temporary sibling, renamed at the end; an existing
    non-empty `out_dir` is refused). Files: reference.png, kps.npy, pose.npy, audio.wav (with speech),
    parsing.png / identity_exp.npy (Style2Talker), meta.json. `debug_dir` gets overlay.png and crop_overlay.png."""
    import soundfile

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise media.MediaError(f"--out {out}: exists and is not an empty folder; choose a new folder or delete it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _save_png(tmp / "reference.png", prepared.reference)
        np.save(tmp / "kps.npy", prepared.kps)
        np.save(tmp / "pose.npy", prepared.pose)
        files = ["reference.png", "kps.npy", "pose.npy"]
        if prepared.audio is not None:
            soundfile.write(tmp / "audio.wav", prepared.audio, media.SAMPLE_RATE, format="WAV", subtype="PCM_16")
            files.append("audio.wav")
        if "parsing" in prepared.extras:
            _save_png(tmp / "parsing.png", prepared.extras["parsing"])
            files.append("parsing.png")
        if "identity_exp" in prepared.extras:
            np.save(tmp / "identity_exp.npy", prepared.extras["identity_exp"])
            files.append("identity_exp.npy")
        meta = {"format": BUNDLE_FORMAT, "version": 1, **prepared.meta, "files": files}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    paths = {name.split(".")[0]: out / name for name in [*files, "meta.json"]}
    if debug_dir is not None:
        d = Path(debug_dir)
        d.mkdir(parents=True, exist_ok=True)
        _save_png(d / "overlay.png", prepared.overlay())
        _save_png(d / "crop_overlay.png", prepared.crop_overlay())
        paths.update(overlay=d / "overlay.png", crop_overlay=d / "crop_overlay.png")
    return paths


def is_bundle(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "meta.json").is_file()


def read_bundle(path: str | os.PathLike) -> dict[str, Any]:
    """A prepared folder as {'reference', 'kps', 'pose', 'audio' (or None), 'meta', 'original' (the original
    photo if still readable, else None), plus 'identity_exp' / 'parsing' when present}."""
    p = Path(path)
    try:
        meta = json.loads((p / "meta.json").read_text())
    except (OSError, ValueError) as e:
        raise media.MediaError(f"{p}: meta.json cannot be read ({e}); run jaxtalk prepare again") from None
    if meta.get("format") != BUNDLE_FORMAT:
        raise media.MediaError(f"{p}: not a folder written by jaxtalk prepare (meta.json format "
                               f"{meta.get('format')!r})")
    missing = [f for f in meta.get("files", []) if not (p / f).is_file()]
    if missing:
        raise media.MediaError(f"{p}: prepared files missing ({', '.join(missing)}); run jaxtalk prepare again")
    out: dict[str, Any] = {"meta": meta, "reference": media.load_image(p / "reference.png"),
                           "kps": np.load(p / "kps.npy", allow_pickle=False),
                           "pose": np.load(p / "pose.npy", allow_pickle=False),
                           "audio": media.load_audio(p / "audio.wav") if (p / "audio.wav").is_file() else None}
    if (p / "identity_exp.npy").is_file():
        out["identity_exp"] = np.load(p / "identity_exp.npy", allow_pickle=False)
    if (p / "parsing.png").is_file():
        from PIL import Image

        with Image.open(p / "parsing.png") as im:
            out["parsing"] = np.asarray(im.convert("L"))
    original = meta.get("image")
    out["original"] = media.load_image(original) if original and Path(original).is_file() else None
    return out
