"""Clip records, the synthetic talking-face generator, grain pipelines and media I/O.

Submodules: `facs` (controls, expression basis, action units, emotion texts), `speech` (formant synthesis),
`render` (numpy rasteriser), `synthetic` (identities and clips), `kps` (Head-Kps / V-Kps images), `records`
(ClipRecord, .npz + index.json), `pipeline` (grain MapDataset windows), `media` (audio / image / mp4 I/O),
`demo` (the embedded demo). Import them directly, e.g. `from jaxtalk.data import synthetic`.
"""
