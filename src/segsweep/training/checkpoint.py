"""A cell's checkpoints (``last.pt``, ``best.pt``): written durably, verified on every load.

* **Write** (`save`): ``torch.save`` to a temporary file in the same folder, ``fsync``, rename onto the name,
  ``fsync`` the folder: a killed job, a full disk or a power cut leaves the old file or the new one, never a
  mix. Beside it ``<name>.sha256`` (``sha256sum`` format) holds the SHA-256 of the file. It is written,
  durably, *before* the rename and lists the new file's digest and those the sidecar listed before (the
  file it replaces among them; at most 4 lines), so a crash between the two writes leaves a pair that still
  verifies. Listing the old digests, instead of hashing the old file again, keeps a save to one read.
* **Read** (`load`): the file's SHA-256 must be one the sidecar lists, then ``torch.load`` (weights only)
  must read it. Anything else (a truncated file, a flipped bit, a file of another format) raises
  `CorruptCheckpoint`, a `DataError` naming the file. A file without a sidecar (written by an older segsweep,
  or copied without it) is only checked by ``torch.load``.

What the training loop does with a corrupt one (`segsweep.training.loop`): ``last.pt`` starts the cell
afresh; ``best.pt`` is ignored and rebuilt before the final evaluation, so a cell is never ``failed`` for it.
"""

from __future__ import annotations

import os
from pathlib import Path

from segsweep.errors import DataError
from segsweep.io import atomic_path, sha256_file

SIDECAR_SUFFIX = ".sha256"


class CorruptCheckpoint(DataError):
    """A checkpoint that cannot be used: missing, truncated, altered (digest mismatch) or unreadable."""

    def __init__(self, path: Path, why: str):
        self.path = Path(path)
        super().__init__(f"{path}: {why}")


def sidecar(path: Path) -> Path:
    """``best.pt`` → ``best.pt.sha256``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _fsync(path: Path) -> None:
    # a folder too: its entry for the renamed file must reach the disk, not only the file's blocks
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
        _fsync(tmp)


def save(obj: dict, path: Path) -> None:
    """Write ``obj`` to ``path`` atomically and durably, with its digest in the sidecar (module docstring)."""
    import torch

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
        _fsync(tmp)
        digests = [sha256_file(tmp)]
        if path.exists():  # still in place until atomic_path renames: it must verify if we die before that
            # the digests its sidecar accepts (no second read of a large file), or its own without a sidecar
            listed = _listed_digests(path, strict=False)
            digests += listed[:3] if listed else [sha256_file(path)]
        _write_durably(sidecar(path), "".join(f"{d}  {path.name}\n" for d in dict.fromkeys(digests)).encode())
    _fsync(path.parent)


def _listed_digests(path: Path, strict: bool = True) -> list[str] | None:
    """The digests ``path``'s sidecar accepts, newest first, or None without a sidecar (or, not ``strict``,
    an unreadable one)."""
    try:
        text = sidecar(path).read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        if not strict:
            return None
        raise CorruptCheckpoint(path, f"its digest file {sidecar(path).name} cannot be read ({exc})") from None
    return [line.split()[0].lower() for line in text.splitlines() if line.strip()]


def verify(path: Path) -> None:
    """Raise `CorruptCheckpoint` unless ``path`` exists and its SHA-256 is one its sidecar lists (a file
    without a sidecar passes: `load` still has ``torch.load`` read it)."""
    path = Path(path)
    if not path.is_file():
        raise CorruptCheckpoint(path, "not found")
    accepted = _listed_digests(path)
    if accepted is None:
        return
    try:
        digest = sha256_file(path)
    except OSError as exc:
        raise CorruptCheckpoint(path, f"cannot be read ({exc})") from None
    if digest not in accepted:
        raise CorruptCheckpoint(
            path,
            f"its content does not match the SHA-256 in {sidecar(path).name} (truncated or altered since it "
            "was written)",
        )


def load(path: Path) -> dict:
    """The verified checkpoint at ``path`` (tensors on the CPU); `CorruptCheckpoint` naming it otherwise."""
    import torch

    path = Path(path)
    verify(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever torch raises for a bad file, the user sees the file
        raise CorruptCheckpoint(path, f"cannot be read as a checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise CorruptCheckpoint(path, f"holds a {type(obj).__name__}, not a segsweep checkpoint")
    return obj


def remove(path: Path) -> None:
    """Delete a checkpoint and its sidecar (a corrupt one, before it is written again)."""
    Path(path).unlink(missing_ok=True)
    sidecar(path).unlink(missing_ok=True)
