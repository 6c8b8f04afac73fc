"""Frame averaging: exact symmetrization over a small, input-dependent set of elements."""

from equijax._src.frames import (
    Frame,
    FrameSpec,
    average_tied_points,
    frame_average,
    image_frame,
    lexicographic_frame,
    per_example_act,
    sort_frame,
)

__all__ = [
    "Frame",
    "FrameSpec",
    "average_tied_points",
    "frame_average",
    "image_frame",
    "lexicographic_frame",
    "per_example_act",
    "sort_frame",
]
