"""Aggregate the cells of one study: write cells.csv, table.csv, table.json and stats.json.

The steps, each its own module: the runs read from their metrics.json (`segsweep.analysis.runs`), grouped per
configuration (`segsweep.analysis.configs`), each configuration's bootstrap interval
(`segsweep.analysis.intervals`), the real sizes of a ``fraction`` axis (`segsweep.analysis.fractions`), the
study's table layout (`segsweep.analysis.pivot`), paired comparisons (`segsweep.analysis.stats`) and, with the
study's data, the selected configuration's final evaluation (`segsweep.analysis.final`). The best
configuration is `segsweep.analysis.ranking.best_group`. Outputs are written atomically in the study folder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from segsweep.analysis.configs import config_groups
from segsweep.analysis.final import evaluate_selected
from segsweep.analysis.fractions import fraction_sizes
from segsweep.analysis.intervals import config_interval
from segsweep.analysis.pivot import pivot, table_frame
from segsweep.analysis.runs import cells_frame
from segsweep.analysis.stats import compare_study
from segsweep.io import atomic_path, json_safe, write_json
from segsweep.paths import CELLS_CSV, STATS_JSON, TABLE_CSV, TABLE_JSON
from segsweep.study import pruned_cells  # the decision files' reader (shared: optuna rounds read them too)

if TYPE_CHECKING:  # only for annotations: aggregation works on any object with the Study fields
    from segsweep.study import Study


def aggregate_study(
    study: Study,
    cells_dir: Path,
    out_dir: Path,
    logs_dir: Path | None = None,
    *,
    seed: int = 0,
    splits: Sequence[Path] = (),
    decisions: Sequence[Mapping] = (),
    data_dir: Path | None = None,
) -> pd.DataFrame:
    """Write ``cells.csv``, ``table.csv``, ``table.json`` and ``stats.json`` of one study into ``out_dir``.

    ``cells_dir`` holds ``{cell}/metrics.json`` (and per_patient.csv / per_image.csv, for the intervals);
    ``logs_dir`` holds the training logs ``{cell}.log`` (their last lines are kept for runs that did not
    finish ok). ``seed`` seeds the bootstraps (intervals and `segsweep.analysis.stats`). ``splits`` are the
    split files of the study's cells (results/splits/*.json), for the real size of each training fraction.
    ``decisions`` are a pruned study's decision files (read as JSON; `pruned_cells`): the runs its pruner
    stopped are ``pruned``, and a configuration with any pruned run is never ranked or compared.
    ``data_dir`` (the study's patient files): with it, table.json gets ``final``, the selected configuration's
    post-processing choice, test numbers and ensemble (`segsweep.analysis.final.evaluate_selected`).
    Returns the per-run frame (the content of cells.csv).
    """
    out_dir = Path(out_dir)
    df = cells_frame(study, Path(cells_dir), None if logs_dir is None else Path(logs_dir), pruned_cells(decisions))
    groups = config_groups(study, df)
    memo: dict[str, dict | None] = {}
    for g in groups:
        g.update(config_interval(g, Path(cells_dir), study.table.value, seed, memo))
    fractions = fraction_sizes(study, Path(cells_dir), splits)
    table = pivot(study, groups, {"fraction": {k: v["label"] for k, v in fractions.items()}} if fractions else None)
    table["fractions"] = fractions
    if data_dir is not None:
        table["final"] = evaluate_selected(
            study.name, groups, study.table.higher_is_better, Path(cells_dir), Path(data_dir), seed
        )
    comparisons = compare_study(
        groups, higher_is_better=study.table.higher_is_better, value=study.table.value, seed=seed
    )
    with atomic_path(out_dir / CELLS_CSV) as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(out_dir / TABLE_CSV) as tmp:
        table_frame(table).to_csv(tmp, index=False)
    write_json(out_dir / TABLE_JSON, json_safe(table))
    write_json(out_dir / STATS_JSON, json_safe(comparisons))
    return df
