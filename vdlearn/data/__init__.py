"""The toy video world (notebook 01): captioned clips, two data regimes, a caption grammar."""

from vdlearn.data.captions import (  # noqa: F401
    COLOURS,
    DIRECTIONS,
    OBJECTS,
    SPEEDS,
    VIDEO_OBJECTS,
    Caption,
    UnknownWordError,
    parse_caption,
    vocabulary,
)
from vdlearn.data.dataset import ToyImageDataset, ToyVideoDataset  # noqa: F401
from vdlearn.data.world import WORLD_PRESETS, ClipAttributes, ToyWorld, WorldConfig  # noqa: F401
