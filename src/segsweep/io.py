"""Atomic file writes (an interrupted job never leaves a half-written output behind) and canonical JSON digests."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temp path in the target's folder; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes 0600 files; outputs on a shared cluster file system must be readable by the group.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±inf) as None: JSON has neither, and strict parsers (browsers)
    reject Python's NaN/Infinity tokens. Dicts, lists and tuples are converted recursively (tuples to lists)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _json_default(o):
    # numpy scalars and paths show up in metrics; NaN is written as null by callers that care.
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's content, read in 1 MiB chunks (weights files and data roots are large)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_file(path: str | Path) -> tuple[bytes, int]:
    """(content, st_size at open) of a file: open, fstat, read, close. ``Path.read_bytes`` makes ~7 system
    calls (isatty, seek, buffer set-up); with thousands of small DICOM and contour files per ingest that shows."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size + 1)
        # read on unless that one call provably reached the end: Linux returns at most ~2 GiB per read, and
        # a file that grew since fstat (or /proc files with st_size 0) holds more than st_size
        if len(data) > size or len(data) < size:
            parts = [data]
            while chunk := os.read(fd, 1 << 20):
                parts.append(chunk)
            data = b"".join(parts)
        return data, size
    finally:
        os.close(fd)


def digest(obj: Any, n: int = 12) -> str:
    """Short sha256 of canonical JSON: key order and float formatting do not matter."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


# ------------------------------------------------------------------------------------ identity of typed objects
NEUTRAL = "segsweep_neutral"  # dataclass field metadata key
INLINE = "segsweep_inline"  # dataclass field metadata key: the field's (name, value) pairs are the object's keys


def added_field(neutral: Any) -> Any:
    """A dataclass field added after 0.1.0, with default ``neutral``: the value that reproduces what the
    code did before the field existed. ``identity`` leaves it out while it holds that value, so adding a
    field never changes the id of a finished cell (docs/architecture.md, "Cell ids")."""
    return dataclasses.field(default=neutral, metadata={NEUTRAL: neutral})


def inline_field() -> Any:
    """A dataclass field of sorted ``(name, value)`` pairs, empty by default, whose pairs ``identity`` writes as
    keys of the object itself: settings that had a field each before they were gathered in one field
    (``DataConfig.options``) keep the identity they had then, and an empty field leaves no trace."""
    return dataclasses.field(default=(), metadata={NEUTRAL: (), INLINE: True})


def is_added(f: dataclasses.Field) -> bool:
    """Whether a dataclass field was declared with `added_field`."""
    return NEUTRAL in f.metadata


def is_neutral(f: dataclasses.Field, value: Any) -> bool:
    return NEUTRAL in f.metadata and value == f.metadata[NEUTRAL]


def identity(obj: Any) -> Any:
    """JSON-able form of a (nested) dataclass for hashing: like ``asdict``, minus fields at their neutral value,
    with an ``inline_field``'s pairs as keys of their object."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if is_neutral(f, value):
                continue
            if f.metadata.get(INLINE):
                out.update((k, identity(v)) for k, v in value)
            else:
                out[f.name] = identity(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [identity(x) for x in obj]
    if isinstance(obj, Mapping):
        return {k: identity(v) for k, v in obj.items()}
    return obj
