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

* **In the background** (`Writer`): the training loop hands a save to a writer thread and goes on with the
  next epoch while the file is written and fsynced. What it hands over is a `snapshot`, taken in the
  training thread: containers copied, tensors copied to the CPU (a ``state_dict`` holds the live weights and
  optimizer moments, which the next step changes in place). One save (best.pt, then last.pt) is in flight
  at a time: the next one, a read of a file being written, a stop signal and the end of the cell wait for
  it (`Writer.wait`), so writes stay in order and a cell never returns before its files are durable. A
  failed write raises in the training thread at that wait. A job killed meanwhile leaves the old file or
  the new one (above): the retry resumes from whichever ``last.pt`` verifies.

What the training loop does with a corrupt one (`segsweep.training.loop`): ``last.pt`` starts the cell
afresh; ``best.pt`` is ignored and rebuilt before the final evaluation, so a cell is never ``failed`` for it.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from segsweep.errors import DataError
from segsweep.io import atomic_path, sha256_file

SIDECAR_SUFFIX = ".sha256"
# `Writer`'s default: a background thread. False writes in the calling thread (tests compare the two).
BACKGROUND_WRITES = True


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


def snapshot(obj):
    """A copy of a checkpoint's content that training can no longer change: dicts, lists and tuples copied,
    tensors copied to the CPU (detached); anything else (numbers, strings) is immutable and shared. A
    ``state_dict``'s ``_metadata`` (module versions, read by ``load_state_dict``) is kept."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        out = type(obj)((k, snapshot(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):
            out._metadata = copy.deepcopy(obj._metadata)
        return out
    if isinstance(obj, list):
        return [snapshot(v) for v in obj]
    if type(obj) is tuple:
        return tuple(snapshot(v) for v in obj)
    return obj


class Writer:
    """Writes checkpoints (`save`) in a background thread, one submission at a time (module docstring).

    ``submit([(obj, path), ...])`` waits for the previous submission, snapshots the objects and starts
    writing them in order; ``wait()`` joins the write in flight and raises its error, if any. Used as a
    context manager it is joined on leaving: errors raise on a normal exit and are logged when an exception
    is already on its way out (it matters more than a failed write). ``background`` False (or
    `BACKGROUND_WRITES` False) writes in the calling thread, with no snapshot.
    """

    def __init__(self, background: bool | None = None, log: logging.Logger | None = None):
        self.background = BACKGROUND_WRITES if background is None else background
        self.log = log or logging.getLogger("segsweep.train")
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, items: Sequence[tuple[dict, Path]]) -> list[dict]:
        """Write ``items`` in order; return what is (being) written: the snapshots, or the objects as given
        when writing in the calling thread."""
        self.wait()
        if not self.background:
            for obj, path in items:
                save(obj, path)
            return [obj for obj, _ in items]
        items = [(snapshot(obj), Path(path)) for obj, path in items]
        # not a daemon: an interpreter that exits with a write in flight finishes it first
        self._thread = threading.Thread(target=self._write, args=(items,), name="segsweep-checkpoint")
        self._thread.start()
        return [obj for obj, _ in items]

    def _write(self, items: list[tuple[dict, Path]]) -> None:
        try:
            for obj, path in items:
                save(obj, path)
        except BaseException as exc:  # noqa: BLE001 - handed to the training thread by `wait`
            self._error = exc

    def wait(self) -> None:
        """Join the write in flight (if any); raise the error it met."""
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        error, self._error = self._error, None
        if error is not None:
            raise error

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.wait()
            return
        try:
            self.wait()
        except Exception as error:  # noqa: BLE001 - the exception already leaving is the one to report
            self.log.error("writing a checkpoint failed as well: %s", error)
