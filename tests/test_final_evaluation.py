"""The selected configuration's final evaluation on really trained cells (tiny phantom, CPU, seconds): the
saved native predictions reproduce metrics.json, post-processing is chosen and recorded in table.json, the
ensemble of the repeats is scored, the model card records the choice."""

import json

import numpy as np
import pytest
import torch

from segsweep.analysis import card
from segsweep.analysis.aggregate import aggregate_study
from segsweep.analysis.final import chosen_postprocessing
from segsweep.analysis.postprocess import POSTPROCESSING
from segsweep.data import ingest, phantom
from segsweep.data.config import DataConfig, PhantomConfig, PreprocessConfig
from segsweep.data.splits import write_split
from segsweep.plan.config import cell_params
from segsweep.study import Study, StudyCell, TableLayout
from segsweep.training import native_predictions as npred
from segsweep.training.loop import train_cell

torch.set_num_threads(1)

PHANTOM = PhantomConfig(patients=8, slices=3, rows=64, cols=56, no_contour_fraction=0.0)
PREP = PreprocessConfig(size=(32, 32), tile_grid=(4, 4))
CELLS = {"bbbbbbbbbbb1": 0, "bbbbbbbbbbb2": 1}  # cell id → training seed (two repeats of one configuration)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("final")
    phantom.generate(PHANTOM, root / "raw")
    results = root / "results"
    ingest.run(DataConfig("phantom", str(root / "raw"), "endo", False, "k", PHANTOM), PREP, results / "data")
    split = results / "splits" / "seed0.json"
    write_split(results / "data" / "dataset.json", split, 0, 0.25, None, 0.25)
    for cell, seed in CELLS.items():
        params = cell_params(
            {"depth": 2, "base_width": 4, "batch_size": 4, "epochs": 12, "lr": 0.01, "loss": "dice + bce", "seed": seed}
        )
        train_cell(params, results / "data", split, results / "cells" / cell)
    study = Study(
        name="seeds",
        title="Seeds",
        description="",
        mode="grid",
        axes=("lr",),
        table=TableLayout((), ("lr",)),
        cells=tuple(StudyCell(c, (("lr", "0.01"),), s, None) for c, s in CELLS.items()),
        axis_values={"lr": ("0.01",)},
    )
    out = results / "studies" / "seeds"
    aggregate_study(study, results / "cells", out, seed=0, splits=[split], data_dir=results / "data")
    return results, study


def test_saved_predictions_are_small_and_complete(trained):
    results, _ = trained
    for cell in CELLS:
        d = results / "cells" / cell
        f = npred.read(d / npred.FILE)
        n = {s: len(v) for s, v in f.sets.items()}
        per_image = (d / "per_image.csv").read_text().splitlines()[1:]
        assert n["val"] + n["test"] == len(per_image) and n["test"] > 0
        assert (d / npred.FILE).stat().st_size < 64 * 1024  # 8 × 3 images of 64 × 56: a few kB


def test_final_in_table_json_reproduces_the_cells(trained):
    results, _ = trained
    table = json.loads((results / "studies" / "seeds" / "table.json").read_text())
    fin = table["final"]
    assert fin["n_runs"] == 2 and sorted(fin["cells"]) == sorted(CELLS)
    assert [c["name"] for c in fin["candidates"]] == list(POSTPROCESSING.names())
    assert fin["chosen"] in POSTPROCESSING.names() and sum(c["chosen"] for c in fin["candidates"]) == 1
    # "none" re-scored from the saved label maps = the cells' own numbers (metrics.json), to float rounding
    ms = [json.loads((results / "cells" / c / "metrics.json").read_text()) for c in CELLS]
    none = next(c for c in fin["candidates"] if c["name"] == "none")
    assert none["dice_patient"] == pytest.approx(np.mean([m["val_dice_patient"] for m in ms]), abs=1e-12)
    raw = {r["key"]: r for r in fin["test"]["none"]}
    assert raw["dice_patient"]["value"] == pytest.approx(np.mean([m["test"]["dice_patient"] for m in ms]), abs=1e-12)
    assert fin["chosen"] in fin["test"]
    ens = fin["ensemble"]
    assert ens["n_runs"] == 2 and set(ens["val"]) == set(fin["test"]) and set(ens["test"]) == set(fin["test"])
    assert chosen_postprocessing(results / "studies" / "seeds") == fin["chosen"]


def test_model_card_records_post_processing(trained, tmp_path):
    results, study = trained
    out = tmp_path / "model_card.md"
    c = card.write_model_card(study, results, out, seed=0)
    text = out.read_text()
    fin = json.loads((results / "studies" / "seeds" / "table.json").read_text())["final"]
    assert c["postprocessing"]["name"] == fin["chosen"]
    assert "## Post-processing" in text and f"(`{fin['chosen']}`)" in text and "before → after" in text
