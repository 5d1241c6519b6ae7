"""Patient-level splits: a fixed validation set, a shuffled training pool (nested fractions), k folds.

Splitting by patient (never by image) keeps slices of one heart out of both sides. The training pool is
stored in a seeded random order and a fraction f takes its first ``max(1, round(f * len(pool)))`` patients,
so every smaller fraction is a subset of every larger one and the validation set is the same for all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segsweep.errors import DataError
from segsweep.io import write_json


def make_split(patients: Sequence[str], seed: int, val_fraction: float, folds: int | None = None) -> dict:
    """Holdout split (and k folds when ``folds``) over sorted patient ids; deterministic in ``seed``."""
    ids = sorted(set(patients))
    n = len(ids)
    if n < 2:
        raise DataError(f"a split needs at least 2 patients, the data set has {n}")
    # Independent streams for holdout and folds: asking for folds never moves the holdout split.
    rng = np.random.default_rng([seed, 0])
    perm = [ids[i] for i in rng.permutation(n)]
    n_val = min(n - 1, max(1, round(val_fraction * n)))
    out = {"seed": seed, "val_fraction": val_fraction, "val": sorted(perm[:n_val]), "pool": perm[n_val:], "folds": []}
    if folds:
        if folds > n:
            raise DataError(
                f"config key 'splits.folds': {folds} folds need at least {folds} patients, the data set has {n}"
            )
        rng = np.random.default_rng([seed, 1])
        perm = [ids[i] for i in rng.permutation(n)]
        for k in range(folds):
            val = perm[k::folds]
            rest = [p for p in perm if p not in set(val)]
            order = rng.permutation(len(rest))
            out["folds"].append({"val": sorted(val), "pool": [rest[i] for i in order]})
    return out


def n_train(pool_size: int, fraction: float) -> int:
    return min(pool_size, max(1, round(fraction * pool_size)))


def select_patients(split: dict, fraction: float, fold: int | None = None) -> tuple[list[str], list[str]]:
    """(train, val) patient ids for a training fraction, on the holdout split or on fold ``fold``."""
    if fold is None:
        part = split
    else:
        if fold >= len(split["folds"]):
            raise DataError(f"fold {fold} requested but the split file has {len(split['folds'])} folds")
        part = split["folds"][fold]
    pool = part["pool"]
    return list(pool[: n_train(len(pool), fraction)]), list(part["val"])


def write_split(dataset_json: Path, out: Path, seed: int, val_fraction: float, folds: int | None) -> dict:
    dataset = json.loads(Path(dataset_json).read_text())
    split = make_split([p["id"] for p in dataset["patients"]], seed, val_fraction, folds)
    write_json(out, split)
    return split
