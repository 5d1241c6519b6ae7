"""Applying a trained cell to new DICOM series (``snakemake predict``; docs/predict.md).

``discover`` (find the MR series under an input root, QC rows for everything else) · ``volumes`` (slice
spacing, areas, volumes, volumes.csv) · ``seg`` (DICOM SEG with highdicom, de-identification) · ``overlay``
(contour PNGs) · ``predict`` (the model, the cell's preprocessing, the run). The model comes from
`segsweep.analysis.card.resolve_model`; this stage sits above ``report`` (it uses the report's colours) and
below ``plan``.
"""
