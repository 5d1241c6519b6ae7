# segsweep: cardiac-MRI DICOM + contours → CLAHE images/masks → splits → one training job per cell →
# tables → figures → reports/report.html + report.pdf.  See docs/architecture.md.
from snakemake.utils import min_version

min_version("9.0")


# The demo. A config file given with --configfile stands alone (schema defaults fill the rest): it is not
# merged into the demo's, so its studies and title are the only ones (docs/architecture.md, "Config files").
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "rules/common.smk"
include: "rules/adaptive_common.smk"
include: "rules/prune_common.smk"
include: "rules/data.smk"
include: "rules/split.smk"
include: "rules/train.smk"
include: "rules/adaptive.smk"
include: "rules/prune.smk"
include: "rules/aggregate.smk"
include: "rules/report.smk"
include: "rules/predict_common.smk"
include: "rules/predict.smk"


rule all:
    default_target: True
    input:
        REPORT_OUTPUTS,
        MODEL_CARDS,
