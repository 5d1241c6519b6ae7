"""Patient-level splits: no leakage, nested fractions, fixed validation set, folds partition patients."""

import pytest

from segsweep.data.splits import make_split, n_train, select_patients
from segsweep.errors import DataError

PATIENTS = [f"p{i:02d}" for i in range(20)]
FRACTIONS = [0.2, 0.4, 0.6, 0.8, 1.0]


def test_holdout_has_no_leak_and_is_nested():
    split = make_split(PATIENTS, seed=1, val_fraction=0.25)
    assert len(split["val"]) == 5 and len(split["pool"]) == 15
    previous: set[str] = set()
    vals = set()
    for f in FRACTIONS:
        train, val = select_patients(split, f)
        assert not set(train) & set(val)
        assert previous <= set(train)  # nested: each smaller fraction is a subset
        assert len(train) == n_train(15, f)
        previous = set(train)
        vals.add(tuple(val))
    assert len(vals) == 1  # same validation set for every fraction
    assert previous | set(split["val"]) == set(PATIENTS)


def test_deterministic_and_seed_dependent():
    assert make_split(PATIENTS, 3, 0.25) == make_split(list(reversed(PATIENTS)), 3, 0.25)
    assert make_split(PATIENTS, 3, 0.25)["val"] != make_split(PATIENTS, 4, 0.25)["val"]


def test_folds_partition_patients_and_keep_holdout():
    split = make_split(PATIENTS, 0, 0.25, folds=4)
    assert split["val"] == make_split(PATIENTS, 0, 0.25)["val"]  # asking for folds never moves the holdout
    seen = []
    for k in range(4):
        train, val = select_patients(split, 1.0, fold=k)
        assert not set(train) & set(val)
        assert set(train) | set(val) == set(PATIENTS)
        seen += val
    assert sorted(seen) == sorted(PATIENTS)
    small, _ = select_patients(split, 0.4, fold=2)
    big, _ = select_patients(split, 0.8, fold=2)
    assert set(small) <= set(big)


def test_small_fraction_keeps_one_patient():
    split = make_split(PATIENTS[:4], 0, 0.25)
    train, _ = select_patients(split, 0.01)
    assert len(train) == 1


def test_errors_name_the_problem():
    with pytest.raises(DataError, match="at least 2 patients"):
        make_split(["only"], 0, 0.25)
    with pytest.raises(DataError, match="splits.folds"):
        make_split(PATIENTS[:3], 0, 0.25, folds=5)
    with pytest.raises(DataError, match="fold 7"):
        select_patients(make_split(PATIENTS, 0, 0.25, folds=3), 1.0, fold=7)
