# Thin adapter: unpack `snakemake`, call the library. The sys.path line lets conda envs (which install
# only the dependencies) import the in-repo package; in the project venv it is installed anyway.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1] / "src"))  # noqa: F821

from segsweep import runner  # noqa: E402
from segsweep.training.job import execution_settings  # noqa: E402
from segsweep.training.params import CellParams  # noqa: E402
from segsweep.training.rungs import run_rung_job  # noqa: E402

smk = snakemake  # noqa: F821
runner.run(
    smk,
    run_rung_job,
    CellParams.from_dict(smk.params.cell),
    stop_at=int(smk.wildcards.epoch),
    data_dir=Path(smk.input.data),
    split_path=Path(smk.input.split),
    out=Path(smk.output.rung),
    threads=smk.threads,
    device=smk.params.device,
    attempt=int(smk.resources.attempt),
    max_attempts=int(smk.resources.max_attempts),
    amp=bool(smk.params.amp),
    channels_last=bool(smk.params.channels_last),
    **execution_settings(smk.resources),  # last.pt frequency, trainer worker: how, never what
)
