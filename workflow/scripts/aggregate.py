# Thin adapter: unpack `snakemake`, call the library. The sys.path line lets conda envs (which install
# only the dependencies) import the in-repo package; in the project venv it is installed anyway.
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1] / "src"))  # noqa: F821

from segsweep import runner  # noqa: E402
from segsweep.analysis import aggregate  # noqa: E402
from segsweep.study import study_from_dict  # noqa: E402

smk = snakemake  # noqa: F821
study = smk.params.study
if smk.input.get("optuna_study"):  # an optuna study: its trials as rows (rules/adaptive.smk)
    study = json.loads(Path(str(smk.input.optuna_study)).read_text())
runner.run(
    smk,
    aggregate.aggregate_study,
    study_from_dict(study),
    Path(smk.params.cells_dir),
    Path(smk.output.cells).parent,
    Path(smk.params.logs_dir),
    seed=int(smk.params.seed),
    splits=[Path(p) for p in smk.input.splits],
    decisions=[json.loads(Path(p).read_text()) for p in smk.input.prune],
    data_dir=Path(smk.input.data),
)
