# Thin adapter: unpack `snakemake`, call the library. The sys.path line lets conda envs (which install
# only the dependencies) import the in-repo package; in the project venv it is installed anyway.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1] / "src"))  # noqa: F821

from segsweep import runner  # noqa: E402
from segsweep.plan import optuna_rounds  # noqa: E402

smk = snakemake  # noqa: F821
runner.run(
    smk,
    optuna_rounds.run_round,
    dict(smk.params.ctx),
    int(smk.wildcards.round),
    int(smk.params.n_trials),
    list(smk.input.rounds),
    Path(smk.params.cells_dir),
    Path(smk.output.round),
    list(smk.input.decisions),
)
