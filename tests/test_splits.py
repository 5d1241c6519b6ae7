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


# ------------------------------------------------------------------------------------------- test set
@pytest.mark.parametrize("n", [3, 4, 6, 7, 12, 16, 20, 33])
def test_test_set_is_disjoint_from_val_pool_and_every_fold(n):
    ids = [f"p{i:02d}" for i in range(n)]
    folds = min(3, n - 2)
    split = make_split(ids, 5, 0.25, folds=folds, test_fraction=0.25)
    test = set(split["test"])
    assert len(test) == max(1, round(0.25 * n)) and split["test"] == sorted(test)
    assert len(split["val"]) == min(n - len(test) - 1, max(1, round(0.25 * n))) >= 1
    assert len(split["pool"]) >= 1
    assert test | set(split["val"]) | set(split["pool"]) == set(ids)
    assert not test & set(split["val"]) and not test & set(split["pool"])
    assert not set(split["val"]) & set(split["pool"])
    fold_vals = []
    for k in range(folds):
        train, val = select_patients(split, 1.0, fold=k)
        assert not test & (set(train) | set(val))
        assert set(train) | set(val) == set(ids) - test
        fold_vals += val
    assert sorted(fold_vals) == sorted(set(ids) - test)  # the folds partition the non-test patients
    for f in FRACTIONS:
        train, val = select_patients(split, f)
        assert not test & (set(train) | set(val))


def test_test_set_depends_only_on_patients_seed_and_test_fraction():
    a = make_split(PATIENTS, 2, 0.25, test_fraction=0.2)
    assert a["test"] == make_split(PATIENTS, 2, 0.4, folds=4, test_fraction=0.2)["test"]  # val share, folds
    assert a["test"] == make_split(list(reversed(PATIENTS)), 2, 0.25, test_fraction=0.2)["test"]
    assert a["test"] != make_split(PATIENTS, 3, 0.25, test_fraction=0.2)["test"]
    assert a["test_fraction"] == 0.2 and len(a["test"]) == 4 and len(a["val"]) == 5 and len(a["pool"]) == 11


def test_no_test_fraction_leaves_the_split_as_before():
    # pinned by hand from the split made before test sets existed (seed 0, 16 patients as in the demo)
    ids = [f"p{i:02d}" for i in range(16)]
    split = make_split(ids, 0, 0.25, folds=4)
    assert "test" not in split and "test_fraction" not in split
    assert split == make_split(ids, 0, 0.25, folds=4, test_fraction=0.0)
    assert list(split) == ["seed", "val_fraction", "val", "pool", "folds"]
    assert split["val"] == ["p02", "p03", "p10", "p11"]
    assert split["pool"] == ["p00", "p04", "p07", "p05", "p14", "p12", "p06", "p09", "p13", "p08", "p01", "p15"]


def test_demo_sizes_with_a_test_set():
    ids = [f"p{i:02d}" for i in range(16)]
    split = make_split(ids, 0, 0.25, folds=4, test_fraction=0.25)
    assert (len(split["test"]), len(split["val"]), len(split["pool"])) == (4, 4, 8)


def test_test_fraction_errors_name_the_key():
    with pytest.raises(DataError, match="splits.test_fraction"):
        make_split(PATIENTS[:3], 0, 0.25, test_fraction=0.5)  # 2 test patients of 3 leave 1
    with pytest.raises(DataError, match="splits.test_fraction"):
        make_split(PATIENTS[:8], 0, 0.5, test_fraction=0.5)  # 4 test + 4 validation of 8: no training
    with pytest.raises(DataError, match="splits.test_fraction"):
        make_split(PATIENTS[:6], 0, 0.25, folds=5, test_fraction=0.25)  # 5 folds over 4 patients
