"""`jaxtalk doctor`: what this installation has — versions, devices, the video / audio codecs PyAV brings (no
system ffmpeg is used), the face model, the shipped weights — as lines a user can paste into a bug report."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
import platform
import sys
from pathlib import Path
from typing import Any

PACKAGES = ("jaxtalk", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "av", "gradio", "Pillow")


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _devices() -> dict[str, Any]:
    import jax

    devices = jax.devices()
    kinds: dict[str, int] = {}
    for d in devices:
        kinds[d.device_kind] = kinds.get(d.device_kind, 0) + 1
    return {"backend": jax.default_backend(), "count": len(devices), "processes": jax.process_count(),
            "kinds": kinds}


def _media() -> dict[str, Any]:
    import av

    codecs = av.codecs_available
    return {"pyav": av.__version__, "ffmpeg_libraries": {k: ".".join(map(str, v)) for k, v in
                                                          av.library_versions.items()},
            "h264_encoder": "libx264" in codecs, "aac_encoder": "aac" in codecs,
            "video_codec_used": "libx264" if "libx264" in codecs else "mpeg4"}


def _faces() -> dict[str, Any]:
    try:
        importlib.import_module("jaxtalk.faces")
    except ImportError as e:
        return {"present": False, "note": f"jaxtalk.faces not importable ({e})"}
    models = importlib.resources.files("jaxtalk.faces") / "models"
    files = sorted(p.name for p in models.iterdir()) if models.is_dir() else []
    return {"present": True, "model_files": files}


def _weights() -> dict[str, Any]:
    """The trained weights shipped inside the package, per product (what `generate()` uses without a
    checkpoint), with their size on disk; a product whose folder is missing or incomplete says so."""
    from jaxtalk.style2talker import shipped
    from jaxtalk.svp import loading as svp_loading

    products: dict[str, Any] = {}
    for product, path, complete in (
            ("svp", Path(svp_loading.PACKAGED_WEIGHTS), svp_loading.is_converted_checkpoint),
            ("style2talker", shipped.shipped_dir(), lambda p: p is not None and any(Path(p).iterdir()))):
        if path is None or not Path(path).is_dir():
            products[product] = {"present": False, "note": "not shipped: generate() needs --checkpoint"}
            continue
        size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
        products[product] = {"present": bool(complete(path)), "folder": Path(path).name,
                             "megabytes": round(size / 2**20, 1)}
    found = {k: v["folder"] for k, v in products.items() if v.get("present")}
    return {"present": bool(found), "folders": found, "products": products}


def report() -> dict[str, Any]:
    """Everything `jaxtalk doctor` prints, as a dict (also its --json output)."""
    out: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(),
                           "packages": {p: _version(p) for p in PACKAGES}}
    for key, fn in (("devices", _devices), ("media", _media), ("faces", _faces), ("weights", _weights)):
        try:
            out[key] = fn()
        except Exception as e:  # noqa: BLE001 - a broken part is reported, not raised
            out[key] = {"error": f"{type(e).__name__}: {e}"}
    return out


def format_report(r: dict[str, Any]) -> str:
    lines = [f"python {r['python']} on {r['platform']}"]
    lines += [f"{name}: {version}" for name, version in r["packages"].items()]
    d = r["devices"]
    if "error" in d:
        lines.append(f"devices: error {d['error']}")
    else:
        kinds = ", ".join(f"{n} x {k}" for k, n in d["kinds"].items())
        lines.append(f"devices: {d['count']} on backend {d['backend']} ({kinds}); processes {d['processes']}")
    m = r["media"]
    if "error" in m:
        lines.append(f"media: error {m['error']}")
    else:
        lines.append(f"media: PyAV {m['pyav']} with its own FFmpeg libraries (libavcodec "
                     f"{m['ffmpeg_libraries'].get('libavcodec', '?')}); H.264 encoder "
                     f"{'yes' if m['h264_encoder'] else 'no'}, AAC {'yes' if m['aac_encoder'] else 'no'}; videos "
                     f"are written with {m['video_codec_used']}")
    f = r["faces"]
    lines.append("face model: " + (f"jaxtalk.faces with {', '.join(f['model_files']) or 'no model files'}"
                                   if f.get("present") else f.get("note", f.get("error", "absent"))))
    w = r["weights"]
    if "error" in w:
        lines.append(f"shipped weights: error {w['error']}")
    else:
        lines.append("shipped weights: " + "; ".join(
            f"{k} {v['folder']} ({v['megabytes']:g} MB)" if v.get("present") else f"{k} {v.get('note', 'incomplete')}"
            for k, v in w["products"].items()))
    return "\n".join(lines)
