"""segsweep: cardiac-MRI segmentation hyperparameter studies, from DICOM to report."""

__version__ = "0.1.0"
