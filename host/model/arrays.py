"""Type names for the numpy arrays of the site package."""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ArrayT = TypeVar("ArrayT", bound=npt.NDArray[Any])


def frozen(array: ArrayT) -> ArrayT:
    """A read-only copy, for arrays handed out in snapshots."""
    out = array.copy()
    out.flags.writeable = False
    return out
