"""TensorBoard scalars without TensorFlow: the event-file format written and read with the standard library.

    writer = ScalarWriter(run_dir)            # events.out.tfevents.<time>.<host>.<pid>.jaxtalk in run_dir
    writer.add_scalars(step, {"loss": 0.12, "samples_per_sec": 48.0})
    writer.close()
    read_scalars(run_dir)  # {"loss": [(step, value), ...], ...}

An event file is a TFRecord stream (per record: uint64 length, masked CRC-32C of the length, the bytes, masked
CRC-32C of the bytes) of `tensorflow.Event` protobuf messages; the first carries `file_version: "brain.Event:2"`,
then one `Event{wall_time, step, summary{value{tag, simple_value}}}` per logged step. `tensorboard --logdir
outputs/train` shows every run folder below it. The protobuf fields are encoded by hand (a few varints and
fixed-width numbers), so writing scalars needs neither tensorflow nor tensorboard nor tensorboardX.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

FILE_VERSION = "brain.Event:2"
EVENTS_MARKER = "tfevents"


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # Castagnoli polynomial, reflected
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of TFRecord files."""
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The CRC as TFRecord stores it (rotated right by 15 bits plus a constant)."""
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ------------------------------------------------------------------------------------------------ protobuf


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 two's complement, as protobuf encodes negative numbers
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _field(number, 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: int, *, file_version: str | None = None,
                 scalars: Mapping[str, float] | None = None) -> bytes:
    """One serialized `Event`: wall_time (field 1, double), step (2, int64), then file_version (3) or
    summary (5) with one `Value{tag (1), simple_value (2, float)}` per scalar."""
    out = _field(1, 1) + struct.pack("<d", wall_time) + _field(2, 0) + _varint(int(step))
    if file_version is not None:
        out += _bytes_field(3, file_version.encode())
    if scalars:
        values = b"".join(_bytes_field(1, _bytes_field(1, str(tag).encode()) + _field(2, 5)
                                       + struct.pack("<f", float(v))) for tag, v in scalars.items())
        out += _bytes_field(5, values)
    return out


def record(payload: bytes) -> bytes:
    """`payload` framed as one TFRecord."""
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", masked_crc32c(length)) + payload + struct.pack("<I", masked_crc32c(payload))


# ------------------------------------------------------------------------------------------------ writing


class ScalarWriter:
    """Appends scalar events to a new event file in `logdir` (flushed after every step, so a killed run keeps
    what it logged; a resumed run adds a second file, which TensorBoard merges)."""

    def __init__(self, logdir: str | os.PathLike):
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.{EVENTS_MARKER}.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.jaxtalk"
        self.path = self.logdir / name
        self._file = open(self.path, "ab")
        self._write(encode_event(time.time(), 0, file_version=FILE_VERSION))

    def _write(self, payload: bytes) -> None:
        self._file.write(record(payload))
        self._file.flush()

    def add_scalars(self, step: int, scalars: Mapping[str, float], wall_time: float | None = None) -> None:
        """One event holding every scalar of a step (non-numbers are left out)."""
        numbers = {k: float(v) for k, v in scalars.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        if numbers:
            self._write(encode_event(time.time() if wall_time is None else wall_time, step, scalars=numbers))

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> ScalarWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------ reading


class EventFileError(ValueError):
    """An event file that is not a TFRecord stream of Event messages (or whose checksums do not match)."""


def read_records(path: str | os.PathLike) -> Iterator[bytes]:
    """The payloads of a TFRecord file, checksums verified; a truncated last record (a run killed mid-write)
    ends the stream."""
    data = Path(path).read_bytes()
    pos = 0
    while pos + 12 <= len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if crc != masked_crc32c(header):
            raise EventFileError(f"{path}: record at byte {pos}: length checksum mismatch (not an event file?)")
        end = pos + 12 + length + 4
        if end > len(data):
            return
        payload = data[pos + 12:pos + 12 + length]
        if struct.unpack("<I", data[end - 4:end])[0] != masked_crc32c(payload):
            raise EventFileError(f"{path}: record at byte {pos}: data checksum mismatch")
        yield payload
        pos = end


def _fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of a protobuf message; varints as int, fixed64/32 as bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise EventFileError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise EventFileError("truncated protobuf varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def decode_event(payload: bytes) -> tuple[float, int, dict[str, float]]:
    """(wall_time, step, {tag: simple_value}) of one Event; values other than simple scalars are skipped."""
    wall, step, scalars = 0.0, 0, {}
    for number, _, value in _fields(payload):
        if number == 1:
            wall = struct.unpack("<d", value)[0]
        elif number == 2:
            step = value - (1 << 64) if value >= 1 << 63 else value
        elif number == 5:
            for vn, _, v in _fields(value):
                if vn != 1:
                    continue
                tag, simple = None, None
                for fn, wire, x in _fields(v):
                    if fn == 1:
                        tag = x.decode()
                    elif fn == 2 and wire == 5:
                        simple = struct.unpack("<f", x)[0]
                if tag is not None and simple is not None:
                    scalars[tag] = simple
    return wall, step, scalars


def event_files(run: str | os.PathLike) -> list[Path]:
    """The event files of a run folder (oldest first), or the file itself."""
    path = Path(run)
    if path.is_file():
        return [path]
    return sorted((p for p in path.glob(f"*{EVENTS_MARKER}*") if p.is_file()), key=lambda p: p.name)


def read_scalars(run: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a run's event files: {tag: [(step, value), ...]} in step order (a step written twice, by a
    resumed run, keeps its last value)."""
    files = event_files(run)
    if not files:
        raise FileNotFoundError(f"{run}: no TensorBoard event files (*{EVENTS_MARKER}*)")
    series: dict[str, dict[int, float]] = {}
    for path in files:
        for payload in read_records(path):
            _, step, scalars = decode_event(payload)
            for tag, value in scalars.items():
                series.setdefault(tag, {})[step] = value
    return {tag: sorted(points.items()) for tag, points in series.items()}
