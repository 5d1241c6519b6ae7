"""Data-set layouts: find each patient's image files and the manual contours that belong to them.

Each layout is one module here (``rvsc``, ``sunnybrook``, ``sunnybrook_flat``, ``rtstruct``, ``nifti``) that
registers a ``base.Layout``: ``discover(root) -> list[PatientRecord]``, the phantom generator's ``PhantomPaths``
(where a generated file goes), the expected tree for messages, a detection rule, and any config keys
(``LayoutOption``) and QC reason codes of its own. Every module of this
package is imported below, so a new layout is one new file. Discovery only looks at names; it opens no DICOM
file (ingest reads what it needs; layouts that pair by content do it in ``resolve``, called by ingest). Files
it cannot place become ``Note`` s (QC rows), never silently dropped. A missing, empty or differently organised
root raises ``DataError`` naming the root and the expected layout.
"""

from __future__ import annotations

from segsweep.data.layouts.base import (  # noqa: F401  (the package's public names)
    LAYOUTS,
    REASONS,
    Item,
    Layout,
    LayoutOption,
    MaskContour,
    Note,
    Part,
    PatientRecord,
    PhantomPaths,
    PhantomPatient,
    PhantomSlice,
    PolygonContour,
    SliceImage,
    check_root,
    detect,
    discover,
    expected,
    list_files,
    option_values,
    options,
    parse_options,
    phantom_paths,
    resolve,
    wrong_layout_message,
)
from segsweep.registry import import_submodules

import_submodules(__name__)

LAYOUT_NAMES: tuple[str, ...] = LAYOUTS.names()
