# Thin adapter: unpack `snakemake`, call the library. The sys.path line lets conda envs (which install
# only the dependencies) import the in-repo package; in the project venv it is installed anyway.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1] / "src"))  # noqa: F821

from segsweep import runner  # noqa: E402
from segsweep.training.inspect import inspect_cell  # noqa: E402

smk = snakemake  # noqa: F821
runner.run(smk, inspect_cell, Path(smk.input.metrics).parent, Path(smk.output[0]))
