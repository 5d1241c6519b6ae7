"""Each cell as it was planned: ``results/cells/<id>/cell.json``, so a job runs the cell its run planned.

Every Snakemake invocation parses the config again, and on Slurm that includes each job's own step (the
jobstep executor): a config edited while a run goes on (``epochs: 30`` → ``20``) changes every cell id, the
steps no longer find the planned ids, and every job failed with ``InputFunctionException … KeyError: '<id>'``
(locally Snakemake parses once, so the same edit was harmless). `PlannedCells` closes the gap: the first
lookup of a cell by an invocation whose config holds it writes the cell's snapshot (id, full parameters,
split, data set) once; a lookup of an id the config no longer holds reads the snapshot instead. The job then
trains exactly the planned cell, as locally. The snapshot is content-addressed (a cell id is a hash of what
it computes), so it is written once and never changes; a missing or unreadable one is a `ConfigError` naming
the file and saying what to do.

Only the cell itself comes from the snapshot: settings outside the cell id (``resources``, ``evaluation``)
are read from the config each job parses.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

from segsweep.errors import ConfigError
from segsweep.io import write_json
from segsweep.paths import SNAPSHOT
from segsweep.plan.cells import Cell
from segsweep.plan.optuna_rounds import TrialCells
from segsweep.training.params import CellParams


def snapshot_path(cells_dir: str | Path, cell_id: str) -> Path:
    return Path(cells_dir) / cell_id / SNAPSHOT


def cell_to_dict(cell: Cell) -> dict:
    return {"id": cell.id, "params": cell.params.to_dict(), "split": cell.split, "dataset": cell.dataset}


def write_snapshot(cells_dir: str | Path, cell: Cell) -> Path:
    """The cell's snapshot, written (atomically) unless it exists: its content is fixed by the id."""
    path = snapshot_path(cells_dir, cell.id)
    if not path.exists():
        write_json(path, cell_to_dict(cell))
    return path


def read_snapshot(cells_dir: str | Path, cell_id: str) -> Cell:
    """The planned cell ``cell_id`` from its snapshot; ConfigError naming the file if there is none."""
    path = snapshot_path(cells_dir, cell_id)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"cell {cell_id} is not a cell of the config as it is now, and {path} (the cell as it was planned) "
            "does not exist: the config was edited after the run was planned by a segsweep that wrote no "
            "snapshots. Restore the config the run was started with, or stop the run and start it again"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cell {cell_id}: {path} (the cell as it was planned) cannot be read: {exc}") from None
    if d.get("id") != cell_id:
        raise ConfigError(f"cell {cell_id}: {path} holds cell {d.get('id')!r}; delete it and plan again")
    return Cell(cell_id, CellParams.from_dict(d["params"]), d["split"], d.get("dataset"))


class PlannedCells(TrialCells):
    """The train rules' ``CELLS``: the plan's cells and the trial cells of round files (`TrialCells`), each
    recorded as a snapshot on first lookup, and, for an id neither holds, the snapshot (module docstring)."""

    def __init__(
        self,
        cells: Mapping[str, Cell],
        round_files: Callable[[], list],
        cells_dir: str | Path,
        on_snapshot: Callable[[str], None] | None = None,
    ):
        super().__init__(cells, round_files)
        self._dir = Path(cells_dir)
        self._on_snapshot = on_snapshot  # told each id run from its snapshot (the job's log says so)
        self._recorded: set[str] = set()
        self._planned: dict[str, Cell] = {}  # read from snapshots: not cells of this config, so not items

    def __getitem__(self, key: str) -> Cell:
        if key in self._planned:
            return self._planned[key]
        try:
            cell = super().__getitem__(key)
        except KeyError:
            cell = self._planned[key] = read_snapshot(self._dir, key)
            if self._on_snapshot is not None:
                self._on_snapshot(
                    f"cell {key} is not a cell of the config as it is now (edited since the run was "
                    f"planned?): running it as planned, from {snapshot_path(self._dir, key)}"
                )
            return cell
        if key not in self._recorded:
            write_snapshot(self._dir, cell)
            self._recorded.add(key)
        return cell
