"""Image, mask and volume input/output (see ``docs/architecture.md``, section io)."""

from retinaseg.io.images import (
    IMAGE_EXTENSIONS,
    RITE_PALETTE,
    Palette,
    list_images,
    natural_key,
    read_class_map,
    read_colour_class_map,
    read_image,
    read_mask,
    write_png,
    write_tiff,
)
from retinaseg.io.volumes import read_volume

__all__ = [
    "IMAGE_EXTENSIONS",
    "list_images",
    "natural_key",
    "Palette",
    "RITE_PALETTE",
    "read_class_map",
    "read_colour_class_map",
    "read_image",
    "read_mask",
    "read_volume",
    "write_png",
    "write_tiff",
]
