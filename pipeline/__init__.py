"""hydromae's data pipeline: grid geometry, land mask, masking collate (and, later, the loader).

``pipeline`` owns the on-disk format, the grid geometry and the sample schema, so that the
preprocessing that writes data and the training that reads it cannot drift apart.
"""

from pipeline.collate import (
    IMAGE_MODALITIES,
    MODALITIES,
    VECTOR_MODALITIES,
    MultiScaleMaskedCollate,
)
from pipeline.grid import PatchGrid, patchify, unpatchify
from pipeline.landmask import PatchTable, load_land_mask, reference_mask_path, save_land_mask

__all__ = [
    "IMAGE_MODALITIES",
    "MODALITIES",
    "VECTOR_MODALITIES",
    "MultiScaleMaskedCollate",
    "PatchGrid",
    "PatchTable",
    "load_land_mask",
    "patchify",
    "reference_mask_path",
    "save_land_mask",
    "unpatchify",
]
