"""Rotations of images by any angle (SO(2), C_n) and a learned equivariant canonicalizer."""

from equijax._src.canonicalizers import (
    IsotropicConv,
    RotationCanonicalizer,
    canonicalize,
    prior_loss,
)
from equijax._src.groups import ImageRotation, ImageRotationGroup, image_rotations
from equijax._src.image_rotation import disk_mask, rotate_images

__all__ = [
    "ImageRotation",
    "ImageRotationGroup",
    "IsotropicConv",
    "RotationCanonicalizer",
    "canonicalize",
    "disk_mask",
    "image_rotations",
    "prior_loss",
    "rotate_images",
]
