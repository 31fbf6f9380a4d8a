"""Token lengths to `max_length`: the length that keeps a percentile of the texts whole."""

from __future__ import annotations

import numpy as np


def percentile_length(token_lengths: np.ndarray, percentile: float) -> int:
    """A `max_length` that keeps `percentile` % of texts whole, rounded up to a multiple of 8."""
    value = float(np.percentile(token_lengths, percentile))
    return int(max(8, 8 * np.ceil(value / 8)))
