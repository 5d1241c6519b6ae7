"""A study's aggregated files read back: what the report, its figures and the model cards start from.

`aggregate_study` wrote them (cells.csv, table.json); here they become the per-run frame, the table and the
configurations (`segsweep.analysis.configs.config_groups`) with the intervals aggregation computed from the
cells' per-patient values (`segsweep.analysis.intervals.table_intervals`: read, never recomputed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from segsweep.analysis.configs import config_groups
from segsweep.analysis.intervals import table_intervals
from segsweep.analysis.runs import read_cells_csv
from segsweep.errors import DataError
from segsweep.paths import CELLS_CSV, TABLE_JSON

if TYPE_CHECKING:
    from segsweep.study import Study


@dataclass(frozen=True)
class StudyResults:
    cells: pd.DataFrame  # cells.csv: one row per run
    table: dict  # table.json
    groups: list[dict]  # one per configuration, intervals from table.json


def read_study(study: Study, study_dir: str | Path) -> StudyResults:
    """The study's results in ``study_dir`` (results/studies/<study>); DataError naming a missing or broken file."""
    d = Path(study_dir)
    try:
        cells = read_cells_csv(d / CELLS_CSV, study.axes)
        table = json.loads((d / TABLE_JSON).read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{exc.filename}: missing (run the aggregate step first)") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{d / TABLE_JSON}: not valid JSON ({exc.msg})") from None
    return StudyResults(cells, table, config_groups(study, cells, intervals=table_intervals(table)))
