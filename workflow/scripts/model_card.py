# Thin adapter: unpack `snakemake`, call the library. The sys.path line lets conda envs (which install
# only the dependencies) import the in-repo package; in the project venv it is installed anyway.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1] / "src"))  # noqa: F821

from segsweep import runner  # noqa: E402
from segsweep.analysis import card  # noqa: E402
from segsweep.study import study_from_dict  # noqa: E402

smk = snakemake  # noqa: F821
runner.run(
    smk,
    card.write_model_card,
    study_from_dict(smk.params.study),
    Path(smk.params.results_dir),
    Path(str(smk.output[0])),
    seed=int(smk.params.seed),
    data_dir=Path(str(smk.input.data)),
    splits_dir=Path(smk.params.splits_dir),
)
