"""Watch a real data root: a content manifest of its files, made when the plan is built.

Snakemake cannot see a user's data root (it is read in place, not produced by a rule), so without help adding
patients to it would change nothing until the user forced ``-R ingest``. ``watch_root`` walks the root at plan
time and writes ``manifest.json`` (one entry per file: a keyed hash of its relative path, its size and the
sha256 of its content), **rewritten only when that content changes**. The manifest is ingest's input, and its
digest is the data part of every cell id:

* a file added, removed or edited → new manifest → ingest reruns and every cell gets a new id;
* a file touched (or copied) with identical content → same manifest, same ids → nothing reruns.

Hashing content is the expensive part, so ``cache.json`` keeps each file's (size, mtime_ns, sha256): a rerun
re-hashes only files whose size or mtime changed (a stat per file otherwise). Paths are stored as HMAC
digests under ``data.pseudonym_key``: folder names of real data sets are often patient names or ids.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from segsweep.data.config import DataConfig
from segsweep.errors import DataError
from segsweep.io import digest, sha256_file, write_json
from segsweep.paths import SCAN_DIR

log = logging.getLogger("segsweep.scan")


@dataclass(frozen=True)
class RootScan:
    manifest: Path  # ingest's input
    digest: str  # of the manifest's file list: the data identity of real data
    n_files: int
    n_bytes: int
    n_hashed: int  # files whose content was (re)hashed in this scan


def _files(root: Path) -> list[str]:
    """Relative paths of the regular files under root, sorted; hidden files (.DS_Store, ...) skipped."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return out


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def watch_root(data: DataConfig, out_dir: str | Path = SCAN_DIR, key: str = "data") -> RootScan:
    """Scan ``data.root`` and (re)write ``out_dir/manifest.json`` only when the content changed.

    An extra data set (``datasets.<name>``, ``key`` names it in errors) has its own ``out_dir``:
    ``<dataset_base(name)>/raw/scan``.
    """
    root, out_dir = Path(data.root), Path(out_dir)
    if not root.is_dir():
        raise DataError(f"config key '{key}.root': '{root}' does not exist or is not a folder")
    key = data.pseudonym_key.encode()
    cache_path, manifest_path = out_dir / "cache.json", out_dir / "manifest.json"
    old_cache = _read_json(cache_path).get("files", {})
    cache, entries, n_bytes, n_hashed = {}, [], 0, 0
    for rel in _files(root):
        path = os.path.join(root, rel)
        try:
            st = os.stat(path)
        except OSError:  # vanished or a dangling link: not part of the data set
            continue
        pid = hmac.new(key, rel.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()[:24]
        hit = old_cache.get(pid)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            sha = hit[2]
        else:
            try:
                sha = sha256_file(path)
            except OSError as exc:  # unreadable: ingest reports it as a QC row; the id still sees it
                sha = f"unreadable:{type(exc).__name__}"
            n_hashed += 1
        cache[pid] = [st.st_size, st.st_mtime_ns, sha]
        entries.append([pid, st.st_size, sha])
        n_bytes += st.st_size
    manifest = {"source": data.source, "files": entries}
    if _read_json(manifest_path) != manifest:
        write_json(manifest_path, manifest)
        log.info("data root changed: %s rewritten (%d files)", manifest_path, len(entries))
    if cache != old_cache:
        write_json(cache_path, {"files": cache})
    return RootScan(manifest_path, digest(manifest, 16), len(entries), n_bytes, n_hashed)
