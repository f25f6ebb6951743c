"""Shared empty id arrays."""

import numpy as np

from .utils import basetypes

empty_1d = np.empty(0, dtype=basetypes.NODE_ID)
empty_2d = np.empty((0, 2), dtype=basetypes.NODE_ID)
