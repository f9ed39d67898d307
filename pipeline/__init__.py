"""hydromae's data pipeline, the lowest layer: schema, format, geometry, masking, loader.

``pipeline`` owns what is on disk (``pipeline.schema``, ``pipeline.manifest``,
``pipeline.shard``, ``pipeline.store``), the grid geometry and the sample schema, the
seed's masking collate and the streaming loader, so that the preprocessing that writes
data and the training that reads it cannot drift apart. It imports neither of them.
"""

from pipeline.collate import MultiScaleMaskedCollate
from pipeline.grid import PatchGrid, patchify, unpatchify
from pipeline.landmask import PatchTable, load_land_mask, reference_mask_path, save_land_mask
from pipeline.manifest import Manifest
from pipeline.normalize import Normalizer
from pipeline.schema import IMAGE_MODALITIES, MODALITIES, VECTOR_MODALITIES

__all__ = [
    "IMAGE_MODALITIES",
    "MODALITIES",
    "VECTOR_MODALITIES",
    "Manifest",
    "MultiScaleMaskedCollate",
    "Normalizer",
    "PatchGrid",
    "PatchTable",
    "load_land_mask",
    "patchify",
    "reference_mask_path",
    "save_land_mask",
    "unpatchify",
]
