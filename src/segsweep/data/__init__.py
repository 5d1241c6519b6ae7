"""Data: DICOM and contour readers, data-set layouts, preprocessing, ingestion with QC, the phantom, splits."""
