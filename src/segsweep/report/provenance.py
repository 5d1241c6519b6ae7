"""Provenance of a report: which configuration, code, software and machine produced it.

`collect` returns a JSON-able dict; everything it cannot find (no git, a package not installed) is None, never
an error, so a report renders from an unpacked tarball too. The configuration is shown with secrets redacted
(the pseudonym key would let anyone holding the original patient IDs link them to the pseudonyms); the hash is
over the full resolved configuration.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import platform
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from segsweep.io import digest
from segsweep.paths import METRICS

# distribution name → how the report names it
PACKAGES = {
    "segsweep": "segsweep",
    "torch": "torch",
    "torchvision": "torchvision",
    "snakemake": "snakemake",
    "pydicom": "pydicom",
    "numpy": "numpy",
    "scipy": "scipy",
    "pandas": "pandas",
    "matplotlib": "matplotlib",
    "opencv-python-headless": "opencv",
    "jinja2": "jinja2",
    "weasyprint": "weasyprint",
}
REDACT = (("data", "pseudonym_key"),)
REDACTED = "<redacted>"


def redacted(config: Mapping) -> dict:
    """A copy of the config with secret values replaced by '<redacted>'."""
    out = copy.deepcopy(dict(config))
    for path in REDACT:
        cur: Any = out
        for key in path[:-1]:
            cur = cur.get(key) if isinstance(cur, dict) else None
        if isinstance(cur, dict) and path[-1] in cur:
            cur[path[-1]] = REDACTED
    return out


def _git(repo_dir: Path, *args: str) -> str | None:
    try:
        res = subprocess.run(["git", "-C", str(repo_dir), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def git_info(repo_dir: Path) -> dict | None:
    """Commit and dirty flag of the work tree at ``repo_dir`` (None outside git or without commits).

    Dirty = tracked files differ from the commit; untracked files (results/, logs/) do not count.
    """
    commit = _git(repo_dir, "rev-parse", "HEAD")
    if not commit:
        return None
    status = _git(repo_dir, "status", "--porcelain", "--untracked-files=no")
    return {
        "commit": commit,
        "short": commit[:10],
        "dirty": bool(status) if status is not None else None,
        "describe": _git(repo_dir, "describe", "--always", "--dirty", "--tags"),
    }


def package_versions() -> dict[str, str | None]:
    out = {}
    for dist, name in PACKAGES.items():
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def now_utc() -> dt.datetime:
    """The report date; SOURCE_DATE_EPOCH (reproducible-builds.org convention) pins it for byte-equal output."""
    sde = os.environ.get("SOURCE_DATE_EPOCH")
    if sde and sde.isdigit():
        return dt.datetime.fromtimestamp(int(sde), tz=dt.UTC)
    return dt.datetime.now(tz=dt.UTC).replace(microsecond=0)


def collect(config: Mapping, repo_dir: Path) -> dict:
    """Config hash + redacted YAML, git commit/dirty, Python and package versions, platform, CPU, date."""
    return {
        "config_hash": digest(dict(config), 16),
        "config_yaml": yaml.safe_dump(
            redacted(config), sort_keys=False, allow_unicode=True, width=100, default_flow_style=None
        ),
        "git": git_info(Path(repo_dir)),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "packages": package_versions(),
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "memory_gib": memory_gib(),
        },
        "date": now_utc().isoformat(),
    }


def pretrained_rows(cells: list[str], cells_dir: Path) -> list[dict]:
    """The pretrained weights files the runs started from (metrics.json ``params.pretrained``): one row per
    sha256 (what a cell id holds) with the paths it was read from and the number of runs."""
    import json

    by_sha: dict[str, dict] = {}
    for cell in dict.fromkeys(cells):
        try:
            params = json.loads((Path(cells_dir) / cell / METRICS).read_text()).get("params") or {}
        except (OSError, ValueError):
            continue
        w = params.get("pretrained")
        if isinstance(w, Mapping) and w.get("sha256"):
            row = by_sha.setdefault(w["sha256"], {"sha256": w["sha256"], "paths": [], "n": 0, "model": set()})
            row["n"] += 1
            row["model"].add(str(params.get("model")))
            if w.get("path") not in row["paths"]:
                row["paths"].append(w.get("path"))
    return [{**r, "model": ", ".join(sorted(r["model"]))} for _, r in sorted(by_sha.items())]
