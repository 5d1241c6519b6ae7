"""A finished cell of a pack whose pack-mate failed (issue 26, part 2): Snakemake removes every declared output
of a failed group, the finished cell's metrics.json too, and reruns the pack. Within the same `snakemake`
invocation (SEGSWEEP_RUN) the cell's job restores metrics.json from its copy, byte for byte, without loading
data or evaluating; a later invocation re-evaluates from last.pt as before. CPU, the tiny data set of
tests/test_train.py."""

import logging

import pytest
import torch
from test_train import _params, _write_dataset

from segsweep.training.job import RUN_ENV, run_train_job

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _write_dataset(tmp_path_factory.mktemp("data"))


def _job(data, out, **kw):
    data_dir, split = data
    return run_train_job(_params(epochs=2), data_dir=data_dir, split_path=split, out_dir=out, **kw)


def test_a_removed_metrics_json_is_restored_within_the_run_only(data, tmp_path, monkeypatch, caplog):
    out = tmp_path / "cell"
    monkeypatch.setenv(RUN_ENV, "run1")
    first = _job(data, out)
    original = (out / "metrics.json").read_bytes()
    assert (out / "finished-run1.json").read_bytes() == original
    stamps = {f: (out / f).stat().st_mtime_ns for f in ("last.pt", "best.pt", "per_image.csv", "history.csv")}

    (out / "metrics.json").unlink()  # what Snakemake does to every job of a failed pack
    with caplog.at_level(logging.INFO, logger="segsweep"):
        again = _job(data, out, attempt=2, max_attempts=2)
    assert again == first and (out / "metrics.json").read_bytes() == original
    assert "finished earlier in this snakemake run" in caplog.text and "finished-run1.json" in caplog.text
    # nothing was trained or evaluated again
    assert {f: (out / f).stat().st_mtime_ns for f in stamps} == stamps

    # a requeued pack: Snakemake kept metrics.json (the rule's output is update()); the cell's job runs again and
    # returns it as it is, trains and writes nothing
    stamps["metrics.json"] = (out / "metrics.json").stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="segsweep"):
        kept = _job(data, out)
    assert kept == first and "its pack ran again: kept" in caplog.text
    assert {f: (out / f).stat().st_mtime_ns for f in stamps} == stamps
    del stamps["metrics.json"]

    # a later invocation does not trust the copy: it resumes from last.pt and re-evaluates (same numbers); the
    # rerun is Snakemake's (a changed evaluation, code): metrics.json may still be there (update())
    monkeypatch.setenv(RUN_ENV, "run2")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="segsweep"):  # its own level: another test may have set it
        later = _job(data, out)
    assert "finished earlier" not in caplog.text and "resuming from" in caplog.text
    assert {k: v for k, v in later.to_json().items() if k != "wall_s"} == {
        k: v for k, v in first.to_json().items() if k != "wall_s"
    }
    assert sorted(p.name for p in out.glob("finished-*.json")) == ["finished-run2.json"]


def test_no_copy_outside_a_snakemake_run(data, tmp_path, monkeypatch):
    monkeypatch.delenv(RUN_ENV, raising=False)
    out = tmp_path / "cell"
    _job(data, out)
    assert list(out.glob("finished-*.json")) == []
