# Thin adapter: unpack `snakemake`, call the library. The sys.path line lets conda envs (which install
# only the dependencies) import the in-repo package; in the project venv it is installed anyway.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1] / "src"))  # noqa: F821

from segsweep import runner  # noqa: E402
from segsweep.report import provenance  # noqa: E402
from segsweep.report import render as report  # noqa: E402
from segsweep.study import study_from_dict  # noqa: E402

smk = snakemake  # noqa: F821
runner.run(
    smk,
    report.render_report,
    config=smk.params.config,
    studies=[study_from_dict(s) for s in smk.params.studies],
    results_dir=Path(smk.params.results_dir),
    # the default data set's keyed folders (segsweep.data.config.DataFolders)
    data_files=report.DataFiles(Path(smk.input.data), tuple(map(Path, smk.input.splits)), Path(smk.input.data_figures)),
    out_html=Path(smk.output.html),
    out_pdf=Path(smk.output.pdf) if "pdf" in smk.output.keys() else None,  # noqa: SIM118 (`in` on a Namedlist tests values)
    provenance=provenance.collect(smk.params.config, Path(smk.scriptdir).resolve().parents[1]),
)
