"""What a user's config file does to a run folder: it stands alone (not merged into the demo's), its report
is named after it, and a second config run in the same folder keeps the first one's phantom, ingested data,
splits and report (`segsweep.data.config.DataFolders`)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from segsweep.data.config import DataConfig, DataFolders, PreprocessConfig, SplitConfig
from segsweep.plan import config as sc

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
# a tiny phantom for both configs: the README's commands with this appended run in seconds
TINY_DATA = "data={phantom: {patients: 6, slices: 2, rows: 64, cols: 56}}"
MINE = {
    "title": "My one study",
    "data": {"phantom": {"patients": 6, "slices": 2, "rows": 64, "cols": 56}},
    "preprocess": {"size": [32, 32]},
    "train": {"epochs": 1, "depth": 2, "base_width": 4},
    "studies": {"mine": {"axes": {"lr": [0.001, 0.01]}, "table": {"rows": [], "cols": ["lr"]}}},
}


def _jobs(out: str) -> dict[str, int]:
    m = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal", out, re.S)
    return {k: int(n) for k, n in re.findall(r"^(\w+)\s+(\d+)$", m.group(1), re.M)} if m else {}


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A run folder with the demo's config/config.yaml, as a clone of the repository has."""
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config" / "config.yaml", tmp_path / "config" / "config.yaml")
    return tmp_path


def _snakemake(wd: Path, *args: str) -> str:
    proc = subprocess.run(
        [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(wd), "--cores", "1", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    return out


def test_a_config_file_stands_alone(run_dir):
    """--configfile mine.yaml plans only its own study, under its own title and report name; without a
    config file the demo's three studies are planned into reports/report.*."""
    (run_dir / "mine.yaml").write_text(yaml.safe_dump(MINE))
    out = _snakemake(run_dir, "-n", "--configfile", str(run_dir / "mine.yaml"))
    assert _jobs(out)["aggregate"] == 1 and _jobs(out)["train"] == 2, _jobs(out)
    assert "results/studies/mine/table.json" in out
    assert not re.search(r"results/studies/(lr_optimizer|losses|schedules)/", out)
    assert "report 'My one study' of 1 study: mine" in out
    assert "reports/mine.html" in out and "reports/report.html" not in out
    # each training job's header names its study and the axis values (rules/train.smk's `study` resource)
    assert "study=mine: lr=0.001," in out and "study=mine: lr=0.01," in out

    demo = _snakemake(run_dir, "-n")
    assert _jobs(demo)["aggregate"] == 3
    assert "report 'segsweep demo: LV segmentation on the synthetic phantom' of 3 studies" in demo
    assert "reports/report.html" in demo


def test_report_name():
    assert sc.report_name({"report": {"name": None}}) == "report"  # the demo: no config file
    assert sc.report_name({"report": {"name": None}}, ["config/config.yaml"]) == "report"
    assert sc.report_name({"report": {}}, ["a/config.yaml", "b/my study.yml"]) == "my_study"
    assert sc.report_name({"report": {"name": "final"}}, ["mine.yaml"]) == "final"
    # the schema keeps a name a file name
    with pytest.raises(sc.ConfigError, match="report.name"):
        sc.prepare({**MINE, "report": {"name": "../x"}})


def test_data_folders_are_keyed_by_what_their_content_depends_on():
    cfg = sc.prepare(MINE)
    data, prep, splits = DataConfig.from_config(cfg), PreprocessConfig.from_config(cfg), SplitConfig.from_config(cfg)
    f = DataFolders.of(data, prep, splits)
    assert re.fullmatch(r"results/data/[0-9a-f]{12}", f.data) and f.figures == f"results/figures/data/{f.key}"
    # the image size (a scale preset) and the phantom move the data; the split fractions move the splits only
    bigger = DataFolders.of(data, PreprocessConfig.from_config(cfg, size_override=[48, 40]), splits)
    assert bigger.data != f.data and bigger.splits != f.splits
    other = sc.prepare(sc.deep_merge(MINE, {"data": {"phantom": {"patients": 7}}}))
    assert DataConfig.from_config(other).root != data.root
    assert DataFolders.of(DataConfig.from_config(other), prep, splits).data != f.data
    val = DataFolders.of(data, prep, SplitConfig.from_config(sc.prepare({**MINE, "splits": {"val_fraction": 0.5}})))
    assert val.data == f.data and val.splits != f.splits
    # the split seed and fold count are in the split files' names, data.strict only stops a run on a bad file
    assert DataFolders.of(data, prep, SplitConfig(seed=3, val_fraction=0.25, folds=2)) == f
    strict = DataConfig.from_config(sc.prepare(sc.deep_merge(MINE, {"data": {"strict": True}})))
    assert DataFolders.of(strict, prep, splits) == f
    # a real root: its path, not its content (the content is in the cell ids; a change re-ingests in place)
    real = DataConfig.from_config(sc.prepare(sc.deep_merge(MINE, {"data": {"source": "rvsc", "root": "/d/rvsc/"}})))
    assert real.root == "/d/rvsc" and DataFolders.of(real, prep, splits).data != f.data


def test_the_smoke_example_then_the_demo_reingests_nothing(run_dir):
    """README: the seed studies at smoke scale, then the plain demo, in one folder (both on a tiny phantom):
    the demo's phantom, ingested data, splits and report are still there and still current."""
    seed_cfg = str(ROOT / "config" / "seed_studies.yaml")
    smoke = ["--configfile", seed_cfg, "--config", "scale=smoke", "select=[seed000_lr_optimizer]", TINY_DATA]
    _snakemake(run_dir, "--config", TINY_DATA, "--", "phantom", "ingest", "data_figures")
    dry = _snakemake(run_dir, "-n", *smoke)
    assert _jobs(dry)["ingest"] == 1 and "reports/seed_studies.html" in dry  # 48×40: its own data, own report
    _snakemake(run_dir, *smoke, "--", "ingest", "data_figures")
    assert len(list((run_dir / "results" / "data").iterdir())) == 2
    demo = _jobs(_snakemake(run_dir, "-n", "--config", TINY_DATA))
    assert "ingest" not in demo and "phantom" not in demo and "data_figures" not in demo, demo
    assert demo["train"] > 0  # the rest of the demo is still to run


def test_a_root_with_the_phantom_is_an_error():
    """--config data='{root: ...}' while data.source is still phantom would be ignored: it stops the plan."""
    with pytest.raises(sc.ConfigError, match=r"config key 'data.root': '/d/rvsc' is set but data.source is 'phantom'"):
        DataConfig.from_config(sc.prepare(sc.deep_merge(MINE, {"data": {"root": "/d/rvsc"}})))
    bad = {**MINE, "datasets": {"b": {"root": "/d/b"}}, "studies": {"b": {**MINE["studies"]["mine"], "data": "b"}}}
    with pytest.raises(sc.ConfigError, match=r"config key 'datasets.b.root': '/d/b' is set but datasets.b.source"):
        DataConfig.from_config(sc.prepare(bad), "b")


def test_a_typo_stops_the_dry_run_with_one_line(run_dir):
    """Not jsonschema's dump of the schema (185 lines): the key, where it is, the closest known keys."""
    (run_dir / "typo.yaml").write_text(yaml.safe_dump(sc.deep_merge(MINE, {"train": {"depht": 2}})))
    proc = subprocess.run(
        [
            SNAKEMAKE,
            "-s",
            str(ROOT / "Snakefile"),
            "-d",
            str(run_dir),
            "-n",
            "--configfile",
            str(run_dir / "typo.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "segsweep: config key 'train.depht': unknown key (closest known: depth)\n" in out
    assert len(out.strip().splitlines()) <= 5, out  # Snakemake's frame: the file and line of the error
