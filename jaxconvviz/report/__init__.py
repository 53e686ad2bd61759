"""``jaxconvviz report``: a browsable, offline atlas website of a network.

:func:`build_report` writes static HTML pages (index, images, one page per
layer and per filter) and compressed images into a folder; the command
(:mod:`jaxconvviz.commands.report`) builds it in a temporary folder and
renames it into place. :mod:`jaxconvviz.models.receptive` computes receptive
fields from the layer table and crops image patches to them (pure NumPy).

This package is IO: it imports Pillow (through :mod:`.encode`); the compute
it shows comes from the library's public functions.
"""

from jaxconvviz.models.receptive import (
    ReceptiveField,
    crop_patch,
    receptive_field,
    top_units,
)
from jaxconvviz.report.build import (
    ReportImage,
    ReportStats,
    ascent_macs,
    build_report,
    estimate_seconds,
)

__all__ = [
    "ReceptiveField",
    "ReportImage",
    "ReportStats",
    "ascent_macs",
    "build_report",
    "crop_patch",
    "estimate_seconds",
    "receptive_field",
    "top_units",
]
