# Thin adapter: unpack `snakemake`, call the library. The sys.path line lets conda envs (which install
# only the dependencies) import the in-repo package; in the project venv it is installed anyway.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1] / "src"))  # noqa: F821

from segsweep import runner  # noqa: E402
from segsweep.apply.predict import run_predict  # noqa: E402
from segsweep.data.config import preprocess_from_dict  # noqa: E402
from segsweep.study import study_from_dict  # noqa: E402

smk = snakemake  # noqa: F821
runner.run(
    smk,
    run_predict,
    dict(smk.params.predict),
    studies=[study_from_dict(s) for s in smk.params.studies],
    results_dir=Path(smk.params.results_dir),
    data_dir=Path(smk.input.data),
    prep=preprocess_from_dict(smk.params.preprocess),
    pseudonym_key=str(smk.params.pseudonym_key),
    out_dir=Path(str(smk.output[0])).parent,
    threads=smk.threads,
)
