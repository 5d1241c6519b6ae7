# Thin adapter: unpack `snakemake`, call the library. The sys.path line lets conda envs (which install
# only the dependencies) import the in-repo package; in the project venv it is installed anyway.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1] / "src"))  # noqa: F821

from segsweep import runner  # noqa: E402
from segsweep.data import splits  # noqa: E402

smk = snakemake  # noqa: F821
spec = smk.params.spec
runner.run(
    smk,
    splits.write_split,
    Path(smk.input.data) / "dataset.json",
    Path(smk.output[0]),
    seed=spec["seed"],
    val_fraction=spec["val_fraction"],
    folds=spec["folds"],
    test_fraction=spec.get("test_fraction", 0.0),
)
