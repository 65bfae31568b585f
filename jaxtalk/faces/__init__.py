"""Faces in real photos and videos: detection, landmarks, head pose and per-system input preparation.

Library API (the CLI's `prepare`, `prepare-dataset` and `generate`, and the web demo, all call these):

- `analyze(image, face_index=None, min_score=0.5) -> FaceAnalysis`: box, 468 landmarks, Head-Kps, pose.
- `prepare_svp(image, audio=None, driving_video=None, retarget_strategy=None, size=512) -> Prepared`.
- `prepare_style2talker(image, audio=None, driving_video=None, size=256) -> Prepared`.
- `overlay(image, analysis) -> uint8 image` with the box, landmarks and keypoints drawn.
- `paste_back(original, frame, matrix)`: a generated crop written back into the original picture, feathered.
- `write_bundle(prepared, out_dir)` / `read_bundle(dir)`: the folder `jaxtalk prepare` writes.

Errors: `FaceError` (no face, several faces without `face_index`, unusable image) and `jaxtalk.data.media.MediaError`
(unreadable / silent / clipped / too short audio, unreadable video), both ValueError with a one-line message.
"""

from jaxtalk.faces.analysis import FaceAnalysis, FaceError, FaceTrack, analyze, track_faces
from jaxtalk.faces.geometry import paste_back
from jaxtalk.faces.prepare import (
    Prepared,
    is_bundle,
    load_speech,
    overlay,
    prepare_style2talker,
    prepare_svp,
    read_bundle,
    write_bundle,
)
from jaxtalk.faces.retargeting import STRATEGIES as RETARGET_STRATEGIES
from jaxtalk.faces.retargeting import retarget

__all__ = ["FaceAnalysis", "FaceError", "FaceTrack", "Prepared", "RETARGET_STRATEGIES", "analyze", "is_bundle",
           "load_speech", "overlay", "paste_back", "prepare_style2talker", "prepare_svp", "read_bundle", "retarget",
           "track_faces", "write_bundle"]
