"""segsweep: cardiac-MRI segmentation hyperparameter studies, from DICOM to report."""

__version__ = "0.2.0"
