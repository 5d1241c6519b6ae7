# Thin adapter: unpack `snakemake`, call the library. The sys.path line lets conda envs (which install
# only the dependencies) import the in-repo package; in the project venv it is installed anyway.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1] / "src"))  # noqa: F821

from segsweep import runner  # noqa: E402
from segsweep.report.inspect import draw_all  # noqa: E402

smk = snakemake  # noqa: F821
runner.run(smk, draw_all, Path(smk.input[0]), Path(smk.output[0]))
