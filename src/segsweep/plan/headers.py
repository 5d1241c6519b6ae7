"""What a training job's header says about its cell: the studies that hold it and the values of their axes,
so `snakemake` output and Slurm logs name ``lr_optimizer: optimizer=adam fraction=0.4 lr=0.0001`` rather
than only ``cell=e38a8df09e1c``.

The header reaches Snakemake as a string resource of the train rules (rules/train.smk): Snakemake prints a
job's resources in its header, and a resource, unlike a param, is no rerun trigger (a param would retrain
every finished cell) and, unlike ``message:``, hides none of the header's other lines.
"""

from __future__ import annotations

from collections.abc import Mapping

from segsweep.study import Study

MAX_CHARS = 240  # one terminal line or two; a cell shared by many studies names the first ones, then "+N"


def study_headers(studies: Mapping[str, Study]) -> dict[str, str]:
    """cell id → ``study: axis=value ... | other study: ...`` (config order; repeat and fold when they vary)."""
    parts: dict[str, list[str]] = {}
    for name, study in studies.items():
        for sc in study.cells:
            words = [f"{a}={v}" for a, v in sc.labels]
            if sc.repeat:
                words.append(f"repeat={sc.repeat}")
            if sc.fold is not None:
                words.append(f"fold={sc.fold}")
            parts.setdefault(sc.cell_id, []).append(f"{name}: {' '.join(words)}" if words else name)
    return {cid: _join(p) for cid, p in parts.items()}


def _join(parts: list[str]) -> str:
    out = parts[0]
    for k, p in enumerate(parts[1:], start=1):
        if len(out) + 3 + len(p) > MAX_CHARS:
            return f"{out} | +{len(parts) - k} more"
        out = f"{out} | {p}"
    return out


def params_header(params: Mapping, base: Mapping) -> str:
    """A cell no static study lists (an optuna trial, known once its round ran): the training settings in
    which it differs from ``base`` (the config's ``train`` block, resolved the same way)."""
    diff = [f"{k}={_short(v)}" for k, v in params.items() if base.get(k) != v and k not in ("study",)]
    return _join([" ".join(diff)]) if diff else "the config's train settings"


def _short(v) -> str:
    if isinstance(v, Mapping) and "name" in v and len(v) <= 2:
        return str(v["name"])
    if isinstance(v, (list, tuple)) and len(v) == 1 and isinstance(v[0], Mapping) and "name" in v[0]:
        return str(v[0]["name"])  # a one-term loss
    return str(v)
