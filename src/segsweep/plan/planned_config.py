"""The config a run was planned with, for the run's own job steps.

Snakemake parses the Snakefile, and so the config, once per invocation; on Slurm every job runs an invocation
of its own (the jobstep executor), which reads the config file as it is *then*. An edit made while the run goes
on (``epochs: 30`` → ``20``) thus reached its queued jobs: their cells had new ids (``KeyError: '<cell id>'``),
a study's table would have been built from other cells. The submitting invocation therefore records its
prepared config (``--configfile`` files, ``--config``, ``study_files`` merged, defaults filled: what it
planned with) in ``.snakemake/segsweep/planned_config/<sha256>.json`` (`record`) and names that file in the environment
variable ``SEGSWEEP_PLANNED_CONFIG``, which ``sbatch`` and ``srun`` pass on to the jobs. A job's invocation
(remote or subprocess mode) parses that config instead of the files (`adopt`): every job runs what the run
planned, as in a local run, where Snakemake parses once. The edit takes effect at the next ``snakemake``
invocation. Where the variable does not reach the job (a cluster that sets ``SBATCH_EXPORT=NONE``), training
jobs still run their cells as planned from the cells' own snapshots (`segsweep.plan.snapshots`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, MutableMapping
from pathlib import Path

from segsweep.errors import ConfigError
from segsweep.io import write_text

ENV = "SEGSWEEP_PLANNED_CONFIG"
FOLDER = Path(".snakemake") / "segsweep" / "planned_config"


def _canonical(config: MutableMapping) -> str:
    # key order kept, never sorted: it is meaningful (a study's axes order its labels and tables)
    return json.dumps(config, default=str)


def record(given: MutableMapping, prepared: MutableMapping, folder: str | os.PathLike = FOLDER) -> Path:
    """Write the ``prepared`` config (and the config as ``given`` to the Snakefile, to tell a job that the
    files changed) content-addressed, once; return its absolute path."""
    text = _canonical({"given": given, "config": prepared})
    path = Path(folder) / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    if not path.exists():
        write_text(path, text + "\n")
    return path.resolve()


def adopt(config: MutableMapping, notify: Callable[[str], None] | None = None) -> Path | None:
    """Replace ``config``'s content with the planned config named by ``SEGSWEEP_PLANNED_CONFIG``, if set;
    ``notify`` hears when that differs from the files' (edited since the run was planned). Returns its path."""
    name = os.environ.get(ENV)
    if not name:
        return None
    path = Path(name)
    try:
        planned = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{ENV}={path}: the config this run was planned with is gone (.snakemake removed?); stop the run "
            "and start it again"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{ENV}={path}: the config this run was planned with cannot be read: {exc}") from None
    if not isinstance(planned, dict) or not isinstance(planned.get("config"), dict):
        raise ConfigError(f"{ENV}={path}: not a planned config written by segsweep")
    if notify is not None and _canonical(config) != _canonical(planned.get("given")):
        notify(
            f"the config differs from the one this run was planned with: this job uses the planned one ({path}); "
            "the edit takes effect at the next snakemake run"
        )
    config.clear()
    config.update(planned["config"])
    return path
