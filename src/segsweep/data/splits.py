"""Patient-level splits: a fixed validation set, a shuffled training pool (nested fractions), k folds.

Splitting by patient (never by image) keeps slices of one heart out of both sides. The training pool is
stored in a seeded random order and a fraction f takes its first ``max(1, round(f * len(pool)))`` patients,
so every smaller fraction is a subset of every larger one and the validation set is the same for all.

Test set (``splits.test_fraction`` > 0; docs/evaluation.md): ``max(1, round(test_fraction · n))`` patients are
drawn first, from a random stream of their own (``[seed, 2]``), so they depend only on the patients, the split
seed and the test fraction: the same for every training fraction, fold and repeat. Validation, pool and the
folds are then made from the remaining patients exactly as without a test set (``val_fraction`` stays a share
of *all* patients). The split file lists them under ``test``; training never reads them, and the final
evaluation of each cell reports them once. With ``test_fraction`` 0 the split (and its file) is what it was
before test sets existed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segsweep.errors import DataError
from segsweep.io import write_json


def make_split(
    patients: Sequence[str], seed: int, val_fraction: float, folds: int | None = None, test_fraction: float = 0.0
) -> dict:
    """Holdout split (and k folds when ``folds``) over sorted patient ids; deterministic in ``seed``.

    ``test_fraction`` > 0 first holds out test patients (module docstring); the keys ``test_fraction`` and
    ``test`` are written only then, so a split without a test set is byte-identical to older ones.
    """
    ids = sorted(set(patients))
    n_all = len(ids)
    if n_all < 2:
        raise DataError(f"a split needs at least 2 patients, the data set has {n_all}")
    test: list[str] = []
    if test_fraction > 0:
        # Own stream: the test set moves with neither val_fraction nor the fold count.
        n_test = max(1, round(test_fraction * n_all))
        if n_all - n_test < 2:
            raise DataError(
                f"config key 'splits.test_fraction': {test_fraction} holds out {n_test} of {n_all} patients, "
                f"leaving {n_all - n_test}; validation and training need at least 1 each"
            )
        rng = np.random.default_rng([seed, 2])
        test = sorted(ids[i] for i in rng.permutation(n_all)[:n_test])
        held = set(test)
        ids = [p for p in ids if p not in held]
    n = len(ids)
    # Independent streams for holdout and folds: asking for folds never moves the holdout split.
    rng = np.random.default_rng([seed, 0])
    perm = [ids[i] for i in rng.permutation(n)]
    n_val = min(n - 1, max(1, round(val_fraction * n_all)))
    if test and n_val < round(val_fraction * n_all):
        raise DataError(
            f"config keys 'splits.test_fraction' ({test_fraction}) and 'splits.val_fraction' ({val_fraction}): "
            f"{len(test)} test and {round(val_fraction * n_all)} validation patients of {n_all} leave no "
            "training patient; lower one of them"
        )
    out = {"seed": seed, "val_fraction": val_fraction, "val": sorted(perm[:n_val]), "pool": perm[n_val:], "folds": []}
    if test:
        out["test_fraction"] = test_fraction
        out["test"] = test
    if folds:
        if folds > n:
            key = "splits.folds" + (" / splits.test_fraction" if test else "")
            left = f" ({n} after the {len(test)} test patients)" if test else ""
            raise DataError(
                f"config key '{key}': {folds} folds need at least {folds} patients, the data set has {n_all}{left}"
            )
        rng = np.random.default_rng([seed, 1])
        perm = [ids[i] for i in rng.permutation(n)]
        for k in range(folds):
            val = perm[k::folds]
            rest = [p for p in perm if p not in set(val)]
            order = rng.permutation(len(rest))
            out["folds"].append({"val": sorted(val), "pool": [rest[i] for i in order]})
    return out


def test_patients(split: dict) -> list[str]:
    """The split's test patients ([] for a split without a test set)."""
    return list(split.get("test", []))


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


def write_split(
    dataset_json: Path, out: Path, seed: int, val_fraction: float, folds: int | None, test_fraction: float = 0.0
) -> dict:
    dataset = json.loads(Path(dataset_json).read_text())
    split = make_split([p["id"] for p in dataset["patients"]], seed, val_fraction, folds, test_fraction)
    write_json(out, split)
    return split
