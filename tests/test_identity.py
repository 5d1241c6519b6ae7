"""What a cell id depends on: the data's content and what changes results; not spellings or switches that
change nothing (issue: cells keyed by what changes results)."""

import json
import os
import time

import pytest

from segsweep.data.config import DataConfig, PhantomConfig
from segsweep.data.scan import watch_root
from segsweep.errors import DataError
from segsweep.plan import config as sc
from segsweep.plan.cells import build_plan

STUDY = {"s": {"axes": {"lr": [0.1, 0.01]}, "table": {"rows": ["lr"], "cols": []}}}


def ids(data=None, resources=None, train=None, content="c0"):
    cfg = sc.prepare({"data": data or {}, "resources": resources or {}, "train": train or {}, "studies": STUDY})
    return sorted(build_plan(cfg, data_content=None if cfg["data"]["source"] == "phantom" else content).cells)


def test_real_root_spelling_and_strict_do_not_change_ids(tmp_path):
    real = {"source": "rvsc", "root": str(tmp_path)}
    base = ids(real)
    assert ids({**real, "root": str(tmp_path) + "/"}) == base
    assert ids({**real, "root": str(tmp_path / "x" / "..")}) == base
    assert ids({**real, "strict": True}) == base
    assert ids({**real, "phantom": {"patients": 3}}) == base  # phantom settings: not this data


def test_content_target_and_key_change_ids(tmp_path):
    real = {"source": "rvsc", "root": str(tmp_path)}
    base = ids(real)
    assert ids(real, content="c1") != base
    assert ids({**real, "target": "epi"}) != base
    assert ids({**real, "pseudonym_key": "other"}) != base
    assert ids({"phantom": {"patients": 13}}) != ids({})  # for the phantom, its settings are the content


def test_amp_is_part_of_the_id_and_device_is_not():
    base = ids()
    assert ids(resources={"amp": True}) != base
    assert ids(resources={"channels_last": True, "device": "cpu", "train_threads": 2}) == base
    # the default "auto" (bf16 where the GPU has it, decided at job time) hashes as false did: ids unchanged
    assert ids(resources={"amp": False}) == ids(resources={"amp": "auto", "channels_last": "auto"}) == base


def test_dropout_details_do_not_split_cells_without_dropout():
    assert ids(train={"dropout_mode": "spatial"}) == ids()
    assert ids(train={"dropout": 0.2, "dropout_mode": "spatial"}) != ids(train={"dropout": 0.2})


def _root(tmp_path):
    root = tmp_path / "root"
    (root / "patient01").mkdir(parents=True)
    (root / "patient01" / "a.dcm").write_bytes(b"A" * 100)
    (root / "patient01" / "b.txt").write_text("contour")
    return root


def _data(root):
    return DataConfig("rvsc", str(root), "endo", False, "k", PhantomConfig())


def test_scan_ignores_touch_and_sees_content(tmp_path):
    root, out = _root(tmp_path), tmp_path / "scan"
    first = watch_root(_data(root), out)
    assert (first.n_files, first.n_hashed) == (2, 2)
    stamp = first.manifest.stat().st_mtime_ns
    again = watch_root(_data(root), out)
    assert again.digest == first.digest and again.n_hashed == 0  # cached: a stat per file
    time.sleep(0.01)
    os.utime(root / "patient01" / "a.dcm")  # touched, same content
    touched = watch_root(_data(root), out)
    assert touched.digest == first.digest and touched.n_hashed == 1
    assert first.manifest.stat().st_mtime_ns == stamp  # not rewritten: ingest does not rerun
    (root / "patient01" / "a.dcm").write_bytes(b"B" * 100)  # same size, new content
    assert watch_root(_data(root), out).digest != first.digest
    (root / "patient02").mkdir()
    (root / "patient02" / "c.dcm").write_bytes(b"C")
    added = watch_root(_data(root), out)
    assert added.n_files == 3 and first.manifest.stat().st_mtime_ns != stamp


def test_scan_writes_no_folder_names(tmp_path):
    root, out = _root(tmp_path), tmp_path / "scan"
    watch_root(_data(root), out)
    for name in ("manifest.json", "cache.json"):
        text = (out / name).read_text()
        assert "patient01" not in text and "a.dcm" not in text
        json.loads(text)


def test_scan_of_a_missing_root_names_the_key(tmp_path):
    with pytest.raises(DataError, match="config key 'data.root'"):
        watch_root(_data(tmp_path / "nope"), tmp_path / "scan")
